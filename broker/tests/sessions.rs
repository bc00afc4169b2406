//! Persistent sessions and session expiry, with rumqttc (3.1.1 and 5) and
//! raw MQTT 5 CONNECTs: subscriptions and QoS 1 messages published while
//! the client was away survive a reconnect; a session whose Session Expiry
//! Interval passed is gone; MQTT 5 clean start and expiry 0 behave as the
//! specification says.

mod support;

use std::time::Duration;

use backhaul_broker::{Authentication, BrokerSettings};
use support::*;

async fn broker() -> TestBroker {
    TestBroker::start(BrokerSettings {
        listeners: vec![listener("plain", None, Authentication::Anonymous)],
        ..BrokerSettings::default()
    })
    .await
}

/// A persistent rumqttc client (3.1.1 clean session false, or 5 clean
/// start false with `expiry`): the CONNACK's session present flag, and the
/// payloads it then receives until `until` arrives.
struct Persistent {
    address: std::net::SocketAddr,
    v5: bool,
    expiry: Option<u32>,
}

impl Persistent {
    /// Connects, subscribes `filter` at QoS 1 if asked, then disconnects
    /// normally. The session present flag.
    async fn visit(&self, subscribe: Option<&str>) -> bool {
        let (present, _) = self.connect(subscribe, None).await;
        present
    }

    /// Connects and collects payloads on the session until `until`.
    async fn collect(&self, until: &str) -> (bool, Vec<String>) {
        self.connect(None, Some(until)).await
    }

    async fn connect(&self, subscribe: Option<&str>, until: Option<&str>) -> (bool, Vec<String>) {
        let port = self.address.port();
        if self.v5 {
            use rumqttc::v5::mqttbytes::v5::Packet;
            use rumqttc::v5::mqttbytes::QoS;
            use rumqttc::v5::{AsyncClient, Event, MqttOptions};
            let mut options = MqttOptions::new("keeper", "127.0.0.1", port);
            options.set_clean_start(false);
            options.set_session_expiry_interval(self.expiry);
            let (client, events) = AsyncClient::new(options, 100);
            run_client!(client, events, subscribe, until)
        } else {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
            let mut options = MqttOptions::new("keeper", "127.0.0.1", port);
            options.set_clean_session(false);
            let (client, events) = AsyncClient::new(options, 100);
            run_client!(client, events, subscribe, until)
        }
    }
}

/// The body of [`Persistent::connect`] for either rumqttc client (3.1.1 or
/// 5): the two have the same shape under different types, which the
/// caller's `use` of `Event`, `Packet` and `QoS` chooses.
macro_rules! run_client {
    ($client:ident, $events:ident, $subscribe:ident, $until:ident) => {{
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        if let Some(filter) = $subscribe {
            $client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        }
        let mut events = $events;
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                let item = match event {
                    Event::Incoming(Packet::ConnAck(ack)) => Item::Present(ack.session_present),
                    Event::Incoming(Packet::SubAck(_)) => Item::Subscribed,
                    Event::Incoming(Packet::Publish(p)) => {
                        Item::Payload(String::from_utf8_lossy(&p.payload).into_owned())
                    }
                    _ => continue,
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        let result = gather(&mut rx, $subscribe.is_some(), $until).await;
        $client.disconnect().await.unwrap();
        wait_closed(&mut rx).await;
        result
    }};
}
use run_client;

/// The next item from the client (within 20 s).
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Item>) -> Item {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the client hears from the broker in time")
        .expect("the client runs")
}

enum Item {
    Present(bool),
    Subscribed,
    Payload(String),
}

async fn gather(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Item>,
    subscribing: bool,
    until: Option<&str>,
) -> (bool, Vec<String>) {
    let Item::Present(present) = next(rx).await else {
        panic!("CONNACK first");
    };
    if subscribing {
        assert!(matches!(next(rx).await, Item::Subscribed));
    }
    let mut payloads = Vec::new();
    if let Some(until) = until {
        loop {
            if let Item::Payload(payload) = next(rx).await {
                let done = payload == until;
                payloads.push(payload);
                if done {
                    break;
                }
            }
        }
    }
    (present, payloads)
}

/// Waits until the event loop task ended (the DISCONNECT went out).
async fn wait_closed(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Item>) {
    let drained = async { while rx.recv().await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(20), drained)
        .await
        .expect("the client disconnects in time");
}

/// Waits until the broker has seen every connection close, so the next
/// CONNECT finds the session as its predecessor left it (not a takeover).
async fn settled(broker: &TestBroker) {
    broker.until_connections(0, "every connection closed").await;
}

/// Publishes `payloads` at QoS 1 with mosquitto_pub (one connection each).
fn publish(address: std::net::SocketAddr, topic: &str, payloads: &[&str]) {
    for payload in payloads {
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &address.port().to_string()])
            .args(["-t", topic, "-m", payload, "-q", "1"])
            .status()
            .expect("mosquitto_pub is installed (scripts/test.sh installs mosquitto-clients)");
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_keep_subscriptions_and_queued_messages_on_3_1_1_and_5() {
    let broker = broker().await;
    let address = broker.addresses[0];
    for (v5, expiry) in [(false, None), (true, Some(60)), (true, Some(u32::MAX))] {
        let keeper = Persistent {
            address,
            v5,
            expiry,
        };
        keeper.visit(Some("kept/#")).await;
        settled(&broker).await;
        publish(address, "kept/x", &["1", "2", "3", "end"]);
        let (present, payloads) = keeper.collect("end").await;
        assert!(present, "v5: {v5}, expiry {expiry:?}");
        assert_eq!(
            payloads,
            ["1", "2", "3", "end"],
            "v5: {v5}, expiry {expiry:?}"
        );
        settled(&broker).await;
        // Cleared for the next round.
        let (_, _, _) = connect_raw(address, &ConnectOptions::new(v5, "keeper")).await;
        settled(&broker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_gone_with_its_subscriptions() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let keeper = Persistent {
        address,
        v5: true,
        expiry: Some(1),
    };
    keeper.visit(Some("kept/#")).await;
    settled(&broker).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish(address, "kept/x", &["while expired"]);
    // No session: not present, and nothing queued for the old subscription.
    let options = ConnectOptions {
        clean: false,
        session_expiry: Some(60),
        ..ConnectOptions::new(true, "keeper")
    };
    let (mut socket, present, code) = connect_raw(address, &options).await;
    assert_eq!((present, code), (false, 0));
    use tokio::io::AsyncWriteExt;
    socket.write_all(&PINGREQ).await.unwrap();
    assert_eq!(
        read_packet(&mut socket).await,
        Some(vec![0xd0, 0]),
        "PINGRESP, and no PUBLISH before it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_within_its_expiry_is_still_there() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let keeper = Persistent {
        address,
        v5: true,
        expiry: Some(5),
    };
    keeper.visit(Some("kept/#")).await;
    settled(&broker).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish(address, "kept/x", &["still here"]);
    let (present, payloads) = keeper.collect("still here").await;
    assert!(present);
    assert_eq!(payloads, ["still here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_clean_start_and_expiry_zero_follow_the_specification() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let raw = |clean: bool, expiry: Option<u32>| ConnectOptions {
        clean,
        session_expiry: expiry,
        ..ConnectOptions::new(true, "dev")
    };
    // Clean start false without an expiry interval: the session ends with
    // the connection.
    let (socket, present, _) = connect_raw(address, &raw(false, None)).await;
    assert!(!present);
    drop(socket);
    settled(&broker).await;
    let (socket, present, _) = connect_raw(address, &raw(false, Some(60))).await;
    assert!(!present, "expiry 0: nothing kept");
    drop(socket);
    settled(&broker).await;
    // Expiry 60: kept...
    let (socket, present, _) = connect_raw(address, &raw(false, Some(60))).await;
    assert!(present, "expiry 60: kept");
    drop(socket);
    settled(&broker).await;
    // ...until a clean start discards it; that new session, with an
    // expiry, outlives its own connection.
    let (socket, present, _) = connect_raw(address, &raw(true, Some(60))).await;
    assert!(!present, "clean start discards the old session");
    drop(socket);
    settled(&broker).await;
    let (_socket, present, _) = connect_raw(address, &raw(false, Some(60))).await;
    assert!(present, "the clean-started session was kept after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_client_id_with_a_persistent_session_is_refused_only_on_3_1_1() {
    let broker = broker().await;
    let address = broker.addresses[0];
    let persistent = |v5| ConnectOptions {
        clean: false,
        ..ConnectOptions::new(v5, "")
    };
    let (_, _, code) = connect_raw(address, &persistent(false)).await;
    assert_eq!(code, 0x02, "3.1.1: identifier rejected");
    let (mut socket, _, code) = connect_raw(address, &persistent(true)).await;
    assert_eq!(code, 0, "MQTT 5: the server assigns one");
    use tokio::io::AsyncWriteExt;
    socket.write_all(&PINGREQ).await.unwrap();
    assert_eq!(read_packet(&mut socket).await, Some(vec![0xd0, 0]));
}

/// rumqttd's router panics when a session it saves was alone in a `$share`
/// group with a message in flight, so such subscriptions get QoS 0. An
/// MQTT 5 clean start with an expiry interval is such a session too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_of_sessions_the_router_keeps_are_granted_qos_0() {
    use tokio::io::AsyncWriteExt;
    let broker = broker().await;
    let address = broker.addresses[0];
    for (clean, expiry, granted) in [(true, Some(60), 0), (false, Some(60), 0), (true, None, 1)] {
        let options = ConnectOptions {
            clean,
            session_expiry: expiry,
            ..ConnectOptions::new(true, "sharer")
        };
        let (mut socket, _, _) = connect_raw(address, &options).await;
        socket
            .write_all(&subscribe(true, 7, &["$share/g/plant/#"]))
            .await
            .unwrap();
        let ack = read_packet(&mut socket).await.expect("SUBACK");
        assert_eq!(
            suback(&ack, 1),
            (7, vec![granted]),
            "clean start {clean}, expiry {expiry:?}"
        );
        drop(socket);
        settled(&broker).await;
    }
}
