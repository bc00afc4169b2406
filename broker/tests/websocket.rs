//! MQTT over WebSocket listeners, against rumqttc's WebSocket transport
//! (`ws` and `wss` with the test CA) and raw HTTP for the refusals.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use backhaul_broker::stats::Rejection;
use backhaul_broker::{
    Authentication, BrokerSettings, Limits, ListenerSettings, WebSocketSettings,
};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A WebSocket listener on `/mqtt`, over TLS when `tls` is given.
fn websocket_listener(name: &str, tls: Option<backhaul_broker::tls::TlsFiles>) -> ListenerSettings {
    ListenerSettings {
        websocket: Some(WebSocketSettings::default()),
        ..listener(name, tls, Authentication::Anonymous)
    }
}

/// A broker with a plain TCP listener (first) and the given others; a
/// short connect timeout ends the test's upgrade that sends no CONNECT.
async fn broker_with(others: Vec<ListenerSettings>) -> TestBroker {
    let mut listeners = vec![listener("tcp", None, Authentication::Anonymous)];
    listeners.extend(others);
    TestBroker::start(BrokerSettings {
        listeners,
        limits: Limits {
            connect_timeout: Duration::from_secs(3),
            ..Limits::default()
        },
        ..BrokerSettings::default()
    })
    .await
}

/// Polls until `want` matches an event; fails on a connection error.
async fn until<T>(events: &mut EventLoop, mut want: impl FnMut(&Packet) -> Option<T>) -> T {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = want(&packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(err) => panic!("connection failed: {err}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("the broker answers in time")
}

/// A TCP subscriber to `topic`, subscribed once this returns.
async fn tcp_subscriber(address: SocketAddr, topic: &str) -> (AsyncClient, EventLoop) {
    let options = MqttOptions::new("tcp-sub", address.ip().to_string(), address.port());
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    until(&mut events, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    (client, events)
}

/// Publishes three QoS 1 messages over `options` and waits for their PUBACKs.
async fn publish_three(options: MqttOptions) {
    let (client, mut events) = AsyncClient::new(options, 10);
    until(&mut events, |p| {
        matches!(p, Packet::ConnAck(_)).then_some(())
    })
    .await;
    for i in 0..3 {
        client
            .publish("plant/ws", QoS::AtLeastOnce, false, format!("reading-{i}"))
            .await
            .unwrap();
    }
    let mut acked = 0;
    until(&mut events, |p| {
        acked += usize::from(matches!(p, Packet::PubAck(_)));
        (acked == 3).then_some(())
    })
    .await;
}

/// The payloads of the next `n` PUBLISHes.
async fn received(events: &mut EventLoop, n: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    until(events, |p| {
        if let Packet::Publish(publish) = p {
            payloads.push(String::from_utf8(publish.payload.to_vec()).unwrap());
        }
        (payloads.len() == n).then_some(())
    })
    .await;
    payloads
}

fn expected() -> Vec<String> {
    (0..3).map(|i| format!("reading-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_publishes_to_a_subscriber_and_a_flow() {
    let broker = broker_with(vec![websocket_listener("ws", None)]).await;
    let (tcp, ws) = (broker.addresses[0], broker.addresses[1]);
    let (_subscriber, mut sub_events) = tcp_subscriber(tcp, "plant/#").await;

    let url = format!("ws://127.0.0.1:{}/mqtt", ws.port());
    let mut options = MqttOptions::new("ws-pub", url, ws.port());
    options.set_transport(Transport::Ws);
    publish_three(options).await;

    assert_eq!(received(&mut sub_events, 3).await, expected());
    let queued: Vec<String> = broker.queued().await.into_iter().map(|(_, p)| p).collect();
    assert_eq!(queued, expected(), "the flow queued all three, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscriber_receives_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = broker_with(vec![websocket_listener(
        "wss",
        Some(pki.server_files(false)),
    )])
    .await;
    let (tcp, wss) = (broker.addresses[0], broker.addresses[1]);

    let url = format!("wss://localhost:{}/mqtt", wss.port());
    let mut options = MqttOptions::new("wss-sub", url, wss.port());
    options.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
        pki.client_config(None),
    )));
    let (subscriber, mut sub_events) = AsyncClient::new(options, 10);
    subscriber
        .subscribe("plant/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    until(&mut sub_events, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let mut publisher = MqttOptions::new("tcp-pub", tcp.ip().to_string(), tcp.port());
    publisher.set_keep_alive(Duration::from_secs(30));
    publish_three(publisher).await;

    assert_eq!(received(&mut sub_events, 3).await, expected());
}

/// Sends an HTTP upgrade request and returns what the broker answered
/// before closing.
async fn upgrade(address: SocketAddr, path: &str, subprotocol: Option<&str>) -> String {
    let mut socket = TcpStream::connect(address).await.unwrap();
    let protocol = subprotocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{protocol}\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&bytes_until_closed(&mut socket).await).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_subprotocol_path_or_plain_mqtt_is_refused_and_counted() {
    let broker = broker_with(vec![websocket_listener("ws", None)]).await;
    let ws = broker.addresses[1];

    let chat = upgrade(ws, "/mqtt", Some("chat")).await;
    assert!(chat.starts_with("HTTP/1.1 400"), "{chat}");
    assert!(
        chat.contains("subprotocol 'mqtt' was not offered"),
        "{chat}"
    );
    let none = upgrade(ws, "/mqtt", None).await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let elsewhere = upgrade(ws, "/other", Some("mqtt")).await;
    assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
    let accepted = upgrade(ws, "/mqtt", Some("mqttv3.1, mqtt")).await;
    assert!(accepted.starts_with("HTTP/1.1 101"), "{accepted}");
    let headers = accepted.to_ascii_lowercase();
    assert!(
        headers.contains("sec-websocket-protocol: mqtt\r\n"),
        "{accepted}"
    );

    // A plain MQTT client on the WebSocket port gets no CONNACK.
    let mut plain = TcpStream::connect(ws).await.unwrap();
    plain
        .write_all(&connect(false, "plain", None))
        .await
        .unwrap();
    let answer = bytes_until_closed(&mut plain).await;
    assert!(!answer.starts_with(&[0x20]), "no CONNACK: {answer:?}");

    // An upgrade request that never ends is closed at the connect timeout.
    let mut stalled = TcpStream::connect(ws).await.unwrap();
    stalled.write_all(b"GET /mqtt HTTP/1.1\r\n").await.unwrap();
    assert!(bytes_until_closed(&mut stalled).await.is_empty());

    let rejected = &broker.stats.packets_rejected;
    eventually("four refused handshakes are counted", || {
        rejected.get(Rejection::WebSocketHandshake) == 4
    })
    .await;
    // The accepted upgrade that sent no CONNECT and the stalled request
    // ended at the connect timeout instead.
    eventually("two connect timeouts are counted", || {
        rejected.get(Rejection::ConnectTimeout) == 2
    })
    .await;
}
