//! Serde structures for `builtInTransformationSettings`, with exactly the
//! AIO YAML/ARM field names (camelCase). `conversion` is accepted as an
//! alias of `expression` (older docs). Unknown fields are rejected so that
//! typos (`expresion`) are not silently ignored.
//!
//! `expression` may be written as a YAML/JSON string, boolean or number
//! (`expression: true` is read as the expression `true`); paths
//! (`inputs`, `output`) may be strings, booleans or integers, but not
//! fractional numbers (YAML would turn `2022.10` into `2022.1`): quote them.

use serde::{Deserialize, Deserializer, Serialize};

/// `builtInTransformationSettings` of a `BuiltInTransformation` operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformSettings {
    /// Enrichment datasets (`datasets[]`).
    #[serde(default)]
    pub datasets: Vec<DatasetSettings>,
    /// Filter rules (`filter[]`); any rule evaluating to `true` drops the message.
    #[serde(default)]
    pub filter: Vec<FilterSettings>,
    /// Map rules (`map[]`).
    #[serde(default)]
    pub map: Vec<MapSettings>,
    /// Output serialization format (informational here; serialization is done elsewhere).
    #[serde(default)]
    pub serialization_format: SerializationFormat,
    /// Output schema reference (`aio-sr://...`), informational here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_ref: Option<String>,
}

/// Output serialization format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SerializationFormat {
    /// JSON (default).
    #[default]
    #[serde(alias = "json", alias = "JSON")]
    Json,
    /// Parquet (storage destinations).
    #[serde(alias = "parquet")]
    Parquet,
    /// Delta (storage destinations).
    #[serde(alias = "delta")]
    Delta,
}

/// One entry of `datasets[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetSettings {
    /// State-store key, optionally `'<key> as <alias>'`.
    pub key: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Schema of the reference data (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_ref: Option<String>,
    /// `$source.X` / `$context.X` inputs.
    #[serde(default, deserialize_with = "paths")]
    pub inputs: Vec<String>,
    /// Match condition, e.g. `$1 == $2`.
    #[serde(
        default,
        alias = "conversion",
        deserialize_with = "opt_expression",
        skip_serializing_if = "Option::is_none"
    )]
    pub expression: Option<String>,
}

/// One entry of `filter[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterSettings {
    /// `Filter` (informational).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Field paths, `$1..$n`.
    #[serde(default, deserialize_with = "paths")]
    pub inputs: Vec<String>,
    /// Condition; `true` drops the message.
    #[serde(
        default,
        alias = "conversion",
        deserialize_with = "opt_expression",
        skip_serializing_if = "Option::is_none"
    )]
    pub expression: Option<String>,
}

/// One entry of `map[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapSettings {
    /// `NewProperties` | `Rename` | `Compute` | `PassThrough` | `BuiltInFunction`;
    /// informational, ignored by the engine.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Field paths, `$1..$n`.
    #[serde(default, deserialize_with = "paths")]
    pub inputs: Vec<String>,
    /// Optional expression over `$1..$n` (alias: `conversion`).
    #[serde(
        default,
        alias = "conversion",
        deserialize_with = "opt_expression",
        skip_serializing_if = "Option::is_none"
    )]
    pub expression: Option<String>,
    /// Output path; `''` removes.
    #[serde(
        default,
        deserialize_with = "opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<String>,
}

/// A scalar that may stand for a string in YAML.
struct Scalar {
    allow_fraction: bool,
}

impl<'de> serde::de::Visitor<'de> for Scalar {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.allow_fraction {
            f.write_str("a string, boolean or number")
        } else {
            f.write_str("a string (quote paths that look like fractional numbers)")
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        if self.allow_fraction {
            Ok(format!("{v:?}"))
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
        }
    }
}

struct ScalarSeed(bool);

impl<'de> serde::de::DeserializeSeed<'de> for ScalarSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(Scalar {
            allow_fraction: self.0,
        })
    }
}

struct OptScalar(bool);

impl<'de> serde::de::Visitor<'de> for OptScalar {
    type Value = Option<String>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an optional string")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(ScalarSeed(self.0), d).map(Some)
    }
}

fn opt_expression<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptScalar(true))
}

fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptScalar(false))
}

struct PathList;

impl<'de> serde::de::Visitor<'de> for PathList {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of paths")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element_seed(ScalarSeed(false))? {
            out.push(s);
        }
        Ok(out)
    }
}

fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(PathList)
}
