//! Where queue records live. The backends implement one trait so the rest of
//! the store (group commit, stats, wake-ups) is shared:
//!
//! - [`SegmentBackend`]: on disk, the production engine: one append-only
//!   segment log per flow (see [`segment`]).
//! - [`MemoryBackend`]: a `VecDeque` per flow; nothing survives a restart.

mod memory;
pub mod segment;

pub use self::memory::MemoryBackend;
pub use self::segment::{SegmentBackend, SegmentConfig};

use std::sync::Arc;

use bytes::Bytes;

use self::segment::io::FsFile;
use crate::{FlowIndex, QueuedRecord, Seq, StorageError};

/// What a backend found for one flow when it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The sequence the next appended record gets.
    pub next_seq: Seq,
    /// Records still queued (not acknowledged).
    pub messages: u64,
    /// Data bytes of those records.
    pub bytes: u64,
    /// Records found damaged or missing while opening (counted as
    /// quarantined, not in `messages`).
    pub quarantined: u64,
}

/// One record to commit.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub flow: FlowIndex,
    pub seq: Seq,
    /// When it was appended, ms since the Unix epoch (the store's clock).
    pub time_ms: u64,
    pub data: Bytes,
    /// `crc32c(data)`, if the publisher computed it on its own thread
    /// (frame version 5 starts its CRC with the data, so the commit thread
    /// only extends it); `None`: the backend computes it if it needs it.
    pub data_crc: Option<u32>,
}

/// A group written by [`Backend::write`], made durable and visible by
/// [`Backend::sync`].
pub struct WriteToken {
    /// Backends that commit in one step keep the group here until `sync`.
    records: Vec<PendingRecord>,
    next_seqs: Vec<(FlowIndex, Seq)>,
    /// What the segment log wrote, per flow.
    pub(crate) segments: Vec<SegmentWrite>,
}

/// One flow's part of a written group (segment log).
pub(crate) struct SegmentWrite {
    pub(crate) flow: FlowIndex,
    pub(crate) file: Arc<dyn FsFile>,
    /// The offset the group ends at.
    pub(crate) end: u64,
    /// Its last sequence.
    pub(crate) last: Seq,
    /// Its data bytes and frame bytes.
    pub(crate) data_bytes: u64,
    pub(crate) frame_bytes: u64,
}

impl WriteToken {
    pub(crate) fn written(segments: Vec<SegmentWrite>) -> Self {
        Self {
            records: Vec::new(),
            next_seqs: Vec::new(),
            segments,
        }
    }

    /// Adds a group written after this one, so that one [`Backend::sync`]
    /// makes both durable: the pipelined committer gathers every group
    /// written while a sync runs into one, and syncs each file once for
    /// all of them. A flow's segment is never rolled while one of its
    /// groups is written and not synced, so both groups of a flow end in
    /// the same file; they become one part that ends where the later one
    /// ends.
    pub(crate) fn absorb(&mut self, later: WriteToken) {
        self.records.extend(later.records);
        self.next_seqs.extend(later.next_seqs);
        for part in later.segments {
            let same = self
                .segments
                .iter_mut()
                .rev()
                .find(|p| p.flow == part.flow && Arc::ptr_eq(&p.file, &part.file));
            match same {
                Some(earlier) => {
                    earlier.end = part.end;
                    earlier.last = part.last;
                    earlier.data_bytes += part.data_bytes;
                    earlier.frame_bytes += part.frame_bytes;
                }
                None => self.segments.push(part),
            }
        }
    }
}

/// How far [`Backend::drop_head`] drops records from the head of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropUntil {
    /// Oldest first, until at least `messages` records and `bytes` data
    /// bytes are gone (overflow of a `DropOldest` limit).
    Removed { messages: u64, bytes: u64 },
    /// Oldest first, while a record was appended at or before `cutoff_ms`
    /// (ms since the epoch; expiry). Only if the head is at `from` or later:
    /// records before `from` are being delivered and stay. Records without
    /// an append time (older framing) stop it.
    Expired { cutoff_ms: u64, from: Seq },
}

/// Records returned by one read, and how many corrupt ones it quarantined.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub records: Vec<QueuedRecord>,
    pub quarantined: u64,
    pub quarantined_bytes: u64,
}

/// Records removed by an acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub messages: u64,
    pub bytes: u64,
    /// Damaged records the acknowledgement skipped (counted as quarantined).
    pub quarantined: u64,
    pub quarantined_bytes: u64,
    /// The last sequence the head moved past (0: it did not move).
    pub through: Seq,
}

/// Disk activity of a backend since it was opened, for metrics (flash wear,
/// fsync rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// `fdatasync`s of segment files and directories by group commits.
    pub fsyncs: u64,
    /// Bytes of record frames written.
    pub bytes_written: u64,
    /// Segment files started.
    pub segments_created: u64,
}

/// Storage of queue records. Calls block; the store calls them from its
/// commit thread or from `spawn_blocking`.
pub trait Backend: Send + Sync + 'static {
    /// Registers the flows (by name, in index order) and reports what each
    /// has queued.
    fn recover(&self, flows: &[String]) -> Result<Vec<Recovered>, StorageError>;

    /// Stores `records` and the flows' next sequences atomically; durable
    /// when it returns (disk backend).
    fn commit(
        &self,
        records: &[PendingRecord],
        next_seqs: &[(FlowIndex, Seq)],
    ) -> Result<(), StorageError>;

    /// Pipelined commit, first half: writes `records` (not yet durable nor
    /// visible), after any group written before and not yet synced. `None`
    /// when it cannot be written before the groups in flight are synced
    /// (the segment log rolls a segment only then); call again after.
    /// On an error nothing of the group remains.
    fn write(
        &self,
        records: &[PendingRecord],
        next_seqs: &[(FlowIndex, Seq)],
    ) -> Result<Option<WriteToken>, StorageError> {
        Ok(Some(WriteToken {
            records: records.to_vec(),
            next_seqs: next_seqs.to_vec(),
            segments: Vec::new(),
        }))
    }

    /// Pipelined commit, second half: makes a written group durable and
    /// visible. Groups are synced in the order they were written. On an
    /// error the group is not visible, and every group written after it
    /// must fail too: call [`Backend::rollback`] before writing again.
    fn sync(&self, token: WriteToken) -> Result<(), StorageError> {
        self.commit(&token.records, &token.next_seqs)
    }

    /// Discards every written group that was not synced (after a failed
    /// sync). Call only when no sync is in progress.
    fn rollback(&self) {}

    /// Up to `max_count` records (and about `max_bytes`, at least one) of
    /// `flow` with sequence `>= from`, in order.
    fn read(
        &self,
        flow: FlowIndex,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<ReadOutcome, StorageError>;

    /// Removes every record of `flow` with sequence `<= upto`.
    fn ack(&self, flow: FlowIndex, upto: Seq) -> Result<Removed, StorageError>;

    /// Drops records from the head of `flow`, like an acknowledgement,
    /// until the rule says stop; what it removed.
    fn drop_head(&self, flow: FlowIndex, until: DropUntil) -> Result<Removed, StorageError>;

    /// The append time (ms since the epoch) of the oldest queued record of
    /// `flow`; `None` if the queue is empty or the time unknown.
    fn head_time(&self, flow: FlowIndex) -> Result<Option<u64>, StorageError>;

    /// Whether this backend survives a restart (and so flushes on commit).
    fn is_durable(&self) -> bool;

    /// Bytes the queues take on disk, if the backend knows.
    fn disk_bytes(&self) -> Option<u64> {
        None
    }

    /// Waits until space freed by acknowledgements so far is given back
    /// (the segment log deletes acknowledged segments on a thread of its
    /// own).
    fn settle(&self) {}

    /// Disk activity, if the backend writes to disk.
    fn io_stats(&self) -> Option<IoStats> {
        None
    }

    /// Bytes free for the store on its filesystem (`statvfs` `f_bavail`),
    /// if the backend is on one.
    fn free_bytes(&self) -> Option<u64> {
        None
    }
}
