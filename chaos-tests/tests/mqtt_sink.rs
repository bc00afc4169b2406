//! The MQTT sink's window against a real Mosquitto: it returns once the
//! front of the window is confirmed while the rest stays in flight, and the
//! caller's later windows (the rest plus new messages) arrive exactly once
//! and in order; after the connection is lost, the window is sent again
//! from its front.

use std::time::Duration;

use backhaul_bridge::config::{MqttEndpoint, RetainPolicy};
use backhaul_bridge::endpoint::mqtt::MqttSink;
use backhaul_bridge::endpoint::{OutboundMessage, Sink};
use backhaul_broker::StoredMessage;
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::mqtt::{collect, create_persistent_subscription};
use backhaul_chaos_tests::process::Mosquitto;

fn sink(port: u16) -> MqttSink {
    let settings = MqttEndpoint {
        host: "127.0.0.1".into(),
        port,
        client_id_prefix: None,
        qos: 1,
        retain: RetainPolicy::Keep,
        keep_alive_seconds: 60,
        max_inflight_messages: 20,
    };
    MqttSink::new(settings, "window-test".into())
}

fn messages(numbers: std::ops::Range<u64>) -> Vec<OutboundMessage> {
    numbers
        .map(|n| OutboundMessage {
            id: format!("test/window/{n}"),
            destination: "cloud/window".into(),
            message: StoredMessage {
                qos: 1,
                payload: n.to_string().into_bytes().into(),
                ..StoredMessage::default()
            },
        })
        .collect()
}

/// A Mosquitto on a free port holding the persistent `cloud/#` session of
/// `window-subscriber`.
async fn remote_with_subscriber(dir: &std::path::Path) -> (Mosquitto, u16) {
    let port = free_port();
    let remote = Mosquitto::start(port, dir).unwrap();
    create_persistent_subscription(port, "window-subscriber", "cloud/#")
        .await
        .unwrap();
    (remote, port)
}

fn numbers(received: &[backhaul_chaos_tests::mqtt::Received]) -> Vec<u64> {
    received.iter().filter_map(|r| r.number()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_is_confirmed_from_its_front_and_the_rest_stays_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (_remote, port) = remote_with_subscriber(dir.path()).await;
    let mut sink = sink(port);

    let mut window = messages(0..300);
    let confirmed = sink.send_window(&window, 50).await.unwrap();
    assert!(
        (50..=300).contains(&confirmed),
        "confirmed {confirmed} of a window of 300, wanting 50"
    );
    window.drain(..confirmed);
    window.extend(messages(300..400));
    while !window.is_empty() {
        let want = window.len().min(100);
        let confirmed = sink.send_window(&window, want).await.unwrap();
        assert!(confirmed >= want && confirmed <= window.len());
        window.drain(..confirmed);
    }
    sink.close().await;

    let received = collect(
        port,
        "window-subscriber",
        400,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(numbers(&received), (0..400).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_went_away_the_whole_window_is_sent_again_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (remote, port) = remote_with_subscriber(dir.path()).await;
    let mut sink = sink(port);
    let mut window = messages(0..100);
    let confirmed = sink.send_window(&window, 10).await.unwrap();
    window.drain(..confirmed);
    remote.stop().unwrap();

    let err = sink.send_window(&window, window.len()).await.unwrap_err();
    assert_eq!(err.kind.as_str(), "transient", "{err}");
    let _remote = Mosquitto::start(port, dir.path()).unwrap();
    let mut sent = Err(err);
    for _ in 0..50 {
        sent = sink.send_window(&window, window.len()).await;
        if sent.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent.unwrap(), window.len());

    let received = collect(
        port,
        "window-subscriber",
        100,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let got = numbers(&received);
    let first = got.first().copied().unwrap_or(0);
    assert!(
        first <= confirmed as u64,
        "nothing confirmed is missing: {got:?}"
    );
    let mut distinct = got.clone();
    distinct.dedup();
    assert_eq!(
        distinct.last(),
        Some(&99),
        "the window arrived to its end: {got:?}"
    );
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, (first..100).collect::<Vec<_>>(), "no gap: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_brokers_maximum_packet_size_is_refused_after_those_before_it_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _remote = Mosquitto::start_with(port, dir.path(), 1000, "max_packet_size 2000\n").unwrap();
    create_persistent_subscription(port, "window-subscriber", "cloud/#")
        .await
        .unwrap();
    let mut sink = sink(port);
    let mut window = messages(0..6);
    window[3].message.payload = vec![b'x'; 4000].into();

    let err = sink.send_window(&window, 6).await.unwrap_err();
    assert_eq!(err.too_large, Some(3), "{err}");
    assert_eq!(
        err.message,
        "message 3 (test/window/3) is too large to send: \
         the PUBLISH would be 4057 bytes; the broker accepts at most 2000"
    );
    window.drain(..4);
    assert_eq!(sink.send_window(&window, 2).await.unwrap(), 2);
    sink.close().await;

    let received = collect(
        port,
        "window-subscriber",
        5,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(numbers(&received), [0, 1, 2, 4, 5]);
}
