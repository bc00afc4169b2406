//! The entry point of the connection fuzz target (`broker/fuzz`) and of the
//! test that replays its corpus: arbitrary bytes from a client, fed to a
//! real connection task of a real broker through an in-memory pipe. The
//! task must not panic, must not allocate what a packet merely claims (a
//! huge remaining length is refused from the header), and must end when the
//! client goes away.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backhaul_storage::{QueueStore, StorageMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::Authentication;
use crate::authz::{Authorization, DefaultDecision, Rule, RuleIdentity};
use crate::broker::{ListenerContext, Shared};
use crate::{connection, Broker, BrokerSettings, DurableGate, FlowRoute, Limits, TopicFilter};

struct Harness {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    listener: Arc<ListenerContext>,
}

/// One broker for the whole process: its router thread lives as long.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let store = QueueStore::open(&StorageMode::Memory, &["fuzz".to_string()])
            .expect("a memory store opens");
        let filter = TopicFilter::parse("#").expect("a valid filter");
        let gate = DurableGate::new(
            Arc::new(store),
            vec![FlowRoute {
                flow: 0,
                filters: vec![filter],
            }],
        );
        let rules = vec![Rule {
            identity: RuleIdentity::Anyone,
            publish: vec!["a/#".into(), "factory/%c/#".into()],
            subscribe: vec!["a/+".into(), "$share/g/a/#".into()],
            deny_publish: Vec::new(),
            deny_subscribe: Vec::new(),
        }];
        let settings = BrokerSettings {
            limits: Limits {
                max_packet_size: 64 * 1024,
                connect_timeout: Duration::from_millis(200),
                receive_maximum: 8,
                max_topic_length: 64,
                max_topic_levels: 8,
                ..Limits::default()
            },
            authorization: Arc::new(Authorization::new(rules, DefaultDecision::Deny)),
            ..BrokerSettings::default()
        };
        let limits = settings.limits;
        let broker = Broker::new(settings, gate);
        Harness {
            runtime,
            shared: broker.shared(),
            listener: Arc::new(ListenerContext {
                tls: None,
                websocket: None,
                authentication: Authentication::Anonymous,
                limits,
                connections: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    })
}

/// The counters of the fuzzing broker (to check the harness does work).
pub fn stats() -> Arc<crate::BrokerStats> {
    harness().shared.stats.clone()
}

/// Feeds `data` to a connection task as a client would, then closes the
/// client side and drains what the broker answered. Panics of the task
/// are re-raised here, for the fuzzer to see.
pub fn connection(data: &[u8]) {
    let harness = harness();
    harness.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        let task = tokio::spawn(connection::serve(
            server,
            peer,
            harness.shared.clone(),
            harness.listener.clone(),
        ));
        let exchange = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut sink = [0u8; 4096];
            while let Ok(n) = client.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), exchange).await;
        drop(client);
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Err(err)) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Ok(_) => {}
            Err(_) => panic!("the connection task did not end after the client left"),
        }
    });
}
