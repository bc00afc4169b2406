//! One flow's log: its segments, its writer, its read and acknowledge
//! cursors, and how it is recovered at start-up.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{error, warn};

use super::io::{Fs, FsFile};
use super::ledger::Ledger;
use super::reader::{Peek, SegInfo, SegmentCursor, SegmentView, Step, Walk};
use super::writer::Writer;
use super::{
    decode_header, encode_header, header_len, io_error, parse_segment_name, segment_path,
    time_base_for, SegmentConfig, HEADER_LEN,
};
use crate::backend::{DropUntil, ReadOutcome, Recovered, Removed};
use crate::record::Framing;
use crate::{QueuedRecord, Seq, StorageError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the store knows about one segment without reading it.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    pub(crate) base: Seq,
    pub(crate) path: PathBuf,
    /// Readable (committed) bytes.
    pub(crate) end: u64,
    /// The last sequence in it: for the newest segment the last committed
    /// one (`base - 1` when empty); for older ones the bound the next
    /// segment (or a recorded gap) gives.
    pub(crate) last: Seq,
    /// Data bytes of its records (exact unless the segment is damaged).
    pub(crate) data_bytes: u64,
    /// The time base of its frames (0: version-2 frames).
    pub(crate) time_base: u64,
    /// The frame version of its records.
    pub(crate) framing: Framing,
}

impl SegMeta {
    fn records(&self) -> u64 {
        (self.last + 1).saturating_sub(self.base)
    }
}

/// State shared by the writer, the reader and the acknowledger.
pub(crate) struct Shared {
    pub(crate) segments: VecDeque<SegMeta>,
    /// The sequence the next committed record gets.
    pub(crate) next_seq: Seq,
    /// Every sequence `<= acked` is acknowledged.
    pub(crate) acked: Seq,
    /// Ranges already counted as quarantined (start -> end), so the reader,
    /// the acknowledger and recovery count each lost record once.
    counted: BTreeMap<Seq, Seq>,
    /// During recovery the newest segment's end and last sequence are not
    /// known yet: walks read it to the end of the file.
    recovering: bool,
    /// Records the reader walked over and CRC-checked in a row, without
    /// damage (its [`Walk::clean_from`]`..next`): the acknowledger parses
    /// only their lengths.
    read_clean: std::ops::Range<Seq>,
}

impl Shared {
    /// Notes `from..=to` as quarantined; how many of them were not counted
    /// before (acknowledged ones do not count).
    fn note_lost(&mut self, from: Seq, to: Seq) -> u64 {
        let mut from = from.max(self.acked + 1);
        if let Some((_, end)) = self.counted.range(..=from).next_back() {
            if *end >= from {
                from = end + 1;
            }
        }
        if from > to {
            return 0;
        }
        self.counted.insert(from, to);
        to - from + 1
    }

    /// The records an acknowledgement from `acked` may walk over without
    /// checking their CRCs again: those the reader checked, unless damage
    /// was noted at or after `acked + 1` (then both walks judge it afresh).
    fn verified_after(&self, acked: Seq) -> std::ops::Range<Seq> {
        let damage_ahead = self
            .counted
            .iter()
            .next_back()
            .is_some_and(|(_, end)| *end > acked);
        if damage_ahead {
            0..0
        } else {
            self.read_clean.clone()
        }
    }

    fn index_of(&self, base: Seq) -> Option<usize> {
        self.segments.binary_search_by_key(&base, |m| m.base).ok()
    }

    fn info_at(&self, index: usize) -> Option<SegInfo> {
        let meta = self.segments.get(index)?;
        let newest = index + 1 == self.segments.len();
        let recovering = newest && self.recovering;
        Some(SegInfo {
            base: meta.base,
            path: meta.path.clone(),
            end: meta.end,
            last: if recovering { Seq::MAX } else { meta.last },
            newest,
            avg_record: meta.data_bytes / meta.records().max(1),
            time_base: meta.time_base,
            framing: meta.framing,
        })
    }

    /// The segment holding `seq` (or the first one, if `seq` lies before).
    fn locate(&self, seq: Seq) -> Option<SegInfo> {
        let index = self
            .segments
            .partition_point(|m| m.base <= seq)
            .saturating_sub(1);
        self.info_at(index)
    }
}

/// A flow's acknowledgement side.
struct Acker {
    walk: Option<Walk>,
    ledger: Ledger,
}

/// One flow's log.
pub(crate) struct FlowLog {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    dir_name: String,
    quarantine_dir: PathBuf,
    fs: Arc<dyn Fs>,
    config: SegmentConfig,
    pub(crate) shared: Mutex<Shared>,
    pub(crate) writer: Mutex<Writer>,
    reader: Mutex<Option<Walk>>,
    /// Where the reader's last reads ended (see [`ReadMark`]).
    marks: Mutex<VecDeque<ReadMark>>,
    acker: Mutex<Acker>,
    /// Whether the reclaim thread has a request for this flow waiting.
    pub(crate) reclaim_queued: AtomicBool,
}

impl SegmentView for FlowLog {
    fn info(&self, base: Seq) -> Option<SegInfo> {
        let shared = lock(&self.shared);
        shared.index_of(base).and_then(|i| shared.info_at(i))
    }

    fn after(&self, base: Seq) -> Option<SegInfo> {
        let shared = lock(&self.shared);
        let index = shared.segments.partition_point(|m| m.base <= base);
        shared.info_at(index)
    }

    fn open(&self, info: &SegInfo) -> io::Result<Box<dyn FsFile>> {
        self.fs.open(&info.path)
    }

    fn max_record(&self) -> usize {
        self.config.max_record_bytes
    }
}

/// A segment file found at start-up.
struct Found {
    base: Seq,
    path: PathBuf,
    len: u64,
    /// The previous segment's base, from a valid header.
    prev: Option<Seq>,
    /// The time base from the header (0 when damaged or version-2 frames).
    time_base: u64,
    /// The frame version the header names (this build's when damaged).
    framing: Framing,
    /// The predecessor's data bytes, from a current header.
    prev_data_bytes: Option<u64>,
}

impl FlowLog {
    /// Opens (or creates) the flow's directory and recovers its log: reads
    /// every segment's header, scans only the newest segment (cutting a torn
    /// tail) and the acknowledged part of the oldest one, moves damaged
    /// segments aside, and counts what was lost.
    pub(crate) fn open(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        dir_name: String,
        quarantine_dir: PathBuf,
        name: &str,
        config: SegmentConfig,
    ) -> Result<(Self, Recovered), StorageError> {
        let ledger = Ledger::open(&*fs, &dir.join("ledger"))
            .and_then(|ledger| {
                // A new ledger's directory entry must be durable before any
                // segment is deleted on the strength of its checkpoints.
                fs.sync_dir(&dir)?;
                Ok(ledger)
            })
            .map_err(|e| io_error(e, format!("opening the ledger of flow {name}")))?;
        let found = list_segments(&*fs, &dir)
            .map_err(|e| io_error(e, format!("listing the segments of flow {name}")))?;

        let log = Self {
            name: name.to_string(),
            dir: dir.clone(),
            dir_name,
            quarantine_dir,
            fs,
            config,
            shared: Mutex::new(Shared {
                segments: VecDeque::new(),
                next_seq: 1,
                acked: ledger.acked(),
                counted: BTreeMap::new(),
                recovering: true,
                read_clean: 0..0,
            }),
            writer: Mutex::new(Writer::new(dir, None)),
            reader: Mutex::new(None),
            marks: Mutex::new(VecDeque::new()),
            acker: Mutex::new(Acker { walk: None, ledger }),
            reclaim_queued: AtomicBool::new(false),
        };
        let recovered = log
            .recover(found)
            .map_err(|e| io_error(e, format!("recovering flow {name}")))?;
        Ok((log, recovered))
    }

    fn recover(&self, mut found: Vec<Found>) -> io::Result<Recovered> {
        let mut recovered = Recovered::default();
        let mut acked = lock(&self.shared).acked;
        let mut lost: Vec<(Seq, Seq)> = Vec::new();

        // The newest segment: a header that never became durable (crash
        // while rolling) is rewritten; a damaged one with data after it is
        // moved aside.
        // The base of the segment before the newest: what a rewritten header
        // names as its predecessor (a made-up one would read as a missing
        // segment at the next start).
        let before_newest = found.len().checked_sub(2).map(|i| {
            let prev = &found[i];
            (
                prev.base,
                prev.path.clone(),
                prev.framing,
                prev.time_base,
                prev.len,
            )
        });
        if let Some(newest) = found.last_mut() {
            if newest.prev.is_none() {
                if newest.len <= HEADER_LEN as u64 {
                    let (prev, prev_data_bytes) = match &before_newest {
                        Some((base, path, framing, time_base, len)) => {
                            let bytes = self
                                .count_data_bytes(path, *base, *framing, *time_base, *len)
                                .unwrap_or_else(|err| {
                                    warn!(flow = %self.name, %err, "cannot read the segment before a torn one; its data bytes are estimated");
                                    len.saturating_sub(header_len(*framing))
                                });
                            (*base, bytes)
                        }
                        None => (0, 0),
                    };
                    let time_base = time_base_for(now_ms());
                    let file = self.fs.open(&newest.path)?;
                    file.set_len(0)?;
                    let header = encode_header(newest.base, prev, prev_data_bytes, time_base);
                    file.write_all_at(&header, 0)?;
                    file.sync_data()?;
                    newest.len = HEADER_LEN as u64;
                    newest.prev = Some(prev);
                    newest.time_base = time_base;
                    newest.framing = Framing::CURRENT;
                    warn!(flow = %self.name, base = newest.base, "rewrote the torn header of the newest segment");
                } else {
                    error!(flow = %self.name, base = newest.base, "newest segment has a damaged header; moving it aside");
                    let gone = found.pop();
                    if let Some(gone) = gone {
                        self.quarantine_file(&gone.path);
                        let mut shared = lock(&self.shared);
                        shared.next_seq = shared.next_seq.max(gone.base);
                    }
                }
            }
        }
        // Older segments with a damaged header are moved aside whole; their
        // range is lost.
        let mut kept: Vec<Found> = Vec::with_capacity(found.len());
        let count = found.len();
        for (i, segment) in found.into_iter().enumerate() {
            if segment.prev.is_none() && i + 1 < count {
                error!(flow = %self.name, base = segment.base, len = segment.len, "segment has a damaged header; moving it aside");
                self.quarantine_file(&segment.path);
                continue;
            }
            kept.push(segment);
        }
        let found = kept;

        // Segments wholly acknowledged (a deletion the crash interrupted).
        let mut start = 0;
        while start + 1 < found.len() && found[start + 1].base - 1 <= acked {
            let _ = self.fs.remove_file(&found[start].path);
            start += 1;
        }
        let found = &found[start..];
        if let Some(first) = found.first() {
            // Segments are deleted only after the checkpoint that covers
            // them is synced, so records between the checkpoint and the
            // oldest segment left were lost (a segment missing or moved
            // aside), not acknowledged.
            let before = first.base.saturating_sub(1);
            if before > acked {
                lost.push((acked + 1, before));
            }
        }

        let mut segments = VecDeque::with_capacity(found.len());
        for (i, segment) in found.iter().enumerate() {
            let newest = i + 1 == found.len();
            let mut last = segment.base.saturating_sub(1);
            if let Some(next) = found.get(i + 1) {
                last = next.base - 1;
                // The next segment names its predecessor: if that is not
                // this one, segments in between are missing.
                if let Some(prev) = next.prev.filter(|p| *p > segment.base && *p < next.base) {
                    last = prev - 1;
                    lost.push((prev, next.base - 1));
                }
            }
            // The newest segment is scanned below.
            let data_bytes = if newest {
                0
            } else {
                self.sealed_data_bytes(segment, found.get(i + 1), last)
            };
            segments.push_back(SegMeta {
                base: segment.base,
                path: segment.path.clone(),
                end: segment.len,
                last,
                data_bytes,
                time_base: segment.time_base,
                framing: segment.framing,
            });
        }
        // Gaps left by segments moved aside above (their predecessors end
        // where they began).
        for i in 1..segments.len() {
            let (prev_last, base) = (segments[i - 1].last, segments[i].base);
            if prev_last + 1 < base && !lost.iter().any(|(_, to)| *to == base - 1) {
                lost.push((prev_last + 1, base - 1));
            }
        }
        {
            let mut shared = lock(&self.shared);
            shared.acked = acked;
            shared.segments = segments;
            for (from, to) in &lost {
                recovered.quarantined += shared.note_lost(*from, *to);
            }
            if let Some(first) = shared.segments.front() {
                // The lost head range counts as gone from here on.
                acked = acked.max(first.base.saturating_sub(1));
                shared.acked = acked;
            }
        }
        if !lost.is_empty() {
            error!(flow = %self.name, ranges = ?lost, "records are missing from the log; counted as quarantined");
            lock(&self.acker).ledger.record(acked)?;
        }

        // Count the sealed segments from their sizes; the newest is scanned,
        // and so is the acknowledged part of the oldest (at most one
        // segment), which also leaves the acknowledger positioned.
        let (head, sealed_metas) = {
            let shared = lock(&self.shared);
            let sealed = shared.segments.len().saturating_sub(1);
            let head = (sealed > 0).then(|| shared.info_at(0)).flatten();
            let metas: Vec<SegMeta> = shared.segments.iter().take(sealed).cloned().collect();
            (head, metas)
        };
        let mut head_acked_bytes = 0;
        if let Some(head) = head.filter(|h| h.base <= acked) {
            let mut walk = Walk::start(self, head)?;
            while walk.next <= acked {
                match walk.step(self)? {
                    Step::Record {
                        seq, len, data_len, ..
                    } if seq <= acked => {
                        walk.consume(seq, len);
                        head_acked_bytes += data_len as u64;
                    }
                    Step::Lost { .. } => {}
                    _ => break,
                }
            }
            if walk.next == acked + 1 {
                lock(&self.acker).walk = Some(walk);
            }
        }
        for (i, meta) in sealed_metas.iter().enumerate() {
            let live_from = meta.base.max(acked + 1);
            if live_from > meta.last {
                continue;
            }
            recovered.messages += meta.last + 1 - live_from;
            recovered.bytes += if i == 0 {
                meta.data_bytes.saturating_sub(head_acked_bytes)
            } else {
                meta.data_bytes
            };
        }
        let scanned = self.scan_newest(acked)?;
        recovered.messages += scanned.messages;
        recovered.bytes += scanned.bytes;
        recovered.quarantined += scanned.quarantined;
        let tail_next = scanned.tail + 1;

        let mut shared = lock(&self.shared);
        shared.recovering = false;
        let next_seq = shared.next_seq.max(tail_next).max(acked + 1).max(1);
        shared.next_seq = next_seq;
        let mut resume = None;
        if let Some(meta) = shared.segments.back_mut() {
            meta.end = scanned.end;
            meta.last = scanned.tail;
            meta.data_bytes = scanned.data_bytes;
            // Append to the newest segment only if the next record follows
            // its last one; otherwise the first commit starts a new segment.
            if next_seq == tail_next {
                resume = Some((
                    meta.path.clone(),
                    meta.base,
                    meta.time_base,
                    meta.framing,
                    meta.end,
                ));
            }
        }
        drop(shared);
        if let Some((path, base, time_base, framing, end)) = resume {
            lock(&self.writer).active = Some(Writer::resume(
                &*self.fs, &path, base, time_base, framing, end,
            )?);
        }
        recovered.next_seq = next_seq;
        Ok(recovered)
    }

    /// Reads the newest segment to its end: counts its live records, moves
    /// damaged regions aside, and cuts a torn tail off.
    fn scan_newest(&self, acked: Seq) -> io::Result<Scanned> {
        let Some(info) = ({
            let shared = lock(&self.shared);
            shared
                .segments
                .len()
                .checked_sub(1)
                .and_then(|i| shared.info_at(i))
        }) else {
            return Ok(Scanned::default());
        };
        let mut scanned = Scanned {
            tail: info.base.saturating_sub(1),
            end: header_len(info.framing),
            ..Scanned::default()
        };
        let mut walk = Walk::start(self, info.clone())?;
        loop {
            match walk.step(self)? {
                Step::Record {
                    seq, len, data_len, ..
                } => {
                    walk.consume(seq, len);
                    let data = data_len as u64;
                    scanned.data_bytes += data;
                    if seq > acked {
                        scanned.messages += 1;
                        scanned.bytes += data;
                    }
                    scanned.tail = seq;
                }
                Step::Lost {
                    from,
                    to,
                    region,
                    to_end: true,
                    ..
                } => {
                    let offset = region.as_ref().map_or(walk.offset(), |(_, o, _)| *o);
                    let cut = region.as_ref().map_or(0, |(_, _, r)| r.len());
                    warn!(flow = %self.name, segment = info.base, offset, bytes = cut, "cutting off a torn record at the tail");
                    let _ = (from, to);
                    let file = self.fs.open(&info.path)?;
                    file.set_len(offset)?;
                    file.sync_data()?;
                    scanned.end = offset;
                    return Ok(scanned);
                }
                Step::Lost {
                    from, to, region, ..
                } => {
                    let counted = lock(&self.shared).note_lost(from, to);
                    scanned.quarantined += counted;
                    if let Some(region) = region {
                        self.quarantine_region(region);
                    }
                    warn!(flow = %self.name, from, to, "records in the newest segment are damaged; quarantined");
                    scanned.tail = scanned.tail.max(to);
                }
                Step::End | Step::Stale => {
                    scanned.end = walk.offset();
                    return Ok(scanned);
                }
            }
        }
    }

    /// The data bytes of a sealed segment (records `segment.base..=last`),
    /// without reading it when possible: fixed framings by arithmetic from
    /// its size, versions 4 and 5 from the header of the segment rolled
    /// after it.
    /// Otherwise (that header damaged, or a segment missing in between) the
    /// segment is read once; if even that fails, the bytes are estimated
    /// (start-up goes on either way).
    fn sealed_data_bytes(&self, segment: &Found, next: Option<&Found>, last: Seq) -> u64 {
        let payload = segment.len.saturating_sub(header_len(segment.framing));
        let records = (last + 1).saturating_sub(segment.base);
        if let Some(overhead) = segment.framing.fixed_overhead() {
            return payload.saturating_sub(records * overhead);
        }
        if let Some(bytes) = next
            .filter(|n| n.prev == Some(segment.base))
            .and_then(|n| n.prev_data_bytes)
        {
            return bytes.min(payload);
        }
        self.count_data_bytes(
            &segment.path,
            segment.base,
            segment.framing,
            segment.time_base,
            segment.len,
        )
        .unwrap_or_else(|err| {
            warn!(flow = %self.name, segment = segment.base, %err, "cannot read a segment to count its bytes; estimated");
            payload.saturating_sub(records * segment.framing.nominal_overhead())
        })
    }

    /// Reads a segment's valid frames from its start and sums their data
    /// bytes (stops at the first damage: an estimate then, like the
    /// quarantine counts).
    fn count_data_bytes(
        &self,
        path: &Path,
        base: Seq,
        framing: Framing,
        time_base: u64,
        len: u64,
    ) -> io::Result<u64> {
        let info = SegInfo {
            base,
            path: path.to_path_buf(),
            end: len,
            last: Seq::MAX,
            newest: false,
            avg_record: 0,
            time_base,
            framing,
        };
        let mut cursor = SegmentCursor::new(self.fs.open(path)?, &info, header_len(framing));
        let (mut seq, mut bytes) = (base, 0);
        while let Peek::Record { len, data_len, .. } =
            cursor.peek(len, self.config.max_record_bytes, seq, false)?
        {
            bytes += data_len as u64;
            cursor.advance(len);
            seq += 1;
        }
        Ok(bytes)
    }

    /// Moves a whole damaged segment into the quarantine folder.
    fn quarantine_file(&self, path: &Path) {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = self
            .quarantine_dir
            .join(format!("{}-{}", self.dir_name, file_name));
        if let Err(err) = self.fs.rename(path, &target) {
            error!(flow = %self.name, %err, path = %path.display(), "cannot move a damaged segment aside; deleting it");
            let _ = self.fs.remove_file(path);
        }
        let _ = self.fs.sync_dir(&self.dir);
    }

    /// Copies a damaged region into the quarantine folder (the segment
    /// itself is append-only and goes away once acknowledged).
    fn quarantine_region(&self, (base, offset, bytes): (Seq, u64, Vec<u8>)) {
        let path = self
            .quarantine_dir
            .join(format!("{}-{base:020}-{offset}.bad", self.dir_name));
        if self.fs.exists(&path) {
            return;
        }
        let written = self.fs.create(&path).and_then(|file| {
            file.write_all_at(&bytes, 0)?;
            file.sync_data()
        });
        if let Err(err) = written {
            warn!(flow = %self.name, %err, "cannot save a quarantined region");
        }
    }

    /// A walk positioned at the segment holding `from`.
    fn walk_from(&self, from: Seq) -> io::Result<Option<Walk>> {
        let mut attempts = 0;
        loop {
            let Some(info) = lock(&self.shared).locate(from) else {
                return Ok(None);
            };
            match Walk::start(self, info) {
                Ok(walk) => return Ok(Some(walk)),
                // Deleted by an acknowledgement between the lookup and the
                // open: look again.
                Err(err) if err.kind() == io::ErrorKind::NotFound && attempts < 3 => {
                    attempts += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// See [`crate::backend::Backend::read`].
    pub(crate) fn read(
        &self,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> io::Result<ReadOutcome> {
        let mut outcome = ReadOutcome::default();
        let mut reader = lock(&self.reader);
        let acked = lock(&self.shared).acked;
        let from = from.max(acked + 1);
        if !matches!(reader.as_ref(), Some(walk) if walk.next == from) {
            *reader = self.walk_from(from)?;
            lock(&self.marks).clear();
        }
        let Some(walk) = reader.as_mut() else {
            return Ok(outcome);
        };
        let mut bytes = 0usize;
        let mut restarts = 0;
        outcome.records.reserve(max_count.min(1024));
        while outcome.records.len() < max_count {
            match walk.step(self)? {
                Step::Record {
                    seq,
                    len,
                    data_len,
                    time,
                } => {
                    if seq >= from {
                        if !outcome.records.is_empty() && bytes + data_len > max_bytes {
                            break;
                        }
                        bytes += data_len;
                        outcome.records.push(QueuedRecord::new(
                            seq,
                            walk.data(len, data_len),
                            time,
                        ));
                    }
                    walk.consume(seq, len);
                    walk.data_taken += data_len as u64;
                }
                Step::Lost {
                    from: lost_from,
                    to,
                    bytes: lost_bytes,
                    region,
                    ..
                } => {
                    let counted = lock(&self.shared).note_lost(lost_from.max(from), to);
                    if counted > 0 {
                        let total = (to + 1).saturating_sub(lost_from).max(1);
                        outcome.quarantined += counted;
                        outcome.quarantined_bytes += lost_bytes * counted / total;
                        warn!(flow = %self.name, from = lost_from, to, "quarantined unreadable records");
                    }
                    if let Some(region) = region {
                        self.quarantine_region(region);
                    }
                }
                Step::End => break,
                Step::Stale => {
                    // Acknowledged and deleted under the walk: start again
                    // after the acknowledged part.
                    restarts += 1;
                    let resume = walk.next.max(lock(&self.shared).acked + 1);
                    match self.walk_from(resume)? {
                        Some(fresh) if restarts < 3 => {
                            *walk = fresh;
                            lock(&self.marks).clear();
                        }
                        _ => break,
                    }
                }
            }
        }
        lock(&self.shared).read_clean = walk.clean_from..walk.next;
        let mut marks = lock(&self.marks);
        let again = matches!(marks.back(), Some(mark) if mark.next == walk.next);
        if !again {
            if marks.len() == MARKS {
                marks.pop_front();
            }
            marks.push_back(ReadMark {
                next: walk.next,
                data_taken: walk.data_taken,
                walk: walk.clone(),
            });
        }
        Ok(outcome)
    }

    /// See [`crate::backend::Backend::ack`].
    pub(crate) fn ack(&self, upto: Seq) -> io::Result<Removed> {
        self.advance(Until::Seq(upto))
    }

    /// See [`crate::backend::Backend::drop_head`].
    pub(crate) fn drop_head(&self, until: DropUntil) -> io::Result<Removed> {
        self.advance(match until {
            DropUntil::Removed { messages, bytes } => Until::Removed { messages, bytes },
            DropUntil::Expired { cutoff_ms, from } => Until::Expired {
                cutoff: cutoff_ms,
                from,
            },
        })
    }

    /// The append time (ms since the epoch) of the first unacknowledged
    /// record, if it is readable and has one.
    pub(crate) fn head_time(&self) -> io::Result<Option<u64>> {
        let mut acker = lock(&self.acker);
        let acked = lock(&self.shared).acked;
        if !matches!(acker.walk.as_ref(), Some(walk) if walk.next == acked + 1) {
            acker.walk = self.walk_from(acked + 1)?;
        }
        let mut restarts = 0;
        loop {
            let Some(walk) = acker.walk.as_mut() else {
                return Ok(None);
            };
            match walk.step(self)? {
                // A walk starts at the first record of its segment.
                Step::Record { seq, len, .. } if seq <= acked => walk.consume(seq, len),
                Step::Record { time, .. } => return Ok((time != 0).then_some(time)),
                Step::End => return Ok(None),
                // The segment under the walk was deleted after the walk
                // passed its last record: move on.
                Step::Stale if restarts < 3 => {
                    restarts += 1;
                    acker.walk = self.walk_from(acked + 1)?;
                }
                // Damage at the head: the next acknowledgement deals with
                // it; the age is unknown until then.
                Step::Lost { .. } | Step::Stale => {
                    acker.walk = None;
                    return Ok(None);
                }
            }
        }
    }

    /// Moves the head (the acknowledged cursor) forward: an acknowledgement,
    /// or a drop (overflow, expiry) that stops at the first record it must
    /// keep.
    fn advance(&self, until: Until) -> io::Result<Removed> {
        let mut removed = Removed::default();
        let mut acker = lock(&self.acker);
        let (acked, last) = {
            let shared = lock(&self.shared);
            (shared.acked, shared.next_seq - 1)
        };
        let upto = match until {
            Until::Seq(upto) => upto.min(last),
            _ => last,
        };
        if upto <= acked {
            return Ok(removed);
        }
        if let Until::Expired { from, .. } = until {
            // Records before `from` are being delivered: leave the head.
            if acked + 1 < from {
                return Ok(removed);
            }
        }
        if let Until::Seq(_) = until {
            if let Some((bytes, walk)) = self.read_between(acked, upto) {
                removed.messages = upto - acked;
                removed.bytes = bytes;
                acker.walk = Some(walk);
                return Ok(self.moved_head(&mut acker, removed, upto));
            }
        }
        if !matches!(acker.walk.as_ref(), Some(walk) if walk.next == acked + 1) {
            acker.walk = self.walk_from(acked + 1)?;
        }
        let mut new_acked = match until {
            Until::Seq(_) => upto,
            _ => acked,
        };
        let mut restarts = 0;
        let verified = lock(&self.shared).verified_after(acked);
        if let Some(walk) = acker.walk.as_mut() {
            walk.verified = verified.clone();
            loop {
                if walk.next > upto {
                    break;
                }
                match walk.step(self)? {
                    Step::Record {
                        seq,
                        len,
                        data_len,
                        time,
                    } if seq <= upto => {
                        let keep = match until {
                            Until::Seq(_) => false,
                            Until::Removed { messages, bytes } => {
                                removed.messages >= messages && removed.bytes >= bytes
                            }
                            Until::Expired { cutoff, .. } => time == 0 || time > cutoff,
                        };
                        if keep {
                            break;
                        }
                        walk.consume(seq, len);
                        if seq > acked {
                            removed.messages += 1;
                            removed.bytes += data_len as u64;
                        }
                    }
                    Step::Record { .. } | Step::End => break,
                    Step::Stale => {
                        // The segment under the walk was deleted after the
                        // walk passed its last record: move on.
                        restarts += 1;
                        match self.walk_from(walk.next)? {
                            Some(fresh) if restarts < 3 => {
                                *walk = fresh;
                                walk.verified = verified.clone();
                            }
                            _ => break,
                        }
                    }
                    Step::Lost {
                        from,
                        to,
                        bytes,
                        region,
                        ..
                    } => {
                        let counted = lock(&self.shared).note_lost(from, to);
                        if counted > 0 {
                            let total = (to + 1).saturating_sub(from).max(1);
                            removed.quarantined += counted;
                            removed.quarantined_bytes += bytes * counted / total;
                        }
                        if let Some(region) = region {
                            self.quarantine_region(region);
                        }
                    }
                }
            }
            // Records the walk skipped as lost are gone either way.
            new_acked = match until {
                Until::Seq(_) => upto.max(walk.next.saturating_sub(1)).min(last),
                _ => walk.next.saturating_sub(1).min(last),
            };
        }
        if new_acked <= acked {
            return Ok(removed);
        }
        Ok(self.moved_head(&mut acker, removed, new_acked))
    }

    /// Records the head's move to `new_acked`: the checkpoint and the
    /// acknowledged cursor.
    fn moved_head(&self, acker: &mut Acker, mut removed: Removed, new_acked: Seq) -> Removed {
        removed.through = new_acked;
        // A checkpoint that cannot be written (I/O error) does not fail the
        // acknowledgement: it holds in memory, is retried with the next one,
        // and segments wait for a durable checkpoint before being deleted.
        let checkpoint = acker.ledger.record(new_acked);
        if let Err(err) = &checkpoint {
            warn!(flow = %self.name, %err, "cannot write the acknowledgement checkpoint; retrying with the next one");
        }

        // Segments now wholly acknowledged are deleted by
        // [`FlowLog::reclaim`], after the checkpoint is synced.
        lock(&self.shared).acked = new_acked;
        removed
    }

    /// An acknowledgement of `acked + 1 ..= upto` that the reader read, in
    /// one walk, CRC-checked and without damage, from the end of one of
    /// its reads to the end of another (a flow acknowledging the batches
    /// it read): their data bytes, and the reader's walk as it was after
    /// `upto`, for the acknowledger to go on from. The counts are then
    /// known without reading the records a second time.
    fn read_between(&self, acked: Seq, upto: Seq) -> Option<(u64, Walk)> {
        let clean = lock(&self.shared).verified_after(acked);
        if !(clean.start <= acked + 1 && upto < clean.end) {
            return None;
        }
        let marks = lock(&self.marks);
        let from = marks.iter().find(|m| m.next == acked + 1)?;
        let to = marks.iter().find(|m| m.next == upto + 1)?;
        let bytes = to.data_taken.checked_sub(from.data_taken)?;
        Some((bytes, to.walk.clone()))
    }

    /// How many segments wholly acknowledged by a recorded checkpoint wait
    /// to be deleted.
    pub(crate) fn reclaimable(&self) -> usize {
        let acked = lock(&self.acker).ledger.recorded().1;
        let shared = lock(&self.shared);
        let sealed = shared.segments.len().saturating_sub(1);
        shared
            .segments
            .iter()
            .take(sealed)
            .take_while(|m| m.last <= acked)
            .count()
    }

    /// Whether the checkpoint is due for its periodic sync (see
    /// `ledger.rs`), which the reclaim thread does.
    pub(crate) fn checkpoint_due(&self) -> bool {
        lock(&self.acker).ledger.sync_due()
    }

    /// Whether the oldest segment is sealed (not the newest) and every
    /// record in it is `<= acked`.
    fn sealed_through(shared: &Shared, acked: Seq) -> bool {
        shared.segments.len() > 1 && shared.segments.front().is_some_and(|m| m.last <= acked)
    }

    /// Deletes the segments wholly acknowledged (never the newest), after
    /// syncing the checkpoint that covers them, so that a power cut cannot
    /// bring back an older checkpoint than the deleted segments imply. The
    /// sync runs without holding the acknowledger, so acknowledgements
    /// (and reads) go on meanwhile; `SegmentBackend` calls this from its
    /// reclaim thread.
    pub(crate) fn reclaim(&self) {
        let (ledger, acked, generation, due) = {
            let acker = lock(&self.acker);
            let (file, acked) = acker.ledger.recorded();
            (
                file,
                acked,
                acker.ledger.generation(),
                acker.ledger.sync_due(),
            )
        };
        if !Self::sealed_through(&lock(&self.shared), acked) && !due {
            return;
        }
        let started = std::time::Instant::now();
        if let Err(err) = ledger.sync_data() {
            warn!(flow = %self.name, %err, "cannot sync the acknowledgement checkpoint; keeping acknowledged segments for now");
            return;
        }
        lock(&self.acker).ledger.synced(generation, started);
        if !Self::sealed_through(&lock(&self.shared), acked) {
            return;
        }
        let doomed: Vec<SegMeta> = {
            let mut shared = lock(&self.shared);
            let mut doomed = Vec::new();
            while Self::sealed_through(&shared, acked) {
                doomed.extend(shared.segments.pop_front());
            }
            let floor = shared.segments.front().map_or(0, |m| m.base);
            shared.counted = shared.counted.split_off(&floor);
            doomed
        };
        for meta in doomed {
            if let Err(err) = self.fs.remove_file(&meta.path) {
                warn!(flow = %self.name, %err, path = %meta.path.display(), "cannot delete an acknowledged segment");
            }
        }
    }

    /// Syncs the checkpoint and the active segment (on close).
    pub(crate) fn close(&self) {
        if let Err(err) = lock(&self.acker).ledger.sync() {
            warn!(flow = %self.name, %err, "cannot sync the ledger on close");
        }
        if let Err(err) = lock(&self.writer).close() {
            warn!(flow = %self.name, %err, "cannot sync the active segment on close");
        }
    }

    /// The base and data bytes of the newest segment (what the header of
    /// the segment rolled after it records).
    pub(crate) fn newest(&self) -> Option<(Seq, u64)> {
        lock(&self.shared)
            .segments
            .back()
            .map(|m| (m.base, m.data_bytes))
    }

    /// The writer started segment `base` (empty so far) with `time_base`.
    pub(crate) fn rolled(&self, base: Seq, time_base: u64) {
        let mut shared = lock(&self.shared);
        let meta = SegMeta {
            base,
            path: segment_path(&self.dir, base),
            end: HEADER_LEN as u64,
            last: base.saturating_sub(1),
            data_bytes: 0,
            time_base,
            framing: Framing::CURRENT,
        };
        match shared.segments.back_mut() {
            Some(newest) if newest.base == base => *newest = meta,
            _ => shared.segments.push_back(meta),
        }
    }

    /// A group up to `last` is durable; the newest segment now ends at `end`.
    pub(crate) fn committed(&self, end: u64, last: Seq, data_bytes: u64) {
        let mut shared = lock(&self.shared);
        if let Some(newest) = shared.segments.back_mut() {
            newest.end = end;
            newest.last = last;
            newest.data_bytes += data_bytes;
        }
        shared.next_seq = last + 1;
    }

    /// Disk bytes of the flow's segments, as the store knows them.
    pub(crate) fn segment_bytes(&self) -> u64 {
        lock(&self.shared).segments.iter().map(|m| m.end).sum()
    }
}

/// Reads remembered for [`FlowLog::read_between`]: a flow may read a few
/// batches ahead of what it acknowledges. Each mark's walk keeps the
/// 256 KiB chunk it was in alive until the mark is dropped, so a flow
/// that reads holds at most this many chunks more (the acknowledger no
/// longer reads chunks of its own).
const MARKS: usize = 4;

/// Where one of the reader's reads ended.
struct ReadMark {
    /// The sequence after the last record it walked over.
    next: Seq,
    /// The walk's [`Walk::data_taken`] there.
    data_taken: u64,
    /// The walk as it was there.
    walk: Walk,
}

/// How far [`FlowLog::advance`] moves the head.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// Every record `<= seq` (an acknowledgement).
    Seq(Seq),
    /// Until at least this many records and data bytes are removed.
    Removed { messages: u64, bytes: u64 },
    /// While records were appended at or before `cutoff`, if the head is at
    /// `from` or later.
    Expired { cutoff: u64, from: Seq },
}

/// Milliseconds since the Unix epoch by the system clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Default)]
struct Scanned {
    messages: u64,
    bytes: u64,
    data_bytes: u64,
    quarantined: u64,
    /// The last sequence found.
    tail: Seq,
    /// The end of the valid data.
    end: u64,
}

/// The segment files of a flow directory, oldest first, with their headers
/// checked (`prev` is `None` when the header is damaged).
fn list_segments(fs: &dyn Fs, dir: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for name in fs.list_dir(dir)? {
        let Some(base) = parse_segment_name(&name) else {
            continue;
        };
        let path = dir.join(&name);
        let file = fs.open(&path)?;
        let len = file.size()?;
        let mut header = [0u8; HEADER_LEN];
        let n = file.read_full_at(&mut header, 0)?;
        let header = decode_header(&header[..n]).filter(|h| h.base == base);
        found.push(Found {
            base,
            path,
            len,
            prev: header.map(|h| h.prev),
            time_base: header.map_or(0, |h| h.time_base),
            framing: header.map_or(Framing::CURRENT, |h| h.framing),
            prev_data_bytes: header.and_then(|h| h.prev_data_bytes),
        });
    }
    found.sort_by_key(|f| f.base);
    Ok(found)
}
