//! Last known values for `<path> ? $last` (§2.3): in memory, per compiled
//! transform (i.e. per data flow), lost on restart.
//!
//! Each distinct `? $last` path gets a slot. When a message reaches the
//! transform (after datasets are resolved, before the filter), every slot
//! whose path is present and not `null` in that message is updated, so the
//! filter and map stages see the same "latest value seen", even for
//! messages that are later filtered out or fail.

use super::json::Json;

/// Slots of last known values, keyed by a path description `K`.
#[derive(Debug, Clone)]
pub struct LastValues<K> {
    paths: Vec<K>,
    values: Vec<Option<Json>>,
}

impl<K> Default for LastValues<K> {
    fn default() -> Self {
        LastValues {
            paths: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<K: PartialEq + Clone> LastValues<K> {
    /// The slot for `path`, created on first use (compile time).
    pub fn slot(&mut self, path: &K) -> usize {
        if let Some(i) = self.paths.iter().position(|p| p == path) {
            return i;
        }
        self.paths.push(path.clone());
        self.values.push(None);
        self.paths.len() - 1
    }

    /// Updates every slot from the current message.
    pub fn record(&mut self, mut read: impl FnMut(&K) -> Option<Json>) {
        for (p, v) in self.paths.iter().zip(self.values.iter_mut()) {
            match read(p) {
                None | Some(Json::Null) => {}
                Some(j) => *v = Some(j),
            }
        }
    }

    /// The last value of a slot, if any was seen.
    pub fn get(&self, slot: usize) -> Option<&Json> {
        self.values.get(slot).and_then(Option::as_ref)
    }

    /// Forgets every value (as after a restart).
    pub fn clear(&mut self) {
        self.values.iter_mut().for_each(|v| *v = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;

    #[test]
    fn keeps_latest_non_null() {
        let mut lv: LastValues<&str> = LastValues::default();
        let a = lv.slot(&"a");
        assert_eq!(lv.slot(&"a"), a);
        assert!(lv.get(a).is_none());
        lv.record(|_| Some(json!(1)));
        lv.record(|_| None);
        assert_eq!(lv.get(a), Some(&json!(1)));
        lv.record(|_| Some(Json::Null));
        assert_eq!(lv.get(a), Some(&json!(1)));
        lv.record(|_| Some(json!(2)));
        assert_eq!(lv.get(a), Some(&json!(2)));
        lv.clear();
        assert!(lv.get(a).is_none());
    }
}
