//! The message as ingress stores it in a data flow's queue.
//!
//! Encoding (big-endian): `[version u8 = 1][received_at_ms u64][flags u8]`
//! then the topic, optional fields in flag order, the user properties and
//! the payload. Strings and byte strings are `[len u32][bytes]`. The storage
//! crate frames and checksums the whole encoding; this format only has to
//! be compact and versioned.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;
const RETAIN: u8 = 1 << 2;
const HAS_CONTENT_TYPE: u8 = 1 << 3;
const HAS_FORMAT: u8 = 1 << 4;
const HAS_EXPIRY: u8 = 1 << 5;
const HAS_RESPONSE_TOPIC: u8 = 1 << 6;
const HAS_CORRELATION: u8 = 1 << 7;

/// A device's PUBLISH as a data flow receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredMessage {
    /// When the broker accepted it, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// A stored message that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("stored message version {0} is not supported")]
    Version(u8),
    #[error("stored message is truncated")]
    Truncated,
    #[error("stored message has a string that is not UTF-8")]
    NotUtf8,
}

impl StoredMessage {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32 + self.topic.len() + self.payload.len());
        out.put_u8(VERSION);
        out.put_u64(self.received_at_ms);
        out.put_u8(self.flags());
        put_bytes(&mut out, self.topic.as_bytes());
        if let Some(content_type) = &self.content_type {
            put_bytes(&mut out, content_type.as_bytes());
        }
        if let Some(format) = self.payload_format_indicator {
            out.put_u8(format);
        }
        if let Some(expiry) = self.message_expiry_interval {
            out.put_u32(expiry);
        }
        if let Some(response_topic) = &self.response_topic {
            put_bytes(&mut out, response_topic.as_bytes());
        }
        if let Some(correlation) = &self.correlation_data {
            put_bytes(&mut out, correlation);
        }
        out.put_u32(self.user_properties.len() as u32);
        for (key, value) in &self.user_properties {
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &self.payload);
        out.freeze()
    }

    fn flags(&self) -> u8 {
        let mut flags = self.qos & 0b11;
        let set = |cond: bool, bit: u8| if cond { bit } else { 0 };
        flags |= set(self.retain, RETAIN);
        flags |= set(self.content_type.is_some(), HAS_CONTENT_TYPE);
        flags |= set(self.payload_format_indicator.is_some(), HAS_FORMAT);
        flags |= set(self.message_expiry_interval.is_some(), HAS_EXPIRY);
        flags |= set(self.response_topic.is_some(), HAS_RESPONSE_TOPIC);
        flags |= set(self.correlation_data.is_some(), HAS_CORRELATION);
        flags
    }

    pub fn decode(mut data: Bytes) -> Result<Self, MessageError> {
        let version = get_u8(&mut data)?;
        if version != VERSION {
            return Err(MessageError::Version(version));
        }
        if data.remaining() < 9 {
            return Err(MessageError::Truncated);
        }
        let received_at_ms = data.get_u64();
        let flags = data.get_u8();
        let topic = get_string(&mut data)?;
        let content_type = optional(flags, HAS_CONTENT_TYPE, || get_string(&mut data))?;
        let payload_format_indicator = optional(flags, HAS_FORMAT, || get_u8(&mut data))?;
        let message_expiry_interval = optional(flags, HAS_EXPIRY, || get_u32(&mut data))?;
        let response_topic = optional(flags, HAS_RESPONSE_TOPIC, || get_string(&mut data))?;
        let correlation_data = optional(flags, HAS_CORRELATION, || get_bytes(&mut data))?;
        let count = get_u32(&mut data)? as usize;
        let mut user_properties = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            user_properties.push((get_string(&mut data)?, get_string(&mut data)?));
        }
        let payload = get_bytes(&mut data)?;
        Ok(Self {
            received_at_ms,
            qos: flags & 0b11,
            retain: flags & RETAIN != 0,
            topic,
            payload,
            content_type,
            payload_format_indicator,
            message_expiry_interval,
            response_topic,
            correlation_data,
            user_properties,
        })
    }
}

fn optional<T>(
    flags: u8,
    bit: u8,
    read: impl FnOnce() -> Result<T, MessageError>,
) -> Result<Option<T>, MessageError> {
    if flags & bit != 0 {
        read().map(Some)
    } else {
        Ok(None)
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn get_u8(data: &mut Bytes) -> Result<u8, MessageError> {
    data.has_remaining()
        .then(|| data.get_u8())
        .ok_or(MessageError::Truncated)
}

fn get_u32(data: &mut Bytes) -> Result<u32, MessageError> {
    (data.remaining() >= 4)
        .then(|| data.get_u32())
        .ok_or(MessageError::Truncated)
}

fn get_bytes(data: &mut Bytes) -> Result<Bytes, MessageError> {
    let len = get_u32(data)? as usize;
    if data.remaining() < len {
        return Err(MessageError::Truncated);
    }
    Ok(data.split_to(len))
}

fn get_string(data: &mut Bytes) -> Result<String, MessageError> {
    String::from_utf8(get_bytes(data)?.to_vec()).map_err(|_| MessageError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_every_field() {
        let message = StoredMessage {
            received_at_ms: 1_700_000_000_123,
            qos: 1,
            retain: true,
            topic: "factory/line1/temp".into(),
            payload: Bytes::from_static(b"{\"t\":21.5}"),
            content_type: Some("application/json".into()),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("site".into(), "plant-7".into()), ("k".into(), "".into())],
        };
        assert_eq!(StoredMessage::decode(message.encode()).unwrap(), message);
    }

    #[test]
    fn round_trip_minimal() {
        let message = StoredMessage {
            topic: "t".into(),
            ..StoredMessage::default()
        };
        assert_eq!(StoredMessage::decode(message.encode()).unwrap(), message);
    }

    #[test]
    fn truncation_and_versions_are_errors() {
        let encoded = StoredMessage {
            topic: "abc".into(),
            payload: Bytes::from_static(b"payload"),
            ..StoredMessage::default()
        }
        .encode();
        for len in 0..encoded.len() {
            assert!(
                StoredMessage::decode(encoded.slice(..len)).is_err(),
                "prefix of {len} bytes must not decode"
            );
        }
        let mut wrong = encoded.to_vec();
        wrong[0] = 7;
        assert_eq!(
            StoredMessage::decode(Bytes::from(wrong)).unwrap_err(),
            MessageError::Version(7)
        );
    }
}
