//! A dead router is noticed: when rumqttd's router thread panics, the
//! broker's [`RouterWatch`] reports it (the appliance then exits so that
//! systemd restarts it), and clients are closed rather than left hanging.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backhaul_broker::{Broker, BrokerSettings, DurableGate, ListenerSettings};
use backhaul_storage::{QueueStore, StorageMode};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The filter whose subscription makes the test router panic.
const FATAL: &str = "test/kill-router";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_thread_that_panics_is_reported_and_clients_are_closed() {
    let store = Arc::new(QueueStore::open(&StorageMode::Memory, &[]).unwrap());
    let settings = BrokerSettings {
        listeners: vec![ListenerSettings::plain(
            "test",
            "127.0.0.1:0".parse().unwrap(),
        )],
        ..BrokerSettings::default()
    };
    let broker = Broker::with_router_dying_on(settings, DurableGate::new(store, vec![]), FATAL);
    let listener = broker.bind().await.unwrap().remove(0);
    let address = listener.address();
    tokio::spawn(listener.serve());
    let watch = broker.router_watch();

    // The router works: a client connects and subscribes elsewhere.
    let mut bystander = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        connack_code(&mut bystander, true, "bystander", None).await,
        Some(0)
    );
    bystander
        .write_all(&subscribe(true, 1, &["ok/#"]))
        .await
        .unwrap();
    assert_eq!(
        suback(&read_packet(&mut bystander).await.unwrap(), 1),
        (1, vec![1])
    );
    assert!(watch.is_alive());

    let mut killer = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        connack_code(&mut killer, true, "killer", None).await,
        Some(0)
    );
    killer
        .write_all(&subscribe(true, 1, &[FATAL]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), watch.stopped())
        .await
        .expect("the router's end is noticed");
    assert!(!watch.is_alive());

    // Connections end instead of hanging on the dead router ...
    assert!(until_closed(&mut bystander).await.is_empty());
    // ... and a new client is refused without a CONNACK.
    let mut late = TcpStream::connect(address).await.unwrap();
    late.write_all(&connect(true, "late", None)).await.unwrap();
    assert!(until_closed(&mut late).await.is_empty());
}
