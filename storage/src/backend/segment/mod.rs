//! The disk queue engine: one append-only segment log per flow.
//!
//! A store-and-forward queue is append, read in order, drop from the head;
//! a log of bounded segment files does each with sequential I/O, reaches the
//! disk's limit with one `fdatasync` per group commit, and gives space back
//! by deleting whole files (measured against sled: `shared/reference/
//! baseline.md`).
//!
//! # Invariants
//!
//! 1. Within a flow, sequences are contiguous and strictly increasing:
//!    segment `S` holds `S.base ..= next.base - 1`, frame by frame, each frame
//!    naming its sequence. Only the group-commit thread appends.
//! 2. A record is visible to readers (and its append reported durable) only
//!    after its group was written and `fdatasync`ed. With pipelined commits
//!    ([`Backend::write`] then [`Backend::sync`]) the next group may be
//!    written after a group that is still syncing; groups are synced and
//!    made visible in the order written. A failed write is cut off (`set_len`
//!    to where it started); a failed sync fails every group written after
//!    it and cuts the log back to the committed length before anything else
//!    is written, so no failed bytes ever sit between committed ones. A
//!    segment is rolled only while none of the flow's groups is in flight.
//! 3. The newest segment of a flow is never deleted, so its name and its
//!    last frame keep the next sequence across restarts, also when the
//!    queue ran empty. Older segments are deleted once every record in them
//!    is acknowledged, and only after the checkpoint covering them is
//!    synced: by the reclaim thread (`reclaimer.rs`), right after the
//!    acknowledgement, so that the sync never stalls the flow.
//! 4. A checkpoint (the ledger) may lag behind acknowledgements (it is
//!    synced at most once a second, by the reclaim thread), never run ahead
//!    of them: a crash can re-deliver, never lose.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/LOCK                         flock: one process per store
//! <dir>/quarantine/                  damaged segments and regions, moved aside
//! <dir>/flow-<name>/NAME             the flow's exact name
//! <dir>/flow-<name>/ledger           acknowledgement checkpoint (ledger.rs)
//! <dir>/flow-<name>/<base:020>.seg   segments, named by their first sequence
//! ```
//!
//! A segment is a 48-byte header, `[magic "BHQSEG02"][base u64 LE][prev
//! base u64 LE][prev data bytes u64 LE][time base u64 LE][frame version u8
//! = 5][3 zero bytes][crc32c u32 LE]`, then frames (`record.rs`, version 5:
//! version, varint length, low byte of the sequence delta, varint append
//! time delta, data, CRC32C: 9-10 bytes of framing for a 200-byte record).
//! Segments with frame version 4 (the same layout, whose CRC starts with
//! the header rather than the data) have the same header with version 4;
//! they are read as they are and never appended to, like those below.
//! `prev` names the segment before it, so a missing segment is noticed at
//! start-up. Version-4 and -5 frames vary in size, so a segment's data
//! bytes do not follow from its file size: the header of the segment rolled
//! after it records them (`prev data bytes`), and start-up still reads only
//! headers (a segment whose successor's header is damaged is read once
//! instead).
//! The time base (ms since the Unix epoch, the first record's append time)
//! is what the frames' append times are relative to.
//!
//! Segments of earlier builds have a 32-byte header, `[magic
//! "BHQSEG01"][base u64][prev u64][time base u32, seconds][crc32c u32]`,
//! and fixed-size frames: version 3 (17 bytes of framing) when the time
//! base is set, version 2 (13 bytes, no append time) when it is 0. They are
//! read, recovered and replayed as they are, and never appended to: the
//! first commit after an upgrade starts a new segment. (A build that only
//! knows `BHQSEG01`, or only frame version 4, takes a current segment for a
//! damaged one: downgrades are not supported.)
//!
//! A segment is rolled before its frames' time delta (u32 milliseconds)
//! would overflow, and before a group that would take it past
//! [`SegmentConfig::max_segment_bytes`] (a group is never split), so only a
//! group larger than that on its own makes a larger segment. (Earlier
//! builds rolled only once a segment had reached the size, so a segment
//! could exceed it by a whole group: up to 1.7 MB for groups of 8,192
//! records of 200 bytes, which the head segment kept on disk after its
//! records were acknowledged.)
//!
//! # Recovery rules
//!
//! Start-up reads every segment's header and file size, not its records,
//! except for two: the newest (scanned to its end) and nothing else unless
//! damaged. Then:
//!
//! - A torn record at the tail of the newest segment (a crash during a
//!   write) is cut off: no valid frame follows it, so it was never
//!   committed (a committed group is synced before the next one starts).
//! - A newest segment whose header never became durable (a crash while
//!   rolling) gets its header rewritten.
//! - A damaged record in the middle of a segment is quarantined: its bytes
//!   are copied into `quarantine/`, the records up to the next valid frame
//!   are counted as quarantined, and reading continues there. This happens
//!   when a reader reaches the damage, so it never blocks start-up.
//! - A segment with a damaged header, a zero-length file among older
//!   segments, a missing segment, or a truncated segment: moved aside (when
//!   present), its records counted as quarantined, the rest served.
//! - Everything is per flow: one flow's damage never stops another.

mod flow;
pub mod io;
mod ledger;
mod reader;
mod reclaimer;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

use self::flow::FlowLog;
use self::io::{is_disk_full, Fs, RealFs};
use self::reclaimer::Reclaimer;
use super::{
    Backend, DropUntil, IoStats, PendingRecord, ReadOutcome, Recovered, Removed, SegmentWrite,
    WriteToken,
};
use crate::record::{max_frame_len, Framing};
use crate::{FlowIndex, Seq, StorageError};

/// Bytes of a segment header this build writes (frames of version 5; the
/// same for version 4).
pub(crate) const HEADER_LEN: usize = 48;
/// Bytes of a segment header of earlier builds (frames of version 2 or 3).
pub(crate) const HEADER_LEN_V1: usize = 32;
const MAGIC: &[u8; 8] = b"BHQSEG02";
const MAGIC_V1: &[u8; 8] = b"BHQSEG01";
const SEGMENT_SUFFIX: &str = ".seg";

/// Tuning of the segment log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    /// A segment is rolled once it holds this many bytes. Smaller segments
    /// give space back sooner (space amplification is at most one segment of
    /// acknowledged records per flow, plus about 9 bytes of framing per
    /// record); larger ones mean fewer files and directory syncs. 4 MiB
    /// keeps a 100 MB backlog within 1.1x and a 10 GB one at 2,500 files.
    pub max_segment_bytes: u64,
    /// The largest record accepted; a frame claiming more is treated as
    /// corrupt rather than trusted.
    pub max_record_bytes: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            max_segment_bytes: 4 * 1024 * 1024,
            max_record_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) base: Seq,
    pub(crate) prev: Seq,
    /// The time base of its frames, ms since the epoch; 0 for a segment of
    /// version-2 frames (no append times).
    pub(crate) time_base: u64,
    /// The frame version of its records.
    pub(crate) framing: Framing,
    /// The data bytes of segment `prev` when this one was started (current
    /// headers only), so start-up knows them without reading it.
    pub(crate) prev_data_bytes: Option<u64>,
}

/// Bytes of the header of a segment of `framing` frames.
pub(crate) fn header_len(framing: Framing) -> u64 {
    match framing {
        Framing::V4 | Framing::V5 => HEADER_LEN as u64,
        Framing::V2 | Framing::V3 => HEADER_LEN_V1 as u64,
    }
}

/// The header this build writes: segment `base`, started after segment
/// `prev` (which then held `prev_data_bytes` data bytes), its frames'
/// times relative to `time_base` (ms since the epoch).
pub(crate) fn encode_header(
    base: Seq,
    prev: Seq,
    prev_data_bytes: u64,
    time_base: u64,
) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&base.to_le_bytes());
    header[16..24].copy_from_slice(&prev.to_le_bytes());
    header[24..32].copy_from_slice(&prev_data_bytes.to_le_bytes());
    header[32..40].copy_from_slice(&time_base.to_le_bytes());
    header[40] = Framing::CURRENT.version();
    let crc = crc32c::crc32c(&header[..44]);
    header[44..48].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The header of the build before (the same fields, frames of version 4),
/// for tests of reading its segments.
#[cfg(test)]
pub(crate) fn encode_header_v4(
    base: Seq,
    prev: Seq,
    prev_data_bytes: u64,
    time_base: u64,
) -> [u8; HEADER_LEN] {
    let mut header = encode_header(base, prev, prev_data_bytes, time_base);
    header[40] = crate::record::FRAME_VERSION_V4;
    let crc = crc32c::crc32c(&header[..44]);
    header[44..48].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The header of earlier builds (time base in whole seconds, 0 for
/// version-2 frames), for tests of reading their segments.
#[cfg(test)]
pub(crate) fn encode_header_v1(base: Seq, prev: Seq, time_base: u64) -> [u8; HEADER_LEN_V1] {
    let mut header = [0u8; HEADER_LEN_V1];
    header[..8].copy_from_slice(MAGIC_V1);
    header[8..16].copy_from_slice(&base.to_le_bytes());
    header[16..24].copy_from_slice(&prev.to_le_bytes());
    let secs = u32::try_from(time_base / 1000).unwrap_or(u32::MAX);
    header[24..28].copy_from_slice(&secs.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// A valid header (of this build or an earlier one).
pub(crate) fn decode_header(header: &[u8]) -> Option<Header> {
    let field = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(header.get(at..at + 8)?.try_into().ok()?))
    };
    let crc_ok = |len: usize| {
        header.len() >= len
            && header[len - 4..len] == crc32c::crc32c(&header[..len - 4]).to_le_bytes()
    };
    match header.get(..8)? {
        magic if magic == MAGIC && crc_ok(HEADER_LEN) => {
            let framing = [Framing::V5, Framing::V4]
                .into_iter()
                .find(|f| f.version() == header[40])?;
            Some(Header {
                base: field(8)?,
                prev: field(16)?,
                prev_data_bytes: Some(field(24)?),
                time_base: field(32)?,
                framing,
            })
        }
        magic if magic == MAGIC_V1 && crc_ok(HEADER_LEN_V1) => {
            let secs = u32::from_le_bytes(header[24..28].try_into().ok()?);
            Some(Header {
                base: field(8)?,
                prev: field(16)?,
                prev_data_bytes: None,
                time_base: u64::from(secs) * 1000,
                framing: if secs == 0 { Framing::V2 } else { Framing::V3 },
            })
        }
        _ => None,
    }
}

/// The time base of a segment started at `now_ms`: never 0, which would
/// read as "no append times".
pub(crate) fn time_base_for(now_ms: u64) -> u64 {
    now_ms.max(1)
}

pub(crate) fn segment_path(dir: &Path, base: Seq) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

pub(crate) fn parse_segment_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The most bytes a group of records can take in a segment.
fn group_bytes(group: &[&PendingRecord]) -> u64 {
    group
        .iter()
        .map(|r| max_frame_len(r.data.len()) as u64)
        .sum()
}

/// A storage error from an I/O error; a full disk gets its own variant so
/// callers can tell "refuse and retry later" from a fault.
pub(crate) fn io_error(source: std::io::Error, context: String) -> StorageError {
    if is_disk_full(&source) {
        StorageError::DiskFull { context, source }
    } else {
        StorageError::Io { context, source }
    }
}

/// The directory name of a flow: readable when the name is plain, otherwise
/// hex, otherwise (very long names) a hash; `NAME` inside holds the real name.
fn flow_dir_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        return format!("flow-{name}");
    }
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    if hex.len() <= 200 {
        return format!("flow-x{hex}");
    }
    let crc = crc32c::crc32c(name.as_bytes());
    let crc2 = crc32c::crc32c_append(crc, name.as_bytes());
    format!("flow-h{crc:08x}{crc2:08x}{:x}", name.len())
}

/// The segment-log backend (see the module docs).
pub struct SegmentBackend {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    config: SegmentConfig,
    flows: std::sync::RwLock<Vec<Arc<FlowLog>>>,
    fsyncs: AtomicU64,
    bytes_written: AtomicU64,
    segments_created: AtomicU64,
    reclaimer: Reclaimer,
    _lock: Box<dyn Send + Sync>,
}

impl SegmentBackend {
    /// Opens (or creates) the store in `dir` on the real filesystem.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with(dir, Arc::new(RealFs), SegmentConfig::default())
    }

    /// Opens the store on any filesystem (tests pass a
    /// [`io::ModelFs`]).
    pub fn open_with(
        dir: &Path,
        fs: Arc<dyn Fs>,
        config: SegmentConfig,
    ) -> Result<Self, StorageError> {
        let open_error = |source| StorageError::OpenDir {
            path: dir.to_path_buf(),
            source,
        };
        fs.create_dir_all(&dir.join("quarantine"))
            .map_err(open_error)?;
        let lock = fs.lock_dir(dir).map_err(open_error)?;
        if fs.exists(&dir.join("conf")) && fs.exists(&dir.join("db")) {
            warn!(dir = %dir.display(), "this directory holds a sled queue store from an earlier version; its records are not migrated");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            fs,
            config,
            flows: std::sync::RwLock::new(Vec::new()),
            fsyncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            segments_created: AtomicU64::new(0),
            reclaimer: Reclaimer::start(),
            _lock: lock,
        })
    }

    /// Waits until the acknowledged segments queued for deletion are
    /// deleted (they are deleted by a thread of their own, right after the
    /// acknowledgement that completed them).
    pub fn settle(&self) {
        self.reclaimer.settle();
    }

    fn flow(&self, index: FlowIndex) -> Result<Arc<FlowLog>, StorageError> {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
        flows
            .get(index)
            .cloned()
            .ok_or(StorageError::UnknownFlow(index))
    }

    /// Finds or creates the directory of flow `name`.
    fn flow_dir(&self, name: &str) -> Result<(PathBuf, String), StorageError> {
        let io = |e, what: &str| io_error(e, format!("{what} the directory of flow {name}"));
        let dir_name = flow_dir_name(name);
        let dir = self.dir.join(&dir_name);
        let name_file = dir.join("NAME");
        if self.fs.exists(&name_file) {
            let file = self.fs.open(&name_file).map_err(|e| io(e, "opening"))?;
            let len = file.size().map_err(|e| io(e, "reading"))?;
            let mut stored = vec![0u8; len.min(64 * 1024) as usize];
            let n = file
                .read_full_at(&mut stored, 0)
                .map_err(|e| io(e, "reading"))?;
            if &stored[..n] != name.as_bytes() {
                return Err(StorageError::Corrupt(format!(
                    "{} belongs to another flow name ({:?}) than {name:?}",
                    dir.display(),
                    String::from_utf8_lossy(&stored[..n])
                )));
            }
            return Ok((dir, dir_name));
        }
        self.fs
            .create_dir_all(&dir)
            .map_err(|e| io(e, "creating"))?;
        let file = self.fs.create(&name_file).map_err(|e| io(e, "creating"))?;
        file.write_all_at(name.as_bytes(), 0)
            .and_then(|_| file.sync_data())
            .and_then(|_| self.fs.sync_dir(&dir))
            .and_then(|_| self.fs.sync_dir(&self.dir))
            .map_err(|e| io(e, "creating"))?;
        info!(flow = name, dir = %dir.display(), "created the queue of a new flow");
        Ok((dir, dir_name))
    }

    /// Bytes of segment files of all open flows (for space accounting).
    pub fn disk_bytes(&self) -> u64 {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
        flows.iter().map(|f| f.segment_bytes()).sum()
    }
}

impl Drop for SegmentBackend {
    fn drop(&mut self) {
        self.reclaimer.stop();
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
        for flow in flows.iter() {
            flow.close();
        }
    }
}

impl Backend for SegmentBackend {
    fn recover(&self, names: &[String]) -> Result<Vec<Recovered>, StorageError> {
        let mut logs = Vec::with_capacity(names.len());
        let mut recovered = Vec::with_capacity(names.len());
        for name in names {
            let (dir, dir_name) = self.flow_dir(name)?;
            let (log, found) = FlowLog::open(
                self.fs.clone(),
                dir,
                dir_name,
                self.dir.join("quarantine"),
                name,
                self.config,
            )?;
            logs.push(Arc::new(log));
            recovered.push(found);
        }
        *self.flows.write().unwrap_or_else(|p| p.into_inner()) = logs;
        Ok(recovered)
    }

    fn commit(
        &self,
        records: &[PendingRecord],
        next_seqs: &[(FlowIndex, Seq)],
    ) -> Result<(), StorageError> {
        let token = self.write(records, next_seqs)?.ok_or_else(|| {
            StorageError::CommitFailed("a group is in flight; commit waits for none".into())
        })?;
        let synced = self.sync(token);
        if synced.is_err() {
            self.rollback();
        }
        synced
    }

    fn write(
        &self,
        records: &[PendingRecord],
        _next_seqs: &[(FlowIndex, Seq)],
    ) -> Result<Option<WriteToken>, StorageError> {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(big) = records
            .iter()
            .find(|r| r.data.len() > self.config.max_record_bytes)
        {
            return Err(StorageError::TooLarge {
                len: big.data.len(),
                max: self.config.max_record_bytes,
            });
        }
        // Group by flow, keeping order. (The error is built only when
        // needed: built and dropped for every record, it cost 15
        // instructions per append on the commit thread.)
        let mut per_flow: Vec<Vec<&PendingRecord>> = vec![Vec::new(); flows.len()];
        for record in records {
            let Some(part) = per_flow.get_mut(record.flow) else {
                return Err(StorageError::UnknownFlow(record.flow));
            };
            part.push(record);
        }
        let touched: Vec<(usize, &Vec<&PendingRecord>)> = per_flow
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .collect();
        // Frame bytes each flow's part may take, computed once (the roll
        // check below and the write loop both need it).
        let part_bytes: Vec<u64> = touched
            .iter()
            .map(|(_, group)| group_bytes(group))
            .collect();
        let mut writers = Vec::with_capacity(touched.len());
        for (index, _) in &touched {
            writers.push(
                flows[*index]
                    .writer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
        // A segment is rolled only when the flow has no group in flight,
        // so that groups become visible segment by segment, in order.
        for (i, (_, group)) in touched.iter().enumerate() {
            if let (Some(first), Some(last)) = (group.first(), group.last()) {
                let roll = writers[i].needs_roll(
                    self.config.max_segment_bytes,
                    (first.seq, last.seq),
                    last.time_ms,
                    part_bytes[i],
                );
                if roll && writers[i].in_flight() {
                    return Ok(None);
                }
            }
        }
        // Groups written so far (start offsets), to cut off on failure.
        let mut starts: Vec<u64> = Vec::with_capacity(touched.len());
        let fail = |writers: &mut Vec<std::sync::MutexGuard<'_, writer::Writer>>,
                    starts: &[u64],
                    err: std::io::Error,
                    what: &str,
                    flow: &FlowLog| {
            for (writer, start) in writers.iter_mut().zip(starts) {
                writer.cut(*start);
            }
            io_error(err, format!("{what} a group for flow {}", flow.name))
        };

        let mut written = Vec::with_capacity(touched.len());
        for (i, (index, group)) in touched.iter().enumerate() {
            let flow = &flows[*index];
            let (first, last, first_time, time) = match (group.first(), group.last()) {
                (Some(first), Some(last)) => (first.seq, last.seq, first.time_ms, last.time_ms),
                _ => continue,
            };
            let bytes = part_bytes[i];
            if writers[i].needs_roll(self.config.max_segment_bytes, (first, last), time, bytes) {
                let prev = flow.newest().unwrap_or((first.saturating_sub(1), 0));
                let now = first_time.min(time);
                let time_base = match writers[i].roll(&*self.fs, first, prev, now) {
                    Ok(time_base) => time_base,
                    Err(err) => {
                        return Err(fail(
                            &mut writers,
                            &starts,
                            err,
                            "starting a segment for",
                            flow,
                        ))
                    }
                };
                self.segments_created.fetch_add(1, Ordering::Relaxed);
                self.fsyncs.fetch_add(2, Ordering::Relaxed);
                flow.rolled(first, time_base);
            }
            for record in group.iter() {
                writers[i].stage(record.seq, record.time_ms, &record.data, record.data_crc);
            }
            let data_bytes = writers[i].staged_bytes;
            match writers[i].write() {
                Ok((file, start, end)) => {
                    starts.push(start);
                    written.push(SegmentWrite {
                        flow: *index,
                        file,
                        end,
                        last,
                        data_bytes,
                        frame_bytes: end - start,
                    });
                }
                Err(err) => return Err(fail(&mut writers, &starts, err, "writing", flow)),
            }
        }
        Ok(Some(WriteToken::written(written)))
    }

    fn sync(&self, token: WriteToken) -> Result<(), StorageError> {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner()).clone();
        let parts = token.segments;
        // One fdatasync per touched segment; several flows' files are synced
        // in parallel, since the disk merges concurrent syncs and the group
        // waits for the slowest anyway.
        let synced: Vec<std::io::Result<()>> = if parts.len() == 1 {
            vec![parts[0].file.sync_data()]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .iter()
                    .map(|part| scope.spawn(move || part.file.sync_data()))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(std::io::Error::other("sync thread panicked")))
                    })
                    .collect()
            })
        };
        for (part, result) in parts.iter().zip(synced) {
            if let Err(err) = result {
                let name = flows.get(part.flow).map_or("?", |f| f.name.as_str());
                return Err(io_error(err, format!("syncing a group for flow {name}")));
            }
        }
        self.fsyncs.fetch_add(parts.len() as u64, Ordering::Relaxed);
        self.bytes_written.fetch_add(
            parts.iter().map(|p| p.frame_bytes).sum::<u64>(),
            Ordering::Relaxed,
        );
        for part in &parts {
            let Some(flow) = flows.get(part.flow) else {
                continue;
            };
            flow.writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .committed(part.end);
            flow.committed(part.end, part.last, part.data_bytes);
        }
        Ok(())
    }

    fn rollback(&self) {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner()).clone();
        for flow in flows.iter() {
            flow.writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rollback();
        }
    }

    fn read(
        &self,
        flow: FlowIndex,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<ReadOutcome, StorageError> {
        let log = self.flow(flow)?;
        log.read(from, max_count, max_bytes)
            .map_err(|e| io_error(e, format!("reading flow {}", log.name)))
    }

    fn ack(&self, flow: FlowIndex, upto: Seq) -> Result<Removed, StorageError> {
        let log = self.flow(flow)?;
        let removed = log
            .ack(upto)
            .map_err(|e| io_error(e, format!("acknowledging in flow {}", log.name)))?;
        self.reclaimer
            .request(&log, log.reclaimable(), log.checkpoint_due());
        Ok(removed)
    }

    fn drop_head(&self, flow: FlowIndex, until: DropUntil) -> Result<Removed, StorageError> {
        let log = self.flow(flow)?;
        let removed = log
            .drop_head(until)
            .map_err(|e| io_error(e, format!("dropping records of flow {}", log.name)))?;
        self.reclaimer
            .request(&log, log.reclaimable(), log.checkpoint_due());
        Ok(removed)
    }

    fn head_time(&self, flow: FlowIndex) -> Result<Option<u64>, StorageError> {
        let log = self.flow(flow)?;
        log.head_time()
            .map_err(|e| io_error(e, format!("reading the head of flow {}", log.name)))
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn free_bytes(&self) -> Option<u64> {
        match self.fs.free_bytes(&self.dir) {
            Ok(free) => free,
            Err(err) => {
                warn!(%err, dir = %self.dir.display(), "cannot read the free space of the queue store's filesystem");
                None
            }
        }
    }

    fn disk_bytes(&self) -> Option<u64> {
        Some(SegmentBackend::disk_bytes(self))
    }

    fn settle(&self) {
        SegmentBackend::settle(self);
    }

    fn io_stats(&self) -> Option<IoStats> {
        Some(IoStats {
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            segments_created: self.segments_created.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests;
