//! Devices against the broker: ordinary pub/sub still works through the
//! durable gate, for MQTT 3.1.1 and 5 clients, with keep-alive 0.

use std::sync::Arc;
use std::time::Duration;

use backhaul_broker::{
    Broker, BrokerSettings, DurableGate, FlowRoute, ListenerSettings, StoredMessage, TopicFilter,
};
use backhaul_storage::{QueueStore, StorageMode};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

async fn start_broker(store: Arc<QueueStore>) -> std::net::SocketAddr {
    let gate = DurableGate::new(
        store,
        vec![FlowRoute {
            flow: 0,
            filters: vec![TopicFilter::parse("factory/#").unwrap()],
        }],
    );
    let settings = BrokerSettings {
        listeners: vec![ListenerSettings::plain(
            "test",
            "127.0.0.1:0".parse().unwrap(),
        )],
        ..BrokerSettings::default()
    };
    let broker = Broker::new(settings, gate);
    let mut listeners = broker.bind().await.unwrap();
    let listener = listeners.remove(0);
    let address = listener.address();
    tokio::spawn(listener.serve());
    address
}

fn options(id: &str, address: std::net::SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(id, address.ip().to_string(), address.port());
    options.set_keep_alive(Duration::from_secs(0));
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_what_devices_publish_and_the_flow_queues_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        QueueStore::open(&StorageMode::Disk(dir.path().into()), &["f".to_string()]).unwrap(),
    );
    let address = start_broker(store.clone()).await;

    let (subscriber, mut sub_loop) = AsyncClient::new(options("sub", address), 100);
    subscriber
        .subscribe("factory/+/temp", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }

    let (publisher, mut pub_loop) = AsyncClient::new(options("pub", address), 1000);
    let publishing = tokio::spawn(async move {
        let mut acked = 0;
        while acked < 200 {
            if let Event::Incoming(Packet::PubAck(_)) = pub_loop.poll().await.unwrap() {
                acked += 1;
            }
        }
        acked
    });
    for i in 0..200 {
        let topic = if i % 2 == 0 {
            "factory/l1/temp"
        } else {
            "office/x"
        };
        publisher
            .publish(topic, QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }

    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while received.len() < 100 {
            if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
                received.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
        }
    })
    .await
    .expect("subscriber got every matching publish");
    let expected: Vec<String> = (0..200).step_by(2).map(|i| i.to_string()).collect();
    assert_eq!(received, expected, "in publish order, nothing else");
    assert_eq!(
        publishing.await.unwrap(),
        200,
        "every QoS 1 publish was acknowledged"
    );

    let queue = store.queue(0).unwrap();
    assert_eq!(
        queue.stats().messages,
        100,
        "only factory/# publishes are queued"
    );
    let queued: Vec<String> = queue
        .read(1, 1000, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let message = StoredMessage::decode(r.data).unwrap();
            assert_eq!(message.topic, "factory/l1/temp");
            assert_eq!(message.qos, 1);
            String::from_utf8(message.payload.to_vec()).unwrap()
        })
        .collect();
    assert_eq!(queued, expected);
}

/// Raw MQTT 3.1.1 bytes, so the test controls exactly what a device sends.
mod raw {
    pub fn connect(client_id: &str, keep_alive: u16) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0000_0010];
        body.extend_from_slice(&keep_alive.to_be_bytes());
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        frame(0x10, body)
    }

    pub fn publish_qos1(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&pkid.to_be_bytes());
        body.extend_from_slice(payload);
        frame(0x32, body)
    }

    fn frame(header: u8, body: Vec<u8>) -> Vec<u8> {
        assert!(body.len() < 128);
        let mut out = vec![header, body.len() as u8];
        out.extend(body);
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_is_accepted_and_pubacks_follow_publish_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let store = Arc::new(QueueStore::open(&StorageMode::Memory, &["f".to_string()]).unwrap());
    let address = start_broker(store.clone()).await;
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(&raw::connect("plc-1", 0)).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK, accepted");

    // Idle for longer than any keep-alive a broker might impose by default.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut batch = Vec::new();
    for pkid in 1..=50u16 {
        let topic = if pkid % 3 == 0 {
            "other/x"
        } else {
            "factory/a"
        };
        batch.extend(raw::publish_qos1(topic, pkid, b"v"));
    }
    socket.write_all(&batch).await.unwrap();
    let mut acks = [0u8; 200];
    socket.read_exact(&mut acks).await.unwrap();
    let pkids: Vec<u16> = acks
        .chunks(4)
        .map(|ack| {
            assert_eq!(&ack[..2], &[0x40, 2], "PUBACK");
            u16::from_be_bytes([ack[2], ack[3]])
        })
        .collect();
    assert_eq!(pkids, (1..=50).collect::<Vec<u16>>(), "in publish order");
    assert_eq!(
        store.queue(0).unwrap().stats().messages,
        34,
        "factory/a publishes queued"
    );
}

/// A gate over one flow whose queue holds at most 2 messages and refuses
/// more (`RejectNew`).
async fn start_full_after_two() -> std::net::SocketAddr {
    use backhaul_storage::{FlowSpec, Overflow, QueueLimits, StoreLimits};
    let limits = QueueLimits {
        max_messages: Some(2),
        overflow: Overflow::RejectNew,
        ..QueueLimits::default()
    };
    let store = QueueStore::open_with(
        &StorageMode::Memory,
        &[FlowSpec::with_limits("f", limits)],
        StoreLimits::default(),
    )
    .unwrap();
    start_broker(Arc::new(store)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_mqtt_5_publishes_with_quota_exceeded() {
    use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason};
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let address = start_full_after_two().await;
    let (client, mut eventloop) = Client5::new(
        Options5::new("v5", address.ip().to_string(), address.port()),
        10,
    );
    let mut reasons = Vec::new();
    for i in 0..3 {
        client
            .publish(
                "factory/x",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .await
            .unwrap();
        loop {
            if let Event5::Incoming(Packet5::PubAck(ack)) = eventloop.poll().await.unwrap() {
                reasons.push(ack.reason);
                break;
            }
        }
    }
    assert_eq!(
        reasons,
        [
            PubAckReason::Success,
            PubAckReason::Success,
            PubAckReason::QuotaExceeded
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_disconnects_mqtt_3_publishers_without_a_puback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = start_full_after_two().await;
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(&raw::connect("plc-3", 30)).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    for pkid in 1..=3u16 {
        socket
            .write_all(&raw::publish_qos1("factory/x", pkid, b"v"))
            .await
            .unwrap();
    }
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut received))
        .await
        .expect("the broker closes the connection")
        .unwrap();
    assert_eq!(
        received,
        [0x40, 2, 0, 1, 0x40, 2, 0, 2],
        "PUBACKs for the two accepted, then the connection closed without the third"
    );
}
