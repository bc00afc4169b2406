//! A data flow with a BuiltInTransformation (datasets, filter, map) in its
//! YAML, end to end: devices publish to Backhaul, Mosquitto receives the
//! transformed messages, /metrics counts what was filtered and what failed,
//! and a dataset replaced through the API enriches the next message.

use std::path::Path;
use std::time::Duration;

use backhaul_chaos_tests::config::{
    appliance_yaml, dataflow_yaml, mqtt_endpoint_yaml, TestAppliance,
};
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::mqtt::{collect, create_persistent_subscription, publish_v5};
use backhaul_chaos_tests::process::{http_request, Backhaul, Mosquitto};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::{AsyncClient, MqttOptions};
use serde_json::{json, Value};

const FLOW: &str = "enriched";

fn write_config(dir: &Path, edge: &TestAppliance, remote_port: u16) {
    std::fs::create_dir_all(dir.join("datasets")).unwrap();
    std::fs::write(dir.join("appliance.yaml"), appliance_yaml(edge, "")).unwrap();
    std::fs::write(
        dir.join("flows.yaml"),
        format!(
            "{}---\n{}{}",
            mqtt_endpoint_yaml(&format!("127.0.0.1:{remote_port}")),
            dataflow_yaml(
                FLOW,
                "factory/+/telemetry",
                "cloud",
                "cloud/${inputTopic.2}"
            ),
            r#"    - operationType: BuiltInTransformation
      builtInTransformationSettings:
        map:
          - inputs: ['*']
            output: '*'
          - inputs: [temperature]
            output: temperatureF
            expression: cToF($1)
          - inputs: ['$context(asset).site']
            output: site
          - inputs: ['$metadata.topic']
            output: '$metadata.user_property.origin'
        filter:
          - inputs: [temperature]
            expression: $1 < -50
            description: implausible readings
        datasets:
          - key: assets as asset
            inputs: ['$source.deviceId', '$context.deviceId']
            expression: $1 == $2
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("datasets/assets.jsonl"),
        "{\"deviceId\": \"d1\", \"site\": \"plant-7\"}\n",
    )
    .unwrap();
}

/// Publishes `(topic, payload)` pairs as QoS 1 (MQTT 5, user property
/// `line`) and waits for each PUBACK.
async fn publish(port: u16, messages: &[(&str, &str)]) {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("device", "127.0.0.1", port), 10);
    for (topic, payload) in messages {
        let props = PublishProperties {
            user_properties: vec![("line".into(), "7".into())],
            ..PublishProperties::default()
        };
        publish_v5(&client, &mut eventloop, topic, payload, props)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_filter_and_map_from_the_yaml_transform_messages_on_the_way() {
    let tmp = tempfile::tempdir().unwrap();
    let remote_port = free_port();
    let _remote = Mosquitto::start(remote_port, &tmp.path().join("remote")).unwrap();
    create_persistent_subscription(remote_port, "sub", "cloud/#")
        .await
        .unwrap();
    let edge = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Disk",
    };
    let config = tmp.path().join("config");
    write_config(&config, &edge, remote_port);
    let backhaul = Backhaul::start(&config, &tmp.path().join("data"), edge.metrics_port).unwrap();

    publish(
        edge.mqtt_port,
        &[
            (
                "factory/d1/telemetry",
                r#"{"deviceId": "d1", "temperature": 20}"#,
            ),
            (
                "factory/d1/telemetry",
                r#"{"deviceId": "d1", "temperature": -100}"#,
            ),
            (
                "factory/d2/telemetry",
                r#"{"deviceId": "d2", "temperature": "hot"}"#,
            ),
            ("factory/d2/telemetry", "not json"),
        ],
    )
    .await;
    let (status, body) = http_request(
        edge.metrics_port,
        "PUT",
        "/api/v1/datasets/assets",
        "{\"deviceId\": \"d2\", \"site\": \"plant-9\"}\n",
    )
    .unwrap();
    assert_eq!(
        (status, body.trim()),
        (200, "dataset 'assets' replaced: 1 records")
    );
    publish(
        edge.mqtt_port,
        &[(
            "factory/d2/telemetry",
            r#"{"deviceId": "d2", "temperature": 100}"#,
        )],
    )
    .await;

    let received = collect(
        remote_port,
        "sub",
        2,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let payloads: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    assert_eq!(
        payloads,
        [
            json!({"deviceId": "d1", "temperatureF": 68.0, "site": "plant-7"}),
            json!({"deviceId": "d2", "temperatureF": 212.0, "site": "plant-9"}),
        ]
    );
    let topics: Vec<&str> = received.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["cloud/d1", "cloud/d2"]);
    assert_eq!(received[0].id.as_deref(), Some("test-edge/enriched/1"));
    assert_eq!(received[1].id.as_deref(), Some("test-edge/enriched/5"));
    let property = |k: &str| -> Vec<&str> {
        received[0]
            .user_properties
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        property("line"),
        ["7"],
        "the device's user property is kept"
    );
    assert_eq!(
        property("origin"),
        ["factory/d1/telemetry"],
        "written by the map"
    );

    let sample = |name: &str| {
        backhaul
            .metric(&format!("{name}{{flow=\"{FLOW}\"}}"))
            .unwrap()
    };
    assert_eq!(sample("backhaul_flow_received_total"), 5.0);
    assert_eq!(sample("backhaul_flow_delivered_total"), 2.0);
    assert_eq!(sample("backhaul_flow_filtered_total"), 1.0);
    assert_eq!(
        backhaul
            .metric(&format!(
                "backhaul_flow_dropped_total{{flow=\"{FLOW}\",reason=\"transform_error\"}}"
            ))
            .unwrap(),
        2.0
    );
    let (status, body) =
        http_request(edge.metrics_port, "PUT", "/api/v1/datasets/assets", "[1]\n").unwrap();
    assert_eq!(status, 400);
    assert!(
        body.starts_with("dataset 'assets' not replaced: line 1: "),
        "{body}"
    );
    let (_, list) = http_request(edge.metrics_port, "GET", "/api/v1/datasets", "").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap(),
        json!({"datasets": [{"key": "assets", "records": 1}]})
    );
}
