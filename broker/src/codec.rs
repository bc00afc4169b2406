//! MQTT framing for one connection: picks rumqttd's v4 (3.1.1) or v5 codec
//! from the CONNECT packet, and reads the QoS and packet id of a PUBLISH
//! from its header, which rumqttd's `Publish` keeps private.

use bytes::{Buf, BytesMut};
use rumqttd::protocol::{v4::V4, v5::V5, Error, Packet, Protocol};

/// The codec of one connection.
pub(crate) enum Codec {
    V4(V4),
    V5(V5),
}

/// Packet types a client may send: CONNECT, PUBLISH, PUBACK, PUBREC,
/// PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT.
const CLIENT_PACKETS: [u8; 10] = [1, 3, 4, 5, 6, 7, 8, 10, 12, 14];

/// The protocol level byte of MQTT 5 in CONNECT.
const LEVEL_V5: u8 = 5;

impl Codec {
    /// Chooses the codec from the start of a CONNECT packet; `None` until
    /// enough bytes are there to see the protocol level.
    pub(crate) fn detect(buf: &[u8]) -> Result<Option<Codec>, Error> {
        let Some(first) = buf.first() else {
            return Ok(None);
        };
        if first >> 4 != 1 {
            return Err(Error::InvalidPacketType(first >> 4));
        }
        // CONNECT's flag bits are reserved as 0. Checking them also refuses
        // a TLS ClientHello (0x16) on a plain port at its first byte.
        if first & 0x0f != 0 {
            return Err(Error::MalformedPacket);
        }
        let Some((_, header_len)) = remaining_length(buf)? else {
            return Ok(None);
        };
        let name_len_at = header_len;
        let Some(name_len) = read_u16(buf, name_len_at) else {
            return Ok(None);
        };
        let level_at = name_len_at + 2 + name_len as usize;
        match buf.get(level_at) {
            None => Ok(None),
            Some(&LEVEL_V5) => Ok(Some(Codec::V5(V5))),
            Some(_) => Ok(Some(Codec::V4(V4))),
        }
    }

    pub(crate) fn is_v5(&self) -> bool {
        matches!(self, Codec::V5(_))
    }

    /// One packet from `buf`, or `Error::InsufficientBytes` when it is not
    /// complete yet (nothing is consumed then).
    pub(crate) fn read(&mut self, buf: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        // Packets only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP)
        // are refused here: rumqttd 0.20's decoders reach `unreachable!()`
        // on some of them (found by the connection fuzz target).
        if let Some(first) = buf.first() {
            let kind = first >> 4;
            if !CLIENT_PACKETS.contains(&kind) {
                return Err(Error::InvalidPacketType(kind));
            }
        }
        match self {
            Codec::V4(codec) => codec.read_mut(buf, max_size),
            Codec::V5(codec) => match short_disconnect(buf) {
                Some(mut complete) => {
                    buf.advance(SHORT_DISCONNECT_LEN);
                    codec.read_mut(&mut complete, max_size)
                }
                None => codec.read_mut(buf, max_size),
            },
        }
    }

    pub(crate) fn write(&self, packet: Packet, out: &mut BytesMut) -> Result<usize, Error> {
        match self {
            Codec::V4(codec) => codec.write(without_properties(packet), out),
            Codec::V5(codec) => codec.write(packet, out),
        }
    }
}

/// An MQTT 5 DISCONNECT of remaining length 1: first byte, length, reason.
const SHORT_DISCONNECT_LEN: usize = 3;

/// An MQTT 5 DISCONNECT that carries a reason code but no property length
/// (allowed: "if the Remaining Length is less than 2, a value of 0 is
/// used"), rewritten with an explicit empty property length. rumqttd 0.20's
/// decoder wants the property length and otherwise waits for more bytes,
/// so a client's "disconnect with will message" (0x04) went unheard.
fn short_disconnect(buf: &[u8]) -> Option<BytesMut> {
    match buf {
        [0xe0, 1, reason, ..] => Some(BytesMut::from(&[0xe0, 2, *reason, 0][..])),
        _ => None,
    }
}

/// The packet without MQTT 5 properties: rumqttd 0.20's 3.1.1 encoder
/// reaches `unreachable!()` on a packet that has some, and the router adds
/// them to some packets for every client (found by the connection fuzz
/// target: subscribe then unsubscribe on MQTT 3.1.1).
fn without_properties(packet: Packet) -> Packet {
    match packet {
        Packet::Connect(connect, _, will, _, login) => {
            Packet::Connect(connect, None, will, None, login)
        }
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubRel(p, _) => Packet::PubRel(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        Packet::Subscribe(p, _) => Packet::Subscribe(p, None),
        Packet::SubAck(p, _) => Packet::SubAck(p, None),
        Packet::Unsubscribe(p, _) => Packet::Unsubscribe(p, None),
        Packet::UnsubAck(p, _) => Packet::UnsubAck(p, None),
        Packet::Disconnect(p, _) => Packet::Disconnect(p, None),
        other => other,
    }
}

/// QoS and packet id of a PUBLISH at the start of `buf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishHeader {
    pub(crate) qos: u8,
    pub(crate) pkid: u16,
}

/// Reads the header of the PUBLISH at the start of `buf`, if one is there.
pub(crate) fn peek_publish(buf: &[u8]) -> Option<PublishHeader> {
    let first = *buf.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    if qos == 0 {
        return Some(PublishHeader { qos, pkid: 0 });
    }
    let (_, header_len) = remaining_length(buf).ok()??;
    let topic_len = read_u16(buf, header_len)? as usize;
    let pkid = read_u16(buf, header_len + 2 + topic_len)?;
    Some(PublishHeader { qos, pkid })
}

/// The remaining length and the fixed header's size, once complete.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        value |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 2)));
        }
    }
    if buf.len() >= 5 {
        return Err(Error::MalformedRemainingLength);
    }
    Ok(None)
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v4_and_v5_connects() {
        // CONNECT, remaining length 12, "MQTT", level 4 / 5.
        let v4 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60];
        let v5 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60];
        assert!(matches!(Codec::detect(&v4), Ok(Some(Codec::V4(_)))));
        assert!(matches!(Codec::detect(&v5), Ok(Some(Codec::V5(_)))));
        assert!(matches!(Codec::detect(&v5[..8]), Ok(None)));
        assert!(matches!(
            Codec::detect(&[0x30, 0]),
            Err(Error::InvalidPacketType(3))
        ));
        assert!(
            matches!(Codec::detect(&[0x16, 3, 1]), Err(Error::MalformedPacket)),
            "a TLS ClientHello"
        );
    }

    #[test]
    fn peeks_qos_and_packet_id() {
        // PUBLISH QoS 1, topic "a/b", pkid 0x1234, payload "x".
        let qos1 = [0x32, 8, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'x'];
        assert_eq!(
            peek_publish(&qos1),
            Some(PublishHeader {
                qos: 1,
                pkid: 0x1234
            })
        );
        let qos0 = [0x30, 6, 0, 3, b'a', b'/', b'b', b'x'];
        assert_eq!(peek_publish(&qos0), Some(PublishHeader { qos: 0, pkid: 0 }));
        assert_eq!(peek_publish(&[0xc0, 0]), None, "PINGREQ is no PUBLISH");
        assert_eq!(peek_publish(&qos1[..7]), None, "incomplete header");
    }

    #[test]
    fn packets_only_a_server_sends_are_refused_before_decoding() {
        for (first, kind) in [(0x20, 2), (0x90, 9), (0xb0, 11), (0xd0, 13), (0xf0, 15)] {
            for mut codec in [Codec::V4(V4), Codec::V5(V5)] {
                let mut buf = BytesMut::from(&[first, 2, 0, 1][..]);
                assert!(
                    matches!(codec.read(&mut buf, 1024), Err(Error::InvalidPacketType(k)) if k == kind),
                    "type {kind}"
                );
            }
        }
    }

    #[test]
    fn mqtt_3_packets_are_written_without_properties() {
        use rumqttd::protocol::{UnsubAck, UnsubAckProperties};
        let ack = UnsubAck {
            pkid: 7,
            reasons: Vec::new(),
        };
        let props = UnsubAckProperties {
            reason_string: None,
            user_properties: Vec::new(),
        };
        let mut out = BytesMut::new();
        Codec::V4(V4)
            .write(Packet::UnsubAck(ack, Some(props)), &mut out)
            .unwrap();
        assert_eq!(&out[..], &[0xb0, 2, 0, 7]);
    }

    #[test]
    fn an_mqtt_5_disconnect_without_property_length_is_read() {
        use rumqttd::protocol::DisconnectReasonCode;
        let mut buf = BytesMut::from(&[0xe0, 1, 0x04, 0xc0, 0][..]);
        let mut codec = Codec::V5(V5);
        match codec.read(&mut buf, 1024) {
            Ok(Packet::Disconnect(d, None)) => {
                assert_eq!(
                    d.reason_code,
                    DisconnectReasonCode::DisconnectWithWillMessage
                )
            }
            other => panic!("DISCONNECT 0x04 expected, got {other:?}"),
        }
        assert_eq!(&buf[..], &[0xc0, 0], "the next packet stays");
    }

    #[test]
    fn rejects_overlong_remaining_length() {
        assert!(remaining_length(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }
}
