//! The README's quick start, with real MQTT clients (Mosquitto's command
//! line tools): published messages land in JSON Lines files, in order, each
//! with its id, and the metrics account for them.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use backhaul_chaos_tests::config::{write_local_files, TestAppliance};
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::process::Backhaul;

const FLOW: &str = "factory-to-files";

/// Publishes each line of `lines` as one QoS 1 message with mosquitto_pub.
fn mosquitto_pub(port: u16, topic: &str, lines: &str, extra: &[&str]) {
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-l",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write lines");
    assert!(child.wait().expect("mosquitto_pub ran").success());
}

fn lines_in(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("read")
                .lines()
                .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn quick_start(storage: &'static str) {
    let tmp = tempfile::tempdir().unwrap();
    let edge = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage,
    };
    let config = tmp.path().join("config");
    let data = tmp.path().join("data");
    write_local_files(&config, &edge);
    let backhaul = Backhaul::start(&config, &data, edge.metrics_port).unwrap();

    let payloads: String = (0..500).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    mosquitto_pub(edge.mqtt_port, "factory/line1/temp", &payloads, &[]);
    mosquitto_pub(edge.mqtt_port, "office/coffee", "not for the flow\n", &[]);
    mosquitto_pub(
        edge.mqtt_port,
        "factory/line2/state",
        "running\n",
        &["-V", "5", "-D", "publish", "user-property", "site", "p7"],
    );

    let folder = data.join("local-storage/files/factory");
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = lines_in(&folder);
        if lines.len() >= 501 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        lines.len(),
        501,
        "500 + 1 factory messages, office/coffee is not the flow's"
    );
    for (i, line) in lines.iter().take(500).enumerate() {
        assert_eq!(line["payload"], serde_json::json!({"n": i}));
        assert_eq!(line["topic"], "factory/line1/temp");
        assert_eq!(line["id"], format!("test-edge/{FLOW}/{}", i + 1));
    }
    let last = &lines[500];
    assert_eq!(last["payload"], "running");
    assert_eq!(last["userProperties"], serde_json::json!([["site", "p7"]]));

    let sample = |name: &str| {
        backhaul
            .metric(&format!("{name}{{flow=\"{FLOW}\"}}"))
            .unwrap()
    };
    for _ in 0..100 {
        if sample("backhaul_flow_delivered_total") == 501.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sample("backhaul_flow_received_total"), 501.0);
    assert_eq!(sample("backhaul_flow_delivered_total"), 501.0);
    assert_eq!(sample("backhaul_queue_messages"), 0.0);
    assert_eq!(
        backhaul
            .metric(&format!(
                "backhaul_endpoint_connected{{endpoint=\"local-files\",flow=\"{FLOW}\"}}"
            ))
            .unwrap(),
        1.0
    );
    assert_eq!(
        backhaul
            .metric("backhaul_broker_publishes_received_total")
            .unwrap(),
        502.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_on_disk() {
    quick_start("Disk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_in_memory() {
    quick_start("Memory").await;
}
