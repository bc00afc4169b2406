//! `kind: DataflowEndpoint`, with the field names of Azure IoT Operations,
//! plus Backhaul's extensions (marked so).

use serde::Deserialize;

use super::enums::{ci_enum, Toggle};

ci_enum!(EndpointType {
    Mqtt,
    Kafka,
    DataLakeStorage,
    FabricOneLake,
    DataExplorer,
    LocalStorage,
    OpenTelemetry,
    EventHubs,
    Http,
});

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataflowEndpointSpec {
    pub endpoint_type: EndpointType,
    pub host_type: Option<String>,
    pub mqtt_settings: Option<MqttSettings>,
    pub local_storage_settings: Option<LocalStorageSettings>,
    pub kafka_settings: Option<serde_yaml::Value>,
    #[serde(alias = "datalakeStorageSettings")]
    pub data_lake_storage_settings: Option<serde_yaml::Value>,
    pub fabric_one_lake_settings: Option<serde_yaml::Value>,
    pub data_explorer_settings: Option<serde_yaml::Value>,
    pub open_telemetry_settings: Option<serde_yaml::Value>,
    pub event_hubs_settings: Option<EventHubsSettings>,
    pub http_settings: Option<serde_yaml::Value>,
}

ci_enum!(MqttProtocol { Mqtt, WebSockets });

ci_enum!(RetainPolicy { Keep, Never });

ci_enum!(CloudEventAttributes {
    Propagate,
    CreateOrRemap
});

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttSettings {
    pub host: Option<String>,
    pub protocol: Option<MqttProtocol>,
    pub client_id_prefix: Option<String>,
    pub qos: Option<u8>,
    pub retain: Option<RetainPolicy>,
    pub session_expiry_seconds: Option<u32>,
    pub keep_alive_seconds: Option<u16>,
    pub max_inflight_messages: Option<u16>,
    pub cloud_event_attributes: Option<CloudEventAttributes>,
    pub tls: Option<TlsSettings>,
    pub authentication: Option<Authentication>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSettings {
    pub mode: Option<Toggle>,
    pub trusted_ca_certificate_config_map_ref: Option<String>,
}

ci_enum!(AuthMethod {
    SystemAssignedManagedIdentity,
    UserAssignedManagedIdentity,
    ServiceAccountToken,
    X509Certificate,
    Sasl,
    AccessToken,
    Anonymous,
});

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    pub method: AuthMethod,
    pub system_assigned_managed_identity_settings: Option<serde_yaml::Value>,
    pub user_assigned_managed_identity_settings: Option<serde_yaml::Value>,
    pub service_account_token_settings: Option<serde_yaml::Value>,
    pub x509_certificate_settings: Option<serde_yaml::Value>,
    pub sasl_settings: Option<serde_yaml::Value>,
    pub access_token_settings: Option<serde_yaml::Value>,
    pub anonymous_settings: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalStorageSettings {
    /// The volume's name; on an appliance, the folder
    /// `<data dir>/local-storage/<name>` unless `path` is set.
    pub persistent_volume_claim_ref: String,
    /// Backhaul extension: the folder to write to (absolute, or relative to
    /// the data directory).
    pub path: Option<String>,
    /// Backhaul extension: a file is closed and a new one started once it
    /// reaches this size (default 64 MiB).
    pub max_file_bytes: Option<u64>,
}

ci_enum!(
    /// Backhaul extension: how events are placed on Event Hubs partitions.
    PartitionStrategySpec { Default, Topic, Property, Static }
);

ci_enum!(EventHubsAuthMethod {
    ConnectionString,
    ClientSecret,
    ClientCertificate
});

/// Backhaul extension: `endpointType: EventHubs` (native AMQP through the
/// official SDK), in the style of the Kafka endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventHubsSettings {
    /// The namespace, `NAME.servicebus.windows.net`.
    pub host: Option<String>,
    pub authentication: Option<EventHubsAuthentication>,
    pub batching: Option<BatchingSettings>,
    pub partition_strategy: Option<PartitionStrategySpec>,
    /// The MQTT user property whose value is the key (`Property`).
    pub partition_key_property: Option<String>,
    /// The partition every event goes to (`Static`).
    pub partition_id: Option<String>,
    pub copy_mqtt_properties: Option<Toggle>,
    /// `amqp://` or `amqps://` address to connect to instead of the namespace.
    pub custom_endpoint: Option<String>,
    /// Longest wait for one SDK call before the connection is replaced
    /// (default 30).
    pub operation_timeout_seconds: Option<u32>,
    /// SDK batches on their way at once, each on its own connection
    /// (default 2; 1 sends one batch at a time, in flow order even without a
    /// partition key).
    pub max_in_flight_batches: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventHubsAuthentication {
    pub method: EventHubsAuthMethod,
    pub connection_string_settings: Option<SecretRefSettings>,
    pub client_secret_settings: Option<ServicePrincipalSettings>,
    pub client_certificate_settings: Option<ServicePrincipalSettings>,
}

/// An Entra ID service principal: `ClientSecret` reads the secret's
/// `clientSecret` key; `ClientCertificate` its `certificate` key (a PKCS#12
/// file, base64) and, if present, `certificatePassword`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePrincipalSettings {
    pub tenant_id: String,
    pub client_id: String,
    pub secret_ref: String,
    /// The Entra ID authority (`https://login.microsoftonline.com` unless
    /// set; sovereign clouds and private authorities differ).
    pub authority_host: Option<String>,
    /// PEM file of certificate authorities trusted for the authority host
    /// besides the system's (TLS-inspecting proxies), relative to the
    /// configuration directory.
    pub authority_ca_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRefSettings {
    pub secret_ref: String,
}

/// As the Kafka endpoint spells it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchingSettings {
    pub mode: Option<Toggle>,
    pub latency_ms: Option<u32>,
    pub max_messages: Option<u32>,
    pub max_bytes: Option<u64>,
}
