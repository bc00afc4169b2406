//! Real MQTT clients for the suites: a numbered QoS 1 publisher that records
//! which messages were PUBACKed, and a persistent MQTT 5 subscriber that
//! records every message with Backhaul's id property.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// The user property Backhaul puts its message id in.
pub const MESSAGE_ID_PROPERTY: &str = "backhaul-message-id";

/// Publishes the numbers `0..count` as payloads to `topic` (QoS 1, up to 100
/// in flight) on Backhaul's listener at `port`, pushing each number to
/// `acked` when its PUBACK arrives. Returns when all are acknowledged or the
/// connection breaks (then with the error).
pub async fn publish_numbered(
    port: u16,
    client_id: &str,
    topic: &str,
    count: u64,
    acked: Arc<Mutex<Vec<u64>>>,
) -> Result<(), String> {
    let stream = NumberedStream {
        first: 0,
        count,
        per_second: None,
    };
    publish_stream(port, client_id, topic, stream, acked).await
}

/// Which numbers a publisher sends, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct NumberedStream {
    /// The first number; a publisher that follows another one after a
    /// crash starts above every number the first could have sent, so the
    /// destination still sees one increasing sequence.
    pub first: u64,
    pub count: u64,
    /// Publishes per second; `None` as fast as PUBACKs allow. A paced
    /// stream keeps traffic flowing through a whole fault.
    pub per_second: Option<u32>,
}

/// Publishes `stream` as [`publish_numbered`] does.
pub async fn publish_stream(
    port: u16,
    client_id: &str,
    topic: &str,
    stream: NumberedStream,
    acked: Arc<Mutex<Vec<u64>>>,
) -> Result<(), String> {
    let count = stream.count;
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let topic = topic.to_string();
    let feeder = tokio::spawn(async move {
        let mut pace = stream.per_second.map(|rate| {
            let mut interval = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        for n in stream.first..stream.first + count {
            if let Some(interval) = pace.as_mut() {
                interval.tick().await;
            }
            if client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, n.to_string())
                .await
                .is_err()
            {
                break;
            }
        }
        client
    });
    let mut written = stream.first;
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    let mut done = 0u64;
    let result = loop {
        if done == count {
            break Ok(());
        }
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                in_flight.insert(pkid, written);
                written += 1;
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(n) = in_flight.remove(&ack.pkid) {
                    acked.lock().expect("acked list").push(n);
                    done += 1;
                }
            }
            Ok(_) => {}
            Err(err) => break Err(err.to_string()),
        }
    };
    feeder.abort();
    result
}

/// Publishes one QoS 1 message with MQTT 5 `properties` and waits for its
/// PUBACK; returns the PUBACK's reason.
pub async fn publish_v5(
    client: &Client5,
    eventloop: &mut rumqttc::v5::EventLoop,
    topic: &str,
    payload: &str,
    properties: rumqttc::v5::mqttbytes::v5::PublishProperties,
) -> Result<rumqttc::v5::mqttbytes::v5::PubAckReason, String> {
    client
        .publish_with_properties(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            payload.to_string(),
            properties,
        )
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if let Event5::Incoming(Packet5::PubAck(ack)) =
            eventloop.poll().await.map_err(|e| e.to_string())?
        {
            return Ok(ack.reason);
        }
    }
}

/// A numbered publisher running in the background (see
/// [`publish_numbered`]) and the numbers PUBACKed so far.
pub struct BackgroundPublisher {
    pub task: tokio::task::JoinHandle<Result<(), String>>,
    pub acked: Arc<Mutex<Vec<u64>>>,
}

impl BackgroundPublisher {
    /// Starts publishing `0..count` to `topic` on Backhaul's listener at `port`.
    pub fn start(port: u16, client_id: &str, topic: &str, count: u64) -> Self {
        let stream = NumberedStream {
            first: 0,
            count,
            per_second: None,
        };
        Self::start_stream(port, client_id, topic, stream)
    }

    /// Starts publishing `stream` to `topic` on Backhaul's listener at `port`.
    pub fn start_stream(port: u16, client_id: &str, topic: &str, stream: NumberedStream) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (client_id, topic, acked) =
                (client_id.to_string(), topic.to_string(), acked.clone());
            async move { publish_stream(port, &client_id, &topic, stream, acked).await }
        });
        Self { task, acked }
    }

    /// The numbers PUBACKed so far.
    pub fn acked(&self) -> Vec<u64> {
        self.acked.lock().expect("acked list").clone()
    }

    /// Waits for the publisher to end; how it ended, and every number
    /// PUBACKed.
    pub async fn finish(self) -> (Result<(), String>, Vec<u64>) {
        let ended = match self.task.await {
            Ok(result) => result,
            Err(err) => Err(format!("publisher task: {err}")),
        };
        let acked = self.acked.lock().expect("acked list").clone();
        (ended, acked)
    }

    /// Waits until at least `count` messages were PUBACKed.
    pub async fn wait_acked(&self, count: usize) {
        while self.acked.lock().expect("acked list").len() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One message as the subscriber saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: String,
    /// Backhaul's id property, if present.
    pub id: Option<String>,
    /// Every MQTT 5 user property, in order.
    pub user_properties: Vec<(String, String)>,
}

impl Received {
    /// The payload as the publisher's number.
    pub fn number(&self) -> Option<u64> {
        self.payload.parse().ok()
    }

    /// The queue sequence at the end of Backhaul's id.
    pub fn sequence(&self) -> Option<u64> {
        self.id.as_deref()?.rsplit('/').next()?.parse().ok()
    }
}

fn subscriber_options(port: u16, client_id: &str) -> Options5 {
    let mut options = Options5::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    options
}

/// Creates a persistent session subscribed to `filter` (QoS 1) on the broker
/// at `port`, then disconnects: the broker queues matching messages for it.
pub async fn create_persistent_subscription(
    port: u16,
    client_id: &str,
    filter: &str,
) -> Result<(), String> {
    let (client, mut eventloop) = Client5::new(subscriber_options(port, client_id), 10);
    client
        .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match eventloop.poll().await.map_err(|e| e.to_string())? {
            Event5::Incoming(Packet5::SubAck(_)) => break,
            _ => continue,
        }
    }
    client.disconnect().await.map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(())
}

/// Resumes the persistent session `client_id` and collects messages until
/// `expected` arrived and then `quiet` passed without another, or until
/// `timeout`.
pub async fn collect(
    port: u16,
    client_id: &str,
    expected: usize,
    quiet: Duration,
    timeout: Duration,
) -> Result<Vec<Received>, String> {
    let (_client, mut eventloop) = Client5::new(subscriber_options(port, client_id), 10);
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let wait = if received.len() >= expected {
            quiet
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let event = match tokio::time::timeout(wait, eventloop.poll()).await {
            Err(_) => return Ok(received),
            Ok(Err(err)) => {
                // The broker may still be starting: retry until the deadline.
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("subscriber: {err}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Ok(event)) => event,
        };
        if let Event5::Incoming(Packet5::Publish(publish)) = event {
            received.push(Received::from_publish(publish));
        }
    }
}

impl Received {
    fn from_publish(publish: rumqttc::v5::mqttbytes::v5::Publish) -> Self {
        let id = publish.properties.as_ref().and_then(|p| {
            p.user_properties
                .iter()
                .find(|(k, _)| k == MESSAGE_ID_PROPERTY)
                .map(|(_, v)| v.clone())
        });
        Received {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            payload: String::from_utf8_lossy(&publish.payload).into_owned(),
            id,
            user_properties: publish
                .properties
                .map(|p| p.user_properties)
                .unwrap_or_default(),
        }
    }
}

/// A persistent subscriber running in the background for a whole scenario:
/// it resumes its session after every broken connection (the remote
/// restarted or was frozen), so the broker keeps what arrives meanwhile.
/// Records every message, redeliveries included.
pub struct BackgroundCollector {
    task: tokio::task::JoinHandle<()>,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connection errors seen (each is a resumed session).
    pub reconnects: Arc<std::sync::atomic::AtomicU64>,
}

impl BackgroundCollector {
    /// Resumes the persistent session `client_id` (see
    /// [`create_persistent_subscription`]) on the broker at `port`.
    pub fn start(port: u16, client_id: &str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (_client, mut eventloop) = Client5::new(subscriber_options(port, client_id), 10);
        let task = tokio::spawn({
            let (received, reconnects) = (received.clone(), reconnects.clone());
            async move {
                // The client handle lives as long as the loop, or the event
                // loop ends with "all senders dropped".
                let _client = _client;
                loop {
                    match eventloop.poll().await {
                        Ok(Event5::Incoming(Packet5::Publish(publish))) => received
                            .lock()
                            .expect("received list")
                            .push(Received::from_publish(publish)),
                        Ok(_) => {}
                        Err(_) => {
                            reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        });
        Self {
            task,
            received,
            reconnects,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received list").clone()
    }

    pub fn len(&self) -> usize {
        self.received.lock().expect("received list").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for BackgroundCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
