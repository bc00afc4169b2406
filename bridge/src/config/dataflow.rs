//! `kind: Dataflow`, with the field names of Azure IoT Operations.

use serde::Deserialize;

use super::enums::{ci_enum, Toggle};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataflowSpec {
    pub profile_ref: String,
    pub mode: Option<Toggle>,
    /// Accepted for compatibility: an appliance's disk queues are always
    /// persistent in `Disk` storage mode.
    pub request_disk_persistence: Option<Toggle>,
    pub operations: Vec<OperationSpec>,
}

ci_enum!(OperationType {
    Source,
    BuiltInTransformation,
    Destination
});

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationSpec {
    pub operation_type: OperationType,
    pub name: Option<String>,
    pub source_settings: Option<SourceSettings>,
    pub built_in_transformation_settings: Option<serde_yaml::Value>,
    pub destination_settings: Option<DestinationSettings>,
}

ci_enum!(SerializationFormat { Json });

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSettings {
    pub endpoint_ref: String,
    pub data_sources: Vec<String>,
    pub asset_ref: Option<String>,
    pub serialization_format: Option<SerializationFormat>,
    pub schema_ref: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationSettings {
    pub endpoint_ref: String,
    pub data_destination: String,
    pub headers: Option<serde_yaml::Value>,
}
