//! An upper bound of the bytes an event takes in an SDK batch, so that the
//! sink can tell, before the SDK serialized anything, that a run of events
//! fits a batch.
//!
//! Why: the SDK learns whether an event fits only by serializing it
//! (`try_add_event_data`, a few µs an event). Waiting for that before
//! starting the next batch put the filling of every batch in series with
//! the flow (issue 4: 5 ms of every 17 ms per 1,000 events). When the
//! bound says a run fits, its batch is filled in its own task while the
//! sink starts the next one.
//!
//! The bound is the AMQP 1.0 encoding at its widest: every string and
//! binary with a 4-byte length, every section with a 4-byte size and
//! count, every value of a property at most 9 bytes of constructor and
//! length, plus the SDK's 8 bytes for each event in the batch envelope.

use super::{
    CORRELATION_DATA_PROPERTY, MESSAGE_EXPIRY_PROPERTY, PAYLOAD_FORMAT_PROPERTY,
    RESPONSE_TOPIC_PROPERTY, TOPIC_PROPERTY,
};
use crate::endpoint::OutboundMessage;

/// Sections (header, properties with its 13 fields, message and
/// application annotations, data), their descriptors and headers, and the
/// envelope's frame around the event, generously.
const FIXED: u64 = 256;
/// A map entry: a key of at most 5 bytes of constructor and length, a
/// value of at most 9 (the numbers go as strings, 5).
const PER_PROPERTY: u64 = 16;
/// A string or binary value: constructor and 4-byte length.
const PER_VALUE: u64 = 5;

/// The most bytes `message` can take in a batch (with `partition_key` as
/// its annotation when keyed).
pub(super) fn event_bound(
    message: &OutboundMessage,
    copy_mqtt_properties: bool,
    partition_key: Option<&str>,
) -> u64 {
    let m = &message.message;
    let len = |s: usize| s as u64;
    let mut bound = FIXED + len(m.payload.len()) + PER_VALUE + len(message.id.len()) + PER_VALUE;
    if let Some(key) = partition_key {
        bound += PER_PROPERTY + len("x-opt-partition-key".len()) + len(key.len());
    }
    if copy_mqtt_properties {
        let property = |key: &str, value: usize| PER_PROPERTY + len(key.len()) + len(value);
        if let Some(content_type) = &m.content_type {
            bound += PER_VALUE + len(content_type.len());
        }
        bound += property(TOPIC_PROPERTY, m.topic.len());
        if m.payload_format_indicator.is_some() {
            bound += property(PAYLOAD_FORMAT_PROPERTY, 3);
        }
        if let Some(topic) = &m.response_topic {
            bound += property(RESPONSE_TOPIC_PROPERTY, topic.len());
        }
        if m.message_expiry_interval.is_some() {
            bound += property(MESSAGE_EXPIRY_PROPERTY, 10);
        }
        if let Some(data) = &m.correlation_data {
            bound += property(CORRELATION_DATA_PROPERTY, data.len());
        }
        for (key, value) in &m.user_properties {
            bound += property(key, value.len());
        }
    }
    bound
}

#[cfg(test)]
mod tests {
    use azure_messaging_eventhubs::models::AmqpMessage;
    use backhaul_broker::StoredMessage;
    use bytes::Bytes;

    use super::*;
    use crate::endpoint::eventhubs::amqp_message;

    fn message(payload: usize, topic: &str, properties: usize) -> OutboundMessage {
        OutboundMessage {
            id: "appliance-7/flow-with-a-long-name/123456789".to_string(),
            destination: "hub".to_string(),
            message: StoredMessage {
                topic: topic.to_string(),
                payload: Bytes::from(vec![b'x'; payload]),
                content_type: Some("application/json".to_string()),
                response_topic: Some("reply/here".to_string()),
                correlation_data: Some(Bytes::from_static(b"correlation")),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(4_000_000_000),
                user_properties: (0..properties)
                    .map(|i| (format!("key-{i}"), "v".repeat(i * 40)))
                    .collect(),
                ..Default::default()
            },
        }
    }

    /// The bytes the SDK counts for the event in a batch: its serialized
    /// AMQP message and the 8-byte header of a large data section.
    fn sdk_size(message: &OutboundMessage, copy: bool, key: Option<&str>) -> u64 {
        let mut amqp = amqp_message(message, copy);
        if let Some(key) = key {
            amqp.add_message_annotation("x-opt-partition-key".into(), key.to_string());
        }
        AmqpMessage::serialize(&amqp).unwrap().len() as u64 + 8
    }

    #[test]
    fn the_bound_is_above_the_sdk_size_and_not_far() {
        for payload in [0, 1, 200, 255, 256, 2048, 70_000] {
            for properties in [0, 1, 5, 20] {
                for copy in [true, false] {
                    for key in [None, Some("device-42")] {
                        let m = message(payload, "plant/line1/temp", properties);
                        let (bound, sdk) = (event_bound(&m, copy, key), sdk_size(&m, copy, key));
                        assert!(bound >= sdk, "{payload} B, {properties}: {bound} < {sdk}");
                        assert!(bound <= sdk * 2 + 512, "{payload} B: {bound} vs {sdk}");
                    }
                }
            }
        }
    }
}
