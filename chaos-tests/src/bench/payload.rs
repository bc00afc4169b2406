//! Numbered payloads: which publisher, which number, when it was sent.
//! The counting side needs nothing else to find losses, duplicates, order
//! and latency, whatever the destination (an MQTT payload or an Event Hubs
//! body carry the same bytes).

use std::sync::OnceLock;
use std::time::Instant;

const MAGIC: &[u8; 4] = b"BHB1";

/// Bytes of the numbered header; payloads are padded to their size after it.
pub const HEADER_LEN: usize = 24;

/// Publisher ids from this one up publish live traffic during a replay.
pub const LIVE_PUBLISHER: u32 = 1_000;

/// The publisher id of the probe that checks a path is up before a trial.
pub const PROBE_PUBLISHER: u32 = 9_999;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on the harness's monotonic clock (publisher and collector
/// are in the same process, so their stamps compare directly).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// A payload template of `size` bytes (at least the header) whose header is
/// rewritten for each message.
pub fn template(size: usize) -> Vec<u8> {
    let mut payload = vec![b'x'; size.max(HEADER_LEN)];
    payload[..4].copy_from_slice(MAGIC);
    payload
}

/// Writes the stamp into a [`template`].
pub fn stamp(payload: &mut [u8], stamp: Stamp) {
    payload[4..8].copy_from_slice(&stamp.publisher.to_le_bytes());
    payload[8..16].copy_from_slice(&stamp.seq.to_le_bytes());
    payload[16..24].copy_from_slice(&stamp.sent_ns.to_le_bytes());
}

/// The stamp of a benchmark payload; `None` for anything else.
pub fn read(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < HEADER_LEN || &payload[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().unwrap_or_default());
    Some(Stamp {
        publisher: u32_at(4),
        seq: u64_at(8),
        sent_ns: u64_at(16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_at_every_size() {
        for size in [0, 24, 200, 2048] {
            let mut payload = template(size);
            assert_eq!(payload.len(), size.max(HEADER_LEN));
            let s = Stamp {
                publisher: 7,
                seq: 123_456_789_012,
                sent_ns: 42,
            };
            stamp(&mut payload, s);
            assert_eq!(read(&payload), Some(s));
        }
        assert_eq!(read(b"not a benchmark payload at all"), None);
    }
}
