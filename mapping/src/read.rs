//! Reading a message while rules are evaluated: values are borrowed from
//! the message, the matched dataset records or the last-value store, and
//! only copied when a rule needs its own value.

use super::json::Json;

use super::last_value::LastValues;
use super::path::Pattern;
use super::rules::{Access, Input, Src};
use super::transform::Message;
use super::value::Value;

/// A value found at an input location, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found<'a> {
    /// A JSON value (payload, dataset record or last known value).
    Json(&'a Json),
    /// Metadata text (topic, user property, content type).
    Text(&'a str),
}

impl Found<'_> {
    /// Whether this is JSON `null` (which `? $last` treats as missing).
    pub fn is_null(self) -> bool {
        matches!(self, Found::Json(Json::Null))
    }

    /// An owned JSON copy.
    pub fn to_json(self) -> Json {
        match self {
            Found::Json(j) => j.clone(),
            Found::Text(t) => Json::String(t.to_owned()),
        }
    }

    /// The expression value (§2.6).
    pub fn to_value(self) -> Value {
        match self {
            Found::Json(j) => Value::from_json(j),
            Found::Text(t) => Value::Str(t.to_owned()),
        }
    }
}

/// What rules can read while evaluating one message.
pub struct Env<'a> {
    pub msg: &'a Message,
    /// Matched record per dataset (by position), `None` when nothing matched.
    pub contexts: &'a [Option<&'a Json>],
    /// Candidate record (dataset match rules only).
    pub record: Option<&'a Json>,
    pub last: &'a LastValues<Access>,
}

impl<'a> Env<'a> {
    /// The JSON tree `src` designates, if any.
    pub fn root(&self, src: &Src) -> Option<&'a Json> {
        tree_root(self.msg, self.contexts, self.record, src)
    }

    /// Reads a location (wildcard replaced by `capture`); `None` when absent.
    pub fn read(&self, access: &Access, capture: &[String]) -> Option<Found<'a>> {
        read_raw(self.msg, self.contexts, self.record, access, capture)
    }

    /// Reads an input, falling back to its last known value.
    pub fn read_input(&self, input: &Input, capture: &[String]) -> Option<Found<'a>> {
        let found = self.read(&input.access, capture);
        match input.last {
            Some(slot) if found.is_none_or(Found::is_null) => self.last.get(slot).map(Found::Json),
            _ => found,
        }
    }

    /// Reads every input as an expression value into `out` (cleared first).
    pub fn read_values(&self, inputs: &[Input], capture: &[String], out: &mut Vec<Value>) {
        out.clear();
        out.extend(inputs.iter().map(|i| {
            self.read_input(i, capture)
                .map_or(Value::Empty, Found::to_value)
        }));
    }
}

/// Reads a location (wildcard replaced by `capture`); `None` when absent.
pub fn read_raw<'a>(
    msg: &'a Message,
    contexts: &[Option<&'a Json>],
    record: Option<&'a Json>,
    access: &Access,
    capture: &[String],
) -> Option<Found<'a>> {
    match access {
        Access::Tree(src, pat) => {
            let root = tree_root(msg, contexts, record, src)?;
            let found = match pat.wildcard {
                true => get_path(root, pat.segments(capture)),
                false => get_path(root, &pat.prefix),
            };
            found.map(Found::Json)
        }
        Access::Topic => Some(Found::Text(&msg.topic)),
        Access::UserProperty(k) => msg
            .user_properties
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| Found::Text(v)),
        Access::ContentType => msg.content_type.as_deref().map(Found::Text),
    }
}

fn tree_root<'j>(
    msg: &'j Message,
    contexts: &[Option<&'j Json>],
    record: Option<&'j Json>,
    src: &Src,
) -> Option<&'j Json> {
    match src {
        Src::Payload => Some(&msg.payload),
        Src::Context(i) => contexts.get(*i).copied().flatten(),
        Src::Record => record,
    }
}

/// Navigates objects by key.
pub fn get_path<'j, 's>(
    root: &'j Json,
    segments: impl IntoIterator<Item = &'s String>,
) -> Option<&'j Json> {
    segments
        .into_iter()
        .try_fold(root, |node, seg| node.as_object()?.get(seg))
}

/// All matches of a wildcard pattern: (captured segments, value).
///
/// `*` at the end (or alone) captures down to the leaves (any non-object
/// value, or an empty object); `*` followed by more segments captures any
/// object path (one or more segments) under which those segments exist.
pub fn enumerate<'j>(root: &'j Json, pat: &Pattern) -> Vec<(Vec<String>, &'j Json)> {
    let mut out = Vec::new();
    let Some(start) = get_path(root, &pat.prefix) else {
        return out;
    };
    let mut path = Vec::new();
    walk(start, &pat.suffix, &mut path, &mut out);
    out
}

fn walk<'j>(
    node: &'j Json,
    suffix: &[String],
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, &'j Json)>,
) {
    let Some(obj) = node.as_object() else { return };
    for (k, v) in obj {
        path.push(k.to_string());
        if suffix.is_empty() {
            match v.as_object() {
                Some(o) if !o.is_empty() => walk(v, suffix, path, out),
                _ => out.push((path.clone(), v)),
            }
        } else {
            if let Some(found) = get_path(v, suffix) {
                out.push((path.clone(), found));
            }
            walk(v, suffix, path, out);
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;

    fn pat(prefix: &[&str], wildcard: bool, suffix: &[&str]) -> Pattern {
        Pattern {
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            wildcard,
            suffix: suffix.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn caps(root: &Json, p: &Pattern) -> Vec<(String, Json)> {
        enumerate(root, p)
            .into_iter()
            .map(|(c, v)| (c.join("|"), v.clone()))
            .collect()
    }

    #[test]
    fn enumerate_leaves_and_suffix() {
        let doc = json!({"a": {"b": 1, "c": {"d": 2}, "e": {}}, "f": [1]});
        assert_eq!(
            caps(&doc, &pat(&[], true, &[])),
            vec![
                ("a|b".into(), json!(1)),
                ("a|c|d".into(), json!(2)),
                ("a|e".into(), json!({})),
                ("f".into(), json!([1]))
            ]
        );
        assert_eq!(
            caps(&doc, &pat(&["a"], true, &[])),
            vec![
                ("b".into(), json!(1)),
                ("c|d".into(), json!(2)),
                ("e".into(), json!({}))
            ]
        );
        assert_eq!(
            caps(&doc, &pat(&[], true, &["d"])),
            vec![("a|c".into(), json!(2))]
        );
        assert!(caps(&doc, &pat(&["zz"], true, &[])).is_empty());
    }

    #[test]
    fn reads_borrow_and_fall_back_to_last_value() {
        let mut msg = Message::new("t/1", json!({"a": {"b": 1}, "n": null}));
        msg.user_properties.push(("k".into(), "v".into()));
        let mut last = LastValues::default();
        let n = Access::Tree(Src::Payload, pat(&["n"], false, &[]));
        let slot = last.slot(&n);
        last.record(|_| Some(json!(7)));
        let env = Env {
            msg: &msg,
            contexts: &[],
            record: None,
            last: &last,
        };
        let ab = Access::Tree(Src::Payload, pat(&["a"], true, &[]));
        assert_eq!(env.read(&ab, &["b".into()]), Some(Found::Json(&json!(1))));
        assert_eq!(env.read(&Access::Topic, &[]), Some(Found::Text("t/1")));
        let k = Access::UserProperty("k".into());
        assert_eq!(env.read(&k, &[]).map(Found::to_json), Some(json!("v")));
        assert_eq!(env.read(&Access::ContentType, &[]), None);
        let plain = Input {
            access: n.clone(),
            last: None,
        };
        assert!(env.read_input(&plain, &[]).is_some_and(Found::is_null));
        let with_last = Input {
            access: n,
            last: Some(slot),
        };
        let mut vals = vec![Value::Bool(true)];
        env.read_values(&[plain, with_last], &[], &mut vals);
        assert_eq!(vals, vec![Value::Empty, Value::Int(7)]);
    }
}
