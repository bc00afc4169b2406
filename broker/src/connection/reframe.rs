//! Reading and changing the QoS and packet id of a rumqttd `Publish`,
//! which keeps both private (its constructor makes QoS 0 only).
//!
//! Both go through rumqttd's own "MQTT independent" serialization: a copy
//! with the topic and payload emptied (cheap `Bytes` handles) serializes to
//! its header and packet id, and deserializing such a header gives a
//! `Publish` with the wanted QoS and id, into which the original topic and
//! payload are put back without copying them.

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::Publish;

use crate::codec::PublishHeader;

/// The QoS and packet id of `publish`.
pub(crate) fn header_of(publish: &Publish) -> PublishHeader {
    let mut probe = publish.clone();
    probe.topic = Bytes::new();
    probe.payload = Bytes::new();
    let bytes = probe.serialize();
    PublishHeader {
        qos: (bytes[0] >> 1) & 0b11,
        pkid: u16::from_be_bytes([bytes[1], bytes[2]]),
    }
}

/// `publish` with QoS `qos`, packet id `pkid` (0 for QoS 0) and the given
/// retain flag; the DUP flag is cleared.
pub(crate) fn reframed(publish: Publish, qos: u8, pkid: u16, retain: bool) -> Publish {
    let mut header = BytesMut::with_capacity(5);
    header.put_u8(0b0011_0000 | (qos << 1) | u8::from(retain));
    header.put_u16(if qos == 0 { 0 } else { pkid });
    header.put_u16(0);
    let mut out = Publish::deserialize(header.freeze());
    out.topic = publish.topic;
    out.payload = publish.payload;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reframed_publish_has_the_new_header_and_the_old_contents() {
        let original = Publish::new(&b"a/b"[..], &b"payload"[..], false);
        assert_eq!(header_of(&original), PublishHeader { qos: 0, pkid: 0 });
        let qos2 = reframed(original.clone(), 2, 17, true);
        assert_eq!(header_of(&qos2), PublishHeader { qos: 2, pkid: 17 });
        assert!(qos2.retain);
        assert_eq!(&qos2.topic[..], b"a/b");
        assert_eq!(&qos2.payload[..], b"payload");
        let qos0 = reframed(qos2, 0, 17, false);
        assert_eq!(header_of(&qos0), PublishHeader { qos: 0, pkid: 0 });
        assert!(!qos0.retain);
    }
}
