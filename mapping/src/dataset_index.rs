//! An index of dataset records by the string a match condition compares,
//! rebuilt only when the records change, so `$message == $record` finds the
//! first matching record without scanning.

use std::collections::HashMap;

use super::json::Json;

/// First record position per string key, for one generation of the records.
#[derive(Debug, Clone, Default)]
pub struct StringIndex {
    generation: Option<u64>,
    first: HashMap<String, usize>,
}

impl StringIndex {
    /// Rebuilds the index unless it was built for `generation`. `key` reads
    /// the compared value of a record.
    pub fn refresh<'d>(
        &mut self,
        generation: u64,
        records: &'d [Json],
        key: impl Fn(&'d Json) -> Option<&'d str>,
    ) {
        if self.generation == Some(generation) {
            return;
        }
        self.first.clear();
        for (i, rec) in records.iter().enumerate() {
            if let Some(k) = key(rec) {
                self.first.entry(k.to_owned()).or_insert(i);
            }
        }
        self.generation = Some(generation);
    }

    /// Position of the first record whose key is `k`.
    pub fn first(&self, k: &str) -> Option<usize> {
        self.first.get(k).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;

    fn id(rec: &Json) -> Option<&str> {
        rec.get("id")?.as_str()
    }

    #[test]
    fn keeps_the_first_record_per_key_and_rebuilds_on_a_new_generation() {
        let records = [
            json!({"id": "a"}),
            json!({"id": 1}),
            json!({"id": "a"}),
            json!({"id": "b"}),
        ];
        let mut index = StringIndex::default();
        index.refresh(7, &records, id);
        assert_eq!(index.first("a"), Some(0));
        assert_eq!(index.first("b"), Some(3));
        assert_eq!(index.first("1"), None);
        index.refresh(7, &records[3..], id);
        assert_eq!(index.first("a"), Some(0), "same generation: not rebuilt");
        index.refresh(8, &records[3..], id);
        assert_eq!(index.first("a"), None);
        assert_eq!(index.first("b"), Some(0));
    }
}
