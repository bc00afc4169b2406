//! Writing an [`OutboundMessage`] as an MQTT 5 PUBLISH straight into the
//! connection's write buffer.
//!
//! Encoding from the message itself (no intermediate `Publish` with owned
//! topic, properties and user-property strings) keeps the per-message work
//! of the sink to one pass over its bytes with no allocation; the whole
//! window then leaves in one write (see `connection.rs`).

use bytes::{BufMut, BytesMut};

use super::MESSAGE_ID_PROPERTY;
use crate::endpoint::OutboundMessage;

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const USER_PROPERTY: u8 = 0x26;

/// The largest remaining length MQTT can express (four varint bytes).
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Why a message cannot be written as a PUBLISH at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a string or binary field is {0} bytes; MQTT allows 65535")]
    FieldTooLong(usize),
    #[error("the PUBLISH would be {size} bytes; the broker accepts at most {max}")]
    PacketTooLarge { size: usize, max: usize },
}

/// How a message is published: QoS, whether its retain flag is kept, and
/// the broker's maximum packet size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSettings {
    /// 0 or 1.
    pub qos: u8,
    pub retain_kept: bool,
    pub max_packet_size: usize,
}

/// Appends `outbound` as a PUBLISH with packet id `pkid` (ignored at QoS
/// 0). On error nothing is appended.
pub fn encode(
    out: &mut BytesMut,
    outbound: &OutboundMessage,
    pkid: u16,
    settings: PublishSettings,
) -> Result<(), EncodeError> {
    let message = &outbound.message;
    let properties = properties_len(outbound)?;
    let topic = string_len(&outbound.destination)?;
    let packet_id = if settings.qos > 0 { 2 } else { 0 };
    let remaining = topic + packet_id + varint_len(properties) + properties + message.payload.len();
    let size = 1 + varint_len(remaining) + remaining;
    if remaining > MAX_REMAINING_LENGTH || size > settings.max_packet_size {
        let max = settings.max_packet_size.min(MAX_REMAINING_LENGTH);
        return Err(EncodeError::PacketTooLarge { size, max });
    }
    let retain = settings.retain_kept && message.retain;
    out.reserve(size);
    out.put_u8(0x30 | (settings.qos.min(1) << 1) | u8::from(retain));
    put_varint(out, remaining);
    put_string(out, outbound.destination.as_bytes());
    if settings.qos > 0 {
        out.put_u16(pkid);
    }
    put_varint(out, properties);
    put_properties(out, outbound);
    out.put_slice(&message.payload);
    Ok(())
}

/// Length of the property block, checking every field fits MQTT's 16-bit
/// lengths.
fn properties_len(outbound: &OutboundMessage) -> Result<usize, EncodeError> {
    let message = &outbound.message;
    let mut len = 0;
    if message.payload_format_indicator.is_some() {
        len += 1 + 1;
    }
    if message.message_expiry_interval.is_some() {
        len += 1 + 4;
    }
    if let Some(content_type) = &message.content_type {
        len += 1 + string_len(content_type)?;
    }
    if let Some(response_topic) = &message.response_topic {
        len += 1 + string_len(response_topic)?;
    }
    if let Some(correlation) = &message.correlation_data {
        len += 1 + string_len(correlation)?;
    }
    for (key, value) in &message.user_properties {
        len += 1 + string_len(key)? + string_len(value)?;
    }
    len += 1 + string_len(MESSAGE_ID_PROPERTY)? + string_len(&outbound.id)?;
    Ok(len)
}

fn put_properties(out: &mut BytesMut, outbound: &OutboundMessage) {
    let message = &outbound.message;
    if let Some(format) = message.payload_format_indicator {
        out.put_u8(PAYLOAD_FORMAT_INDICATOR);
        out.put_u8(format);
    }
    if let Some(expiry) = message.message_expiry_interval {
        out.put_u8(MESSAGE_EXPIRY_INTERVAL);
        out.put_u32(expiry);
    }
    if let Some(content_type) = &message.content_type {
        out.put_u8(CONTENT_TYPE);
        put_string(out, content_type.as_bytes());
    }
    if let Some(response_topic) = &message.response_topic {
        out.put_u8(RESPONSE_TOPIC);
        put_string(out, response_topic.as_bytes());
    }
    if let Some(correlation) = &message.correlation_data {
        out.put_u8(CORRELATION_DATA);
        put_string(out, correlation);
    }
    let id = (MESSAGE_ID_PROPERTY, outbound.id.as_str());
    let user = message
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in user.chain(std::iter::once(id)) {
        out.put_u8(USER_PROPERTY);
        put_string(out, key.as_bytes());
        put_string(out, value.as_bytes());
    }
}

/// Encoded length of a string or binary field (2-byte length prefix).
fn string_len(field: impl AsRef<[u8]>) -> Result<usize, EncodeError> {
    let len = field.as_ref().len();
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong(len));
    }
    Ok(2 + len)
}

/// Callers checked the length with [`string_len`].
fn put_string(out: &mut BytesMut, field: &[u8]) {
    out.put_u16(field.len() as u16);
    out.put_slice(field);
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_varint(out: &mut BytesMut, mut value: usize) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use backhaul_broker::StoredMessage;
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;

    use super::*;

    const SETTINGS: PublishSettings = PublishSettings {
        qos: 1,
        retain_kept: true,
        max_packet_size: 16 * 1024 * 1024,
    };

    fn outbound(message: StoredMessage) -> OutboundMessage {
        OutboundMessage {
            id: "edge/flow/42".into(),
            destination: "cloud/line1/temp".into(),
            message,
        }
    }

    /// Decodes with rumqttc's own parser, an independent implementation.
    fn decode(bytes: &BytesMut) -> Packet {
        let mut copy = bytes.clone();
        let packet = Packet::read(&mut copy, None).expect("a valid PUBLISH");
        assert!(copy.is_empty(), "exactly one packet was written");
        packet
    }

    #[test]
    fn every_field_reaches_the_packet() {
        let message = StoredMessage {
            qos: 1,
            retain: true,
            payload: Bytes::from_static(b"{\"t\":21.5}"),
            content_type: Some("application/json".into()),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("site".into(), "plant-7".into())],
            ..StoredMessage::default()
        };
        let mut out = BytesMut::new();
        encode(&mut out, &outbound(message), 7, SETTINGS).unwrap();
        let Packet::Publish(publish) = decode(&out) else {
            panic!("not a PUBLISH");
        };
        assert_eq!(publish.topic, Bytes::from_static(b"cloud/line1/temp"));
        assert_eq!(publish.pkid, 7);
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        assert!(publish.retain);
        assert_eq!(publish.payload, Bytes::from_static(b"{\"t\":21.5}"));
        let expected = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            topic_alias: None,
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![
                ("site".into(), "plant-7".into()),
                (MESSAGE_ID_PROPERTY.into(), "edge/flow/42".into()),
            ],
            subscription_identifiers: Vec::new(),
            content_type: Some("application/json".into()),
        };
        assert_eq!(publish.properties, Some(expected));
    }

    #[test]
    fn qos_0_has_no_packet_id_and_retain_can_be_cleared() {
        let message = StoredMessage {
            retain: true,
            payload: Bytes::from_static(b"x"),
            ..StoredMessage::default()
        };
        let settings = PublishSettings {
            qos: 0,
            retain_kept: false,
            ..SETTINGS
        };
        let mut out = BytesMut::new();
        encode(&mut out, &outbound(message), 7, settings).unwrap();
        let Packet::Publish(publish) = decode(&out) else {
            panic!("not a PUBLISH");
        };
        assert_eq!(publish.qos, QoS::AtMostOnce);
        assert!(!publish.retain);
        assert_eq!(publish.payload, Bytes::from_static(b"x"));
    }

    #[test]
    fn remaining_lengths_of_every_varint_width_decode() {
        for size in [0, 60, 200, 20_000, 3_000_000] {
            let message = StoredMessage {
                payload: vec![b'a'; size].into(),
                ..StoredMessage::default()
            };
            let mut out = BytesMut::new();
            encode(&mut out, &outbound(message), 1, SETTINGS).unwrap();
            let Packet::Publish(publish) = decode(&out) else {
                panic!("not a PUBLISH");
            };
            assert_eq!(publish.payload.len(), size);
        }
    }

    #[test]
    fn a_packet_over_the_broker_maximum_is_refused_and_nothing_written() {
        let message = StoredMessage {
            payload: vec![b'a'; 1000].into(),
            ..StoredMessage::default()
        };
        let settings = PublishSettings {
            max_packet_size: 1000,
            ..SETTINGS
        };
        let mut out = BytesMut::new();
        let err = encode(&mut out, &outbound(message), 1, settings).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the PUBLISH would be 1060 bytes; the broker accepts at most 1000"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_field_over_65535_bytes_is_refused() {
        let mut long = outbound(StoredMessage::default());
        long.destination = "t".repeat(70_000);
        let mut out = BytesMut::new();
        let err = encode(&mut out, &long, 1, SETTINGS).unwrap_err();
        assert_eq!(err, EncodeError::FieldTooLong(70_000));
        assert!(out.is_empty());
    }
}
