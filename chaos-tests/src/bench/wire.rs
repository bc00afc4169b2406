//! The few MQTT 3.1.1 packets the load generator and the counting
//! subscriber need, encoded and parsed by hand. A hand-rolled client keeps
//! its own cost per message to a few hundred nanoseconds and lets a
//! publisher keep thousands of QoS 1 messages in flight in large writes,
//! so the generator is never what limits a broker (rumqttc costs about
//! 2.5 µs per QoS 1 message, `shared/reference/baseline.md` §2).

use std::fmt;

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;

/// A packet the peer sent that this client cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT, MQTT 3.1.1, keep-alive 0 (no PINGREQ needed while a benchmark
/// runs). `clean_session: false` keeps the subscriber's queue on the broker
/// while it is down.
pub fn connect(client_id: &str, clean_session: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + client_id.len());
    put_str(&mut body, "MQTT");
    body.push(4);
    body.push(if clean_session { 0x02 } else { 0x00 });
    body.extend_from_slice(&0u16.to_be_bytes());
    put_str(&mut body, client_id);
    let mut out = vec![CONNECT << 4];
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// SUBSCRIBE to one filter at QoS 1.
pub fn subscribe(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(5 + filter.len());
    body.extend_from_slice(&packet_id.to_be_bytes());
    put_str(&mut body, filter);
    body.push(1);
    let mut out = vec![0x82];
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Appends a QoS 1 PUBLISH to `out`.
pub fn put_publish(out: &mut Vec<u8>, topic: &str, packet_id: u16, payload: &[u8]) {
    out.push((PUBLISH << 4) | 0x02);
    put_remaining_length(out, 2 + topic.len() + 2 + payload.len());
    put_str(out, topic);
    out.extend_from_slice(&packet_id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends a PUBACK to `out`.
pub fn put_puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[PUBACK << 4, 2]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// One complete packet at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub flags: u8,
    pub body: &'a [u8],
    /// Bytes the whole packet took, header included.
    pub len: usize,
}

/// The packet at the start of `buf`, or `None` if it is not complete yet.
pub fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut shift = 0;
    let mut pos = 1;
    loop {
        let Some(&byte) = buf.get(pos) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << shift;
        pos += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(WireError("remaining length longer than 4 bytes".into()));
        }
    }
    if buf.len() < pos + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        kind: first >> 4,
        flags: first & 0x0f,
        body: &buf[pos..pos + len],
        len: pos + len,
    }))
}

/// A PUBLISH as the subscriber needs it: its packet id (QoS 1) and payload.
pub fn parse_publish<'a>(frame: &Frame<'a>) -> Result<(Option<u16>, &'a [u8]), WireError> {
    let short = || WireError("PUBLISH shorter than its topic".into());
    let topic_len = usize::from(u16::from_be_bytes([
        *frame.body.first().ok_or_else(short)?,
        *frame.body.get(1).ok_or_else(short)?,
    ]));
    let mut pos = 2 + topic_len;
    let qos = (frame.flags >> 1) & 0x03;
    let packet_id = if qos > 0 {
        let id = frame.body.get(pos..pos + 2).ok_or_else(short)?;
        pos += 2;
        Some(u16::from_be_bytes([id[0], id[1]]))
    } else {
        None
    };
    Ok((packet_id, frame.body.get(pos..).ok_or_else(short)?))
}

/// The packet id of a PUBACK.
pub fn parse_puback(frame: &Frame<'_>) -> Result<u16, WireError> {
    match frame.body {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(WireError("PUBACK without a packet id".into())),
    }
}

/// Checks a CONNACK: return code 0.
pub fn check_connack(frame: &Frame<'_>) -> Result<(), WireError> {
    match (frame.kind, frame.body) {
        (CONNACK, [_, 0, ..]) => Ok(()),
        (CONNACK, [_, code, ..]) => Err(WireError(format!("CONNACK refused with code {code}"))),
        (kind, _) => Err(WireError(format!(
            "expected CONNACK, got packet type {kind}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_frame_parser() {
        let mut buf = Vec::new();
        let payload = vec![7u8; 300];
        put_publish(&mut buf, "factory/p1", 513, &payload);
        put_puback(&mut buf, 513);
        let first = frame(&buf).unwrap().unwrap();
        assert_eq!((first.kind, first.flags), (PUBLISH, 0x02));
        assert_eq!(parse_publish(&first).unwrap(), (Some(513), &payload[..]));
        let second = frame(&buf[first.len..]).unwrap().unwrap();
        assert_eq!(second.kind, PUBACK);
        assert_eq!(parse_puback(&second).unwrap(), 513);
        assert_eq!(first.len + second.len, buf.len());
        assert_eq!(frame(&buf[..first.len - 1]).unwrap(), None);
    }

    #[test]
    fn connack_codes() {
        let ok = [0x20, 2, 0, 0];
        assert_eq!(check_connack(&frame(&ok).unwrap().unwrap()), Ok(()));
        let refused = [0x20, 2, 0, 5];
        assert_eq!(
            check_connack(&frame(&refused).unwrap().unwrap()),
            Err(WireError("CONNACK refused with code 5".into()))
        );
    }
}
