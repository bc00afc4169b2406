//! Configuration directories for tests.

use std::path::{Path, PathBuf};

use crate::eventhubs_peer::EventHubsPeer;
use crate::free_port;

/// Ports and storage of one Backhaul under test.
#[derive(Debug, Clone)]
pub struct TestAppliance {
    pub mqtt_port: u16,
    pub metrics_port: u16,
    /// `Disk` or `Memory`.
    pub storage: &'static str,
}

/// The Appliance document of `appliance` (id `test-edge`), with `extra`
/// lines (indented two spaces) added to its spec.
pub fn appliance_yaml(appliance: &TestAppliance, extra: &str) -> String {
    format!(
        r#"apiVersion: backhaul.dev/v1alpha1
kind: Appliance
metadata: {{name: test-edge}}
spec:
  listeners: [{{name: devices, address: "127.0.0.1:{mqtt}"}}]
  storage: {{mode: {storage}}}
  metrics: {{address: "127.0.0.1:{metrics}"}}
{extra}"#,
        mqtt = appliance.mqtt_port,
        metrics = appliance.metrics_port,
        storage = appliance.storage,
    )
}

/// A disk-mode appliance on free ports with no flows: its Appliance
/// document written to `<dir>/config`. Returns the configuration and data
/// directories and the appliance.
pub fn write_disk_appliance(dir: &Path) -> (PathBuf, PathBuf, TestAppliance) {
    let (config, data) = (dir.join("config"), dir.join("data"));
    std::fs::create_dir_all(&config).expect("creating the configuration directory");
    let appliance = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Disk",
    };
    std::fs::write(
        config.join("appliance.yaml"),
        appliance_yaml(&appliance, ""),
    )
    .expect("writing appliance.yaml");
    (config, data, appliance)
}

/// The MQTT DataflowEndpoint `cloud`: the broker at `host`, anonymous, no
/// TLS, keep-alive 5 s.
pub fn mqtt_endpoint_yaml(host: &str) -> String {
    format!(
        r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {{name: cloud}}
spec:
  endpointType: Mqtt
  mqttSettings:
    host: "{host}"
    keepAliveSeconds: 5
    tls: {{mode: Disabled}}
    authentication: {{method: Anonymous, anonymousSettings: {{}}}}
"#
    )
}

/// The Event Hubs DataflowEndpoint `hubs`: the namespace, reached at
/// `custom_endpoint`, with `authentication` (YAML lines indented six
/// spaces), batches of up to `max_messages`, SDK calls timed out after
/// `timeout_secs`, and `max_in_flight_batches` SDK batches on their way at
/// once.
pub struct EventHubsEndpointYaml<'a> {
    pub namespace: &'a str,
    pub custom_endpoint: &'a str,
    pub authentication: &'a str,
    pub partition_strategy: &'a str,
    pub max_messages: u32,
    pub timeout_secs: u32,
    pub max_in_flight_batches: u32,
}

impl EventHubsEndpointYaml<'_> {
    pub fn render(&self) -> String {
        let Self {
            namespace,
            custom_endpoint,
            authentication,
            partition_strategy,
            max_messages,
            timeout_secs,
            max_in_flight_batches,
        } = self;
        format!(
            r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {{name: hubs}}
spec:
  endpointType: EventHubs
  eventHubsSettings:
    host: {namespace}
    customEndpoint: "{custom_endpoint}"
    authentication:
{authentication}
    partitionStrategy: {partition_strategy}
    batching: {{latencyMs: 5, maxMessages: {max_messages}}}
    operationTimeoutSeconds: {timeout_secs}
    maxInFlightBatches: {max_in_flight_batches}
"#
        )
    }
}

/// A Dataflow `flow` from the embedded broker's `source` filter to
/// `destination` on `endpoint`; further operations may follow.
pub fn dataflow_yaml(flow: &str, source: &str, endpoint: &str, destination: &str) -> String {
    format!(
        r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata: {{name: {flow}}}
spec:
  profileRef: default
  operations:
    - operationType: Source
      sourceSettings: {{endpointRef: default, dataSources: ["{source}"]}}
    - operationType: Destination
      destinationSettings: {{endpointRef: {endpoint}, dataDestination: "{destination}"}}
"#
    )
}

/// Writes an Appliance document and one flow `factory/#` → the MQTT broker on
/// `remote_port`, topic `cloud/${inputTopic}`.
pub fn write_mqtt_bridge(dir: &Path, appliance: &TestAppliance, remote_port: u16) {
    write_mqtt_bridge_with(dir, appliance, remote_port, "");
}

/// As [`write_mqtt_bridge`], with `extra` lines in the Appliance spec (see
/// [`appliance_yaml`]), e.g. retry settings.
pub fn write_mqtt_bridge_with(
    dir: &Path,
    appliance: &TestAppliance,
    remote_port: u16,
    extra: &str,
) {
    std::fs::create_dir_all(dir).expect("config dir");
    let flows_yaml = format!(
        "{}---\n{}",
        mqtt_endpoint_yaml(&format!("127.0.0.1:{remote_port}")),
        dataflow_yaml("factory-up", "factory/#", "cloud", "cloud/${inputTopic}")
    );
    std::fs::write(dir.join("appliance.yaml"), appliance_yaml(appliance, extra))
        .expect("write config");
    std::fs::write(dir.join("flows.yaml"), flows_yaml).expect("write config");
}

/// Writes an Appliance document and the built-in example flow with free
/// ports: `factory/#` → JSON Lines files under `<data>/local-storage/files/factory`.
pub fn write_local_files(dir: &Path, appliance: &TestAppliance) {
    std::fs::create_dir_all(dir).expect("config dir");
    let appliance_yaml = appliance_yaml(appliance, "");
    let flows = include_str!("../../bridge/default-config/dataflows.yaml");
    std::fs::write(dir.join("appliance.yaml"), appliance_yaml).expect("write config");
    std::fs::write(dir.join("dataflows.yaml"), flows).expect("write config");
}

/// The flow [`write_eventhubs`] writes, and the event hub it sends to.
pub const EVENTHUBS_FLOW: &str = "to-hub";
pub const EVENTHUBS_HUB: &str = "telemetry";

/// A configuration directory made by [`write_eventhubs`].
#[derive(Debug, Clone)]
pub struct EventHubsEdge {
    pub mqtt_port: u16,
    pub metrics_port: u16,
    pub config: PathBuf,
    pub data: PathBuf,
}

/// The `authentication` block of a connection string in secret `hub-conn`,
/// which [`write_eventhubs`] fills with the peer's connection string.
pub const CONNECTION_STRING_AUTH: &str =
    "      method: ConnectionString\n      connectionStringSettings: {secretRef: hub-conn}";

/// Writes `<dir>/config` for an appliance (free ports, data in
/// `<dir>/data`, quick retries) whose flow [`EVENTHUBS_FLOW`] sends
/// `factory/#` to the peer's hub [`EVENTHUBS_HUB`] with `authentication`
/// (YAML lines indented six spaces) and `partition_strategy`.
pub fn write_eventhubs(
    dir: &Path,
    peer: &EventHubsPeer,
    authentication: &str,
    partition_strategy: &str,
) -> EventHubsEdge {
    let edge = EventHubsEdge {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        config: dir.join("config"),
        data: dir.join("data"),
    };
    let secret = edge.config.join("secrets/hub-conn");
    std::fs::create_dir_all(&secret).expect("config dir");
    std::fs::write(
        secret.join("connectionString"),
        peer.connection_string(None),
    )
    .expect("write secret");
    let appliance = TestAppliance {
        mqtt_port: edge.mqtt_port,
        metrics_port: edge.metrics_port,
        storage: "Disk",
    };
    let retry = "  retry: {initialBackoffMs: 100, maxBackoffSeconds: 2, parkedRetrySeconds: 2}\n";
    let endpoint = EventHubsEndpointYaml {
        namespace: peer.namespace(),
        custom_endpoint: &peer.endpoint(),
        authentication,
        partition_strategy,
        max_messages: 200,
        timeout_secs: 3,
        max_in_flight_batches: 2,
    }
    .render();
    let flow = dataflow_yaml(EVENTHUBS_FLOW, "factory/#", "hubs", EVENTHUBS_HUB);
    let flows = format!("{endpoint}---\n{flow}");
    std::fs::write(
        edge.config.join("appliance.yaml"),
        appliance_yaml(&appliance, retry),
    )
    .expect("write config");
    std::fs::write(edge.config.join("flows.yaml"), flows).expect("write config");
    edge
}
