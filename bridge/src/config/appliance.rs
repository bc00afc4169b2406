//! Backhaul's own resource: `kind: Appliance`, `apiVersion: backhaul.dev/v1alpha1`.

use serde::Deserialize;

use super::enums::ci_enum;
use super::security::{
    AuthorizationSpec, BrokerLimitsSpec, ListenerAuthenticationSpec, ListenerTlsSpec,
    ListenerWebSocketSpec,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplianceSpec {
    /// Stable id of this appliance, part of every message id. Defaults to
    /// `metadata.name`.
    pub appliance_id: Option<String>,
    pub listeners: Option<Vec<ListenerSpec>>,
    pub storage: Option<StorageSpec>,
    pub metrics: Option<MetricsSpec>,
    pub retry: Option<RetrySpec>,
    pub queues: Option<QueuesSpec>,
    /// Who may publish and subscribe to what (default: everyone, everything).
    pub authorization: Option<AuthorizationSpec>,
    /// The broker's limits.
    pub limits: Option<BrokerLimitsSpec>,
    /// How Linux schedules the appliance's threads (default `Batch`).
    pub cpu_scheduling: Option<CpuSchedulingSpec>,
}

ci_enum!(
    /// `Batch`: the appliance's threads never preempt a running program
    /// when they wake (Linux `SCHED_BATCH`); `Normal`: `SCHED_OTHER`.
    CpuSchedulingSpec { Batch, Normal }
);

ci_enum!(
    /// What a full queue does with a new message.
    OverflowSpec { DropOldest, RejectNew }
);

/// Limits of data flow queues: `defaults` for every flow, `flows.<name>`
/// overriding them field by field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueuesSpec {
    pub defaults: Option<QueueLimitsSpec>,
    #[serde(default)]
    pub flows: std::collections::BTreeMap<String, QueueLimitsSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueLimitsSpec {
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    pub overflow: Option<OverflowSpec>,
    pub message_ttl_seconds: Option<u64>,
}

/// How data flows retry a failed send.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// First back-off after a failure (default 200 ms); doubles with jitter.
    pub initial_backoff_ms: Option<u64>,
    /// Longest back-off (default 30 s).
    pub max_backoff_seconds: Option<u64>,
    /// Retry interval of a parked flow (default 60 s).
    pub parked_retry_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSpec {
    pub name: Option<String>,
    /// `IP:port` to listen on.
    pub address: String,
    /// TLS (1.2 and 1.3) instead of plain TCP.
    pub tls: Option<ListenerTlsSpec>,
    /// MQTT over WebSocket (`wss` with `tls`) instead of MQTT on the socket.
    pub websocket: Option<ListenerWebSocketSpec>,
    /// Default: Anonymous.
    pub authentication: Option<ListenerAuthenticationSpec>,
    /// Accept Anonymous on an address other than loopback.
    pub allow_anonymous: Option<bool>,
    /// This listener's own limits; unset fields are those of `spec.limits`.
    pub limits: Option<BrokerLimitsSpec>,
}

ci_enum!(
    /// Where data flow queues live.
    StorageModeSpec { Disk, Memory }
);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    pub mode: Option<StorageModeSpec>,
    /// The data directory (queues, local-storage output).
    pub path: Option<String>,
    /// Budget of the queues on disk, in bytes: past it, publishes for data
    /// flows are refused (MQTT 5 PUBACK 0x97).
    pub max_disk_bytes: Option<u64>,
    /// Publishes for data flows are refused while the filesystem would keep
    /// less free than this (default 100 MiB in Disk mode).
    pub min_free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    /// `IP:port` of the metrics and health endpoint.
    pub address: Option<String>,
}
