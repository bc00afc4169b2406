//! Backhaul's per-data-flow queues.
//!
//! Every data flow owns one FIFO queue. Ingress appends to several queues at
//! once (a publish may match several flows) and waits for the append to be
//! durable before the device gets its PUBACK; each flow reads its queue in
//! order and acknowledges what its endpoint confirmed.
//!
//! Contract:
//! - [`QueueStore::append`] is all-or-nothing while the process runs: a
//!   failed group commit (disk full, I/O error) leaves no record of it in any
//!   flow. Across a crash, an append whose ticket had not resolved may
//!   survive in some of its flows and not in others (each flow has its own
//!   log); its publisher got no PUBACK and sends it again, so this is the
//!   at-least-once window of a message in flight, never a loss.
//! - In disk mode an append resolves only after the data is flushed to disk;
//!   appends waiting at the same moment share one flush (group commit, on a
//!   dedicated thread, never on the async workers).
//! - Sequence numbers are per flow, strictly increasing, never reused (also
//!   across restarts and after the queue ran empty), so `(flow, seq)` is a
//!   stable message id.
//! - A restart resumes every flow at its first unacknowledged record.
//!   Acknowledgements are checkpointed without a flush per acknowledgement: a
//!   power cut may re-deliver records acknowledged in the last second
//!   (at-least-once); a killed process re-delivers nothing acknowledged.
//! - Every record is framed with a version and a CRC32C; a corrupt record is
//!   moved aside (quarantined), counted, and never blocks the queue. The
//!   frame keeps the append time (the store's clock), for expiry and the
//!   oldest-record age; storage never looks inside the data.
//! - Limits ([`limits`]): per flow `max_messages` / `max_bytes` with
//!   `DropOldest` (counted drops) or `RejectNew`
//!   ([`StorageError::QuotaExceeded`]), a TTL (expired records are never
//!   returned, and counted), a store budget and a free-space watermark that
//!   refuse appends for every flow until space returns. An append to
//!   several flows is refused whole if any of them refuses it.
//! - Accounting per flow ([`QueueStats`]): appended = acknowledged +
//!   dropped by overflow + expired + quarantined + queued (since the store
//!   was opened, plus what it recovered).
//!
//! Layout:
//! - [`limits`]: per-flow limits (size, overflow policy, expiry) and
//!   store limits (disk budget, free-space watermark), and their rules.
//! - [`clock`]: the wall clock appends are stamped with.
//! - [`record`]: the on-disk framing of one record; `crc`: its checksum.
//! - [`backend`]: where records live: [`backend::SegmentBackend`] (disk: a
//!   segment log per flow, [`backend::segment`]) and
//!   [`backend::MemoryBackend`], behind the [`backend::Backend`] trait.
//! - [`committer`]: the group-commit thread; `inbox`: how appends reach
//!   it; `pipeline`: the threads that sync written groups and release
//!   their publishers.
//! - [`queue`]: [`FlowQueue`], a flow's handle: read, acknowledge, wait, stats.
//! - [`store`]: [`QueueStore`], which opens a backend and hands out queues.
//! - [`keyed`]: small keyed state in sled (retained messages).

pub mod backend;
pub mod clock;
pub mod committer;
mod crc;
pub mod error;
mod inbox;
pub mod keyed;
pub mod limits;
mod pipeline;
pub mod queue;
pub mod record;
pub mod store;

pub use committer::{CommitSnapshot, Histogram, COMMIT_LATENCY_BOUNDS, GROUP_SIZE_BOUNDS};
pub use error::StorageError;
pub use limits::{FlowSpec, Overflow, QueueLimits, QuotaLimit, StoreLimits};
pub use queue::{FlowQueue, QueueStats, QueuedRecord};
pub use store::{AppendEntry, CommitTicket, QueueStore, StorageMode, StoreOptions};

/// Index of a flow inside one [`QueueStore`] (its position in the list of
/// flows the store was opened with).
pub type FlowIndex = usize;

/// Per-flow sequence number; the first record of a flow has sequence 1.
pub type Seq = u64;
