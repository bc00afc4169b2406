//! Retained messages across restarts (disk mode).
//!
//! rumqttd keeps retained messages in its router's memory only. Backhaul
//! also writes each one to the keyed state ([`RetainedStore`], sled under
//! the data directory): the connection task asks for the write next to the
//! durable gate's append, and the PUBACK/PUBREC waits for both, so a
//! retained message a device got its acknowledgement for is on disk. A
//! retained publish with an empty payload deletes the topic's entry.
//!
//! On start, before any listener accepts, [`republish`] hands every stored
//! message back to the router through a local link and waits until the
//! router has taken them, so the first subscriber already gets them, with
//! the retain flag. Without a store (memory mode) retained messages live in
//! the router's memory only, as in rumqttd.

use backhaul_storage::keyed::{RetainedStore, RetainedWrite};
use bytes::Bytes;
use std::sync::Arc;

use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, Publish, PublishProperties, QoS,
    RetainForwardRule, Subscribe,
};
use tracing::warn;

use crate::broker::{Connector, LinkRequest};
use crate::message::StoredMessage;
use crate::origin::Origin;
use crate::ConnectionError;

/// Whether `publish` changes the topic's retained message: a retained one
/// does; so does any publish with an empty payload to a topic that has
/// one, as rumqttd's router drops the retained message then too (the
/// stored copy follows it, else it would come back at the next start).
pub(crate) fn changes(store: &RetainedStore, topic: &str, retain: bool, payload: &[u8]) -> bool {
    retain || (payload.is_empty() && store.contains(topic))
}

/// Records a retained publish: stores `message`, or deletes its topic's
/// entry when the payload is empty.
pub(crate) fn record(store: &RetainedStore, message: &StoredMessage) -> RetainedWrite {
    if message.payload.is_empty() {
        store.clear(&message.topic)
    } else {
        store.set(&message.topic, message.encode())
    }
}

/// The client id of the link that republishes stored retained messages
/// (reserved: see [`crate::will::is_reserved_client_id`]).
pub(crate) const RESTORE_CLIENT: &str = "backhaul-retained-restore";
/// A filter no device publishes to; its SUBACK tells that the router has
/// handled every publish sent before it on the same link.
const DONE_FILTER: &str = "backhaul-internal/retained-restore/done";

/// Publishes the stored retained messages into the router and waits until
/// it has taken them. Returns how many were republished; entries that do
/// not decode are skipped with a warning.
pub(crate) async fn republish(
    connector: Arc<Connector>,
    stored: Vec<(String, Bytes)>,
) -> Result<usize, ConnectionError> {
    let request = LinkRequest {
        client_id: RESTORE_CLIENT.into(),
        clean_session: true,
        topic_alias_max: 0,
    };
    // Attaching waits for the router's CONNACK: off the async workers.
    let (mut tx, mut rx, _connack) = tokio::task::spawn_blocking(move || connector(request))
        .await
        .map_err(|_| ConnectionError::RouterGone)??;
    let mut count = 0;
    for (topic, value) in stored {
        let message = match StoredMessage::decode(value) {
            Ok(message) => message,
            Err(err) => {
                warn!(%topic, %err, "skipping a stored retained message that does not decode");
                continue;
            }
        };
        let (publish, properties) = into_publish(message);
        tx.send(Packet::Publish(publish, Some(properties))).await?;
        count += 1;
    }
    let done = Subscribe {
        pkid: 1,
        filters: vec![Filter {
            path: DONE_FILTER.into(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::Never,
        }],
    };
    tx.send(Packet::Subscribe(done, None)).await?;
    loop {
        let Some(notification) = rx.next().await? else {
            continue;
        };
        match Option::<Packet>::from(notification) {
            Some(Packet::SubAck(..)) => break,
            Some(_) => {}
            None => rx.wake().await?,
        }
    }
    let disconnect = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    };
    tx.send(Packet::Disconnect(disconnect, None)).await?;
    Ok(count)
}

/// The router's form of a stored message, retain flag set, with its
/// [`Origin`] (no client: the one that published it is long gone).
fn into_publish(message: StoredMessage) -> (Publish, PublishProperties) {
    let origin = Origin {
        qos: message.qos,
        retain: true,
        client_id: String::new(),
    };
    let properties = PublishProperties {
        payload_format_indicator: message.payload_format_indicator,
        message_expiry_interval: message.message_expiry_interval,
        topic_alias: None,
        response_topic: message.response_topic,
        correlation_data: message.correlation_data,
        user_properties: message.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: message.content_type,
    };
    let publish = Publish::new(Bytes::from(message.topic), message.payload, true);
    (publish, origin.mark(Some(properties)))
}
