//! Configuration loading: valid documents as Azure IoT Operations users write
//! them, and every kind of error with its exact message.

use backhaul_bridge::config::{Config, Endpoint, RetainPolicy, StorageModeSpec};

const APPLIANCE: &str = r#"
apiVersion: backhaul.dev/v1alpha1
kind: Appliance
metadata: {name: edge-01}
spec:
  listeners:
    - {name: plant, address: 0.0.0.0:1883, allowAnonymous: true}
  storage: {mode: memory, path: /var/lib/backhaul}
  metrics: {address: 127.0.0.1:9700}
"#;

const REMOTE: &str = r#"
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {name: cloud-broker, namespace: azure-iot-operations}
spec:
  endpointType: Mqtt
  hostType: CustomMqtt
  mqttSettings:
    host: mybroker.example.com:1883
    protocol: Mqtt
    clientIdPrefix: dataflow-
    qos: 1
    retain: Never
    sessionExpirySeconds: 600
    keepAliveSeconds: 30
    maxInflightMessages: 50
    tls: {mode: Disabled}
    authentication:
      method: Anonymous
      anonymousSettings: {}
"#;

const FLOW: &str = r#"
apiVersion: connectivity.iotoperations.azure.com/v1beta1
kind: Dataflow
metadata: {name: oven-to-cloud, namespace: azure-iot-operations}
spec:
  profileRef: default
  mode: Enabled
  requestDiskPersistence: Enabled
  operations:
    - operationType: source
      name: source1
      sourceSettings:
        endpointRef: default
        assetRef: my-adr-namespace/oven
        serializationFormat: Json
        dataSources:
          - azure-iot-operations/data/oven
          - thermostats/+/sensor/temperature/#
    - operationType: Destination
      name: destination1
      destinationSettings:
        endpointRef: cloud-broker
        dataDestination: processed/${inputTopic.2}
"#;

const PROFILE: &str = r#"
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowProfile
metadata: {name: default}
spec:
  instanceCount: 1
  diagnostics:
    logs: {level: info}
    metrics: {prometheusPort: 9600}
"#;

fn load(files: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    Config::from_texts(files).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    load(files).expect_err("configuration must be refused")
}

#[test]
fn loads_aio_resources_written_as_in_azure_iot_operations() {
    let flows_and_profile = format!("{FLOW}\n---\n{PROFILE}");
    let config = load(&[
        ("appliance.yaml", APPLIANCE),
        ("endpoints.yaml", REMOTE),
        ("flows.yaml", &flows_and_profile),
    ])
    .unwrap();
    let appliance = &config.appliance;
    assert_eq!(appliance.id, "edge-01", "defaults to metadata.name");
    assert_eq!(appliance.listeners[0].address.to_string(), "0.0.0.0:1883");
    assert_eq!(appliance.storage_mode, StorageModeSpec::Memory);
    assert_eq!(appliance.metrics_address.to_string(), "127.0.0.1:9700");
    assert_eq!(
        appliance.retry.parked_retry,
        std::time::Duration::from_secs(60),
        "default"
    );

    let Endpoint::Mqtt(mqtt) = &config.endpoints["cloud-broker"] else {
        panic!("cloud-broker is an MQTT endpoint");
    };
    assert_eq!(
        (mqtt.host.as_str(), mqtt.port),
        ("mybroker.example.com", 1883)
    );
    assert_eq!(mqtt.retain, RetainPolicy::Never);
    assert_eq!(mqtt.max_inflight_messages, 50);
    assert!(matches!(config.endpoints["default"], Endpoint::LocalBroker));

    let flow = &config.flows[0];
    assert_eq!(flow.name, "oven-to-cloud");
    assert!(flow.enabled);
    assert_eq!(flow.sources.len(), 2);
    assert!(flow.sources[1].matches("thermostats/t1/sensor/temperature/c"));
    assert_eq!(
        flow.destination.render("factory/7/x").as_deref(),
        Some("processed/7")
    );
}

#[test]
fn the_embedded_default_configuration_is_valid() {
    let config = Config::embedded().unwrap();
    assert_eq!(
        config.appliance.listeners[0].address.to_string(),
        "127.0.0.1:1883"
    );
    assert_eq!(
        config.appliance.metrics_address.to_string(),
        "127.0.0.1:9600"
    );
    assert_eq!(config.appliance.storage_mode, StorageModeSpec::Disk);
    let flow = &config.flows[0];
    assert!(flow.sources[0].matches("factory/line1/temp"));
    assert!(matches!(
        config.endpoints[&flow.endpoint],
        Endpoint::LocalStorage(_)
    ));
}

#[test]
fn disabled_flows_are_loaded_but_not_enabled() {
    let flow = FLOW.replace("mode: Enabled", "mode: Disabled");
    let config = load(&[("e.yaml", REMOTE), ("f.yaml", &flow)]).unwrap();
    assert_eq!(config.flows.len(), 1);
    assert_eq!(config.enabled_flows().count(), 0);
}

fn with_transform(settings: &str) -> String {
    FLOW.replace(
        "    - operationType: Destination",
        &format!(
            "    - operationType: BuiltInTransformation\n      builtInTransformationSettings:\n{settings}    - operationType: Destination"
        ),
    )
}

#[test]
fn builtin_transformations_are_compiled_at_load_time() {
    let flow = with_transform(
        "        map:\n          - {inputs: ['*'], output: '*'}\n          - {inputs: [temperature.Value], output: TemperatureF, expression: 'cToF($1)'}\n",
    );
    let config = load(&[("e.yaml", REMOTE), ("flows.yaml", &flow)]).unwrap();
    assert!(config.flows[0].transform.is_some());

    let typo = with_transform(
        "        map:\n          - {inputs: [temperature.Value], output: TemperatureF, expression: 'ctoF($1)'}\n",
    );
    assert_eq!(
        errors(&[("e.yaml", REMOTE), ("flows.yaml", &typo)]),
        [
            "flows.yaml: document 1 (Dataflow 'oven-to-cloud'): spec.operations[1]\
          .builtInTransformationSettings.map[0].expression: unknown function 'ctoF' at column 1; \
          did you mean 'cToF'?"
        ]
    );
    let unknown_field = with_transform("        map:\n          - {inputs: [a], outptu: b}\n");
    let got = errors(&[("e.yaml", REMOTE), ("flows.yaml", &unknown_field)]);
    assert!(
        got[0].starts_with(
            "flows.yaml: document 1 (Dataflow 'oven-to-cloud'): spec.operations[1]\
             .builtInTransformationSettings.map[0].outptu: unknown field `outptu`"
        ),
        "{got:?}"
    );
    let parquet = with_transform("        serializationFormat: Parquet\n");
    assert_eq!(
        errors(&[("e.yaml", REMOTE), ("flows.yaml", &parquet)]),
        [
            "flows.yaml: document 1 (Dataflow 'oven-to-cloud'): spec.operations[1]\
          .builtInTransformationSettings.serializationFormat: Parquet is not supported yet \
          (supported: Json)"
        ]
    );
}

#[test]
fn dataset_files_are_checked_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("e.yaml"), REMOTE).unwrap();
    std::fs::create_dir(dir.path().join("datasets")).unwrap();
    std::fs::write(
        dir.path().join("datasets/assets.jsonl"),
        "{\"id\": 1}\n{oops}\n",
    )
    .unwrap();
    let err = Config::load_dir(dir.path()).unwrap_err().to_string();
    let file = dir
        .path()
        .join("datasets/assets.jsonl")
        .display()
        .to_string();
    assert!(err.starts_with(&format!("{file}: line 2: ")), "{err}");
}

#[test]
fn field_errors_name_file_document_and_field() {
    let typo = REMOTE.replace("    host:", "    hots:");
    assert_eq!(
        errors(&[("e.yaml", &typo)]),
        ["e.yaml: document 1 (DataflowEndpoint 'cloud-broker'): spec.mqttSettings.hots: unknown \
          field `hots`, expected one of `host`, `protocol`, `clientIdPrefix`, `qos`, `retain`, \
          `sessionExpirySeconds`, `keepAliveSeconds`, `maxInflightMessages`, \
          `cloudEventAttributes`, `tls`, `authentication`"]
    );
    let bad_enum = REMOTE.replace("retain: Never", "retain: Sometimes");
    assert_eq!(
        errors(&[("e.yaml", &bad_enum)]),
        ["e.yaml: document 1 (DataflowEndpoint 'cloud-broker'): spec.mqttSettings.retain: unknown \
          value 'Sometimes', expected one of: Keep, Never"]
    );
    let missing = FLOW.replace("        dataDestination: processed/${inputTopic.2}\n", "");
    assert_eq!(
        errors(&[("e.yaml", REMOTE), ("f.yaml", &missing)]),
        ["f.yaml: document 1 (Dataflow 'oven-to-cloud'): spec.operations[1].destinationSettings: \
          missing field `dataDestination`"]
    );
}

#[test]
fn reference_and_value_errors_are_all_reported() {
    let flow = FLOW
        .replace("endpointRef: cloud-broker", "endpointRef: nowhere")
        .replace("thermostats/+/sensor/temperature/#", "thermostats/#/x")
        .replace("profileRef: default", "profileRef: fast");
    let got = errors(&[("f.yaml", &flow)]);
    let prefix = "f.yaml: document 1 (Dataflow 'oven-to-cloud'): ";
    assert_eq!(
        got,
        [
            format!("{prefix}spec.profileRef: no DataflowProfile named 'fast' (the profile 'default' always exists)"),
            format!("{prefix}spec.operations[0].sourceSettings.dataSources[1]: '#' must be the last level and stand alone (as in 'a/#') in 'thermostats/#/x'"),
            format!("{prefix}spec.operations[1].destinationSettings.endpointRef: no DataflowEndpoint named 'nowhere'"),
        ]
    );
}

#[test]
fn unsupported_endpoint_features_say_so() {
    let tls = REMOTE.replace("    tls: {mode: Disabled}\n", "");
    assert_eq!(
        errors(&[("e.yaml", &tls)]),
        ["e.yaml: document 1 (DataflowEndpoint 'cloud-broker'): spec.mqttSettings.tls.mode: TLS \
          towards MQTT endpoints is not supported yet (Azure IoT Operations enables TLS unless told \
          otherwise); set tls: {mode: Disabled} for a plain MQTT broker"]
    );
    let kafka = r#"
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {name: eventhub}
spec:
  endpointType: Kafka
  kafkaSettings: {host: "ns.servicebus.windows.net:9093"}
"#;
    assert_eq!(
        errors(&[("k.yaml", kafka)]),
        [
            "k.yaml: document 1 (DataflowEndpoint 'eventhub'): spec.endpointType: Kafka is not \
          supported yet (supported: Mqtt, LocalStorage, EventHubs)"
        ]
    );
    let x509 = REMOTE.replace("method: Anonymous", "method: X509Certificate");
    assert!(errors(&[("e.yaml", &x509)])[0].ends_with(
        "spec.mqttSettings.authentication.method: X509Certificate is not supported yet (supported: Anonymous)"
    ));
}

#[test]
fn envelope_errors() {
    let got = errors(&[(
        "x.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
         apiVersion: connectivity.iotoperations.azure.com/v2\nkind: Dataflow\nmetadata: {name: y}\n---\n\
         apiVersion: backhaul.dev/v1alpha1\nkind: Appliance\nmetadata: {name: Bad_Name}\n",
    )]);
    assert_eq!(
        got,
        [
            "x.yaml: document 1: kind: unknown kind 'ConfigMap'; expected one of: Appliance, Dataflow, DataflowEndpoint, DataflowProfile",
            "x.yaml: document 2 (Dataflow 'y'): apiVersion: 'connectivity.iotoperations.azure.com/v2' is not valid for kind Dataflow; expected connectivity.iotoperations.azure.com/v1 or connectivity.iotoperations.azure.com/v1beta1",
            "x.yaml: document 3 (Appliance 'Bad_Name'): metadata.name: 'Bad_Name' is not a valid name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        ]
    );
    let syntax = errors(&[("y.yaml", "kind: [unclosed\n")]);
    assert!(
        syntax[0].starts_with("y.yaml: document 1: invalid YAML:"),
        "{syntax:?}"
    );
}

#[test]
fn duplicates_and_appliance_values() {
    let twice = format!("{REMOTE}\n---\n{REMOTE}");
    assert_eq!(
        errors(&[("e.yaml", &twice)]),
        [
            "e.yaml: document 2 (DataflowEndpoint 'cloud-broker'): metadata.name: duplicate name; \
          the first is document 1 of e.yaml"
        ]
    );
    let bad = APPLIANCE.replace("0.0.0.0:1883", "localhost");
    assert_eq!(
        errors(&[("a.yaml", &bad)]),
        ["a.yaml: document 1 (Appliance 'edge-01'): spec.listeners[0].address: 'localhost' is not \
          an IP:port address (such as 127.0.0.1:1883)"]
    );
}

#[test]
fn load_dir_reads_yaml_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b-flows.yaml"), FLOW).unwrap();
    std::fs::write(dir.path().join("a-endpoints.yml"), REMOTE).unwrap();
    std::fs::write(dir.path().join("README.txt"), "not configuration").unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    let config = Config::load_dir(dir.path()).unwrap();
    assert_eq!(config.flows[0].name, "oven-to-cloud");

    std::fs::write(dir.path().join("c.yaml"), "kind: Nope\n").unwrap();
    let err = Config::load_dir(dir.path()).unwrap_err().to_string();
    let file = dir.path().join("c.yaml").display().to_string();
    assert!(
        err.starts_with(&format!("{file}: document 1: kind: unknown kind 'Nope'")),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = Config::load_dir(empty.path()).unwrap_err().to_string();
    assert!(
        err.ends_with("no .yaml or .yml files in the configuration directory"),
        "{err}"
    );
}

#[test]
fn the_readme_example_directory_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mqtt-bridge");
    let config = Config::load_dir(&dir).unwrap();
    assert_eq!(config.appliance.id, "line-7-edge");
    let names: Vec<&str> = config.flows.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["telemetry-to-site", "alarms-to-archive"]);
    assert_eq!(
        config.flows[0]
            .destination
            .render("factory/a/telemetry/t")
            .as_deref(),
        Some("line-7/factory/a/telemetry/t")
    );
}

const HUBS: &str = r#"
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {name: hubs}
spec:
  endpointType: EventHubs
  eventHubsSettings:
    host: plant.servicebus.windows.net
    authentication:
      method: ConnectionString
      connectionStringSettings: {secretRef: eh-conn}
    partitionStrategy: Property
    partitionKeyProperty: deviceId
    batching: {latencyMs: 20, maxMessages: 250, maxBytes: 500000}
"#;

#[test]
fn event_hubs_endpoints_read_their_secret_and_batching() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/eh-conn")).unwrap();
    std::fs::write(
        dir.path().join("secrets/eh-conn/connectionString"),
        "Endpoint=sb://plant.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("e.yaml"), HUBS).unwrap();
    let config = Config::load_dir(dir.path()).unwrap();
    let Endpoint::EventHubs(hubs) = &config.endpoints["hubs"] else {
        panic!("an Event Hubs endpoint");
    };
    assert_eq!(hubs.settings.namespace, "plant.servicebus.windows.net");
    assert_eq!((hubs.max_messages, hubs.max_bytes), (250, 500_000));
    assert_eq!(hubs.linger, std::time::Duration::from_millis(20));
    assert_eq!(hubs.settings.max_in_flight_batches, 4, "the default");
    let debug = format!("{config:?}");
    assert!(!debug.contains("c2VjcmV0"), "the key never shows: {debug}");

    std::fs::remove_file(dir.path().join("secrets/eh-conn/connectionString")).unwrap();
    let err = Config::load_dir(dir.path()).unwrap_err().to_string();
    let secret = dir
        .path()
        .join("secrets/eh-conn/connectionString")
        .display()
        .to_string();
    assert!(
        err.ends_with(&format!(
            "spec.eventHubsSettings.authentication.connectionStringSettings.secretRef: secret \
             'eh-conn' has no key 'connectionString': expected {secret} or the environment \
             variable BACKHAUL_SECRET_EH_CONN_CONNECTIONSTRING"
        )),
        "{err}"
    );

    std::fs::write(
        dir.path().join("secrets/eh-conn/connectionString"),
        "Endpoint=sb://x/;SharedAccessKeyName=send",
    )
    .unwrap();
    let err = Config::load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.ends_with("secret 'eh-conn' is not a usable connection string: it needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature"), "{err}");
    assert!(!err.contains("Endpoint=sb"), "the secret is never echoed");
}

#[test]
fn event_hubs_batches_in_flight_are_at_least_one() {
    std::env::set_var(
        "BACKHAUL_SECRET_HUB_INFLIGHT_CONNECTIONSTRING",
        "Endpoint=sb://plant.servicebus.windows.net/;SharedAccessSignature=sig",
    );
    let hubs = HUBS.replace("secretRef: eh-conn", "secretRef: hub-inflight");
    let three = format!("{hubs}    maxInFlightBatches: 3\n");
    let config = load(&[("e.yaml", &three)]).unwrap();
    let Endpoint::EventHubs(endpoint) = &config.endpoints["hubs"] else {
        panic!("an Event Hubs endpoint");
    };
    assert_eq!(endpoint.settings.max_in_flight_batches, 3);

    let zero = format!("{hubs}    maxInFlightBatches: 0\n");
    let got = errors(&[("e.yaml", &zero)]);
    assert!(
        got.iter()
            .any(|e| e.ends_with("spec.eventHubsSettings.maxInFlightBatches: must be at least 1")),
        "{got:?}"
    );
}

#[test]
fn event_hub_names_are_static() {
    // The secret from the environment (no configuration directory here).
    std::env::set_var(
        "BACKHAUL_SECRET_HUB_ENV_CONNECTIONSTRING",
        "Endpoint=sb://plant.servicebus.windows.net/;SharedAccessSignature=sig",
    );
    let hubs = HUBS.replace("secretRef: eh-conn", "secretRef: hub-env");
    let flow = FLOW.replace("endpointRef: cloud-broker", "endpointRef: hubs");
    let got = errors(&[("e.yaml", &hubs), ("f.yaml", &flow)]);
    assert!(
        got.iter().any(|e| e.ends_with(
            "spec.operations[1].destinationSettings.dataDestination: 'processed/${inputTopic.2}' \
             is not an event hub name: 1-256 letters, digits, '.', '_' or '-'"
        )),
        "{got:?}"
    );
}

#[test]
fn queue_limits_come_from_the_appliance_with_per_flow_overrides() {
    use backhaul_storage::Overflow;
    let appliance = APPLIANCE.replace(
        "  metrics: {address: 127.0.0.1:9700}\n",
        "  metrics: {address: 127.0.0.1:9700}\n  queues:\n    defaults: {maxMessages: 1000000, messageTtlSeconds: 86400}\n    flows:\n      oven-to-cloud: {maxBytes: 1048576, overflow: RejectNew}\n",
    );
    let config = load(&[("a.yaml", &appliance), ("e.yaml", REMOTE), ("f.yaml", FLOW)]).unwrap();
    let limits = config.appliance.limits_of("oven-to-cloud");
    assert_eq!(
        limits.max_messages,
        Some(1_000_000),
        "inherited from defaults"
    );
    assert_eq!(limits.max_bytes, Some(1_048_576));
    assert_eq!(limits.overflow, Overflow::RejectNew);
    assert_eq!(limits.ttl, Some(std::time::Duration::from_secs(86_400)));
    assert_eq!(
        config.appliance.limits_of("other").overflow,
        Overflow::DropOldest
    );
    assert_eq!(
        config.appliance.store_limits.min_free_bytes, None,
        "memory mode"
    );

    let typo = appliance.replace("oven-to-cloud: {", "oven-to-clud: {");
    assert_eq!(
        errors(&[("a.yaml", &typo), ("e.yaml", REMOTE), ("f.yaml", FLOW)]),
        ["a.yaml: document 1 (Appliance 'edge-01'): spec.queues.flows.oven-to-clud: no Dataflow named 'oven-to-clud'"]
    );
    let embedded = Config::embedded().unwrap();
    assert_eq!(
        embedded.appliance.store_limits.min_free_bytes,
        Some(100 * 1024 * 1024),
        "disk mode keeps 100 MiB free by default"
    );
}

const PRINCIPAL: &str = r#"
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {name: hubs}
spec:
  endpointType: EventHubs
  eventHubsSettings:
    host: plant.servicebus.windows.net
    authentication:
      method: METHOD
      SETTINGS:
        tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47
        clientId: 1b2c3d4e-0000-4000-8000-00000000beef
        secretRef: hub-principal
"#;

fn principal(method: &str, settings: &str) -> String {
    PRINCIPAL
        .replace("METHOD", method)
        .replace("SETTINGS", settings)
}

#[test]
fn entra_id_principals_are_built_when_the_configuration_loads() {
    std::env::set_var("BACKHAUL_SECRET_HUB_PRINCIPAL_CLIENTSECRET", "s3cr3t-value");
    let secret = principal("ClientSecret", "clientSecretSettings");
    let config = load(&[("e.yaml", &secret)]).unwrap();
    let Endpoint::EventHubs(hubs) = &config.endpoints["hubs"] else {
        panic!("an Event Hubs endpoint");
    };
    assert_eq!(hubs.settings.namespace, "plant.servicebus.windows.net");
    assert!(!format!("{config:?}").contains("s3cr3t-value"));

    let http = secret.replace(
        "secretRef: hub-principal",
        "secretRef: hub-principal\n        authorityHost: http://login.example",
    );
    let got = errors(&[("e.yaml", &http)]);
    assert!(
        got.iter().any(|e| e.ends_with(
            "spec.eventHubsSettings.authentication.clientSecretSettings: authority host \
             'http://login.example' must start with https://"
        )),
        "{got:?}"
    );

    let missing_ca = secret.replace(
        "secretRef: hub-principal",
        "secretRef: hub-principal\n        authorityCaFile: /nonexistent/ca.pem",
    );
    let got = errors(&[("e.yaml", &missing_ca)]);
    assert!(
        got.iter().any(|e| e.ends_with(
            "spec.eventHubsSettings.authentication.clientSecretSettings.authorityCaFile: \
             cannot read /nonexistent/ca.pem: No such file or directory (os error 2)"
        )),
        "{got:?}"
    );
}

#[test]
fn a_client_certificate_must_be_a_base64_pkcs12_file() {
    let certificate = principal("ClientCertificate", "clientCertificateSettings")
        .replace("secretRef: hub-principal", "secretRef: hub-cert");
    let got = errors(&[("e.yaml", &certificate)]);
    assert!(
        got.iter().any(|e| e.ends_with(
            "spec.eventHubsSettings.authentication.clientCertificateSettings.secretRef: secret \
             'hub-cert' has no key 'certificate': expected the environment variable \
             BACKHAUL_SECRET_HUB_CERT_CERTIFICATE"
        )),
        "{got:?}"
    );
    std::env::set_var("BACKHAUL_SECRET_HUB_CERT_CERTIFICATE", "not base64!");
    let got = errors(&[("e.yaml", &certificate)]);
    assert!(
        got.iter().any(|e| e.ends_with(
            "clientCertificateSettings.secretRef: secret 'hub-cert' key 'certificate' is not \
             base64 (a PKCS#12 file, e.g. `base64 -w0 principal.pfx`)"
        )),
        "{got:?}"
    );
    std::env::set_var("BACKHAUL_SECRET_HUB_CERT_CERTIFICATE", "AAAA");
    let got = errors(&[("e.yaml", &certificate)]);
    assert!(
        got.iter()
            .any(|e| e.contains("clientCertificateSettings: ") && e.contains("PKCS12")),
        "the PKCS#12 parser's complaint names the field: {got:?}"
    );
    let missing = principal("ClientSecret", "clientCertificateSettings");
    let got = errors(&[("e.yaml", &missing)]);
    assert!(
        got.iter().any(|e| e.ends_with(
            "spec.eventHubsSettings.authentication.clientSecretSettings: missing for method \
             ClientSecret: {tenantId, clientId, secretRef}"
        )),
        "{got:?}"
    );
}

#[test]
fn cpu_scheduling_defaults_to_batch_and_names_the_allowed_values() {
    use backhaul_bridge::config::CpuSchedulingSpec;
    let config = load(&[("a.yaml", APPLIANCE)]).unwrap();
    assert_eq!(config.appliance.cpu_scheduling, CpuSchedulingSpec::Batch);
    let with = |value: &str| {
        APPLIANCE.replace(
            "  metrics: {address: 127.0.0.1:9700}\n",
            &format!("  metrics: {{address: 127.0.0.1:9700}}\n  cpuScheduling: {value}\n"),
        )
    };
    let normal = load(&[("a.yaml", &with("normal"))]).unwrap();
    assert_eq!(normal.appliance.cpu_scheduling, CpuSchedulingSpec::Normal);
    assert_eq!(
        errors(&[("a.yaml", &with("Realtime"))]),
        [
            "a.yaml: document 1 (Appliance 'edge-01'): spec.cpuScheduling: unknown value \
          'Realtime', expected one of: Batch, Normal"
        ]
    );
}
