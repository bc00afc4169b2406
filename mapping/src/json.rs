//! The JSON tree the transform reads and writes: message payloads, dataset
//! records and last known values.
//!
//! Why not `serde_json::Value`: its objects are `BTreeMap<String, _>`, so a
//! 300-byte message costs a B-tree node and a heap key per field when parsed,
//! cloned or edited, and that (with malloc) was most of the time of a
//! transformation. Here an object is a vector of fields in document order
//! with inline keys (up to 24 bytes without allocation); lookups scan, which
//! is faster than a tree for the small objects of telemetry messages.
//!
//! Semantics follow `serde_json::Value` except key order: fields keep the
//! order of the input document, new fields are appended (JSON objects are
//! unordered, RFC 8259 §4; see CHOICES.md). Duplicate keys in a parsed
//! document keep the last value, at the first key's place, as before.

use std::fmt;

use compact_str::CompactString;
use serde_json::Number;

use super::json_map::Map;
use super::json_parse;

/// A JSON value (see the module documentation for why not serde_json's).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Json {
    /// `null`.
    #[default]
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as serde_json keeps it (u64, i64 or finite f64).
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, fields in document order.
    Object(Map),
}

/// An object key (inline up to 24 bytes).
pub type Key = CompactString;

static NULL: Json = Json::Null;

/// `json!` of serde_json, converted: literals for the crate's unit tests.
#[cfg(test)]
macro_rules! json_literal {
    ($($t:tt)+) => {
        $crate::json::Json::from(::serde_json::json!($($t)+))
    };
}
#[cfg(test)]
pub(crate) use json_literal as json;

impl Json {
    /// Parses a JSON document: what serde_json accepts, with its values
    /// and error messages (most documents take a faster path, see
    /// `json_parse.rs`).
    pub fn from_slice(bytes: &[u8]) -> Result<Json, serde_json::Error> {
        match json_parse::parse(bytes) {
            Some(json) => Ok(json),
            None => serde_json::from_slice(bytes),
        }
    }

    /// Serializes as compact JSON text.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Appends the compact JSON text to `out` (give it the capacity the
    /// text will likely need to spare the reallocations).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self)
            .expect("writing a Json tree to memory cannot fail: keys are strings, numbers finite");
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The object, if this is one, for editing.
    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.as_object()?.get(key)
    }
}

/// `json["field"]`: the field, or `null` when absent or not an object.
impl std::ops::Index<&str> for Json {
    type Output = Json;
    fn index(&self, key: &str) -> &Json {
        self.get(key).unwrap_or(&NULL)
    }
}

impl fmt::Display for Json {
    /// Compact JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Json {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(b),
            serde_json::Value::Number(n) => Json::Number(n),
            serde_json::Value::String(s) => Json::String(s),
            serde_json::Value::Array(a) => Json::Array(a.into_iter().map(Json::from).collect()),
            serde_json::Value::Object(o) => Json::Object(
                o.into_iter()
                    .map(|(k, v)| (Key::from(k), Json::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<Json> for serde_json::Value {
    fn from(v: Json) -> serde_json::Value {
        match v {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(b),
            Json::Number(n) => serde_json::Value::Number(n),
            Json::String(s) => serde_json::Value::String(s),
            Json::Array(a) => serde_json::Value::Array(a.into_iter().map(Into::into).collect()),
            Json::Object(o) => serde_json::Value::Object(
                o.into_iter()
                    .map(|(k, v)| (k.into_string(), v.into()))
                    .collect(),
            ),
        }
    }
}

/// Compares with a serde_json value (object key order is not significant).
impl PartialEq<serde_json::Value> for Json {
    fn eq(&self, other: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (self, other) {
            (Json::Null, V::Null) => true,
            (Json::Bool(a), V::Bool(b)) => a == b,
            (Json::Number(a), V::Number(b)) => a == b,
            (Json::String(a), V::String(b)) => a == b,
            (Json::Array(a), V::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (Json::Object(a), V::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v == w))
            }
            _ => false,
        }
    }
}

impl From<i64> for Json {
    fn from(i: i64) -> Json {
        Json::Number(i.into())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::String(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_text_and_serde_json_keeping_document_order() {
        let text =
            r#"{"z":1,"a":{"y":[1,2.5,"s",null,true],"b":{}},"m":-3,"u":18446744073709551615}"#;
        let doc = Json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(doc.to_vec()).unwrap(), text);
        assert_eq!(doc.to_string(), text);
        let serde: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(doc, serde);
        assert_eq!(Json::from(serde.clone()), doc);
        assert_eq!(serde_json::Value::from(doc.clone()), serde);
        assert_eq!(doc["a"]["y"], json!([1, 2.5, "s", null, true]));
        assert_eq!(doc["missing"], Json::Null);
        assert_eq!(doc["z"]["deeper"], Json::Null);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_at_the_first_place() {
        let doc = Json::from_slice(br#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(doc.to_string(), r#"{"a":3,"b":2}"#);
        let many: Vec<String> = (0..100).map(|i| format!("\"k{}\":{i}", i % 40)).collect();
        let doc = Json::from_slice(format!("{{{}}}", many.join(",")).as_bytes()).unwrap();
        let obj = doc.as_object().unwrap();
        assert_eq!(obj.len(), 40);
        assert_eq!(obj.iter().next().map(|(k, _)| k), Some("k0"));
        assert_eq!(doc["k0"], json!(80));
        assert_eq!(doc["k39"], json!(79));
    }

    #[test]
    fn objects_compare_whatever_their_key_order() {
        let a = Json::from_slice(br#"{"a":1,"b":{"c":2,"d":3}}"#).unwrap();
        let b = Json::from_slice(br#"{"b":{"d":3,"c":2},"a":1}"#).unwrap();
        let c = Json::from_slice(br#"{"b":{"d":3,"c":2},"a":2}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let big = |order: &mut dyn Iterator<Item = usize>| {
            Json::Object(
                order
                    .map(|i| (Key::from(format!("k{i}")), Json::from(i as i64)))
                    .collect(),
            )
        };
        assert_eq!(big(&mut (0..50)), big(&mut (0..50).rev()));
        assert_ne!(big(&mut (0..50)), big(&mut (1..51)));
    }

    #[test]
    fn numbers_keep_serde_json_spelling() {
        let doc = Json::from_slice(b"[1, 1.0, -0.0, 1e3, 12345678901234567890]").unwrap();
        assert_eq!(doc.to_string(), "[1,1.0,-0.0,1000.0,12345678901234567890]");
    }
}
