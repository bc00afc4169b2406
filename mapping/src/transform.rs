//! The compiled transform: datasets → filter → map on one message.

use super::json::Json;
use super::json_map::Map;

use super::dataset::Datasets;
use super::error::{CompileError, TransformError};
use super::last_value::LastValues;
use super::passthrough::PassThrough;
use super::read::{read_raw, Env, Found};
use super::rules::{
    dataset_names, specialize, Access, CompileCtx, DatasetRule, FilterRule, MapRule, Resolution,
};
use super::settings::{SerializationFormat, TransformSettings};
use super::value::Value;
use super::write::{write_output, WrittenProps};

/// A message as seen by the transform.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// MQTT topic (`$metadata.topic`).
    pub topic: String,
    /// JSON payload.
    pub payload: Json,
    /// MQTT v5 user properties, in order, duplicates allowed.
    pub user_properties: Vec<(String, String)>,
    /// MQTT v5 content type (`$metadata.system_property.content_type`).
    pub content_type: Option<String>,
}

impl Message {
    /// A message without properties.
    pub fn new(topic: impl Into<String>, payload: impl Into<Json>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            user_properties: Vec::new(),
            content_type: None,
        }
    }
}

/// Result of applying a transform.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Forward this (possibly rewritten) message.
    Emit(Message),
    /// A filter rule evaluated to `true`: drop the message.
    Filtered,
}

/// A compiled `builtInTransformationSettings`, with its last-value state.
#[derive(Debug, Clone)]
pub struct Transform {
    datasets: Vec<DatasetRule>,
    filters: Vec<FilterRule>,
    maps: Vec<MapRule>,
    /// `map[0]` when it is a whole-payload pass-through applied by moving.
    passthrough: Option<PassThrough>,
    last: LastValues<Access>,
    serialization_format: SerializationFormat,
    schema_ref: Option<String>,
}

impl Transform {
    /// Parses and checks every rule once.
    pub fn compile(s: &TransformSettings) -> Result<Transform, CompileError> {
        let names = dataset_names(&s.datasets)?;
        let mut last = LastValues::default();
        let mut ctx = CompileCtx {
            dataset_names: &names,
            last: &mut last,
        };
        let datasets = s
            .datasets
            .iter()
            .enumerate()
            .map(|(i, d)| DatasetRule::compile(i, d, &mut ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let filters = s
            .filter
            .iter()
            .enumerate()
            .map(|(i, f)| FilterRule::compile(i, f, &mut ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let maps = s
            .map
            .iter()
            .enumerate()
            .map(|(i, m)| MapRule::compile(i, m, &mut ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Transform {
            datasets,
            filters,
            passthrough: PassThrough::detect(&maps),
            maps,
            last,
            serialization_format: s.serialization_format,
            schema_ref: s.schema_ref.clone(),
        })
    }

    /// Output serialization format from the settings.
    pub fn serialization_format(&self) -> SerializationFormat {
        self.serialization_format
    }

    /// Output schema reference from the settings.
    pub fn schema_ref(&self) -> Option<&str> {
        self.schema_ref.as_deref()
    }

    /// State-store keys this transform reads (for the dataset loader).
    pub fn dataset_keys(&self) -> Vec<&str> {
        self.datasets.iter().map(|d| d.key.as_str()).collect()
    }

    /// Forgets all `? $last` values (as after a restart).
    pub fn clear_last_values(&mut self) {
        self.last.clear();
    }

    /// Runs datasets → filter → map on one message.
    pub fn apply(&mut self, msg: Message, datasets: &Datasets) -> Result<Outcome, TransformError> {
        // Scratch space for rule input values, reused by every rule.
        let mut vals = Vec::new();
        let contexts = self.match_datasets(&msg, datasets, &mut vals)?;
        self.record_last_values(&msg, &contexts);
        let env = Env {
            msg: &msg,
            contexts: &contexts,
            record: None,
            last: &self.last,
        };
        if self.filtered(&env, &mut vals)? {
            return Ok(Outcome::Filtered);
        }
        if self.maps.is_empty() {
            return Ok(Outcome::Emit(msg));
        }
        let results = self.evaluate_map(&env, &mut vals);
        let mut out = self.output_of(msg);
        results.write(&mut out)?;
        Ok(Outcome::Emit(out))
    }

    /// Stage 1: the first matching record per dataset.
    fn match_datasets<'d>(
        &mut self,
        msg: &Message,
        datasets: &'d Datasets,
        vals: &mut Vec<Value>,
    ) -> Result<Vec<Option<&'d Json>>, TransformError> {
        let mut contexts = Vec::with_capacity(self.datasets.len());
        for d in &mut self.datasets {
            let records = datasets.get(&d.key).unwrap_or(&[]);
            let found = d
                .matcher
                .find(msg, (records, datasets.generation()), &self.last, vals)
                .map_err(|m| err(format!("datasets[{}]", d.index), m))?;
            contexts.push(found);
        }
        Ok(contexts)
    }

    /// Last known values are recorded as the message arrives.
    fn record_last_values(&mut self, msg: &Message, contexts: &[Option<&Json>]) {
        self.last
            .record(|a| read_raw(msg, contexts, None, a, &[]).map(Found::to_json));
    }

    /// Stage 2: whether a filter rule drops the message.
    fn filtered(&self, env: &Env<'_>, vals: &mut Vec<Value>) -> Result<bool, TransformError> {
        for f in &self.filters {
            let drops = f
                .drops(env, vals)
                .map_err(|m| err(format!("filter[{}]", f.index), m))?;
            if drops {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stage 3, reading: the value of every map resolution that is alive.
    fn evaluate_map(&self, env: &Env<'_>, vals: &mut Vec<Value>) -> Results<'_> {
        match &self.passthrough {
            Some(_) => {
                let later = self.maps[1..].iter().map(|r| (r, Vec::new()));
                evaluate(env, later, vals)
            }
            None => {
                let resolutions = resolve(&self.maps, env).into_iter();
                let alive = resolutions.filter(|r| r.alive);
                evaluate(env, alive.map(|r| (&self.maps[r.rule], r.capture)), vals)
            }
        }
    }

    /// Stage 3, writing: the message map results are written into (its
    /// metadata carried over, the payload the pass-through's or empty).
    fn output_of(&self, msg: Message) -> Message {
        let payload = match &self.passthrough {
            Some(p) => p.apply(msg.payload),
            None => Json::Object(Map::new()),
        };
        Message { payload, ..msg }
    }
}

/// Resolves every map rule top-down, applying the specialization rule.
fn resolve(maps: &[MapRule], env: &Env<'_>) -> Vec<Resolution> {
    let mut resolutions: Vec<Resolution> = Vec::new();
    let mut new = Vec::new();
    for (pos, rule) in maps.iter().enumerate() {
        rule.resolve(env, pos, &mut new);
        specialize(&mut resolutions, &new);
        resolutions.append(&mut new);
    }
    resolutions
}

/// A map result waiting to be written.
struct Pending<'r> {
    rule: &'r MapRule,
    capture: Vec<String>,
    value: Option<Json>,
}

/// Map results in rule order, up to the first rule that failed.
struct Results<'r> {
    pending: Vec<Pending<'r>>,
    failure: Option<TransformError>,
}

/// Computes each resolution's value while the input message can be read.
fn evaluate<'r>(
    env: &Env<'_>,
    todo: impl Iterator<Item = (&'r MapRule, Vec<String>)>,
    vals: &mut Vec<Value>,
) -> Results<'r> {
    let mut pending = Vec::with_capacity(todo.size_hint().0);
    for (rule, capture) in todo {
        match rule.value(env, &capture, vals) {
            Ok(value) => pending.push(Pending {
                rule,
                capture,
                value,
            }),
            Err(m) => {
                let failure = Some(err(map_loc(rule), m));
                return Results { pending, failure };
            }
        }
    }
    Results {
        pending,
        failure: None,
    }
}

impl Results<'_> {
    /// Writes in rule order; a write error before the failed rule comes first.
    fn write(self, out: &mut Message) -> Result<(), TransformError> {
        let mut written = WrittenProps::new();
        for p in self.pending {
            write_output(out, &mut written, &p.rule.output, &p.capture, p.value)
                .map_err(|m| err(map_loc(p.rule), m))?;
        }
        self.failure.map_or(Ok(()), Err)
    }
}

fn map_loc(rule: &MapRule) -> String {
    format!("map[{}]", rule.index)
}

fn err(rule: String, message: String) -> TransformError {
    TransformError { rule, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;

    fn compile(map: Json) -> Transform {
        let map = serde_json::Value::from(map);
        let settings = serde_json::json!({"datasets": [{"key": "d", "inputs": ["$source.id", "$context.id"], "expression": "$1 == $2"}], "map": map});
        let settings: TransformSettings = serde_json::from_value(settings).unwrap();
        Transform::compile(&settings).unwrap()
    }

    /// The pass-through applied by moving gives what resolving every leaf
    /// and specializing gives, errors included.
    #[test]
    fn moved_pass_through_equals_the_general_resolution() {
        let maps = [
            json!([{"inputs": ["*"], "output": "*"}]),
            json!([
                {"inputs": ["*"], "output": "*"},
                {"inputs": ["a.b"], "output": "a.c", "expression": "$1 * 2"},
                {"inputs": ["x"], "output": ""},
                {"inputs": ["e.f", "a.z"], "output": "sum", "expression": "$1 + $2"},
                {"inputs": ["$context(d).site"], "output": "site"},
                {"inputs": ["$metadata.topic"], "output": "$metadata.user_property.t"},
                {"inputs": [], "output": "k", "expression": "1"}
            ]),
            json!([
                {"inputs": ["*"], "output": "*"},
                {"inputs": ["a"], "output": "a.deeper", "expression": "$1"},
                {"inputs": ["s"], "output": "s.t"},
                {"inputs": ["a.b"], "output": "id.below"},
                {"inputs": ["e.f"], "output": "bad", "expression": "$1 / 0"}
            ]),
        ];
        let mut payloads = vec![
            json!({"id": 1, "a": {"b": 2, "z": 3}, "x": {"y": 1}, "e": {"f": 4, "g": {}}, "s": "t"}),
            json!({"id": 2, "a": 5, "e": {"f": 1}, "s": {"t": 1}}),
            json!({"a": {"b": 1}, "x": 1}),
            json!({}),
            json!([1, 2]),
            json!("text"),
        ];
        payloads.extend(corpus_payloads());
        let mut datasets = Datasets::new();
        datasets.set("d", vec![json!({"id": 1, "site": "p"})]);
        for map in &maps {
            let mut fast = compile(map.clone());
            let mut general = compile(map.clone());
            assert!(fast.passthrough.is_some());
            general.passthrough = None;
            for payload in &payloads {
                let mut msg = Message::new("t/1", payload.clone());
                msg.user_properties.push(("t".into(), "old".into()));
                let expected = general.apply(msg.clone(), &datasets);
                assert_eq!(fast.apply(msg, &datasets), expected, "{map} on {payload}");
            }
        }
    }

    /// Output objects keep the message's field order; added fields follow
    /// in the order rules write them (CHOICES.md), with or without the
    /// moved pass-through.
    #[test]
    fn output_keeps_the_field_order_of_the_message_and_appends_in_rule_order() {
        let map = json!([
            {"inputs": ["*"], "output": "*"},
            {"inputs": ["n.b"], "output": "n.a", "expression": "$1 * 2"},
            {"inputs": ["z"], "output": "y"},
            {"inputs": ["k"], "output": "k", "expression": "$1 + 1"},
            {"inputs": [], "output": "c", "expression": "1"}
        ]);
        let payload = br#"{"z":1,"k":5,"n":{"c":0,"b":2},"a":true}"#;
        let mut fast = compile(map.clone());
        let mut general = compile(map);
        general.passthrough = None;
        for transform in [&mut fast, &mut general] {
            let msg = Message::new("t", Json::from_slice(payload).unwrap());
            let Ok(Outcome::Emit(out)) = transform.apply(msg, &Datasets::new()) else {
                panic!("the message must pass");
            };
            assert_eq!(
                String::from_utf8(out.payload.to_vec()).unwrap(),
                r#"{"n":{"c":0,"a":4},"a":true,"y":1,"k":6,"c":1}"#
            );
        }
    }

    /// The same on every fuzz corpus case that has a leading pass-through.
    #[test]
    fn moved_pass_through_equals_the_general_resolution_on_the_fuzz_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/message");
        let mut datasets = Datasets::new();
        datasets.set("d", vec![json!({"a": 1, "site": "x"}), json!({"a": 2})]);
        let mut compared = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let Some((mut fast, msg)) = corpus_case(&data) else {
                continue;
            };
            let mut general = fast.clone();
            general.passthrough = None;
            for _ in 0..2 {
                let expected = general.apply(msg.clone(), &datasets);
                assert_eq!(fast.apply(msg.clone(), &datasets), expected);
            }
            compared += 1;
        }
        assert!(compared > 10, "only {compared} cases with a pass-through");
    }

    /// The payloads of the fuzz corpus (after the NUL of each case).
    fn corpus_payloads() -> Vec<Json> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/message");
        let files = std::fs::read_dir(dir).unwrap();
        let data = files.map(|e| std::fs::read(e.unwrap().path()).unwrap());
        data.filter_map(|d| {
            let at = d.iter().position(|b| *b == 0)?;
            Json::from_slice(&d[at + 1..]).ok()
        })
        .collect()
    }

    /// A corpus case (settings YAML, NUL, payload JSON) with a pass-through.
    fn corpus_case(data: &[u8]) -> Option<(Transform, Message)> {
        let at = data.iter().position(|b| *b == 0)?;
        let settings: serde_json::Value = serde_yaml::from_slice(&data[..at]).ok()?;
        let settings: TransformSettings = serde_json::from_value(settings).ok()?;
        let transform = Transform::compile(&settings).ok()?;
        transform.passthrough.as_ref()?;
        let payload = Json::from_slice(&data[at + 1..]).ok()?;
        let mut msg = Message::new("t/1", payload);
        msg.user_properties.push(("k".into(), "v".into()));
        Some((transform, msg))
    }
}
