//! Limits per listener: a listener with its own limits applies them, one
//! without applies the broker's, side by side in one broker.

mod support;

use std::time::Duration;

use backhaul_broker::stats::Rejection;
use backhaul_broker::{Authentication, BrokerSettings, Limits, ListenerSettings};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `shared` uses the broker's limits; `gateways` has its own.
async fn two_listeners() -> TestBroker {
    let gateways = ListenerSettings {
        limits: Some(Limits {
            max_connections: 1,
            max_packet_size: 4096,
            max_topic_levels: 2,
            connect_timeout: Duration::from_secs(1),
            ..Limits::default()
        }),
        ..listener("gateways", None, Authentication::Anonymous)
    };
    TestBroker::start(BrokerSettings {
        listeners: vec![
            listener("shared", None, Authentication::Anonymous),
            gateways,
        ],
        limits: Limits {
            max_packet_size: 1024,
            connect_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
        ..BrokerSettings::default()
    })
    .await
}

/// The Maximum Packet Size property (0x27) of an MQTT 5 CONNACK.
fn advertised_max_packet(connack: &[u8]) -> Option<u32> {
    connack
        .windows(5)
        .find(|w| w[0] == 0x27)
        .map(|w| u32::from_be_bytes([w[1], w[2], w[3], w[4]]))
}

async fn connected(address: std::net::SocketAddr, id: &str) -> (TcpStream, Vec<u8>) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(&connect(true, id, None)).await.unwrap();
    let connack = read_packet(&mut socket).await.unwrap();
    assert_eq!(
        connack[..4],
        [0x20, connack[1], 0, 0],
        "accepted: {connack:?}"
    );
    (socket, connack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_applies_its_own_packet_size_and_topic_levels() {
    let broker = two_listeners().await;
    let (shared, gateways) = (broker.addresses[0], broker.addresses[1]);
    let big = "x".repeat(2000);

    let (mut on_gateways, connack) = connected(gateways, "gw").await;
    assert_eq!(advertised_max_packet(&connack), Some(4096));
    on_gateways
        .write_all(&publish(true, "gw/big", 1, 1, &big))
        .await
        .unwrap();
    let puback = read_packet(&mut on_gateways).await.unwrap();
    assert_eq!(
        ack(&puback),
        (0x40, 1, 0),
        "2000 bytes fit the gateways' 4096"
    );
    on_gateways
        .write_all(&publish(true, "gw/a/b", 1, 2, "deep"))
        .await
        .unwrap();
    assert_eq!(
        disconnect_reasons(&until_closed(&mut on_gateways).await),
        [0x90],
        "three levels are one more than the gateways' two"
    );

    let (mut on_shared, connack) = connected(shared, "plant").await;
    assert_eq!(advertised_max_packet(&connack), Some(1024));
    on_shared
        .write_all(&publish(true, "plant/a/b", 1, 1, "deep is fine here"))
        .await
        .unwrap();
    let puback = read_packet(&mut on_shared).await.unwrap();
    assert_eq!(ack(&puback), (0x40, 1, 0), "the broker allows 32 levels");
    on_shared
        .write_all(&publish(true, "plant/big", 1, 2, &big))
        .await
        .unwrap();
    assert_eq!(
        disconnect_reasons(&until_closed(&mut on_shared).await),
        [0x95],
        "2000 bytes exceed the broker's 1024"
    );

    let rejected = &broker.stats.packets_rejected;
    assert_eq!(rejected.get(Rejection::PacketTooLarge), 1);
    assert_eq!(rejected.get(Rejection::TooManyTopicLevels), 1);
    let queued: Vec<String> = broker.queued().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(queued, ["gw/big", "plant/a/b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_applies_its_own_connection_cap_and_timeout() {
    let broker = two_listeners().await;
    let (shared, gateways) = (broker.addresses[0], broker.addresses[1]);

    let (_first, _) = connected(gateways, "gw-1").await;
    let mut second = TcpStream::connect(gateways).await.unwrap();
    assert_eq!(
        connack_code(&mut second, true, "gw-2", None).await,
        Some(0x97),
        "the gateways listener takes one connection"
    );
    let _plant: Vec<_> = futures::future::join_all(
        (0..3).map(|i| async move { connected(shared, &format!("plant-{i}")).await }),
    )
    .await;

    // A silent client is closed after the gateways' 1 s; one on the shared
    // listener (30 s) is still open then.
    let mut silent_shared = TcpStream::connect(shared).await.unwrap();
    let mut silent_gateway = TcpStream::connect(gateways).await.unwrap();
    assert!(bytes_until_closed(&mut silent_gateway).await.is_empty());
    let rejected = &broker.stats.packets_rejected;
    eventually("one connect timeout", || {
        rejected.get(Rejection::ConnectTimeout) == 1
    })
    .await;
    silent_shared
        .write_all(&connect(false, "late", None))
        .await
        .unwrap();
    let connack = read_packet(&mut silent_shared).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "still open, and let in");
    assert_eq!(rejected.get(Rejection::MaxConnections), 1);
}
