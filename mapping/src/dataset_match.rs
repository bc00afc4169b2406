//! Finding the first dataset record that matches a message (§2.7).
//!
//! Inputs that read the message are read once per message, not once per
//! record. The usual condition, `$m == $r` with one message input and one
//! record input, looks a string up in an index of the records (rebuilt
//! when they change), or else compares each record's raw JSON without
//! converting it.

use super::json::Json;

use super::dataset_index::StringIndex;
use super::expr::{eval, BinOp, Expr};
use super::last_value::LastValues;
use super::read::{get_path, Env, Found};
use super::rules::{Access, Input, Src};
use super::transform::Message;
use super::value::Value;

/// A compiled match condition with its inputs.
#[derive(Debug, Clone)]
pub struct Matcher {
    inputs: Vec<Input>,
    expr: Expr,
    /// `(message input, record input)` when the condition is their `==`.
    equal: Option<(usize, usize)>,
    /// Records by the string the record input reads (with `equal` only).
    index: StringIndex,
}

fn reads_record(input: &Input) -> bool {
    matches!(input.access, Access::Tree(Src::Record, _))
}

impl Matcher {
    pub fn new(inputs: Vec<Input>, expr: Expr) -> Matcher {
        let equal = match &expr {
            Expr::Binary(BinOp::Eq, a, b) => match (&**a, &**b) {
                (Expr::Input(a), Expr::Input(b)) => message_and_record(&inputs, *a, *b),
                _ => None,
            },
            _ => None,
        };
        Matcher {
            inputs,
            expr,
            equal,
            index: StringIndex::default(),
        }
    }

    /// The first record matching the condition; `generation` identifies
    /// the content of `records` (see `Datasets`).
    pub fn find<'d>(
        &mut self,
        msg: &Message,
        (records, generation): (&'d [Json], u64),
        last: &LastValues<Access>,
        vals: &mut Vec<Value>,
    ) -> Result<Option<&'d Json>, String> {
        let env = |record| Env {
            msg,
            contexts: &[],
            record,
            last,
        };
        env(None).read_values(&self.inputs, &[], vals);
        if let Some(found) = self.indexed(records, generation, vals) {
            return Ok(found);
        }
        for rec in records {
            let env = env(Some(rec));
            let matched = match self.equal {
                Some((m, r)) => equals(&vals[m], env.read_input(&self.inputs[r], &[])),
                None => self.evaluate(&env, vals)?,
            };
            if matched {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    /// The index's answer when the condition is `==` on a message string
    /// and a plain record field (`None`: scan the records instead).
    fn indexed<'d>(
        &mut self,
        records: &'d [Json],
        generation: u64,
        vals: &[Value],
    ) -> Option<Option<&'d Json>> {
        let (m, r) = self.equal?;
        let Value::Str(wanted) = &vals[m] else {
            return None;
        };
        let Access::Tree(Src::Record, pattern) = &self.inputs[r].access else {
            return None;
        };
        if pattern.wildcard || self.inputs[r].last.is_some() {
            return None;
        }
        self.index.refresh(generation, records, |rec| {
            get_path(rec, &pattern.prefix)?.as_str()
        });
        Some(self.index.first(wanted).map(|i| &records[i]))
    }

    /// Evaluates the condition on one record (message inputs already read).
    fn evaluate(&self, env: &Env<'_>, vals: &mut [Value]) -> Result<bool, String> {
        for (input, val) in self.inputs.iter().zip(vals.iter_mut()) {
            if reads_record(input) {
                *val = env
                    .read_input(input, &[])
                    .map_or(Value::Empty, Found::to_value);
            }
        }
        match eval(&self.expr, vals)?.as_ref() {
            Value::Bool(b) => Ok(*b),
            Value::Empty => Ok(false),
            other => Err(format!(
                "match condition must be a boolean, got {}",
                other.type_name()
            )),
        }
    }
}

/// Orders inputs `a`, `b` as (message, record) when one of each.
fn message_and_record(inputs: &[Input], a: usize, b: usize) -> Option<(usize, usize)> {
    let (ia, ib) = (inputs.get(a)?, inputs.get(b)?);
    match (reads_record(ia), reads_record(ib)) {
        (false, true) => Some((a, b)),
        (true, false) => Some((b, a)),
        _ => None,
    }
}

/// `v == found` with the `==` rules, a missing value being Empty.
fn equals(v: &Value, found: Option<Found<'_>>) -> bool {
    match found {
        Some(Found::Json(j)) => v.loose_eq_json(j),
        Some(text) => v.loose_eq(&text.to_value()),
        None => v.loose_eq(&Value::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;
    use crate::parser::parse;
    use crate::path::Pattern;

    fn input(src: Src, field: &str) -> Input {
        let pattern = Pattern {
            prefix: vec![field.to_string()],
            ..Pattern::default()
        };
        Input {
            access: Access::Tree(src, pattern),
            last: None,
        }
    }

    fn matcher(expr: &str) -> Matcher {
        let inputs = vec![input(Src::Payload, "id"), input(Src::Record, "id")];
        Matcher::new(inputs, parse(expr, 2).unwrap())
    }

    fn find(mut m: Matcher, payload: Json, records: &[Json]) -> Result<Option<Json>, String> {
        let msg = Message::new("t", payload);
        let last = LastValues::default();
        let found = m.find(&msg, (records, 1), &last, &mut Vec::new())?;
        Ok(found.cloned())
    }

    #[test]
    fn equality_is_recognised_either_way_round() {
        assert_eq!(matcher("$1 == $2").equal, Some((0, 1)));
        assert_eq!(matcher("$2 == $1").equal, Some((0, 1)));
        assert_eq!(matcher("$1 == $1").equal, None);
        assert_eq!(matcher("$1 != $2").equal, None);
        assert_eq!(matcher("$1 == $2 && true").equal, None);
    }

    #[test]
    fn fast_and_general_conditions_find_the_same_record() {
        let records = [
            json!({"id": "a", "n": 0}),
            json!({"n": 1}),
            json!({"id": 2.0, "n": 2}),
            json!({"id": [1, null], "n": 3}),
            json!({"id": 2, "n": 4}),
        ];
        for payload in [
            json!({"id": 2}),
            json!({"id": "a"}),
            json!({}),
            json!({"id": null}),
            json!({"id": [1.0, null]}),
            json!({"id": "zz"}),
        ] {
            let fast = find(matcher("$1 == $2"), payload.clone(), &records);
            let general = find(matcher("($1 == $2) == true"), payload.clone(), &records);
            assert_eq!(fast, general, "{payload}");
        }
        let first = find(matcher("$1 == $2"), json!({"id": 2}), &records);
        assert_eq!(first, Ok(Some(records[2].clone())));
    }

    #[test]
    fn string_lookups_use_the_index_of_the_current_records() {
        let mut m = matcher("$2 == $1");
        let last = LastValues::default();
        let msg = Message::new("t", json!({"id": "b"}));
        let old = [
            json!({"id": "a"}),
            json!({"id": "b", "n": 1}),
            json!({"id": "b"}),
        ];
        let new = [json!({"id": "b", "n": 2})];
        let mut find = |records, generation| {
            m.find(&msg, (records, generation), &last, &mut Vec::new())
                .map(|f| f.cloned())
        };
        assert_eq!(find(&old, 1), Ok(Some(old[1].clone())));
        assert_eq!(find(&new, 2), Ok(Some(new[0].clone())));
        assert_eq!(find(&[], 3), Ok(None));
    }

    #[test]
    fn non_boolean_condition_is_an_error() {
        let e = find(matcher("$2"), json!({}), &[json!({"id": 1})]).unwrap_err();
        assert_eq!(e, "match condition must be a boolean, got int");
        assert_eq!(find(matcher("$2"), json!({}), &[json!({})]), Ok(None));
    }
}
