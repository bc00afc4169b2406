//! Will messages and keep-alive, against real clients (rumqttc 3.1.1 and 5,
//! mosquitto_sub, raw sockets where a client library cannot misbehave on
//! purpose): a will reaches subscribers and the data flow's queue when a
//! connection ends abnormally, not after a normal DISCONNECT; MQTT 5 will
//! delay; the will topic is authorized at CONNECT; takeover.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_broker::authz::{DefaultDecision, Rule, RuleIdentity};
use backhaul_broker::stats::Action;
use backhaul_broker::{Authentication, Authorization, BrokerSettings};
use support::*;
use tokio::io::AsyncWriteExt;

async fn broker() -> TestBroker {
    TestBroker::start(BrokerSettings {
        listeners: vec![listener("plain", None, Authentication::Anonymous)],
        ..BrokerSettings::default()
    })
    .await
}

fn will<'a>(topic: &'a str, payload: &'a str, delay: Option<u32>) -> RawWill<'a> {
    RawWill {
        topic,
        payload,
        qos: 1,
        retain: false,
        delay,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_publishes_the_retained_will_to_subscribers_and_the_flow() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/+/status").await;

    let mut options = rumqttc::MqttOptions::new("dev1", "127.0.0.1", address.port());
    options.set_last_will(rumqttc::LastWill::new(
        "plant/dev1/status",
        "offline",
        rumqttc::QoS::AtLeastOnce,
        true,
    ));
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = events.poll().await.unwrap()
        {
            break;
        }
    }
    // Dropping the event loop closes the socket without DISCONNECT.
    drop(events);

    let received = watcher.next().await;
    assert_eq!(
        (received.topic.as_str(), received.payload.as_str()),
        ("plant/dev1/status", "offline")
    );
    assert_eq!(
        broker.queued().await,
        vec![("plant/dev1/status".to_string(), "offline".to_string())]
    );
    assert_eq!(broker.stats.wills_published.load(Ordering::Relaxed), 1);

    // Retained: a subscriber that comes later still learns it.
    let mut late = Subscriber::start(address, "late", "plant/+/status").await;
    assert_eq!(
        late.next().await,
        Received {
            topic: "plant/dev1/status".into(),
            payload: "offline".into(),
            retain: true,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mosquitto_sub_has_its_will_published() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    let mut mosquitto_sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &address.port().to_string()])
        .args(["-i", "sub-with-will", "-t", "nothing/here", "-V", "mqttv5"])
        .args(["--will-topic", "plant/sub-with-will/status"])
        .args(["--will-payload", "lost", "--will-qos", "1"])
        .spawn()
        .expect("mosquitto_sub is installed (scripts/test.sh installs mosquitto-clients)");
    broker.until_connections(2, "mosquitto_sub connected").await;
    mosquitto_sub.kill().unwrap();
    mosquitto_sub.wait().unwrap();
    assert_eq!(
        watcher.next().await,
        message("plant/sub-with-will/status", "lost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_disconnect_discards_the_will_on_3_1_1_and_5() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;

    // MQTT 5: rumqttc sends DISCONNECT with reason 0x00.
    let mut options = rumqttc::v5::MqttOptions::new("dev5", "127.0.0.1", address.port());
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "plant/dev5/status",
        "offline",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        None,
    ));
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}

    // MQTT 3.1.1: mosquitto_pub publishes and disconnects normally.
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &address.port().to_string()])
        .args([
            "-i",
            "dev4",
            "-t",
            "plant/dev4/reading",
            "-m",
            "21.5",
            "-q",
            "1",
        ])
        .args([
            "--will-topic",
            "plant/dev4/status",
            "--will-payload",
            "offline",
        ])
        .status()
        .expect("mosquitto_pub is installed");
    assert!(status.success());

    broker.until_connections(1, "both clients gone").await;
    watcher.publish("plant/marker", "end").await;
    assert_eq!(watcher.next().await, message("plant/dev4/reading", "21.5"));
    assert_eq!(watcher.next().await, message("plant/marker", "end"));
    assert_eq!(broker.stats.wills_published.load(Ordering::Relaxed), 0);
    let queued = broker.queued_through("plant/marker").await;
    let topics: Vec<&str> = queued.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, vec!["plant/dev4/reading", "plant/marker"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_will_message_publishes_it() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    let options = ConnectOptions {
        will: Some(will("plant/dev/status", "bye", None)),
        ..ConnectOptions::new(true, "dev")
    };
    let (mut socket, _, code) = connect_raw(address, &options).await;
    assert_eq!(code, 0);
    socket.write_all(&disconnect(Some(0x04))).await.unwrap();
    assert_eq!(watcher.next().await, message("plant/dev/status", "bye"));
    assert_eq!(
        broker.queued().await,
        vec![("plant/dev/status".to_string(), "bye".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_is_published_after_its_delay() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    let options = ConnectOptions {
        session_expiry: Some(60),
        will: Some(will("plant/dev/status", "late", Some(2))),
        ..ConnectOptions::new(true, "dev")
    };
    let (socket, _, _) = connect_raw(address, &options).await;
    let dropped = Instant::now();
    drop(socket);
    assert_eq!(watcher.next().await, message("plant/dev/status", "late"));
    assert!(
        dropped.elapsed() >= Duration::from_secs(2),
        "not before the delay: {:?}",
        dropped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_within_the_delay_cancels_the_will() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    let options = ConnectOptions {
        clean: false,
        session_expiry: Some(60),
        will: Some(will("plant/dev/status", "late", Some(2))),
        ..ConnectOptions::new(true, "dev")
    };
    let (socket, _, _) = connect_raw(address, &options).await;
    drop(socket);
    let (_again, session_present, code) = connect_raw(address, &options).await;
    assert_eq!((session_present, code), (true, 0));
    // Past the first connection's delay: its will must not come.
    tokio::time::sleep(Duration::from_secs(3)).await;
    watcher.publish("plant/marker", "end").await;
    assert_eq!(watcher.next().await, message("plant/marker", "end"));
    assert_eq!(broker.stats.wills_published.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_comes_when_the_session_ends_before_the_delay() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    let options = ConnectOptions {
        session_expiry: Some(1),
        will: Some(will("plant/dev/status", "session over", Some(3600))),
        ..ConnectOptions::new(true, "dev")
    };
    let (socket, _, _) = connect_raw(address, &options).await;
    let dropped = Instant::now();
    drop(socket);
    // Within the subscriber's 20 s, so long before the hour of delay.
    assert_eq!(
        watcher.next().await,
        message("plant/dev/status", "session over")
    );
    assert!(dropped.elapsed() >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_topic_the_rules_deny_refuses_the_connect() {
    let rules = Authorization::new(
        vec![Rule {
            identity: RuleIdentity::Anyone,
            publish: vec!["plant/%c/#".into()],
            subscribe: vec!["#".into()],
            deny_publish: Vec::new(),
            deny_subscribe: Vec::new(),
        }],
        DefaultDecision::Deny,
    );
    let broker = TestBroker::start(BrokerSettings {
        listeners: vec![listener("plain", None, Authentication::Anonymous)],
        authorization: Arc::new(rules),
        ..BrokerSettings::default()
    })
    .await;
    let address = broker.addresses[0];
    for (v5, refused) in [(true, 0x87), (false, 5)] {
        let options = ConnectOptions {
            will: Some(will("plant/other/status", "x", None)),
            ..ConnectOptions::new(v5, "dev")
        };
        let (_, _, code) = connect_raw(address, &options).await;
        assert_eq!(code, refused, "v5: {v5}");
        let granted = ConnectOptions {
            will: Some(will("plant/dev/status", "x", None)),
            ..ConnectOptions::new(v5, "dev")
        };
        let (_, _, code) = connect_raw(address, &granted).await;
        assert_eq!(code, 0, "v5: {v5}");
    }
    assert_eq!(broker.stats.authorization_denied.get(Action::Publish), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_closes_the_old_connection_which_publishes_its_will() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    let first = ConnectOptions {
        will: Some(will("plant/dev/status", "replaced", None)),
        ..ConnectOptions::new(true, "dev")
    };
    let (mut old, _, _) = connect_raw(address, &first).await;
    let (mut new, _, code) = connect_raw(address, &ConnectOptions::new(true, "dev")).await;
    assert_eq!(code, 0);
    let packets = until_closed(&mut old).await;
    assert_eq!(
        disconnect_reasons(&packets),
        vec![0x8e],
        "MQTT 5: Session taken over"
    );
    assert_eq!(
        watcher.next().await,
        message("plant/dev/status", "replaced")
    );
    new.write_all(&PINGREQ).await.unwrap();
    assert_eq!(
        read_packet(&mut new).await,
        Some(vec![0xd0, 0]),
        "the new connection is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_for_one_and_a_half_keep_alives_is_closed_and_its_will_published() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    for (v5, client_id) in [(false, "quiet4"), (true, "quiet5")] {
        let topic = format!("plant/{client_id}/status");
        let options = ConnectOptions {
            keep_alive: 1,
            will: Some(will(&topic, "silent", None)),
            ..ConnectOptions::new(v5, client_id)
        };
        let started = Instant::now();
        let (mut socket, _, _) = connect_raw(address, &options).await;
        let packets = until_closed(&mut socket).await;
        let closed_after = started.elapsed();
        assert!(
            closed_after >= Duration::from_millis(1500),
            "not before 1.5 x keep-alive: {closed_after:?}"
        );
        let expected: Vec<u8> = if v5 { vec![0x8d] } else { vec![] };
        assert_eq!(disconnect_reasons(&packets), expected, "v5: {v5}");
        assert_eq!(watcher.next().await, message(&topic, "silent"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_within_one_and_a_half_keep_alives_keep_a_client_connected() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let mut watcher = Subscriber::start(address, "watcher", "plant/#").await;
    let options = ConnectOptions {
        keep_alive: 4,
        will: Some(will("plant/pinger/status", "dropped", None)),
        ..ConnectOptions::new(true, "pinger")
    };
    let (mut socket, _, _) = connect_raw(address, &options).await;
    // Each gap is longer than the keep-alive (4 s) but shorter than 1.5
    // times it (6 s), with room for a slow machine.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(4800)).await;
        socket.write_all(&PINGREQ).await.unwrap();
        assert_eq!(read_packet(&mut socket).await, Some(vec![0xd0, 0]));
    }
    watcher.publish("plant/marker", "end").await;
    assert_eq!(watcher.next().await, message("plant/marker", "end"));
    assert_eq!(broker.stats.wills_published.load(Ordering::Relaxed), 0);
}

/// A device taking the client id of one of Backhaul's own router links
/// would evict that link from the router: the will link, and the link that
/// restores retained messages at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ids_of_the_internal_links_are_refused_to_devices() {
    let broker = broker().await;
    let address = broker.addresses[0];
    for reserved in ["backhaul-internal-wills", "backhaul-retained-restore"] {
        let (_, _, code) = connect_raw(address, &ConnectOptions::new(true, reserved)).await;
        assert_eq!(
            code, 0x85,
            "MQTT 5: Client Identifier not valid ({reserved})"
        );
        let (_, _, code) = connect_raw(address, &ConnectOptions::new(false, reserved)).await;
        assert_eq!(code, 0x02, "MQTT 3.1.1: identifier rejected ({reserved})");
    }
}
