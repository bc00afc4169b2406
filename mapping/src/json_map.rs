//! JSON objects as a vector of fields in document order (see `json.rs` for
//! why). Lookups scan the fields: for the tens of fields of a telemetry
//! message that beats hashing or a tree. Each field carries a tag (its
//! length and first bytes) so the scan compares one word per field and
//! reads a key only when the tags match.

use std::collections::HashMap;

use super::json::{Json, Key};

/// A JSON object: unique keys, in document (then insertion) order.
#[derive(Debug, Clone, Default)]
pub struct Map {
    fields: Vec<Field>,
}

/// One field of an object.
#[derive(Debug, Clone)]
pub struct Field {
    tag: u64,
    key: Key,
    value: Json,
}

/// The first 7 bytes of a key and its length (capped at 255) in one word:
/// equal keys have equal tags; keys of up to 7 bytes are equal when their
/// tags are.
fn tag(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let mut word = [0u8; 8];
    let head = bytes.len().min(7);
    word[..head].copy_from_slice(&bytes[..head]);
    word[7] = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    u64::from_le_bytes(word)
}

impl Field {
    fn new(key: Key, value: Json) -> Field {
        Field {
            tag: tag(&key),
            key,
            value,
        }
    }

    fn is(&self, tag: u64, key: &str) -> bool {
        self.tag == tag && (key.len() <= 7 || self.key == key)
    }
}

/// Above this many fields duplicates are found with a hash set, not by
/// comparing every pair.
const SCAN_LIMIT: usize = 32;

impl Map {
    /// An empty object.
    pub fn new() -> Map {
        Map::default()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn position(&self, key: &str) -> Option<usize> {
        let t = tag(key);
        self.fields.iter().position(|f| f.is(t, key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        let t = tag(key);
        self.fields.iter().find(|f| f.is(t, key)).map(|f| &f.value)
    }

    /// The value of `key`, for editing.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        let t = tag(key);
        let field = self.fields.iter_mut().find(|f| f.is(t, key));
        field.map(|f| &mut f.value)
    }

    /// The value of `key`, inserting `make()` at the end when absent.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> Json) -> &mut Json {
        let at = match self.position(key) {
            Some(at) => at,
            None => {
                self.fields.push(Field::new(Key::from(key), make()));
                self.fields.len() - 1
            }
        };
        &mut self.fields[at].value
    }

    /// Sets `key`: in place when present, at the end otherwise.
    pub fn insert(&mut self, key: &str, value: Json) {
        match self.get_mut(key) {
            Some(v) => *v = value,
            None => self.fields.push(Field::new(Key::from(key), value)),
        }
    }

    /// Removes `key`, keeping the order of the other fields.
    pub fn remove(&mut self, key: &str) -> Option<Json> {
        let at = self.position(key)?;
        Some(self.fields.remove(at).value)
    }

    /// The fields in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Json)> {
        self.into_iter()
    }

    /// An object of fields known to have unique keys.
    pub(crate) fn from_unique(fields: impl Iterator<Item = (Key, Json)>) -> Map {
        let fields = fields.map(|(k, v)| Field::new(k, v)).collect();
        Map { fields }
    }

    /// An object of parsed fields: a repeated key keeps its first place and
    /// its last value, as `serde_json` does.
    pub(crate) fn from_parsed(mut fields: Vec<(Key, Json)>) -> Map {
        if has_duplicates(&fields) {
            fields = merge_duplicates(fields);
        }
        Map::from_unique(fields.into_iter())
    }
}

/// Whether a key repeats.
pub(crate) fn has_duplicates<K: AsRef<str>>(fields: &[(K, Json)]) -> bool {
    if fields.len() <= SCAN_LIMIT {
        let key = |i: usize| fields[i].0.as_ref();
        return (0..fields.len()).any(|i| (0..i).any(|j| key(j) == key(i)));
    }
    let mut seen = std::collections::HashSet::with_capacity(fields.len());
    !fields.iter().all(|(k, _)| seen.insert(k.as_ref()))
}

fn merge_duplicates(fields: Vec<(Key, Json)>) -> Vec<(Key, Json)> {
    let mut place: HashMap<Key, usize> = HashMap::with_capacity(fields.len());
    let mut merged: Vec<(Key, Json)> = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        match place.get(&k) {
            Some(&at) => merged[at].1 = v,
            None => {
                place.insert(k.clone(), merged.len());
                merged.push((k, v));
            }
        }
    }
    merged
}

impl FromIterator<(Key, Json)> for Map {
    fn from_iter<I: IntoIterator<Item = (Key, Json)>>(iter: I) -> Map {
        Map::from_parsed(iter.into_iter().collect())
    }
}

impl IntoIterator for Map {
    type Item = (Key, Json);
    type IntoIter = std::iter::Map<std::vec::IntoIter<Field>, fn(Field) -> (Key, Json)>;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.into_iter().map(|f| (f.key, f.value))
    }
}

impl<'m> IntoIterator for &'m Map {
    type Item = (&'m str, &'m Json);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'m, Field>, fn(&'m Field) -> (&'m str, &'m Json)>;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.iter().map(|f| (f.key.as_str(), &f.value))
    }
}

/// Objects are equal when they have the same keys with equal values,
/// whatever the order.
impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        if self.len() != other.len() {
            return false;
        }
        if self.len() <= SCAN_LIMIT {
            return self.iter().all(|(k, v)| other.get(k) == Some(v));
        }
        sorted(self) == sorted(other)
    }
}

fn sorted(m: &Map) -> Vec<(&str, &Json)> {
    let mut fields: Vec<(&str, &Json)> = m.iter().collect();
    fields.sort_unstable_by_key(|(k, _)| *k);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &Map) -> Vec<&str> {
        m.iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn edits_keep_document_order() {
        let mut m = Map::new();
        m.insert("b", Json::from(1));
        m.insert("a", Json::from(2));
        m.insert("b", Json::from(3));
        assert_eq!(keys(&m), ["b", "a"]);
        assert_eq!(m.get("b"), Some(&Json::from(3)));
        m.get_or_insert_with("c", Json::default);
        *m.get_or_insert_with("a", || unreachable!()) = Json::from(4);
        assert_eq!(keys(&m), ["b", "a", "c"]);
        assert_eq!(m.get("a"), Some(&Json::from(4)));
        assert_eq!(m.remove("b"), Some(Json::from(3)));
        assert_eq!(m.remove("b"), None);
        assert_eq!(keys(&m), ["a", "c"]);
        let long = "a key much longer than twenty-four bytes";
        m.insert(long, Json::Null);
        assert_eq!(m.get(long), Some(&Json::Null));
        assert!(m.get_mut("zz").is_none());
    }

    #[test]
    fn keys_with_equal_tags_are_told_apart() {
        let long = |c: char| format!("{}{c}", "k".repeat(300));
        let keys = [
            "",
            "a",
            "abcdefg",
            "abcdefgX",
            "abcdefgY",
            "abcdefgXY",
            &long('x'),
            &long('y'),
        ];
        let mut m = Map::new();
        for (i, k) in keys.iter().enumerate() {
            m.insert(k, Json::from(i as i64));
        }
        assert_eq!(m.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k), Some(&Json::from(i as i64)), "{k}");
        }
        assert_eq!(m.get("abcdefgZ"), None);
        assert_eq!(m.get(&long('z')), None);
        assert_eq!(m.remove("abcdefgY"), Some(Json::from(4)));
        assert_eq!(m.get("abcdefgX"), Some(&Json::from(3)));
    }
}
