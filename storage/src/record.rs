//! Framing of queue records.
//!
//! Records are laid end to end in a segment file, so each frame carries its
//! own length, a version byte (how to read the rest) and a CRC32C; every
//! frame of one segment has the same version, which the segment header
//! names (see `backend::segment`), so a reader always knows which layout to
//! expect before it looks at a frame.
//!
//! - Version 1 was the first skeleton's sled value framing; nothing reads it
//!   any more.
//! - Version 2, `[len u32 LE][version u8][seq delta u32 LE][crc32c u32
//!   LE][data]` (13 bytes): the sequence relative to the segment's first
//!   one. The CRC covers the 9 header bytes before it and the data. Written
//!   by the first builds; still read, never written. It has no append time:
//!   such records never expire.
//! - Version 3, `[len u32 LE][version u8][seq delta u32 LE][time delta u32
//!   LE][crc32c u32 LE][data]` (17 bytes): as version 2 plus the append time
//!   in milliseconds after the segment's time base. Still read, never
//!   written.
//! - Version 4, `[version u8 = 4][len varint][seq delta low byte u8][time
//!   delta varint][data][crc32c u32 LE]` (LEB128 varints). 17 bytes of
//!   framing were 8.5 % of a 200-byte record, most of it zeros; version 4
//!   takes 9 bytes for one appended within 128 ms of its segment's start,
//!   10 within 16 s, 11 within 35 minutes:
//!   - the length is a varint (2 bytes for 128 B to 16 KiB);
//!   - the append time is a varint of milliseconds after the segment's time
//!     base (the header keeps it in milliseconds, so it starts at 0);
//!   - the sequence is stored as the low byte of its delta to the segment's
//!     first sequence, while the CRC covers the full 32-bit delta (appended
//!     after the data). A reader in order knows the sequence it expects and
//!     checks it for free; after damage, a reader looking for the next
//!     valid frame tries only the sequences with that low byte (1 in 256 of
//!     those possible), and a frame whose CRC matches one of them is that
//!     record. The CRC also covers the header bytes and the data, so a
//!     corrupt length, time or sequence is caught like corrupt data.
//!     A frame torn anywhere lacks bytes its length announces.
//!
//!   Its CRC runs over the header bytes, then the data, then the sequence
//!   delta. Still read, never written.
//! - Version 5, the frame this build writes: the layout of version 4 with
//!   version byte 5, and the CRC32C taken over the **data first**, then the
//!   header bytes, then the full 32-bit sequence delta: `crc =
//!   crc32c_append(crc32c(data), header ++ seq delta LE)`. Version 4's CRC
//!   started with header bytes the commit thread only knows once it has
//!   sequenced the record, so that thread, the store's one serial path,
//!   hashed every byte of every record (143 of its ~833 instructions per
//!   200-byte append, callgrind, `BENCHMARKS.md`). With the data first,
//!   `crc32c(data)` is computed by the publisher as it appends, on its own
//!   thread ([`crate::QueueStore::append`]), and the commit thread only
//!   extends it over the ~10 bytes of header and sequence. Nothing else
//!   changes: the same bytes are covered, so the same damage is caught;
//!   resynchronising after damage takes one CRC of the data, then 10-16
//!   bytes per candidate sequence.
//!
//! The version byte lets later versions change the framing without a
//! migration step.

use std::ops::Range;

/// The segment framing version this build writes.
pub const FRAME_VERSION: u8 = 5;
/// The framing of the build before (CRC over the header first); still read.
pub const FRAME_VERSION_V4: u8 = 4;
/// The framing of the builds before that (fixed fields, append time); still
/// read.
pub const FRAME_VERSION_V3: u8 = 3;
/// The framing of the first builds (no append time); still read.
pub const FRAME_VERSION_V2: u8 = 2;
/// Bytes a version-3 frame adds to its data.
pub const FRAME_OVERHEAD_V3: usize = 17;
/// Bytes a version-2 frame adds to its data.
pub const FRAME_OVERHEAD_V2: usize = 13;
/// The smallest version-4 or -5 frame header (a record under 128 bytes
/// appended within 128 ms of its segment's start).
pub const MIN_FRAME_OVERHEAD: usize = 8;
/// The largest version-4 or -5 frame (5-byte varints) without its data.
const MAX_FRAME_OVERHEAD: usize = 16;
/// The longest header of a version-4 or -5 frame (the bytes before its
/// data: version, two 5-byte varints, the sequence's low byte).
const MAX_HEADER_LEN: usize = 12;

/// The frame version of a segment's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    V2,
    V3,
    V4,
    V5,
}

impl Framing {
    /// The framing this build writes.
    pub const CURRENT: Framing = Framing::V5;

    /// Framing bytes per record: exact for the fixed layouts, typical for
    /// versions 4 and 5 (a record of 128 B to 16 KiB appended within 16 s
    /// of its segment's start). Used only to estimate the data bytes of
    /// damaged regions.
    pub fn nominal_overhead(self) -> u64 {
        match self {
            Framing::V2 => FRAME_OVERHEAD_V2 as u64,
            Framing::V3 => FRAME_OVERHEAD_V3 as u64,
            Framing::V4 | Framing::V5 => 10,
        }
    }

    /// Where the data of a valid frame of `len` bytes, `data_len` of them
    /// data, lies in it (versions 4 and 5 end with their CRC, versions 2
    /// and 3 with the data).
    pub fn data_range(self, len: usize, data_len: usize) -> Range<usize> {
        let end = match self {
            Framing::V4 | Framing::V5 => len - 4,
            Framing::V2 | Framing::V3 => len,
        };
        end - data_len..end
    }

    /// The framing bytes of every record, if the layout is fixed.
    pub fn fixed_overhead(self) -> Option<u64> {
        match self {
            Framing::V2 | Framing::V3 => Some(self.nominal_overhead()),
            Framing::V4 | Framing::V5 => None,
        }
    }

    /// The version byte a segment header and each of its frames carry.
    pub fn version(self) -> u8 {
        match self {
            Framing::V2 => FRAME_VERSION_V2,
            Framing::V3 => FRAME_VERSION_V3,
            Framing::V4 => FRAME_VERSION_V4,
            Framing::V5 => FRAME_VERSION,
        }
    }
}

/// The most bytes a version-5 frame of `data_len` bytes can take on disk
/// (for space accounting before it is written).
pub fn max_frame_len(data_len: usize) -> usize {
    1 + varint_len(data_len as u64) + 1 + 5 + 4 + data_len
}

fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

/// Writes `value` as a LEB128 varint at `out[at..]`; returns where it ends.
/// `out` has room for 5 bytes from `at` (a u32 takes at most 5).
fn put_varint(mut value: u32, out: &mut [u8; MAX_HEADER_LEN + 4], mut at: usize) -> usize {
    while value >= 0x80 {
        out[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    at + 1
}

/// The header of a version-4 or -5 frame (`[version][len varint][seq low
/// byte][time varint]`) followed by the full sequence delta (little
/// endian), in one buffer: the bytes a version-5 CRC covers after the data.
/// Returns the buffer and the header's length.
#[inline]
fn header_and_seq(
    version: u8,
    seq: u32,
    time: u32,
    data_len: usize,
) -> ([u8; MAX_HEADER_LEN + 4], usize) {
    let mut buf = [0u8; MAX_HEADER_LEN + 4];
    buf[0] = version;
    // Lengths above u32::MAX are refused by the store before they get here.
    let at = put_varint(data_len as u32, &mut buf, 1);
    buf[at] = seq as u8;
    let header_len = put_varint(time, &mut buf, at + 1);
    buf[header_len..header_len + 4].copy_from_slice(&seq.to_le_bytes());
    (buf, header_len)
}

/// A LEB128 varint of at most 5 bytes (32 bits) at the start of `buf`:
/// `Ok((value, bytes))`, `Err(None)` if `buf` ends inside it, `Err(Some)`
/// if it is too long to be one this build writes.
fn get_varint(buf: &[u8]) -> Result<(u64, usize), Option<&'static str>> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= 5 {
        Err(Some("frame varint too long"))
    } else {
        Err(None)
    }
}

/// Appends the version-5 frame of the record `seq` places after its
/// segment's first sequence, appended `time` milliseconds after the
/// segment's time base, to `out`. `data_crc` is `crc32c(data)`, computed
/// ahead by whoever had the record first (the publisher, on its own
/// thread), so that this only extends it over the header and sequence.
pub fn encode_frame(seq: u32, time: u32, data: &[u8], data_crc: u32, out: &mut Vec<u8>) {
    let (tail, header_len) = header_and_seq(FRAME_VERSION, seq, time, data.len());
    // The whole 16-byte buffer, then cut back to the header: a copy of
    // known size is two moves, one of `header_len` bytes a `memcpy` call
    // (17 instructions per frame on the commit thread, callgrind).
    let start = out.len();
    out.reserve(tail.len() + data.len() + 4);
    out.extend_from_slice(&tail);
    out.truncate(start + header_len);
    out.extend_from_slice(data);
    let crc = crate::crc::crc32c_append(data_crc, &tail[..header_len + 4]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The CRC32C of a version-5 frame whose data's CRC is `data_crc`, with
/// header `header`, as record `seq`.
fn frame_crc_v5(data_crc: u32, header: &[u8], seq: u32) -> u32 {
    let mut tail = [0u8; MAX_HEADER_LEN + 4];
    let n = header.len().min(MAX_HEADER_LEN);
    tail[..n].copy_from_slice(&header[..n]);
    tail[n..n + 4].copy_from_slice(&seq.to_le_bytes());
    crate::crc::crc32c_append(data_crc, &tail[..n + 4])
}

/// The CRC32C of a version-4 frame: its bytes before the CRC (header and
/// data), then the full sequence delta.
fn frame_crc_v4(frame: &[u8], seq: u32) -> u32 {
    crate::crc::crc32c_append(crate::crc::crc32c(frame), &seq.to_le_bytes())
}

/// Appends a version-4 frame (as the previous build wrote them), for tests
/// of reading old segments.
pub fn encode_frame_v4(seq: u32, time: u32, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let (tail, header_len) = header_and_seq(FRAME_VERSION_V4, seq, time, data.len());
    out.extend_from_slice(&tail[..header_len]);
    out.extend_from_slice(data);
    let crc = frame_crc_v4(&out[start..], seq);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Appends a version-3 frame (as the previous build wrote them), for tests
/// of reading old segments.
pub fn encode_frame_v3(seq: u32, time: u32, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    // Lengths above u32::MAX are refused by the store before they get here.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.push(FRAME_VERSION_V3);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    let crc = crate::crc::crc32c_append(crate::crc::crc32c(&out[start..]), data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(data);
}

/// Appends a version-2 frame (as the first builds wrote them), for tests of
/// reading old segments.
pub fn encode_frame_v2(seq: u32, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.push(FRAME_VERSION_V2);
    out.extend_from_slice(&seq.to_le_bytes());
    let crc = crate::crc::crc32c_append(crate::crc::crc32c(&out[start..]), data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(data);
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, valid frame of `len` bytes.
    Record {
        seq: u32,
        /// Milliseconds after the segment's time base; `None` for a
        /// version-2 frame, which has no append time.
        time: Option<u32>,
        data: &'a [u8],
        len: usize,
    },
    /// The buffer ends inside the frame: `need` bytes would be needed (the
    /// header's claim, not yet verified).
    Incomplete { need: usize },
    /// Not a valid frame (for versions 4 and 5: not the record expected).
    Corrupt(&'static str),
}

/// A version-4 or -5 frame's header, parsed but not yet verified.
struct VarHeader {
    seq_low: u8,
    time: u32,
    /// Bytes before the data.
    header_len: usize,
    data_len: usize,
}

impl VarHeader {
    /// Where the CRC starts (after the data).
    fn crc_at(&self) -> usize {
        self.header_len + self.data_len
    }

    /// The whole frame's length.
    fn total(&self) -> usize {
        self.crc_at() + 4
    }
}

/// Parses the header of a frame of `version` (4 or 5) at the start of
/// `buf`, and checks that the whole frame is there.
fn parse_var(buf: &[u8], max_data: usize, version: u8) -> Result<VarHeader, Frame<'static>> {
    let incomplete = Frame::Incomplete {
        need: MAX_FRAME_OVERHEAD,
    };
    match buf.first() {
        None => return Err(incomplete),
        Some(&v) if v == version => {}
        Some(_) => return Err(Frame::Corrupt("unknown frame version")),
    }
    let (len, len_bytes) = match get_varint(&buf[1..]) {
        Ok(v) => v,
        Err(Some(why)) => return Err(Frame::Corrupt(why)),
        Err(None) => return Err(incomplete),
    };
    if len > max_data as u64 {
        return Err(Frame::Corrupt("frame length out of range"));
    }
    let at = 1 + len_bytes;
    let Some(&seq_low) = buf.get(at) else {
        return Err(incomplete);
    };
    let (time, time_bytes) = match get_varint(&buf[at + 1..]) {
        Ok(v) => v,
        Err(Some(why)) => return Err(Frame::Corrupt(why)),
        Err(None) => return Err(incomplete),
    };
    let time = u32::try_from(time).map_err(|_| Frame::Corrupt("frame time out of range"))?;
    let header = VarHeader {
        seq_low,
        time,
        header_len: at + 1 + time_bytes,
        data_len: len as usize,
    };
    if buf.len() < header.total() {
        return Err(Frame::Incomplete {
            need: header.total(),
        });
    }
    Ok(header)
}

/// Parses the frame at the start of `buf`, a frame of `framing`; `max_data`
/// bounds the data length a valid frame may claim (so a corrupt length is
/// not trusted to read gigabytes). `expect` is the sequence delta the reader
/// expects there: a version-4 or -5 frame is valid only as that record
/// (versions 2 and 3 carry their whole sequence and ignore it).
pub fn decode_frame(buf: &[u8], max_data: usize, framing: Framing, expect: u32) -> Frame<'_> {
    decode(buf, max_data, framing, expect, true)
}

/// [`decode_frame`] without the CRC check, for a frame this process has
/// already read and verified at the same place (an acknowledgement walking
/// over records a read walked over: only the lengths are needed).
pub fn decode_verified_frame(
    buf: &[u8],
    max_data: usize,
    framing: Framing,
    expect: u32,
) -> Frame<'_> {
    decode(buf, max_data, framing, expect, false)
}

fn decode(buf: &[u8], max_data: usize, framing: Framing, expect: u32, check: bool) -> Frame<'_> {
    if framing.fixed_overhead().is_some() {
        return decode_fixed(buf, max_data, check);
    }
    let header = match parse_var(buf, max_data, framing.version()) {
        Ok(header) => header,
        Err(frame) => return frame,
    };
    if header.seq_low != expect as u8 {
        return Frame::Corrupt("frame sequence out of order");
    }
    let crc_at = header.crc_at();
    let stored = u32::from_le_bytes([
        buf[crc_at],
        buf[crc_at + 1],
        buf[crc_at + 2],
        buf[crc_at + 3],
    ]);
    let data = &buf[header.header_len..crc_at];
    if check && stored != CrcBeforeSeq::of(framing, buf, &header).with_seq(expect) {
        return Frame::Corrupt("frame checksum mismatch");
    }
    Frame::Record {
        seq: expect,
        time: Some(header.time),
        data,
        len: header.total(),
    }
}

/// The CRC of a version-4 or -5 frame hashed up to the part that depends
/// on its sequence delta, so that checking it as one record or as each of
/// several candidates (re-synchronising) hashes the frame once.
struct CrcBeforeSeq<'a> {
    framing: Framing,
    partial: u32,
    /// Version 5: the header bytes, hashed after the data with the
    /// sequence; version 4 has them in `partial` already.
    header: &'a [u8],
}

impl<'a> CrcBeforeSeq<'a> {
    /// For the frame at the start of `buf`, parsed as `header`.
    fn of(framing: Framing, buf: &'a [u8], header: &VarHeader) -> Self {
        let crc_at = header.crc_at();
        let (partial, header) = if framing == Framing::V4 {
            (crate::crc::crc32c(&buf[..crc_at]), &[][..])
        } else {
            let data_crc = crate::crc::crc32c(&buf[header.header_len..crc_at]);
            (data_crc, &buf[..header.header_len])
        };
        Self {
            framing,
            partial,
            header,
        }
    }

    /// The CRC the frame carries if it is record `seq`.
    fn with_seq(&self, seq: u32) -> u32 {
        if self.framing == Framing::V4 {
            crate::crc::crc32c_append(self.partial, &seq.to_le_bytes())
        } else {
            frame_crc_v5(self.partial, self.header, seq)
        }
    }
}

/// Whether a valid frame of `framing` whose sequence delta lies in `seqs`
/// starts at `buf`: its sequence delta and length. For re-synchronising
/// after damage; a version-4 or -5 frame is checked against each sequence
/// in `seqs` with its low byte (one CRC of the frame, then 4 bytes per try
/// for version 4; one CRC of the data, then the header and 4 bytes per try
/// for version 5).
pub fn find_frame(
    buf: &[u8],
    max_data: usize,
    framing: Framing,
    seqs: Range<u32>,
) -> Option<(u32, usize)> {
    if framing.fixed_overhead().is_some() {
        return match decode_fixed(buf, max_data, true) {
            Frame::Record { seq, len, .. } if seqs.contains(&seq) => Some((seq, len)),
            _ => None,
        };
    }
    let header = parse_var(buf, max_data, framing.version()).ok()?;
    let crc_at = header.crc_at();
    let total = header.total();
    let stored = u32::from_le_bytes(buf[crc_at..total].try_into().ok()?);
    let crc = CrcBeforeSeq::of(framing, buf, &header);
    // The first delta in `seqs` with the stored low byte, then every 256th.
    let low = u32::from(header.seq_low);
    let first = u64::from(seqs.start) + u64::from(low.wrapping_sub(seqs.start) & 0xff);
    (first..u64::from(seqs.end))
        .step_by(256)
        .map(|seq| seq as u32)
        .find(|&seq| crc.with_seq(seq) == stored)
        .map(|seq| (seq, total))
}

/// Parses a version-2 or version-3 frame (checking its CRC if `check`).
fn decode_fixed(buf: &[u8], max_data: usize, check: bool) -> Frame<'_> {
    if buf.len() < FRAME_OVERHEAD_V2 {
        return Frame::Incomplete {
            need: FRAME_OVERHEAD_V2,
        };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let (overhead, crc_at) = match buf[4] {
        FRAME_VERSION_V3 => (FRAME_OVERHEAD_V3, 13),
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
    let time = (overhead == FRAME_OVERHEAD_V3)
        .then(|| u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]));
    let stored = u32::from_le_bytes([
        buf[crc_at],
        buf[crc_at + 1],
        buf[crc_at + 2],
        buf[crc_at + 3],
    ]);
    let data = &buf[overhead..total];
    if check && stored != crate::crc::crc32c_append(crate::crc::crc32c(&buf[..crc_at]), data) {
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

    const MAX: usize = 1 << 20;

    fn record(frame: Frame<'_>) -> (u32, Option<u32>, Vec<u8>, usize) {
        match frame {
            Frame::Record {
                seq,
                time,
                data,
                len,
            } => (seq, time, data.to_vec(), len),
            other => panic!("expected a record, got {other:?}"),
        }
    }

    /// Appends a frame of `framing` (4 or 5), as a build writing it would.
    fn encode(framing: Framing, seq: u32, time: u32, data: &[u8], out: &mut Vec<u8>) {
        match framing {
            Framing::V4 => encode_frame_v4(seq, time, data, out),
            _ => encode_frame(seq, time, data, crate::crc::crc32c(data), out),
        }
    }

    const VARINT_FRAMINGS: [Framing; 2] = [Framing::V4, Framing::V5];

    #[test]
    fn a_200_byte_record_takes_9_or_10_bytes_of_framing() {
        for framing in VARINT_FRAMINGS {
            for (time, overhead) in [(0, 9), (127, 9), (128, 10), (16_383, 10), (16_384, 11)] {
                let mut buf = Vec::new();
                encode(framing, 70_000, time, &[7u8; 200], &mut buf);
                assert_eq!(buf.len(), 200 + overhead, "{framing:?}, time delta {time}");
                assert!(buf.len() <= max_frame_len(200));
            }
            let mut small = Vec::new();
            encode(framing, 0, 0, b"", &mut small);
            assert_eq!(small.len(), MIN_FRAME_OVERHEAD);
            let mut large = Vec::new();
            encode(framing, u32::MAX, u32::MAX, &[1u8; 20_000], &mut large);
            assert_eq!(large.len(), max_frame_len(20_000));
        }
    }

    #[test]
    fn varint_frames_round_trip_checking_the_expected_sequence() {
        for framing in VARINT_FRAMINGS {
            let mut buf = Vec::new();
            encode(framing, 300, 1234, b"hello", &mut buf);
            let first = buf.len();
            encode(framing, 301, u32::MAX, &[1u8; 300], &mut buf);
            assert_eq!(
                record(decode_frame(&buf, MAX, framing, 300)),
                (300, Some(1234), b"hello".to_vec(), first)
            );
            assert_eq!(
                record(decode_frame(&buf[first..], MAX, framing, 301)),
                (301, Some(u32::MAX), vec![1u8; 300], buf.len() - first)
            );
            // The same low byte, another sequence: the CRC tells them apart.
            assert_eq!(
                decode_frame(&buf, MAX, framing, 300 + 256),
                Frame::Corrupt("frame checksum mismatch")
            );
            assert_eq!(
                decode_frame(&buf, MAX, framing, 301),
                Frame::Corrupt("frame sequence out of order")
            );
            assert_eq!(
                decode_frame(&buf, 4, framing, 300),
                Frame::Corrupt("frame length out of range")
            );
        }
    }

    #[test]
    fn the_v5_crc_starts_with_the_data() {
        let data = [0xa5u8; 200];
        let data_crc = crate::crc::crc32c(&data);
        let mut buf = Vec::new();
        encode_frame(70_000, 20_000, &data, data_crc, &mut buf);
        // Version, 2-byte length, low sequence byte, 3-byte time.
        let header = &buf[..7];
        assert_eq!(header[0], FRAME_VERSION);
        let mut tail = header.to_vec();
        tail.extend_from_slice(&70_000u32.to_le_bytes());
        let expected = crate::crc::crc32c_append(data_crc, &tail);
        assert_eq!(buf[buf.len() - 4..], expected.to_le_bytes());
        assert_eq!(&buf[7..buf.len() - 4], &data[..]);
    }

    #[test]
    fn a_frame_is_read_only_as_its_own_version() {
        for (written, other) in [(Framing::V4, Framing::V5), (Framing::V5, Framing::V4)] {
            let mut buf = Vec::new();
            encode(written, 3, 3, b"which version", &mut buf);
            assert_eq!(
                decode_frame(&buf, MAX, other, 3),
                Frame::Corrupt("unknown frame version")
            );
            assert_eq!(find_frame(&buf, MAX, other, 0..10), None);
        }
    }

    #[test]
    fn a_torn_frame_is_incomplete_at_every_cut() {
        for framing in VARINT_FRAMINGS {
            for time in [0, 20_000, u32::MAX] {
                let mut buf = Vec::new();
                encode(framing, 5, time, &[9u8; 200], &mut buf);
                for cut in 0..buf.len() {
                    assert!(
                        matches!(
                            decode_frame(&buf[..cut], MAX, framing, 5),
                            Frame::Incomplete { need } if need > cut
                        ),
                        "{framing:?}, time {time}, cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_flipped_bit_of_a_frame_is_detected() {
        for framing in VARINT_FRAMINGS {
            let mut buf = Vec::new();
            encode(framing, 5, 20_000, b"some record data", &mut buf);
            for at in 0..buf.len() {
                for bit in 0..8 {
                    let mut bad = buf.clone();
                    bad[at] ^= 1 << bit;
                    assert!(
                        !matches!(decode_frame(&bad, MAX, framing, 5), Frame::Record { .. }),
                        "{framing:?}: flip of bit {bit} at {at} detected"
                    );
                }
            }
        }
    }

    #[test]
    fn every_corrupt_byte_of_a_v5_frame_is_detected() {
        let mut buf = Vec::new();
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        encode_frame(1000, 20_000, &data, crate::crc::crc32c(&data), &mut buf);
        for at in 0..buf.len() {
            for value in 0..=255u8 {
                if value == buf[at] {
                    continue;
                }
                let mut bad = buf.clone();
                bad[at] = value;
                assert!(
                    !matches!(
                        decode_frame(&bad, MAX, Framing::V5, 1000),
                        Frame::Record { .. }
                    ),
                    "byte {at} set to {value:#04x} detected"
                );
                assert_eq!(
                    find_frame(&bad, MAX, Framing::V5, 0..2000),
                    None,
                    "byte {at} set to {value:#04x}: no sequence matches"
                );
            }
        }
    }

    #[test]
    fn a_verified_frame_is_parsed_without_its_crc() {
        for framing in VARINT_FRAMINGS {
            let mut buf = Vec::new();
            encode(framing, 9, 1, b"twice", &mut buf);
            let len = buf.len();
            buf[len - 1] ^= 1;
            assert!(matches!(
                decode_frame(&buf, MAX, framing, 9),
                Frame::Corrupt(_)
            ));
            assert_eq!(
                record(decode_verified_frame(&buf, MAX, framing, 9)),
                (9, Some(1), b"twice".to_vec(), len)
            );
            assert_eq!(
                decode_verified_frame(&buf, MAX, framing, 10),
                Frame::Corrupt("frame sequence out of order")
            );
        }
    }

    #[test]
    fn find_frame_recovers_the_sequence_from_its_low_byte_and_crc() {
        for framing in VARINT_FRAMINGS {
            let mut buf = Vec::new();
            encode(framing, 1000, 3, b"after the damage", &mut buf);
            assert_eq!(
                find_frame(&buf, MAX, framing, 0..5000),
                Some((1000, buf.len()))
            );
            assert_eq!(
                find_frame(&buf, MAX, framing, 1000..1001),
                Some((1000, buf.len()))
            );
            assert_eq!(find_frame(&buf, MAX, framing, 0..1000), None);
            assert_eq!(find_frame(&buf, MAX, framing, 1001..u32::MAX), None);
            assert_eq!(find_frame(&buf[1..], MAX, framing, 0..5000), None);
        }
    }

    #[test]
    fn find_frame_resyncs_past_damage_at_the_next_whole_frame() {
        for framing in VARINT_FRAMINGS {
            // Frames 0..20 of 37-byte records, then frame 7's middle smashed.
            let mut buf = Vec::new();
            let mut starts = Vec::new();
            for seq in 0..20u32 {
                starts.push(buf.len());
                encode(framing, seq, seq * 300, &[seq as u8 ^ 0x3c; 37], &mut buf);
            }
            let damaged = starts[7];
            for b in &mut buf[damaged + 3..damaged + 20] {
                *b = 0xff;
            }
            // Scanning forward byte by byte from the damage finds frame 8
            // first, at its start, as the only sequence that fits.
            let found = (damaged..buf.len())
                .find_map(|at| find_frame(&buf[at..], MAX, framing, 7..100_000).map(|f| (at, f)));
            assert_eq!(
                found,
                Some((starts[8], (8, starts[9] - starts[8]))),
                "{framing:?}"
            );
        }
    }

    #[test]
    fn version_3_frames_are_still_read() {
        let mut buf = Vec::new();
        encode_frame_v3(7, 1234, b"hello", &mut buf);
        encode_frame_v3(8, 0, b"", &mut buf);
        assert_eq!(buf.len(), 2 * FRAME_OVERHEAD_V3 + 5);
        // The expected sequence does not matter: v3 frames carry theirs.
        assert_eq!(
            record(decode_frame(&buf, MAX, Framing::V3, 0)),
            (7, Some(1234), b"hello".to_vec(), 22)
        );
        assert!(matches!(
            decode_frame(&buf[22..], 10, Framing::V3, 0),
            Frame::Record { seq: 8, .. }
        ));
        assert_eq!(
            decode_frame(&buf[..16], MAX, Framing::V3, 7),
            Frame::Incomplete { need: 22 }
        );
        assert_eq!(
            decode_frame(&buf, 4, Framing::V3, 7),
            Frame::Corrupt("frame length out of range")
        );
        for at in [0, 5, 10, 14, 18] {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            assert!(
                !matches!(
                    decode_frame(&bad, MAX, Framing::V3, 7),
                    Frame::Record {
                        seq: 7,
                        time: Some(1234),
                        ..
                    }
                ),
                "flip at {at} detected"
            );
        }
        assert_eq!(find_frame(&buf, MAX, Framing::V3, 7..8), Some((7, 22)));
        assert_eq!(find_frame(&buf, MAX, Framing::V3, 8..9), None);
    }

    #[test]
    fn version_2_frames_are_still_read() {
        let mut buf = Vec::new();
        encode_frame_v2(7, b"hello", &mut buf);
        encode_frame_v3(8, 5, b"new", &mut buf);
        assert_eq!(buf.len(), FRAME_OVERHEAD_V2 + 5 + FRAME_OVERHEAD_V3 + 3);
        assert_eq!(
            decode_frame(&buf, MAX, Framing::V2, 0),
            Frame::Record {
                seq: 7,
                time: None,
                data: b"hello",
                len: 18
            }
        );
        assert_eq!(
            decode_frame(&buf[..16], MAX, Framing::V2, 0),
            Frame::Incomplete { need: 18 }
        );
        let mut bad = buf.clone();
        bad[10] ^= 1;
        assert_eq!(
            decode_frame(&bad, MAX, Framing::V2, 0),
            Frame::Corrupt("frame checksum mismatch")
        );
    }
}
