//! Limits of the queues: per flow ([`QueueLimits`]: size, overflow policy,
//! expiry) and per store ([`StoreLimits`]: a budget for the data directory
//! and a free-space watermark of its filesystem).
//!
//! Rules (the same in disk and memory mode):
//!
//! - `max_messages` / `max_bytes` bound the records queued (appended, not
//!   acknowledged or dropped) and their data bytes.
//! - [`Overflow::DropOldest`] (the default): an append that takes a queue
//!   over a limit is accepted, and then the oldest records are dropped
//!   (the head moves forward as if they were acknowledged, segments are
//!   deleted once wholly dropped) until the queue fits again; they are
//!   counted in [`crate::QueueStats::dropped_overflow_total`]. The limit is
//!   strict: a group larger than the limit keeps only its newest records.
//!   Records a flow has read but not yet acknowledged can be dropped too
//!   (the storage does not know what is in flight); its later
//!   acknowledgement of them then removes nothing.
//! - [`Overflow::RejectNew`]: an append that would take the queue over a
//!   limit is refused with [`crate::StorageError::QuotaExceeded`]; nothing
//!   of it is stored.
//! - An append to several flows is atomic: if any flow it names refuses it
//!   (`RejectNew` full, or a store limit), the whole append is refused, also
//!   in the flows that had room.
//! - [`StoreLimits::max_disk_bytes`] (disk mode: bytes of segment files;
//!   memory mode: data bytes held) and [`StoreLimits::min_free_bytes`]
//!   (disk mode only: `statvfs` free space of the filesystem) act as
//!   `RejectNew` for every flow, whatever its own policy. They are checked
//!   at every group commit, so appends resume by themselves as soon as
//!   acknowledgements (or anything else) free space, without a restart.
//! - `ttl`: a record at least this old (by its append time, kept in the
//!   frame) is never returned by a read: expired records at the head of the
//!   queue are dropped when the flow reads, and counted in
//!   [`crate::QueueStats::expired_total`]. A record without an append time
//!   (written by an earlier build) never expires.

use std::time::Duration;

/// What happens when an append would take a queue over its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Accept the append and drop the oldest records (counted).
    #[default]
    DropOldest,
    /// Refuse the append ([`crate::StorageError::QuotaExceeded`]).
    RejectNew,
}

/// Limits of one flow's queue; the default is unlimited, no expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct QueueLimits {
    /// Records queued at most.
    pub max_messages: Option<u64>,
    /// Data bytes queued at most (framing not counted).
    pub max_bytes: Option<u64>,
    pub overflow: Overflow,
    /// Records at least this old are skipped (and counted) instead of read.
    pub ttl: Option<Duration>,
}

impl QueueLimits {
    /// Whether the queue has a size limit.
    pub fn is_bounded(&self) -> bool {
        self.max_messages.is_some() || self.max_bytes.is_some()
    }
}

/// One flow of a store: its name (what its queue is found by on disk) and
/// its limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowSpec {
    pub name: String,
    pub limits: QueueLimits,
}

impl FlowSpec {
    /// A flow without limits.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            limits: QueueLimits::default(),
        }
    }

    pub fn with_limits(name: impl Into<String>, limits: QueueLimits) -> Self {
        Self {
            name: name.into(),
            limits,
        }
    }
}

/// Limits of a whole store; the default is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StoreLimits {
    /// Budget of the data directory: disk mode, bytes of the segment files
    /// of all flows; memory mode, data bytes of all queues. Appends that
    /// would exceed it are refused.
    pub max_disk_bytes: Option<u64>,
    /// Disk mode: appends are refused while the filesystem would keep less
    /// than this many bytes free (`statvfs` `f_bavail`). Ignored in memory
    /// mode.
    pub min_free_bytes: Option<u64>,
}

/// Which limit refused an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaLimit {
    /// The flow's `max_messages` (policy `RejectNew`).
    Messages,
    /// The flow's `max_bytes` (policy `RejectNew`).
    Bytes,
    /// The store's `max_disk_bytes`.
    StoreBudget,
    /// The store's `min_free_bytes`.
    FreeSpace,
}

impl std::fmt::Display for QuotaLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaLimit::Messages => "its maximum number of messages",
            QuotaLimit::Bytes => "its maximum bytes",
            QuotaLimit::StoreBudget => "the store's disk budget",
            QuotaLimit::FreeSpace => "the free-space watermark of the store's filesystem",
        })
    }
}
