//! Event Hubs end to end: devices publish MQTT to the built `backhaul`
//! binary; the flow sends to the in-tree Event Hubs peer through the
//! official SDK over real AMQP. Contents, ids and partition keys; a
//! blackholed peer while devices keep publishing; kill -9 with the peer
//! blackholed; an oversized event dead-lettered while the rest goes on.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_chaos_tests::config::{
    write_eventhubs, EventHubsEdge, CONNECTION_STRING_AUTH, EVENTHUBS_FLOW, EVENTHUBS_HUB,
};
use backhaul_chaos_tests::eventhubs_peer::{EventHubsPeer, PeerOptions, ReceivedEvent};
use backhaul_chaos_tests::mqtt::{publish_numbered, publish_v5, BackgroundPublisher};
use backhaul_chaos_tests::process::{http_get, http_request, Backhaul};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::{AsyncClient, MqttOptions};

const FLOW: &str = EVENTHUBS_FLOW;
const HUB: &str = EVENTHUBS_HUB;

fn write_config(dir: &Path, peer: &EventHubsPeer, strategy: &str) -> EventHubsEdge {
    write_eventhubs(dir, peer, CONNECTION_STRING_AUTH, strategy)
}

fn numbers(events: &[ReceivedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.body_text().parse().expect("numeric body"))
        .collect()
}

/// Every id once or more, duplicates only with the same body, order by id.
fn check_ids(events: &[ReceivedEvent]) -> Vec<u64> {
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    for event in events {
        let id = event.message_id.clone().expect("every event has its id");
        let body = event.body_text().into_owned();
        if let Some(previous) = bodies.insert(id.clone(), body.clone()) {
            assert_eq!(
                previous, body,
                "a duplicate carries the same id and body ({id})"
            );
        }
    }
    let mut seqs: Vec<u64> = bodies
        .keys()
        .map(|id| {
            assert!(id.starts_with(&format!("test-edge/{FLOW}/")), "{id}");
            id.rsplit('/').next().unwrap().parse().unwrap()
        })
        .collect();
    seqs.sort();
    seqs
}

async fn wait_drained(backhaul: &Backhaul) {
    let sample = format!("backhaul_queue_messages{{flow=\"{FLOW}\"}}");
    backhaul
        .wait_metric(&sample, 0.0, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_and_5_messages_arrive_with_ids_properties_and_partition_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = EventHubsPeer::start().await.unwrap();
    let edge = write_config(tmp.path(), &peer, "Topic");
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();

    let acked = Arc::new(Mutex::new(Vec::new()));
    publish_numbered(edge.mqtt_port, "plc-a", "factory/a", 300, acked.clone())
        .await
        .unwrap();
    publish_numbered(edge.mqtt_port, "plc-b", "factory/b", 300, acked.clone())
        .await
        .unwrap();
    let (client, mut eventloop) = AsyncClient::new(
        MqttOptions::new("sensor-5", "127.0.0.1", edge.mqtt_port),
        10,
    );
    let props = PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: vec![("line".into(), "7".into())],
        ..PublishProperties::default()
    };
    publish_v5(&client, &mut eventloop, "factory/c", "{\"t\":1}", props)
        .await
        .unwrap();

    let events = peer
        .wait_for_events(601, Duration::from_secs(60))
        .await
        .unwrap();
    wait_drained(&backhaul).await;
    assert_eq!(check_ids(&peer.events()), (1..=601).collect::<Vec<u64>>());
    for key in ["factory/a", "factory/b"] {
        let of_key: Vec<ReceivedEvent> = events
            .iter()
            .filter(|e| e.partition_key.as_deref() == Some(key))
            .cloned()
            .collect();
        assert_eq!(
            numbers(&of_key),
            (0..300).collect::<Vec<u64>>(),
            "{key}: all, in order"
        );
        assert!(of_key.iter().all(|e| e.hub == HUB));
    }
    let v5 = events
        .iter()
        .find(|e| e.partition_key.as_deref() == Some("factory/c"))
        .expect("the MQTT 5 message");
    assert_eq!(v5.body_text(), "{\"t\":1}");
    assert_eq!(v5.content_type.as_deref(), Some("application/json"));
    assert_eq!(v5.property("line").and_then(|v| v.as_str()), Some("7"));
    let delivered = format!("backhaul_flow_delivered_total{{flow=\"{FLOW}\"}}");
    assert_eq!(backhaul.metric(&delivered).unwrap(), 601.0);
}

/// A fault of the peer that a test switches on, and then off.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Connections reset, the open ones cut.
    Refuse,
    /// Every connection accepted and never answered.
    Silent,
    /// Transfers rejected with `com.microsoft:server-busy`.
    ServerBusy,
    /// Transfers received, never settled.
    Blackhole,
    /// Each transfer stored, then its connection cut before the settlement.
    TcpDrop,
    /// Each transfer settled after longer than the endpoint's 3 s timeout.
    SlowSettle,
}

impl Fault {
    fn switch(self, peer: &EventHubsPeer, on: bool) {
        match self {
            Fault::Refuse => {
                peer.refuse_connections(on);
                if on {
                    peer.drop_connections();
                }
            }
            Fault::Silent => peer.stay_silent(on),
            Fault::ServerBusy => peer.reject_transfers(on.then_some("com.microsoft:server-busy")),
            Fault::Blackhole => peer.blackhole(on),
            Fault::TcpDrop => peer.drop_on_transfer(on),
            Fault::SlowSettle => peer.settle_slowly(on.then_some(Duration::from_secs(4))),
        }
    }

    /// The `kind` label its failed sends are counted under.
    fn error_kind(self) -> &'static str {
        match self {
            Fault::ServerBusy => "throttled",
            _ => "transient",
        }
    }
}

/// How the fault tests place events: `Topic` puts the publisher's one topic
/// under one partition key, so its batches go one at a time and the order
/// holds; `Default` (no key) keeps two batches in flight, where a batch sent
/// again may arrive after a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keys {
    OneTopicKey,
    None,
}

/// Devices publish 3,000 numbered messages; the fault lasts 5 s in the middle.
/// Afterwards every PUBACKed message has arrived, duplicates only with their
/// original id and body, and with a key the first arrivals in publish order.
async fn a_fault_while_devices_publish_loses_nothing_and_keeps_order(fault: Fault) {
    a_fault_while_devices_publish_loses_nothing(fault, Keys::OneTopicKey).await;
}

async fn a_fault_while_devices_publish_loses_nothing(fault: Fault, keys: Keys) {
    let tmp = tempfile::tempdir().unwrap();
    let peer = EventHubsPeer::start().await.unwrap();
    let strategy = match keys {
        Keys::OneTopicKey => "Topic",
        Keys::None => "Default",
    };
    let edge = write_config(tmp.path(), &peer, strategy);
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();

    let publisher = BackgroundPublisher::start(edge.mqtt_port, "plc", "factory/line", 3_000);
    publisher.wait_acked(500).await;
    fault.switch(&peer, true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let queued = backhaul
        .metric(&format!("backhaul_queue_messages{{flow=\"{FLOW}\"}}"))
        .unwrap();
    assert!(queued > 0.0, "{fault:?}: the backlog grew during the fault");
    fault.switch(&peer, false);
    publisher.task.await.unwrap().unwrap();
    wait_drained(&backhaul).await;

    let events = peer.events();
    assert_eq!(
        check_ids(&events),
        (1..=3_000).collect::<Vec<u64>>(),
        "{fault:?}: every PUBACKed message"
    );
    if keys == Keys::OneTopicKey {
        assert!(events
            .iter()
            .all(|e| e.partition_key.as_deref() == Some("factory/line")));
        let mut seen = HashSet::new();
        let first_arrivals: Vec<u64> = numbers(&events)
            .into_iter()
            .filter(|n| seen.insert(*n))
            .collect();
        assert_eq!(
            first_arrivals,
            (0..3_000).collect::<Vec<u64>>(),
            "{fault:?}: in publish order"
        );
    }
    let errors = backhaul
        .metric(&format!(
            "backhaul_flow_send_errors_total{{flow=\"{FLOW}\",kind=\"{}\"}}",
            fault.error_kind()
        ))
        .unwrap();
    assert!(errors >= 1.0, "{fault:?} was counted as a failed send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_batches_in_flight_at_tcp_drops_lose_nothing() {
    a_fault_while_devices_publish_loses_nothing(Fault::TcpDrop, Keys::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_while_devices_publish_lose_nothing() {
    a_fault_while_devices_publish_loses_nothing_and_keeps_order(Fault::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_while_devices_publish_loses_nothing() {
    a_fault_while_devices_publish_loses_nothing_and_keeps_order(Fault::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_busy_while_devices_publish_loses_nothing() {
    a_fault_while_devices_publish_loses_nothing_and_keeps_order(Fault::ServerBusy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_peer_while_devices_publish_loses_nothing() {
    a_fault_while_devices_publish_loses_nothing_and_keeps_order(Fault::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_drops_in_flight_while_devices_publish_lose_nothing() {
    a_fault_while_devices_publish_loses_nothing_and_keeps_order(Fault::TcpDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_settlement_while_devices_publish_loses_nothing() {
    a_fault_while_devices_publish_loses_nothing_and_keeps_order(Fault::SlowSettle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_the_peer_blackholed_loses_no_pubacked_message() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = EventHubsPeer::start().await.unwrap();
    peer.blackhole(true);
    let edge = write_config(tmp.path(), &peer, "Default");
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();
    let publisher = BackgroundPublisher::start(edge.mqtt_port, "plc", "factory/line", 1_000_000);
    publisher.wait_acked(2_000).await;
    backhaul.kill9().unwrap();
    let acked_list = publisher.acked.clone();
    assert!(publisher.task.await.unwrap().is_err());
    let acked: HashSet<u64> = acked_list.lock().unwrap().iter().copied().collect();

    peer.blackhole(false);
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();
    wait_drained(&backhaul).await;
    let delivered: HashSet<u64> = numbers(&peer.events()).into_iter().collect();
    let lost = acked.difference(&delivered).count();
    assert_eq!(lost, 0, "{lost} of {} PUBACKed messages lost", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_is_dead_lettered_the_rest_delivered_and_it_replays_later() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = EventHubsPeer::start_with(PeerOptions {
        max_message_size: 16 * 1024,
        ..PeerOptions::default()
    })
    .await
    .unwrap();
    let edge = write_config(tmp.path(), &peer, "Default");
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("plc", "127.0.0.1", edge.mqtt_port), 10);
    let big = "x".repeat(64 * 1024);
    for payload in ["before", big.as_str(), "after"] {
        publish_v5(
            &client,
            &mut eventloop,
            "factory/x",
            payload,
            PublishProperties::default(),
        )
        .await
        .unwrap();
    }
    wait_drained(&backhaul).await;
    let bodies: Vec<String> = peer
        .events()
        .iter()
        .map(|e| e.body_text().into_owned())
        .collect();
    assert_eq!(bodies, ["before", "after"]);
    let dropped = format!("backhaul_flow_dropped_total{{flow=\"{FLOW}\",reason=\"too_large\"}}");
    assert_eq!(backhaul.metric(&dropped).unwrap(), 1.0);
    let (status, body) =
        http_get(edge.metrics_port, &format!("/api/v1/deadletters/{FLOW}")).unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let letters = listed["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["id"], format!("test-edge/{FLOW}/2"));
    assert_eq!(letters[0]["reason"], "too_large");
    assert_eq!(
        letters[0]["payload"].as_str().map(str::len),
        Some(64 * 1024)
    );

    // Replayed to the same peer, it is still too large: kept again, not
    // counted as dropped twice.
    let report = replay(edge.metrics_port);
    assert_eq!(
        report,
        serde_json::json!({"flow": FLOW, "replayed": 0, "deadLetteredAgain": 1})
    );
    assert_eq!(backhaul.metric(&dropped).unwrap(), 1.0);
    assert_eq!(
        dead_letter_ids(edge.metrics_port),
        [format!("test-edge/{FLOW}/2")]
    );

    // The operator moves the flow to a hub that takes 1 MiB and replays:
    // the letter arrives with its original id, and the list is empty.
    drop(backhaul);
    let roomy = EventHubsPeer::start_with(PeerOptions {
        max_message_size: 1024 * 1024,
        ..PeerOptions::default()
    })
    .await
    .unwrap();
    let edge = write_config(tmp.path(), &roomy, "Default");
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();
    let report = replay(edge.metrics_port);
    assert_eq!(
        report,
        serde_json::json!({"flow": FLOW, "replayed": 1, "deadLetteredAgain": 0})
    );
    let events = roomy.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].message_id.as_deref(),
        Some(format!("test-edge/{FLOW}/2").as_str())
    );
    assert_eq!(events[0].body_text(), big);
    assert!(dead_letter_ids(edge.metrics_port).is_empty());
    let replayed = format!("backhaul_flow_dead_letters_replayed_total{{flow=\"{FLOW}\"}}");
    assert_eq!(backhaul.metric(&replayed).unwrap(), 1.0);
    let (status, body) = http_request(
        edge.metrics_port,
        "POST",
        "/api/v1/deadletters/no-such-flow/replay",
        "",
    )
    .unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        body,
        r#"{"error":"no running data flow is named 'no-such-flow'"}"#
    );
}

/// `POST /api/v1/deadletters/<FLOW>/replay`: its JSON answer.
fn replay(metrics_port: u16) -> serde_json::Value {
    let path = format!("/api/v1/deadletters/{FLOW}/replay");
    let (status, body) = http_request(metrics_port, "POST", &path, "").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The ids `GET /api/v1/deadletters/<FLOW>` lists.
fn dead_letter_ids(metrics_port: u16) -> Vec<String> {
    let (status, body) = http_get(metrics_port, &format!("/api/v1/deadletters/{FLOW}")).unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    listed["deadLetters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|letter| letter["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_flow_is_parked_keeps_its_data_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = EventHubsPeer::start().await.unwrap();
    peer.reject_tokens(true);
    let edge = write_config(tmp.path(), &peer, "Default");
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    publish_numbered(edge.mqtt_port, "plc", "factory/line", 500, acked.clone())
        .await
        .unwrap();

    let parked = format!("backhaul_flow_parked{{flow=\"{FLOW}\"}}");
    backhaul
        .wait_metric(&parked, 1.0, Duration::from_secs(10))
        .await;
    let (status, body) = http_get(edge.metrics_port, "/readyz").unwrap();
    assert_eq!(status, 503);
    assert!(
        body.starts_with(&format!("flow '{FLOW}' parked: ")),
        "{body}"
    );
    let (ok, stderr) = healthcheck(edge.metrics_port);
    assert!(!ok, "healthcheck of a parked appliance must fail");
    assert!(
        stderr.starts_with(&format!(
            "backhaul: not ready: 127.0.0.1:{}/readyz answered 503: flow '{FLOW}' parked: ",
            edge.metrics_port
        )),
        "{stderr}"
    );
    let queued = format!("backhaul_queue_messages{{flow=\"{FLOW}\"}}");
    assert_eq!(
        backhaul.metric(&queued).unwrap(),
        500.0,
        "nothing dropped while parked"
    );
    assert!(peer.events().is_empty());

    peer.reject_tokens(false);
    wait_drained(&backhaul).await;
    assert_eq!(check_ids(&peer.events()), (1..=500).collect::<Vec<u64>>());
    assert_eq!(backhaul.metric(&parked).unwrap(), 0.0);
    assert_eq!(http_get(edge.metrics_port, "/readyz").unwrap().0, 200);
    assert_eq!(healthcheck(edge.metrics_port), (true, String::new()));
}

/// `backhaul healthcheck --address`: success and what it printed.
fn healthcheck(metrics_port: u16) -> (bool, String) {
    let output = std::process::Command::new(backhaul_chaos_tests::process::backhaul_bin().unwrap())
        .args([
            "healthcheck",
            "--address",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
