//! Expression values and the JSON <-> expression type rules (§2.6).
//!
//! * JSON string → `Str`, integer number fitting i64 → `Int`, other number →
//!   `Float`, `true`/`false` → `Bool`, `null` → `Empty`, array → `Tuple`
//!   (elements converted recursively), object → `Object` (pass-through only).
//! * Back to JSON: `Empty` is "no value" (the field is not written; inside a
//!   tuple it becomes `null`), non-finite floats are an error.

use super::json::Json;
use super::json_map::Map;

/// A value seen by the expression evaluator.
///
/// The 8-byte tag keeps every payload word-aligned, so the evaluator moves
/// values as whole words (a 1-byte tag let `bool` payloads sit at offset 1
/// and made every move a slow unaligned copy).
#[derive(Debug, Clone, PartialEq)]
#[repr(u64)]
pub enum Value {
    /// Missing field or JSON `null`; written as "no field".
    Empty,
    /// Boolean.
    Bool(bool),
    /// 64-bit signed integer.
    Int(i64),
    /// 64-bit float.
    Float(f64),
    /// UTF-8 string.
    Str(String),
    /// Array (a JSON array).
    Tuple(Vec<Value>),
    /// JSON object: can be copied and compared for equality, not computed with.
    Object(Map),
}

impl Value {
    /// Converts a JSON value (§2.6).
    pub fn from_json(j: &Json) -> Value {
        match j {
            Json::Null => Value::Empty,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s.clone()),
            Json::Array(a) => Value::Tuple(a.iter().map(Value::from_json).collect()),
            Json::Object(o) => Value::Object(o.clone()),
        }
    }

    /// Converts to JSON. `Ok(None)` means Empty (no field is written).
    pub fn to_json(&self) -> Result<Option<Json>, String> {
        match self {
            Value::Empty => Ok(None),
            other => other.to_json_inner().map(Some),
        }
    }

    /// Like [`Value::to_json`], moving strings instead of copying them.
    pub fn into_json(self) -> Result<Option<Json>, String> {
        match self {
            Value::Str(s) => Ok(Some(Json::String(s))),
            other => other.to_json(),
        }
    }

    fn to_json_inner(&self) -> Result<Json, String> {
        Ok(match self {
            Value::Empty => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => Json::Number(n),
                None => return Err(format!("result {f} cannot be written as JSON")),
            },
            Value::Str(s) => Json::String(s.clone()),
            Value::Tuple(items) => Json::Array(
                items
                    .iter()
                    .map(Value::to_json_inner)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Json::Object(o.clone()),
        })
    }

    /// Type name as returned by `typeof` (`object` for JSON objects).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Empty => "empty",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Tuple(_) => "tuple",
            Value::Object(_) => "object",
        }
    }

    /// Numeric view (ints widen to f64).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// `str::from` / string concatenation / metadata text form.
    /// Floats use the JSON spelling (`3.0`), tuples and objects their JSON text.
    pub fn to_text(&self) -> Result<String, String> {
        let mut text = String::new();
        self.write_text(&mut text)?;
        Ok(text)
    }

    /// Appends the [`Value::to_text`] form to `out`.
    pub fn write_text(&self, out: &mut String) -> Result<(), String> {
        use std::fmt::Write;
        match self {
            Value::Empty => {}
            Value::Str(s) => out.push_str(s),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => write!(out, "{i}").expect("writing to a String"),
            other => write!(out, "{}", other.to_json_inner()?).expect("writing to a String"),
        }
        Ok(())
    }

    /// Equality used by `==`, `!=`, `contains`, `contains_any`:
    /// numbers compare numerically across int/float, values of different
    /// types are unequal, `() == ()` is true.
    pub fn loose_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Int(_), Value::Float(_))
            | (Value::Float(_), Value::Int(_))
            | (Value::Float(_), Value::Float(_)) => self.as_f64() == other.as_f64(),
            (Value::Tuple(a), Value::Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq(y))
            }
            _ => self == other,
        }
    }

    /// `self.loose_eq(&Value::from_json(j))` without converting `j`.
    pub fn loose_eq_json(&self, j: &Json) -> bool {
        match (self, j) {
            (Value::Empty, Json::Null) => true,
            (Value::Bool(a), Json::Bool(b)) => a == b,
            (Value::Int(_) | Value::Float(_), Json::Number(_)) => {
                self.loose_eq(&Value::from_json(j))
            }
            (Value::Str(a), Json::String(b)) => a == b,
            (Value::Tuple(a), Json::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq_json(y))
            }
            (Value::Object(a), Json::Object(b)) => a == b,
            _ => false,
        }
    }
}

impl AsRef<Value> for Value {
    fn as_ref(&self) -> &Value {
        self
    }
}

/// Text of a raw JSON value written to a metadata field (topic, user
/// property, content type): strings as-is, everything else as JSON text.
pub fn json_into_text(j: Json) -> String {
    match j {
        Json::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;

    #[test]
    fn json_round_trip() {
        let j = json!({"a": [1, 2.5, "x", true, null]});
        let v = Value::from_json(&j);
        assert_eq!(v.to_json().unwrap(), Some(j));
        assert_eq!(Value::from_json(&json!(null)), Value::Empty);
        assert_eq!(Value::Empty.to_json().unwrap(), None);
    }

    #[test]
    fn big_unsigned_becomes_float() {
        let v = Value::from_json(&json!(u64::MAX));
        assert_eq!(v.type_name(), "float");
    }

    #[test]
    fn non_finite_is_error() {
        assert!(Value::Float(f64::NAN).to_json().is_err());
    }

    #[test]
    fn text_forms() {
        assert_eq!(Value::Float(3.0).to_text().unwrap(), "3.0");
        assert_eq!(Value::Int(3).to_text().unwrap(), "3");
        assert_eq!(
            Value::Tuple(vec![Value::Int(1), Value::Str("a".into())])
                .to_text()
                .unwrap(),
            "[1,\"a\"]"
        );
    }

    #[test]
    fn loose_equality_with_raw_json_matches_converted_json() {
        let samples = [
            json!(null),
            json!(true),
            json!(false),
            json!(2),
            json!(2.0),
            json!(2.5),
            json!(u64::MAX),
            json!("2"),
            json!(""),
            json!([1, "a"]),
            json!([1.0, "a"]),
            json!([null]),
            json!([]),
            json!({"a": 1}),
            json!({"a": 1.0}),
            json!({}),
        ];
        for a in &samples {
            let v = Value::from_json(a);
            for b in &samples {
                let expected = v.loose_eq(&Value::from_json(b));
                assert_eq!(v.loose_eq_json(b), expected, "{a} == {b}");
            }
        }
    }

    #[test]
    fn moving_conversions_match_copies() {
        for v in [Value::Str("s".into()), Value::Int(1), Value::Empty] {
            assert_eq!(v.clone().into_json(), v.to_json());
        }
        assert_eq!(json_into_text(json!("s")), "s");
        assert_eq!(json_into_text(json!([1.5, "s"])), "[1.5,\"s\"]");
        let mut out = String::from(">");
        Value::Float(1.0).write_text(&mut out).unwrap();
        Value::Bool(false).write_text(&mut out).unwrap();
        assert_eq!(out, ">1.0false");
    }

    #[test]
    fn loose_equality() {
        assert!(Value::Int(2).loose_eq(&Value::Float(2.0)));
        assert!(!Value::Int(2).loose_eq(&Value::Str("2".into())));
        assert!(Value::Empty.loose_eq(&Value::Empty));
        assert!(!Value::Int(0).loose_eq(&Value::Empty));
    }
}
