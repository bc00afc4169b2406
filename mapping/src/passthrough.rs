//! The whole-payload pass-through (`'*' → '*'` as `map[0]`), applied by
//! moving the payload instead of copying it leaf by leaf.
//!
//! When no later rule has a wildcard `inputs[0]`, every later rule resolves
//! to rank 0, so the specialization rule cancels exactly the pass-through
//! leaves at or under the fields those rules read with `inputs[0]`: a set
//! known at compile time. The pass-through's output is then the payload
//! without those subtrees (objects they leave empty disappear, as no leaf
//! under them is written).

use super::json::Json;
use super::json_map::Map;

use super::path::{OutputPath, Pattern};
use super::rules::{Access, MapRule, Src};

/// A `map[0]` pass-through with the payload fields later rules cancel.
#[derive(Debug, Clone, PartialEq)]
pub struct PassThrough {
    cancelled: Vec<Vec<String>>,
}

fn whole(pattern: &Pattern) -> bool {
    pattern.wildcard && pattern.prefix.is_empty() && pattern.suffix.is_empty()
}

fn copies_whole_payload(rule: &MapRule) -> bool {
    let [input] = rule.inputs.as_slice() else {
        return false;
    };
    let whole_input = matches!(&input.access, Access::Tree(Src::Payload, p) if whole(p));
    let whole_output = matches!(&rule.output, OutputPath::Payload(p) if whole(p));
    rule.expr.is_none() && whole_input && whole_output
}

impl PassThrough {
    /// The pass-through of `maps[0]`, if it can be applied by moving.
    pub fn detect(maps: &[MapRule]) -> Option<PassThrough> {
        let (first, later) = maps.split_first()?;
        if !copies_whole_payload(first)
            || later.iter().any(|r| r.inputs.iter().any(|i| i.wildcard()))
        {
            return None;
        }
        let cancelled = later
            .iter()
            .filter_map(|r| match &r.inputs.first()?.access {
                Access::Tree(Src::Payload, p) => Some(p.prefix.clone()),
                _ => None,
            })
            .collect();
        Some(PassThrough { cancelled })
    }

    /// The pass-through's output for `payload` (a non-object copies nothing).
    pub fn apply(&self, mut payload: Json) -> Json {
        if !payload.is_object() {
            return Json::Object(Map::new());
        }
        for path in &self.cancelled {
            remove(&mut payload, path);
        }
        payload
    }
}

/// Removes the field at `path`, then any object this leaves empty.
/// Returns whether something was removed.
fn remove(node: &mut Json, path: &[String]) -> bool {
    let (Some(obj), Some((first, rest))) = (node.as_object_mut(), path.split_first()) else {
        return false;
    };
    if rest.is_empty() {
        return obj.remove(first).is_some();
    }
    let Some(child) = obj.get_mut(first) else {
        return false;
    };
    let removed = remove(child, rest);
    if removed && child.as_object().is_some_and(Map::is_empty) {
        obj.remove(first);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;
    use crate::last_value::LastValues;
    use crate::rules::CompileCtx;
    use crate::settings::MapSettings;

    fn rules(specs: &[(&[&str], &str)]) -> Vec<MapRule> {
        let mut last = LastValues::default();
        let mut ctx = CompileCtx {
            dataset_names: &["d".to_string()],
            last: &mut last,
        };
        specs
            .iter()
            .enumerate()
            .map(|(i, (inputs, output))| {
                let s = MapSettings {
                    inputs: inputs.iter().map(|t| t.to_string()).collect(),
                    output: Some(output.to_string()),
                    expression: None,
                    ..MapSettings::default()
                };
                MapRule::compile(i, &s, &mut ctx).unwrap()
            })
            .collect()
    }

    fn cancelled(specs: &[(&[&str], &str)]) -> Option<Vec<String>> {
        let p = PassThrough::detect(&rules(specs))?;
        Some(p.cancelled.iter().map(|c| c.join(".")).collect())
    }

    #[test]
    fn detects_a_leading_whole_payload_copy() {
        let later: (&[&str], &str) = (&["a.b"], "x");
        let meta: (&[&str], &str) = (&["$metadata.topic"], "t");
        let context: (&[&str], &str) = (&["$context(d).s"], "s");
        let removal: (&[&str], &str) = (&["\"c.d\""], "");
        assert_eq!(
            cancelled(&[(&["*"], "*"), later, meta, context, removal]),
            Some(vec!["a.b".to_string(), "c.d".to_string()])
        );
        assert_eq!(cancelled(&[(&["*"], "*")]), Some(vec![]));
        assert_eq!(cancelled(&[later, (&["*"], "*")]), None);
        assert_eq!(cancelled(&[(&["a.*"], "*")]), None);
        assert_eq!(cancelled(&[(&["*"], "a.*")]), None);
        assert_eq!(cancelled(&[(&["*"], "*"), (&["x.*"], "y.*")]), None);
        assert_eq!(cancelled(&[(&["$context(d).*"], "*")]), None);
    }

    #[test]
    fn removes_cancelled_fields_and_the_objects_they_empty() {
        let p = PassThrough {
            cancelled: ["a.b", "a.c", "e.f", "g.h", "k"]
                .iter()
                .map(|s| s.split('.').map(String::from).collect())
                .collect(),
        };
        let payload = json!({
            "a": {"b": 1, "c": {"x": 2}},
            "e": {"f": 1, "keep": {}},
            "g": 5,
            "k": {"deep": 1},
            "l": {}
        });
        assert_eq!(
            p.apply(payload),
            json!({"e": {"keep": {}}, "g": 5, "l": {}})
        );
        assert_eq!(p.apply(json!([1, 2])), json!({}));
        assert_eq!(p.apply(json!({"a": {}})), json!({"a": {}}));
    }
}
