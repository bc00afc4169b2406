//! Reference data for enrichment (§2.7): an in-memory store of JSON
//! records per state-store key, a JSON Lines parser, and the
//! `'<key> as <alias>'` syntax. Loading and reloading from files or the
//! state store is done by the caller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::json::Json;

use super::error::DatasetError;

/// Reference data records, by state-store key.
#[derive(Debug, Clone, Default)]
pub struct Datasets {
    records: HashMap<String, Vec<Json>>,
    /// Changes with every modification (unique across stores), so compiled
    /// transforms can cache indexes of the records.
    generation: u64,
}

impl PartialEq for Datasets {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

/// Generations handed out so far; 0 is every store that was never modified.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

impl Datasets {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Identifies the current content: equal generations mean equal records.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn modified(&mut self) {
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
    }

    /// Replaces the records stored under `key`.
    pub fn set<J: Into<Json>>(&mut self, key: impl Into<String>, records: Vec<J>) {
        let records = records.into_iter().map(Into::into).collect();
        self.records.insert(key.into(), records);
        self.modified();
    }

    /// Parses JSON Lines text and stores it under `key`.
    pub fn set_json_lines(
        &mut self,
        key: impl Into<String>,
        text: &str,
    ) -> Result<(), DatasetError> {
        let records = parse_json_lines(text)?;
        self.set(key, records);
        Ok(())
    }

    /// Removes a key; returns its records.
    pub fn remove(&mut self, key: &str) -> Option<Vec<Json>> {
        self.modified();
        self.records.remove(key)
    }

    /// The records stored under `key`.
    pub fn get(&self, key: &str) -> Option<&[Json]> {
        self.records.get(key).map(Vec::as_slice)
    }

    /// The stored keys (unordered).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }
}

/// Parses JSON Lines: one JSON object per line; blank lines are skipped.
/// Errors name the 1-based line (and column when JSON is malformed).
pub fn parse_json_lines(text: &str) -> Result<Vec<Json>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v = Json::from_slice(line.as_bytes()).map_err(|e| {
            let full = e.to_string();
            let msg = match full.rfind(" at line ") {
                Some(p) => &full[..p],
                None => full.as_str(),
            };
            DatasetError {
                line: line_no,
                message: format!("{msg} at column {}", e.column()),
            }
        })?;
        if !v.is_object() {
            return Err(DatasetError {
                line: line_no,
                message: "expected a JSON object".to_string(),
            });
        }
        out.push(v);
    }
    Ok(out)
}

/// Splits `'<key> as <alias>'` (the word `as` is case-insensitive and
/// surrounded by whitespace). Returns (state-store key, name in rules).
pub fn split_key_alias(spec: &str) -> (String, String) {
    let words: Vec<&str> = spec.split_whitespace().collect();
    if words.len() >= 3 && words[words.len() - 2].eq_ignore_ascii_case("as") {
        let alias = words[words.len() - 1].to_string();
        let key = words[..words.len() - 2].join(" ");
        return (key, alias);
    }
    let key = spec.trim().to_string();
    (key.clone(), key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;

    #[test]
    fn json_lines() {
        let recs = parse_json_lines("{\"a\":1}\n\n  {\"a\":2}\r\n").unwrap();
        assert_eq!(recs, vec![json!({"a":1}), json!({"a":2})]);
        let e = parse_json_lines("{\"a\":1}\n{\"a\":\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(
            e.to_string(),
            "line 2: EOF while parsing a value at column 5"
        );
        let e = parse_json_lines("{}\n[1]").unwrap_err();
        assert_eq!(e.to_string(), "line 2: expected a JSON object");
    }

    #[test]
    fn store() {
        let mut d = Datasets::new();
        d.set("k", vec![json!({"x": 1})]);
        assert_eq!(d.get("k").map(<[Json]>::len), Some(1));
        d.set_json_lines("j", "{\"y\":2}").unwrap();
        assert_eq!(d.get("j"), Some(&[json!({"y": 2})][..]));
        assert!(d.remove("k").is_some());
        assert!(d.get("k").is_none());
    }

    #[test]
    fn generation_changes_with_every_modification() {
        let mut a = Datasets::new();
        let mut b = Datasets::new();
        assert_eq!(a.generation(), b.generation());
        a.set("k", Vec::<Json>::new());
        b.set("k", Vec::<Json>::new());
        assert_ne!(a.generation(), b.generation());
        assert_eq!(a, b);
        let c = a.clone();
        assert_eq!(c.generation(), a.generation());
        let before = a.generation();
        a.remove("k");
        assert_ne!(a.generation(), before);
    }

    #[test]
    fn key_alias() {
        assert_eq!(
            split_key_alias("assetDataset as asset"),
            ("assetDataset".into(), "asset".into())
        );
        assert_eq!(
            split_key_alias("a.b.c  AS  x"),
            ("a.b.c".into(), "x".into())
        );
        assert_eq!(split_key_alias("plain"), ("plain".into(), "plain".into()));
    }
}
