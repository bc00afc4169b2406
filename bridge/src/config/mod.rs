//! Configuration: a directory of YAML documents.
//!
//! Users bring the Azure IoT Operations resources they already write
//! (`Dataflow`, `DataflowEndpoint`, `DataflowProfile`, `apiVersion`
//! `connectivity.iotoperations.azure.com/v1` or `v1beta1`) unchanged, plus
//! at most one document of Backhaul's own kind `Appliance`. Loading checks
//! everything up front and reports every problem at once, each naming the
//! file, the document, the field and what is allowed.
//!
//! - [`document`]: YAML documents to typed resources.
//! - [`appliance`], [`dataflow`], [`endpoint`], [`profile`]: the resources as
//!   written.
//! - This module: the validated model the appliance runs ([`Config`]).

pub mod appliance;
pub mod dataflow;
pub mod document;
pub mod endpoint;
pub mod enums;
pub mod error;
mod event_hubs;
pub mod profile;
pub mod secrets;
pub mod security;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use backhaul_broker::{BrokerSettings, ListenerSettings, TopicFilter};
use backhaul_storage::{QueueLimits, StoreLimits};

pub use self::appliance::{CpuSchedulingSpec, StorageModeSpec};
pub use self::endpoint::RetainPolicy;
pub use self::error::{ConfigError, ConfigErrors, Origin};
use crate::endpoint::eventhubs::EventHubsEndpoint;
use crate::flow::TopicTemplate;
use crate::mapping::Transform;

/// The configuration compiled into the binary: what `backhaul run` uses
/// without `--config` (the same files are in `bridge/default-config/`).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "<embedded>/appliance.yaml",
        include_str!("../../default-config/appliance.yaml"),
    ),
    (
        "<embedded>/dataflows.yaml",
        include_str!("../../default-config/dataflows.yaml"),
    ),
];

pub const DEFAULT_DATA_DIR: &str = "backhaul-data";
pub const DEFAULT_LISTENER: &str = "127.0.0.1:1883";
pub const DEFAULT_METRICS: &str = "127.0.0.1:9600";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub appliance: Appliance,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Every data flow, enabled or not, in file order.
    pub flows: Vec<Flow>,
    /// The configuration directory (none for the built-in configuration);
    /// datasets are read from its `datasets/` folder.
    pub dir: Option<PathBuf>,
}

/// Appliance-wide settings.
#[derive(Debug, Clone)]
pub struct Appliance {
    /// Part of every message id.
    pub id: String,
    pub listeners: Vec<ListenerSettings>,
    /// The broker: listeners, limits and authorization.
    pub broker: BrokerSettings,
    pub storage_mode: StorageModeSpec,
    /// The data directory, if the configuration names one.
    pub data_dir: Option<PathBuf>,
    pub metrics_address: SocketAddr,
    pub retry: Retry,
    /// Store-wide limits (budget, free-space watermark).
    pub store_limits: StoreLimits,
    /// Each flow's queue limits, by flow name (flows not listed: defaults).
    pub queue_limits: BTreeMap<String, QueueLimits>,
    pub default_queue_limits: QueueLimits,
    pub cpu_scheduling: CpuSchedulingSpec,
}

impl Appliance {
    /// The queue limits of flow `name`.
    pub fn limits_of(&self, name: &str) -> QueueLimits {
        self.queue_limits
            .get(name)
            .copied()
            .unwrap_or(self.default_queue_limits)
    }
}

/// How data flows retry failed sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub initial_backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
    pub parked_retry: std::time::Duration,
}

/// A destination (or the local broker, as a source).
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Backhaul's embedded broker.
    LocalBroker,
    Mqtt(MqttEndpoint),
    LocalStorage(LocalStorageEndpoint),
    EventHubs(EventHubsConfig),
}

/// An Event Hubs endpoint: the sink's settings and how flows batch for it.
#[derive(Debug, Clone)]
pub struct EventHubsConfig {
    pub settings: EventHubsEndpoint,
    /// Most messages a flow sends at once (`batching.maxMessages`).
    pub max_messages: usize,
    /// About the most bytes a flow sends at once (`batching.maxBytes`).
    pub max_bytes: usize,
    /// How long a flow waits to fill a batch (`batching.latencyMs`).
    pub linger: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
    pub client_id_prefix: Option<String>,
    pub qos: u8,
    pub retain: RetainPolicy,
    pub keep_alive_seconds: u16,
    pub max_inflight_messages: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStorageEndpoint {
    pub volume: String,
    /// Folder from the `path` extension, if set.
    pub path: Option<PathBuf>,
    pub max_file_bytes: u64,
}

impl LocalStorageEndpoint {
    /// The folder this endpoint writes under.
    pub fn folder(&self, data_dir: &Path) -> PathBuf {
        match &self.path {
            Some(path) if path.is_absolute() => path.clone(),
            Some(path) => data_dir.join(path),
            None => data_dir.join("local-storage").join(&self.volume),
        }
    }
}

/// A data flow: local broker topics to one destination.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub enabled: bool,
    pub sources: Vec<TopicFilter>,
    /// Name of the destination endpoint.
    pub endpoint: String,
    /// `dataDestination`: a topic template (MQTT) or folder (local storage).
    pub destination: TopicTemplate,
    /// The compiled `BuiltInTransformation`, if the flow has one.
    pub transform: Option<Transform>,
    pub origin: Origin,
}

impl Config {
    /// Loads every `*.yaml` / `*.yml` file directly in `dir` (subfolders
    /// such as `secrets/` are not configuration documents).
    pub fn load_dir(dir: &Path) -> Result<Self, ConfigErrors> {
        let fail = |message: String| {
            ConfigErrors(vec![ConfigError {
                file: dir.display().to_string(),
                document: None,
                resource: None,
                field: None,
                message,
            }])
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|err| fail(format!("cannot read the configuration directory: {err}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.is_file()
                    && matches!(
                        path.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml")
                    )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(fail(
                "no .yaml or .yml files in the configuration directory".into(),
            ));
        }
        let mut texts = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|err| fail(format!("cannot read {}: {err}", file.display())))?;
            texts.push((file.display().to_string(), text));
        }
        let borrowed: Vec<(&str, &str)> = texts
            .iter()
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect();
        let config = Self::from_texts_in(&borrowed, Some(dir));
        let datasets = crate::datasets::check_dir(dir);
        match (config, datasets) {
            (Ok(config), Ok(_)) => Ok(Self {
                dir: Some(dir.to_path_buf()),
                ..config
            }),
            (Ok(_), Err(errors)) | (Err(errors), Ok(_)) => Err(errors),
            (Err(mut errors), Err(more)) => {
                errors.0.extend(more.0);
                Err(errors)
            }
        }
    }

    /// The configuration compiled into the binary.
    pub fn embedded() -> Result<Self, ConfigErrors> {
        Self::from_texts(EMBEDDED)
    }

    /// Validates documents given as `(file name, text)` pairs.
    pub fn from_texts(files: &[(&str, &str)]) -> Result<Self, ConfigErrors> {
        Self::from_texts_in(files, None)
    }

    /// Like [`Config::from_texts`], resolving secrets under `dir`.
    pub fn from_texts_in(files: &[(&str, &str)], dir: Option<&Path>) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let resources: Vec<_> = files
            .iter()
            .flat_map(|(file, text)| document::read_documents(file, text, &mut errors))
            .collect();
        let config = validate::validate(&resources, dir, &mut errors);
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// Enabled flows, in file order.
    pub fn enabled_flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.iter().filter(|flow| flow.enabled)
    }
}
