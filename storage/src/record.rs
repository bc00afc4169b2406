//! Framing of queue records.
//!
//! - Version 1 was the first skeleton's sled value framing; nothing reads it
//!   any more.
//! - Version 2, the segment frame, `[len u32 LE][version u8][seq delta u32
//!   LE][crc32c u32 LE][data]`: records laid end to end in a segment file, so
//!   the frame carries its own length and its sequence (relative to the
//!   segment's first sequence, which the segment header holds: 4 bytes
//!   rather than 8 keep the overhead of a 200-byte record at 6.5 %). The CRC
//!   covers the 9 header bytes before it and the data, so a corrupt length
//!   or sequence is caught like corrupt data; the sequence lets a reader
//!   re-synchronise after a corrupt frame and tell a gap from a torn tail.
//!
//! - Version 3, the segment frame since append times are kept, `[len u32
//!   LE][version u8][seq delta u32 LE][time delta u32 LE][crc32c u32
//!   LE][data]`: as version 2 plus the append time, in milliseconds after
//!   the segment's time base (its header holds that base in seconds since
//!   the Unix epoch; a segment is rolled before the delta would overflow,
//!   about 49 days). The CRC covers the 13 header bytes before it and the
//!   data. 4 bytes rather than an absolute 8 keep the overhead of a 200-byte
//!   record at 8.5 %. Expiry (TTL) and the oldest-record age read it;
//!   storage never looks inside the data for a time. Version-2 frames (written
//!   by earlier builds) are still read and have no append time: they never
//!   expire.
//!
//! The version byte says how to read the rest and lets later versions change
//! the framing without a migration step.

/// The segment framing version this build writes (version 3, with the
/// append time).
pub const FRAME_VERSION: u8 = 3;
/// The segment framing of earlier builds (no append time); still read.
pub const FRAME_VERSION_V2: u8 = 2;
/// Bytes a version-3 segment frame adds to its data.
pub const FRAME_OVERHEAD: usize = 17;
/// Bytes a version-2 segment frame adds to its data.
pub const FRAME_OVERHEAD_V2: usize = 13;
/// The smallest frame header of any version.
pub const MIN_FRAME_OVERHEAD: usize = FRAME_OVERHEAD_V2;

/// Appends the version-3 segment frame of the record `seq` places after its
/// segment's first sequence, appended `time` milliseconds after the
/// segment's time base, to `out`.
pub fn encode_frame(seq: u32, time: u32, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    // Lengths above u32::MAX are refused by the store before they get here.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(data);
}

/// Appends a version-2 frame (as earlier builds wrote them), for tests of
/// reading old segments.
pub fn encode_frame_v2(seq: u32, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.push(FRAME_VERSION_V2);
    out.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(data);
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, valid frame of `len` bytes.
    Record {
        seq: u32,
        /// Milliseconds after the segment's time base (version 3); `None`
        /// for a version-2 frame, which has no append time.
        time: Option<u32>,
        data: &'a [u8],
        len: usize,
    },
    /// The buffer ends inside the frame: `need` bytes would be needed (the
    /// header's claim, not yet verified).
    Incomplete { need: usize },
    /// Not a valid frame.
    Corrupt(&'static str),
}

/// Parses the frame at the start of `buf` (version 2 or 3); `max_data`
/// bounds the data length a valid frame may claim (so a corrupt length is
/// not trusted to read gigabytes).
pub fn decode_frame(buf: &[u8], max_data: usize) -> Frame<'_> {
    if buf.len() < MIN_FRAME_OVERHEAD {
        return Frame::Incomplete {
            need: MIN_FRAME_OVERHEAD,
        };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let (overhead, crc_at) = match buf[4] {
        FRAME_VERSION => (FRAME_OVERHEAD, 13),
        FRAME_VERSION_V2 => (FRAME_OVERHEAD_V2, 9),
        _ => return Frame::Corrupt("unknown frame version"),
    };
    if len > max_data {
        return Frame::Corrupt("frame length out of range");
    }
    let total = overhead + len;
    if buf.len() < total {
        return Frame::Incomplete { need: total };
    }
    let seq = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let time = (overhead == FRAME_OVERHEAD)
        .then(|| u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]));
    let stored = u32::from_le_bytes([
        buf[crc_at],
        buf[crc_at + 1],
        buf[crc_at + 2],
        buf[crc_at + 3],
    ]);
    let data = &buf[overhead..total];
    let actual = crc32c::crc32c_append(crc32c::crc32c(&buf[..crc_at]), data);
    if stored != actual {
        return Frame::Corrupt("frame checksum mismatch");
    }
    Frame::Record {
        seq,
        time,
        data,
        len: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_damage() {
        let mut buf = Vec::new();
        encode_frame(7, 1234, b"hello", &mut buf);
        encode_frame(8, 0, b"", &mut buf);
        assert_eq!(buf.len(), 2 * FRAME_OVERHEAD + 5);
        let Frame::Record {
            seq,
            time,
            data,
            len,
        } = decode_frame(&buf, 1 << 20)
        else {
            panic!("valid frame");
        };
        assert_eq!((seq, time, data, len), (7, Some(1234), &b"hello"[..], 22));
        assert!(matches!(
            decode_frame(&buf[22..], 10),
            Frame::Record { seq: 8, .. }
        ));
        assert_eq!(
            decode_frame(&buf[..16], 1 << 20),
            Frame::Incomplete { need: 22 }
        );
        assert_eq!(
            decode_frame(&buf, 4),
            Frame::Corrupt("frame length out of range")
        );
        for at in [0, 5, 10, 14, 18] {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            assert!(
                !matches!(
                    decode_frame(&bad, 1 << 20),
                    Frame::Record {
                        seq: 7,
                        time: Some(1234),
                        ..
                    }
                ),
                "flip at {at} detected"
            );
        }
    }

    #[test]
    fn version_2_frames_are_still_read() {
        let mut buf = Vec::new();
        encode_frame_v2(7, b"hello", &mut buf);
        encode_frame(8, 5, b"new", &mut buf);
        assert_eq!(buf.len(), FRAME_OVERHEAD_V2 + 5 + FRAME_OVERHEAD + 3);
        assert_eq!(
            decode_frame(&buf, 1 << 20),
            Frame::Record {
                seq: 7,
                time: None,
                data: b"hello",
                len: 18
            }
        );
        assert_eq!(
            decode_frame(&buf[..16], 1 << 20),
            Frame::Incomplete { need: 18 }
        );
        assert!(matches!(
            decode_frame(&buf[18..], 1 << 20),
            Frame::Record {
                seq: 8,
                time: Some(5),
                ..
            }
        ));
        let mut bad = buf.clone();
        bad[10] ^= 1;
        assert_eq!(
            decode_frame(&bad, 1 << 20),
            Frame::Corrupt("frame checksum mismatch")
        );
    }
}
