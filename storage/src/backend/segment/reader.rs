//! Reading a flow's log: a buffered cursor over one segment file, and a
//! [`Walk`] that steps record by record across segments, turning every kind
//! of damage into a counted gap instead of an error.
//!
//! The same walk serves the reader (records to deliver), the acknowledger
//! (bytes to release) and recovery (the tail of the newest segment), so a
//! corrupt region is judged the same way by all three.

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::header_len;
use super::io::FsFile;
use crate::record::{
    decode_frame, decode_verified_frame, find_frame, Frame, Framing, MIN_FRAME_OVERHEAD,
};
use crate::Seq;

/// Bytes read from a segment at a time: large enough that a replay costs
/// few system calls, small enough that memory does not follow the backlog.
/// Records handed out share their chunk (no copy, no allocation per
/// record), so a caller holding on to one record holds its chunk.
const CHUNK: usize = 256 * 1024;

/// What the cursor found at its position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// A valid frame of `len` bytes, `data_len` of them data, appended at
    /// `time` (milliseconds since the Unix epoch; 0: unknown, a version-2
    /// frame).
    Record {
        seq: Seq,
        len: usize,
        data_len: usize,
        time: u64,
    },
    /// The position is at `end`.
    End,
    /// No valid frame here: corrupt, or cut short before `end`.
    Broken,
}

/// A buffered, positional reader of one segment file. A clone shares the
/// file and the chunk read so far.
#[derive(Clone)]
pub(crate) struct SegmentCursor {
    file: Arc<dyn FsFile>,
    /// The segment's first sequence; frames carry theirs relative to it.
    base: Seq,
    /// The segment's time base (ms since the epoch); frames carry their
    /// append time relative to it.
    time_base: u64,
    framing: Framing,
    /// The bytes read from `buf_off` on (one chunk, shared with the
    /// records taken from it).
    buf: Bytes,
    buf_off: u64,
    pos: usize,
}

impl SegmentCursor {
    /// A cursor at `offset` of the segment `info` describes.
    pub(crate) fn new(file: Box<dyn FsFile>, info: &SegInfo, offset: u64) -> Self {
        Self {
            file: Arc::from(file),
            base: info.base,
            time_base: info.time_base,
            framing: info.framing,
            buf: Bytes::new(),
            buf_off: offset,
            pos: 0,
        }
    }

    /// File offset of the cursor.
    pub(crate) fn offset(&self) -> u64 {
        self.buf_off + self.pos as u64
    }

    pub(crate) fn seek(&mut self, offset: u64) {
        self.buf = Bytes::new();
        self.buf_off = offset;
        self.pos = 0;
    }

    /// Makes at least `need` bytes available at the cursor, unless `end`
    /// (or the file) comes first: a new chunk starting with the bytes not
    /// yet consumed.
    fn fill(&mut self, need: usize, end: u64) -> io::Result<()> {
        if self.buf.len() - self.pos >= need {
            return Ok(());
        }
        let left = &self.buf[self.pos..];
        let start = self.buf_off + self.pos as u64;
        let have_end = start + left.len() as u64;
        let want_end = (start + need.max(CHUNK) as u64).min(end);
        if want_end <= have_end {
            return Ok(());
        }
        let mut chunk = BytesMut::with_capacity((want_end - start) as usize);
        chunk.extend_from_slice(left);
        chunk.resize((want_end - start) as usize, 0);
        let n = self.file.read_full_at(&mut chunk[left.len()..], have_end)?;
        chunk.truncate(left.len() + n);
        self.buf = chunk.freeze();
        self.buf_off = start;
        self.pos = 0;
        Ok(())
    }

    /// The frame at the cursor, not consumed, if it is record `expect`
    /// (versions 2 and 3 name theirs: any valid one). Reads never go past
    /// `end`. `verified`: this process already read and checked this frame
    /// here, so its CRC is not computed again.
    pub(crate) fn peek(
        &mut self,
        end: u64,
        max_data: usize,
        expect: Seq,
        verified: bool,
    ) -> io::Result<Peek> {
        if self.offset() >= end {
            return Ok(Peek::End);
        }
        let expect = self.delta(expect);
        let decode = if verified {
            decode_verified_frame
        } else {
            decode_frame
        };
        self.fill(MIN_FRAME_OVERHEAD, end)?;
        let need = match decode(&self.buf[self.pos..], max_data, self.framing, expect) {
            Frame::Record {
                seq,
                time,
                data,
                len,
            } => return Ok(self.record(seq, time, data.len(), len)),
            Frame::Corrupt(_) => return Ok(Peek::Broken),
            Frame::Incomplete { need } => need,
        };
        self.fill(need, end)?;
        Ok(
            match decode(&self.buf[self.pos..], max_data, self.framing, expect) {
                Frame::Record {
                    seq,
                    time,
                    data,
                    len,
                } => self.record(seq, time, data.len(), len),
                Frame::Corrupt(_) | Frame::Incomplete { .. } => Peek::Broken,
            },
        )
    }

    /// `seq` relative to the segment's first sequence (sequences before it
    /// or too far after it never match a frame).
    fn delta(&self, seq: Seq) -> u32 {
        u32::try_from(seq.saturating_sub(self.base)).unwrap_or(u32::MAX)
    }

    fn record(&self, seq: u32, time: Option<u32>, data_len: usize, len: usize) -> Peek {
        Peek::Record {
            seq: self.base + u64::from(seq),
            len,
            data_len,
            time: time.map_or(0, |t| self.time_base + u64::from(t)),
        }
    }

    /// The data (`data_len` bytes) of the frame of `len` bytes at the cursor
    /// (after a [`Peek::Record`]), sharing the chunk it was read into.
    pub(crate) fn data(&self, len: usize, data_len: usize) -> Bytes {
        let range = self.framing.data_range(len, data_len);
        self.buf.slice(self.pos + range.start..self.pos + range.end)
    }

    pub(crate) fn advance(&mut self, len: usize) {
        self.pos += len;
    }

    /// After a broken frame: the offset and sequence of the first valid frame
    /// in `[offset, end)` whose sequence lies in `seqs`, if any (the frame at
    /// the cursor itself is one when frames before it vanished). Reads the
    /// rest of the segment at once; this only runs on damage.
    fn resync(
        &mut self,
        end: u64,
        seqs: Range<Seq>,
        max_data: usize,
    ) -> io::Result<Option<(u64, Seq)>> {
        let start = self.offset();
        if start >= end {
            return Ok(None);
        }
        let mut rest = vec![0u8; (end - start) as usize];
        let n = self.file.read_full_at(&mut rest, start)?;
        rest.truncate(n);
        let first = self.delta(seqs.start);
        // An open range (the newest segment at start-up): every frame takes
        // at least MIN_FRAME_OVERHEAD bytes, so the segment holds no more
        // frames than its size allows (versions 4 and 5 try each candidate).
        let room = (end / MIN_FRAME_OVERHEAD as u64).min(u64::from(u32::MAX)) as u32;
        let last = self.delta(seqs.end).min(first.saturating_add(room));
        for i in 0..rest.len() {
            if let Some((seq, _)) = find_frame(&rest[i..], max_data, self.framing, first..last) {
                return Ok(Some((start + i as u64, self.base + u64::from(seq))));
            }
        }
        Ok(None)
    }

    /// The raw bytes of `[from, to)`, to move aside into quarantine.
    fn region(&self, from: u64, to: u64) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; to.saturating_sub(from) as usize];
        let n = self.file.read_full_at(&mut bytes, from)?;
        bytes.truncate(n);
        Ok(bytes)
    }
}

/// One segment as a walk sees it.
#[derive(Debug, Clone)]
pub(crate) struct SegInfo {
    pub(crate) base: Seq,
    pub(crate) path: PathBuf,
    /// Readable bytes: committed data only.
    pub(crate) end: u64,
    /// The last sequence that belongs to this segment (for the newest
    /// segment: the last committed one; during recovery: unknown, `MAX`).
    pub(crate) last: Seq,
    /// Whether it is the newest segment, the one being appended to.
    pub(crate) newest: bool,
    /// Average data bytes per record, to estimate the size of lost ranges.
    pub(crate) avg_record: u64,
    /// The time base of its frames (ms since the epoch); 0 for a segment
    /// of version-2 frames (no append times).
    pub(crate) time_base: u64,
    /// The frame version of its records.
    pub(crate) framing: Framing,
}

/// Where a walk gets segment metadata and files from.
pub(crate) trait SegmentView {
    /// The current state of segment `base`, if it still exists.
    fn info(&self, base: Seq) -> Option<SegInfo>;
    /// The segment after `base`.
    fn after(&self, base: Seq) -> Option<SegInfo>;
    fn open(&self, info: &SegInfo) -> io::Result<Box<dyn FsFile>>;
    fn max_record(&self) -> usize;
}

/// One step of a walk.
#[derive(Debug)]
pub(crate) enum Step {
    /// The next record, `len` bytes of frame at the cursor (`data_len` of
    /// data, appended at `time`, ms since the epoch, 0 if unknown); not
    /// consumed: call [`Walk::consume`] to take it.
    Record {
        seq: Seq,
        len: usize,
        data_len: usize,
        time: u64,
    },
    /// Records `from..=to` are not readable (corrupt, cut short or missing);
    /// `region` is the damaged bytes (segment base, offset, bytes) if any.
    /// The walk has moved past them.
    Lost {
        from: Seq,
        to: Seq,
        bytes: u64,
        region: Option<(Seq, u64, Vec<u8>)>,
        /// No valid frame follows in this segment: for the newest segment
        /// at recovery, a torn tail rather than damage in the middle.
        to_end: bool,
    },
    /// Nothing more is readable now.
    End,
    /// The segment under the walk was deleted (acknowledged meanwhile).
    Stale,
}

/// A position in a flow's log, stepping record by record. A clone is a
/// second walk from the same position, sharing the chunk read so far.
#[derive(Clone)]
pub(crate) struct Walk {
    info: SegInfo,
    cursor: SegmentCursor,
    /// The sequence the next frame should carry.
    pub(crate) next: Seq,
    /// Records `clean_from..next` were each read and CRC-checked by this
    /// walk, in a row, without damage between them.
    pub(crate) clean_from: Seq,
    /// Records already checked by another walk (see
    /// [`Walk::clean_from`]): only their lengths are parsed.
    pub(crate) verified: std::ops::Range<Seq>,
    /// Data bytes of the records the reader took with this walk (kept by
    /// the reader only), so that an acknowledgement of what it read needs
    /// no walk of its own.
    pub(crate) data_taken: u64,
}

impl Walk {
    /// A walk at the start of segment `info`.
    pub(crate) fn start(view: &dyn SegmentView, info: SegInfo) -> io::Result<Self> {
        let file = view.open(&info)?;
        Ok(Self {
            next: info.base,
            clean_from: info.base,
            verified: 0..0,
            data_taken: 0,
            cursor: SegmentCursor::new(file, &info, header_len(info.framing)),
            info,
        })
    }

    /// The file offset of the walk.
    pub(crate) fn offset(&self) -> u64 {
        self.cursor.offset()
    }

    /// The data of the record a [`Step::Record`] announced.
    pub(crate) fn data(&self, len: usize, data_len: usize) -> Bytes {
        self.cursor.data(len, data_len)
    }

    /// Takes the record a [`Step::Record`] announced.
    pub(crate) fn consume(&mut self, seq: Seq, len: usize) {
        self.cursor.advance(len);
        self.next = seq + 1;
    }

    fn lost(&self, from: Seq, to: Seq) -> Step {
        let count = (to + 1).saturating_sub(from);
        Step::Lost {
            from,
            to,
            bytes: count.saturating_mul(self.info.avg_record),
            region: None,
            to_end: false,
        }
    }

    pub(crate) fn step(&mut self, view: &dyn SegmentView) -> io::Result<Step> {
        let step = self.step_unchecked(view)?;
        if matches!(step, Step::Lost { .. }) {
            self.clean_from = self.next;
        }
        Ok(step)
    }

    fn step_unchecked(&mut self, view: &dyn SegmentView) -> io::Result<Step> {
        loop {
            let max = view.max_record();
            let verified = self.verified.contains(&self.next);
            match self.cursor.peek(self.info.end, max, self.next, verified)? {
                Peek::Record {
                    seq,
                    len,
                    data_len,
                    time,
                } if seq == self.next => {
                    return Ok(Step::Record {
                        seq,
                        len,
                        data_len,
                        time,
                    });
                }
                Peek::Record { seq, .. } if seq > self.next && seq <= self.info.last => {
                    // Frames are contiguous within a segment; a jump means
                    // frames in between vanished without a trace.
                    let step = self.lost(self.next, seq - 1);
                    self.next = seq;
                    return Ok(step);
                }
                Peek::Record { .. } | Peek::Broken => return self.broken(max),
                Peek::End => {
                    // The newest segment may have grown since the last look.
                    let Some(info) = view.info(self.info.base) else {
                        return Ok(Step::Stale);
                    };
                    let grew = info.end > self.cursor.offset();
                    self.info = info;
                    if grew {
                        continue;
                    }
                    if self.info.newest {
                        return Ok(Step::End);
                    }
                    if self.next <= self.info.last {
                        // A sealed segment ended early: truncated.
                        let step = self.lost(self.next, self.info.last);
                        self.next = self.info.last + 1;
                        return Ok(step);
                    }
                    let Some(following) = view.after(self.info.base) else {
                        return Ok(Step::End);
                    };
                    let file = view.open(&following)?;
                    self.cursor =
                        SegmentCursor::new(file, &following, header_len(following.framing));
                    self.info = following;
                    if self.next < self.info.base {
                        // A whole segment is missing.
                        let step = self.lost(self.next, self.info.base - 1);
                        self.next = self.info.base;
                        return Ok(step);
                    }
                }
            }
        }
    }

    /// A broken frame at the cursor: skip to the next valid frame of this
    /// segment, or to its end, and report what lies between as lost.
    fn broken(&mut self, max: usize) -> io::Result<Step> {
        let from = self.cursor.offset();
        let last = self.info.last;
        let found = self
            .cursor
            .resync(self.info.end, self.next..last.saturating_add(1), max)?;
        let (to_offset, to_seq) = match found {
            Some((offset, seq)) => (offset, seq),
            None => (self.info.end, last.saturating_add(1)),
        };
        let region = self.cursor.region(from, to_offset)?;
        let count = to_seq.saturating_sub(self.next);
        let overhead = self.info.framing.nominal_overhead();
        let bytes = if count == 0 {
            0
        } else if region.is_empty() {
            count.saturating_mul(self.info.avg_record)
        } else {
            (region.len() as u64).saturating_sub(count.saturating_mul(overhead))
        };
        let step = Step::Lost {
            from: self.next,
            to: to_seq.saturating_sub(1),
            bytes,
            // Frames that vanished without a trace leave no bytes to keep.
            region: (!region.is_empty()).then_some((self.info.base, from, region)),
            to_end: found.is_none(),
        };
        self.cursor.seek(to_offset);
        self.next = to_seq;
        Ok(step)
    }
}
