//! Peers that misbehave: a socket that never sends CONNECT, a packet larger
//! than allowed, bytes that are not MQTT, and many idle connections. Each is
//! dealt with on its own connection; the broker keeps serving others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backhaul_broker::{
    Broker, BrokerSettings, DurableGate, FlowRoute, Limits, ListenerSettings, TopicFilter,
};
use backhaul_storage::{QueueStore, StorageMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(settings: BrokerSettings) -> (SocketAddr, Arc<backhaul_broker::BrokerStats>) {
    let store = Arc::new(QueueStore::open(&StorageMode::Memory, &["f".to_string()]).unwrap());
    let gate = DurableGate::new(
        store,
        vec![FlowRoute {
            flow: 0,
            filters: vec![TopicFilter::parse("#").unwrap()],
        }],
    );
    let settings = BrokerSettings {
        listeners: vec![ListenerSettings::plain(
            "test",
            "127.0.0.1:0".parse().unwrap(),
        )],
        ..settings
    };
    let broker = Broker::new(settings, gate);
    let stats = broker.stats();
    let listener = broker.bind().await.unwrap().remove(0);
    let address = listener.address();
    tokio::spawn(listener.serve());
    (address, stats)
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0000_0010, 0, 30];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Connects a well-behaved client and checks it gets a CONNACK.
async fn served(address: SocketAddr, client_id: &str) -> TcpStream {
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(&connect_packet(client_id)).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    socket
}

/// Reads until the broker closes the socket; `true` if it did within `limit`.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 256];
    let read = tokio::time::timeout(limit, async {
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    });
    read.await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_sends_connect_is_closed_after_the_timeout() {
    let (address, _) = start(BrokerSettings {
        limits: Limits {
            connect_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..BrokerSettings::default()
    })
    .await;
    let mut silent = TcpStream::connect(address).await.unwrap();
    served(address, "meanwhile").await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_larger_than_allowed_closes_only_that_connection() {
    let (address, _) = start(BrokerSettings {
        limits: Limits {
            max_packet_size: 1024,
            ..Limits::default()
        },
        ..BrokerSettings::default()
    })
    .await;
    let mut big = TcpStream::connect(address).await.unwrap();
    big.write_all(&connect_packet("big")).await.unwrap();
    let mut connack = [0u8; 4];
    big.read_exact(&mut connack).await.unwrap();
    // A PUBLISH header announcing 200 MB: refused from the header alone,
    // before any of it is buffered.
    big.write_all(&[0x30, 0x80, 0x80, 0xe4, 0x5f])
        .await
        .unwrap();
    assert!(closed_within(&mut big, Duration::from_secs(5)).await);
    served(address, "after-big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_mqtt_close_the_connection() {
    let (address, _) = start(BrokerSettings::default()).await;
    let mut http = TcpStream::connect(address).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut http, Duration::from_secs(5)).await);
    served(address, "after-http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_keep_a_client_from_being_served() {
    let (address, stats) = start(BrokerSettings::default()).await;
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut socket = TcpStream::connect(address).await.unwrap();
        socket
            .write_all(&connect_packet(&format!("idle-{i}")))
            .await
            .unwrap();
        idle.push(socket);
    }
    for socket in idle.iter_mut() {
        let mut connack = [0u8; 4];
        socket.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
    }
    let _client = served(address, "busy-day").await;
    assert_eq!(
        stats
            .connections_active
            .load(std::sync::atomic::Ordering::Relaxed),
        1001
    );
}
