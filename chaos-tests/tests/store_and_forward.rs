//! Store and forward against a real remote broker (Mosquitto from Debian):
//! a backlog built while the remote is down replays completely and in order,
//! and a kill -9 of Backhaul loses no PUBACKed message.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_chaos_tests::config::{write_mqtt_bridge, TestAppliance};
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::mqtt::{
    collect, create_persistent_subscription, publish_numbered, BackgroundPublisher, Received,
};
use backhaul_chaos_tests::process::{Backhaul, Mosquitto};

const FLOW: &str = "factory-up";
const SUBSCRIBER: &str = "cloud-subscriber";

/// A remote Mosquitto that holds a persistent `cloud/#` session for the
/// test's subscriber, then is stopped: the remote is down.
async fn remote_with_offline_subscriber(dir: &Path) -> u16 {
    let port = free_port();
    let remote = Mosquitto::start(port, dir).unwrap();
    create_persistent_subscription(port, SUBSCRIBER, "cloud/#")
        .await
        .unwrap();
    remote.stop().unwrap();
    port
}

fn appliance(storage: &'static str) -> TestAppliance {
    TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage,
    }
}

fn sample(name: &str) -> String {
    format!("{name}{{flow=\"{FLOW}\"}}")
}

/// Waits until the flow's queue is empty; returns (received, delivered).
async fn drained(backhaul: &Backhaul) -> (f64, f64) {
    for _ in 0..200 {
        let queued = backhaul.metric(&sample("backhaul_queue_messages")).unwrap();
        if queued == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (
        backhaul
            .metric(&sample("backhaul_flow_received_total"))
            .unwrap(),
        backhaul
            .metric(&sample("backhaul_flow_delivered_total"))
            .unwrap(),
    )
}

fn numbers(received: &[Received]) -> Vec<u64> {
    received
        .iter()
        .map(|r| r.number().expect("numeric payload"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_published_while_the_remote_is_down_arrives_in_order() {
    outage_then_replay("Disk", 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_keeps_the_backlog_across_link_loss() {
    outage_then_replay("Memory", 3_000).await;
}

async fn outage_then_replay(storage: &'static str, count: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let remote_dir = tmp.path().join("remote");
    let remote_port = remote_with_offline_subscriber(&remote_dir).await;
    let edge = appliance(storage);
    write_mqtt_bridge(&tmp.path().join("config"), &edge, remote_port);
    let backhaul = Backhaul::start(
        &tmp.path().join("config"),
        &tmp.path().join("data"),
        edge.metrics_port,
    )
    .unwrap();

    let acked = Arc::new(Mutex::new(Vec::new()));
    publish_numbered(
        edge.mqtt_port,
        "device-1",
        "factory/line1/temp",
        count,
        acked.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        acked.lock().unwrap().len() as u64,
        count,
        "every publish was PUBACKed"
    );
    assert_eq!(
        backhaul.metric(&sample("backhaul_queue_messages")).unwrap(),
        count as f64,
        "with the remote down, everything waits in the queue"
    );
    assert_eq!(
        backhaul
            .metric(&sample("backhaul_flow_delivered_total"))
            .unwrap(),
        0.0
    );

    let _remote = Mosquitto::start(remote_port, &remote_dir).unwrap();
    let received = collect(
        remote_port,
        SUBSCRIBER,
        count as usize,
        Duration::from_secs(2),
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    assert_eq!(
        numbers(&received),
        (0..count).collect::<Vec<u64>>(),
        "all, once, in order"
    );
    for (i, message) in received.iter().enumerate() {
        assert_eq!(message.topic, "cloud/factory/line1/temp");
        assert_eq!(
            message.id.as_deref(),
            Some(format!("test-edge/{FLOW}/{}", i + 1).as_str()),
            "stable id as an MQTT 5 user property"
        );
    }
    let (received_total, delivered) = drained(&backhaul).await;
    assert_eq!((received_total, delivered), (count as f64, count as f64));
    assert_eq!(
        backhaul.metric(&sample("backhaul_queue_messages")).unwrap(),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pubacked_message_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let remote_dir = tmp.path().join("remote");
    let remote_port = remote_with_offline_subscriber(&remote_dir).await;
    let edge = appliance("Disk");
    let config = tmp.path().join("config");
    let data = tmp.path().join("data");
    write_mqtt_bridge(&config, &edge, remote_port);
    let backhaul = Backhaul::start(&config, &data, edge.metrics_port).unwrap();

    let publisher =
        BackgroundPublisher::start(edge.mqtt_port, "device-1", "factory/line1/temp", 1_000_000);
    publisher.wait_acked(3_000).await;
    backhaul.kill9().unwrap();
    let ended = publisher.task.await.unwrap();
    assert!(ended.is_err(), "the publisher lost its broker mid-stream");
    let acked: Vec<u64> = publisher.acked.lock().unwrap().clone();
    assert!(acked.len() >= 3_000);

    let backhaul = Backhaul::start(&config, &data, edge.metrics_port).unwrap();
    let recovered = backhaul
        .metric(&sample("backhaul_flow_recovered_messages"))
        .unwrap();
    assert!(
        recovered >= acked.len() as f64,
        "recovered {recovered} queued messages, {} were PUBACKed",
        acked.len()
    );

    let _remote = Mosquitto::start(remote_port, &remote_dir).unwrap();
    let received = collect(
        remote_port,
        SUBSCRIBER,
        recovered as usize,
        Duration::from_secs(2),
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    let got = numbers(&received);
    assert_eq!(
        got.len(),
        recovered as usize,
        "every recovered message was delivered"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates (nothing was in flight to the remote)"
    );
    let delivered: std::collections::HashSet<u64> = got.iter().copied().collect();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !delivered.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} PUBACKed messages lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let sequences: Vec<u64> = received.iter().map(|r| r.sequence().expect("id")).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "ids follow queue order"
    );
    eprintln!(
        "kill -9 after {} PUBACKs: {} queued messages recovered, {} delivered",
        acked.len(),
        recovered,
        got.len()
    );
    let (_, delivered_total) = drained(&backhaul).await;
    assert_eq!(delivered_total, recovered);
}
