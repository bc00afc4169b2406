//! Configuration directories for tests.

use std::path::Path;

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
    let appliance_yaml = appliance_yaml(appliance, extra);
    let flows_yaml = format!(
        r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {{name: cloud}}
spec:
  endpointType: Mqtt
  mqttSettings:
    host: "127.0.0.1:{remote_port}"
    keepAliveSeconds: 5
    tls: {{mode: Disabled}}
    authentication: {{method: Anonymous, anonymousSettings: {{}}}}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata: {{name: factory-up}}
spec:
  profileRef: default
  operations:
    - operationType: Source
      sourceSettings: {{endpointRef: default, dataSources: ["factory/#"]}}
    - operationType: Destination
      destinationSettings: {{endpointRef: cloud, dataDestination: "cloud/${{inputTopic}}"}}
"#
    );
    std::fs::write(dir.join("appliance.yaml"), appliance_yaml).expect("write config");
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
