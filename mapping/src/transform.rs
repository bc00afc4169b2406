//! The compiled transform: datasets → filter → map on one message.

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use super::dataset::Datasets;
use super::error::{CompileError, TransformError};
use super::last_value::LastValues;
use super::rules::{
    dataset_names, read_raw, specialize, write_output, Access, CompileCtx, DatasetRule, Env,
    FilterRule, MapRule, Resolution,
};
use super::settings::{SerializationFormat, TransformSettings};

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
    pub fn new(topic: impl Into<String>, payload: Json) -> Self {
        Message {
            topic: topic.into(),
            payload,
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
        // 1. Datasets: first matching record per dataset.
        let mut contexts: Vec<Option<&Json>> = Vec::with_capacity(self.datasets.len());
        for d in &self.datasets {
            let records = datasets.get(&d.key).unwrap_or(&[]);
            let found = d
                .find(&msg, records, &self.last)
                .map_err(|m| err(format!("datasets[{}]", d.index), m))?;
            contexts.push(found);
        }

        // Last known values: recorded as the message arrives.
        {
            let (m, c) = (&msg, &contexts);
            self.last.record(|a| read_raw(m, c, None, a, &[]));
        }

        let env = Env {
            msg: &msg,
            contexts: &contexts,
            record: None,
            last: &self.last,
        };

        // 2. Filter: any rule evaluating to true drops the message.
        for f in &self.filters {
            let drops = f
                .drops(&env)
                .map_err(|m| err(format!("filter[{}]", f.index), m))?;
            if drops {
                return Ok(Outcome::Filtered);
            }
        }

        // 3. Map: only mapped outputs are emitted.
        if self.maps.is_empty() {
            return Ok(Outcome::Emit(msg));
        }
        let mut resolutions: Vec<Resolution> = Vec::new();
        for (pos, rule) in self.maps.iter().enumerate() {
            let mut new = Vec::new();
            rule.resolve(&env, pos, &mut new);
            specialize(&mut resolutions, &new);
            resolutions.extend(new);
        }
        let mut out = Message {
            topic: msg.topic.clone(),
            payload: Json::Object(Map::new()),
            user_properties: msg.user_properties.clone(),
            content_type: msg.content_type.clone(),
        };
        let mut written_props = HashSet::new();
        for r in resolutions.iter().filter(|r| r.alive) {
            let rule = &self.maps[r.rule];
            let loc = || format!("map[{}]", rule.index);
            let value = rule.value(&env, &r.capture).map_err(|m| err(loc(), m))?;
            write_output(
                &mut out,
                &mut written_props,
                &rule.output,
                &r.capture,
                value,
            )
            .map_err(|m| err(loc(), m))?;
        }
        Ok(Outcome::Emit(out))
    }
}

fn err(rule: String, message: String) -> TransformError {
    TransformError { rule, message }
}
