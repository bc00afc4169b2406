//! `kind: DataflowProfile`, accepted as Azure IoT Operations writes it.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataflowProfileSpec {
    /// 1–20. An appliance runs one instance of every flow; other values are
    /// accepted for compatibility and have no effect.
    pub instance_count: Option<u32>,
    pub diagnostics: Option<serde_yaml::Value>,
}
