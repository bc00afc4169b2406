//! Will messages, owned by Backhaul rather than by rumqttd's router.
//!
//! rumqttd publishes a will only from its own remote link (its private
//! `Event::Disconnect` path); a client attached through a local link, as
//! ours are, would never have its will published. So the connection task
//! keeps the CONNECT's will and, when the connection ends without a normal
//! DISCONNECT, publishes it the way a device PUBLISH goes: through the
//! [`DurableGate`](crate::DurableGate) (so data flows get it), then to the
//! router for subscribers, retain flag included. Its topic was checked
//! against the authorization rules at CONNECT.

use std::time::Duration;

use bytes::Bytes;
use rumqttd::local::LinkTx;
use rumqttd::protocol::{LastWill, LastWillProperties, Packet, Publish, PublishProperties};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::broker::Shared;
use crate::message::StoredMessage;
use crate::origin::Origin;
use crate::retained;

/// A client's will, as its CONNECT declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Will {
    pub(crate) topic: String,
    payload: Bytes,
    qos: u8,
    retain: bool,
    /// MQTT 5 Will Delay Interval (zero for 3.1.1).
    pub(crate) delay: Duration,
    properties: Option<LastWillProperties>,
}

/// Why a CONNECT's will cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WillError {
    #[error("the will topic is not UTF-8")]
    NotUtf8,
    #[error("the will topic is empty")]
    Empty,
    #[error("the will topic {0:?} contains a wildcard")]
    Wildcard(String),
}

impl Will {
    /// The will of a CONNECT; topic names follow the PUBLISH rules.
    pub(crate) fn from_connect(
        will: LastWill,
        properties: Option<LastWillProperties>,
    ) -> Result<Self, WillError> {
        let topic = String::from_utf8(will.topic.to_vec()).map_err(|_| WillError::NotUtf8)?;
        if topic.is_empty() {
            return Err(WillError::Empty);
        }
        if topic.contains(['+', '#']) {
            return Err(WillError::Wildcard(topic));
        }
        let delay = properties
            .as_ref()
            .and_then(|p| p.delay_interval)
            .map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
        Ok(Self {
            topic,
            payload: will.message,
            qos: will.qos as u8,
            retain: will.retain,
            delay,
            properties,
        })
    }

    /// The will as a data flow's queue stores it.
    fn stored(&self, received_at_ms: u64) -> StoredMessage {
        let p = self.properties.as_ref();
        StoredMessage {
            received_at_ms,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            content_type: p.and_then(|p| p.content_type.clone()),
            payload_format_indicator: p.and_then(|p| p.payload_format_indicator),
            message_expiry_interval: p.and_then(|p| p.message_expiry_interval),
            response_topic: p.and_then(|p| p.response_topic.clone()),
            correlation_data: p.and_then(|p| p.correlation_data.clone()),
            user_properties: p.map(|p| p.user_properties.clone()).unwrap_or_default(),
        }
    }

    /// The will as the router receives it: like a device PUBLISH, a QoS 0
    /// copy with its properties and its [`Origin`] (the will's QoS and the
    /// client that set it).
    fn routed(&self, client_id: &str) -> Packet {
        let topic = Bytes::copy_from_slice(self.topic.as_bytes());
        let publish = Publish::new(topic, self.payload.clone(), self.retain);
        let properties = self.properties.as_ref().map(|p| PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            ..PublishProperties::default()
        });
        let origin = Origin {
            qos: self.qos,
            retain: self.retain,
            client_id: client_id.to_owned(),
        };
        Packet::Publish(publish, Some(origin.mark(properties)))
    }
}

/// The router link wills are published through. A will outlives its
/// connection (will delay), so it cannot use the connection's own link.
pub(crate) struct WillLink {
    tx: Mutex<LinkTx>,
    /// Kept so the router's notifications for this link have a receiver.
    _rx: rumqttd::local::LinkRx,
}

/// The client id of the will link. Devices may not use it (see
/// [`is_reserved_client_id`]), or they would take the link over.
pub(crate) const WILL_LINK_CLIENT_ID: &str = "backhaul-internal-wills";

/// Whether a device's client id is one Backhaul uses itself for a router
/// link (the will link, the retained-message restore at start): a device
/// taking one would evict that link from the router.
pub(crate) fn is_reserved_client_id(client_id: &str) -> bool {
    client_id == WILL_LINK_CLIENT_ID || client_id == retained::RESTORE_CLIENT
}

impl WillLink {
    pub(crate) fn new(tx: LinkTx, rx: rumqttd::local::LinkRx) -> Self {
        Self {
            tx: Mutex::new(tx),
            _rx: rx,
        }
    }
}

/// Publishes a will: to every data flow whose sources match its topic, then
/// to the router's subscribers. Waits for the durable append, so a failure
/// is logged against the will that was lost.
pub(crate) async fn publish(shared: &Shared, client_id: &str, will: Will, received_at_ms: u64) {
    let stored = will.stored(received_at_ms);
    let ticket = shared.gate.admit(&will.topic, || stored.clone());
    // Disk mode: a retained will is kept across restarts like any retained
    // publish.
    let retained = shared
        .retained
        .get()
        .filter(|store| retained::changes(store, &will.topic, will.retain, &will.payload))
        .map(|store| retained::record(store, &stored));
    if ticket.is_some() {
        shared
            .stats
            .publishes_gated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let routed = shared
        .will_link
        .tx
        .lock()
        .await
        .send(will.routed(client_id))
        .await;
    if let Err(err) = routed {
        warn!(client_id, topic = %will.topic, %err, "the router did not take a will");
    }
    if let Some(retained) = retained {
        if let Err(err) = retained.await {
            warn!(client_id, topic = %will.topic, %err, "a retained will could not be stored");
        }
    }
    if let Some(ticket) = ticket {
        if let Err(err) = ticket.await {
            warn!(client_id, topic = %will.topic, %err, "a will could not be queued for its data flows");
            return;
        }
    }
    shared
        .stats
        .wills_published
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    debug!(client_id, topic = %will.topic, "will published");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::QoS;

    fn last_will(topic: &str) -> LastWill {
        LastWill {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            message: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }

    #[test]
    fn topics_follow_the_publish_rules() {
        assert_eq!(
            Will::from_connect(last_will(""), None),
            Err(WillError::Empty)
        );
        assert_eq!(
            Will::from_connect(last_will("a/+/b"), None),
            Err(WillError::Wildcard("a/+/b".into()))
        );
        assert_eq!(
            Will::from_connect(last_will("a/#"), None),
            Err(WillError::Wildcard("a/#".into()))
        );
        let will = Will::from_connect(last_will("plant/dev1/status"), None).unwrap();
        assert_eq!(will.delay, Duration::ZERO);
    }

    #[test]
    fn properties_reach_the_stored_message_and_the_router() {
        let properties = LastWillProperties {
            delay_interval: Some(5),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![("k".into(), "v".into())],
        };
        let will = Will::from_connect(last_will("plant/dev1/status"), Some(properties)).unwrap();
        assert_eq!(will.delay, Duration::from_secs(5));
        let stored = will.stored(42);
        assert_eq!(
            stored,
            StoredMessage {
                received_at_ms: 42,
                qos: 1,
                retain: true,
                topic: "plant/dev1/status".into(),
                payload: Bytes::from_static(b"gone"),
                content_type: Some("text/plain".into()),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                response_topic: Some("reply".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("k".into(), "v".into())],
            }
        );
        let Packet::Publish(publish, mut props) = will.routed("dev1") else {
            panic!("a PUBLISH");
        };
        let origin = Origin::take(&mut props).expect("an origin");
        assert_eq!((origin.qos, origin.retain), (1, true));
        assert_eq!(origin.client_id, "dev1");
        let props = props.expect("properties");
        assert!(publish.retain);
        assert_eq!(&publish.topic[..], b"plant/dev1/status");
        assert_eq!(props.message_expiry_interval, Some(60));
        assert_eq!(props.user_properties, vec![("k".into(), "v".into())]);
    }
}
