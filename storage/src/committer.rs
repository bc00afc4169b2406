//! The group-commit thread.
//!
//! Publishers hand their appends to one thread through its inbox
//! (`inbox.rs`). The thread takes whatever is waiting (groups of up to
//! [`MAX_GROUP_RECORDS`]), checks the
//! limits (refusing appends a `RejectNew` limit or a store limit forbids),
//! assigns sequence numbers, writes the rest as one atomic batch, flushes
//! once, drops the oldest records of flows now over a `DropOldest` limit,
//! and only then releases every waiting publisher, in the order they
//! called. A publish therefore waits for at most one flush in progress plus
//! its own, and a busy broker pays one flush per group rather than per
//! message. The thread is a plain OS thread so a slow disk
//! never stalls the async workers.
//!
//! Pipelined (the default, `pipeline.rs`): from a group of
//! [`PIPELINE_MIN_RECORDS`] on, the committer thread only collects,
//! sequences and writes; written groups gather in an open batch that a
//! syncing thread takes whole whenever its previous sync returns, and a
//! releasing thread answers the publishers. A ticket still resolves only
//! after its records are synced, and tickets resolve in order. If a sync
//! fails, that batch and every group written after it fail, and the
//! committer cuts the logs back to what is durable before writing again,
//! so failed bytes never sit between committed ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::error;

use crate::backend::PendingRecord;
use crate::clock::Clock;
use crate::inbox::Inbox;
use crate::limits::{Overflow, QuotaLimit, StoreLimits};
use crate::pipeline::{lock, Job, Pipeline, Shared};
use crate::queue::FlowState;
use crate::record::max_frame_len;
use crate::store::AppendEntry;
use crate::{FlowIndex, Seq, StorageError};

/// Upper bound of records in one group, so one flush stays short.
pub const MAX_GROUP_RECORDS: usize = 8192;

/// Pipelined commits hand a group to the syncing thread from this many
/// records on, and every group while others are in flight; a smaller group
/// with nothing in flight (light load) is synced by the committer itself.
/// Splitting a light load over two syncs costs a second sync for the same
/// records and a thread hand-off per group, which halved throughput with
/// 16 appends in flight when syncs took 0.2 ms (`BENCHMARKS.md`). Under
/// load the syncing thread takes everything written during its previous
/// sync as one batch, so the disk syncs back to back (`pipeline.rs`).
pub const PIPELINE_MIN_RECORDS: usize = 1024;

/// Pipelined commits also need a slow disk: the moving average of recent
/// syncs at least this long. Measured on one disk in its two states
/// (`BENCHMARKS.md`, session 4): with syncs of 4 ms the pipeline took 1.6x
/// the records of the plain commit; with syncs of 0.15 ms, where the
/// committer's CPU and the thread hand-offs are the limit, 0.83x, and its
/// commit p99 was 7.3 ms against 3.7 ms.
pub const PIPELINE_MIN_SYNC: Duration = Duration::from_millis(1);

/// When a group goes to the syncing thread (see [`PIPELINE_MIN_RECORDS`]
/// and [`PIPELINE_MIN_SYNC`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipelineThreshold {
    pub(crate) min_records: usize,
    pub(crate) min_sync: Duration,
}

/// Upper bounds (seconds) of the commit latency histogram buckets: the time
/// from [`crate::QueueStore::append`] to the resolved ticket.
pub const COMMIT_LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];

/// Upper bounds (records) of the group size histogram buckets.
pub const GROUP_SIZE_BOUNDS: [f64; 10] = [
    1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// The sequences a committed append got, as the commit thread sends them:
/// an append of one record (the common case: a publish that matches one
/// flow) needs no allocation here; its ticket makes the `Vec` on the
/// publisher's own thread.
#[derive(Debug)]
pub(crate) enum Seqs {
    One(Seq),
    Many(Vec<Seq>),
}

impl From<Seqs> for Vec<Seq> {
    fn from(seqs: Seqs) -> Self {
        match seqs {
            Seqs::One(seq) => vec![seq],
            Seqs::Many(seqs) => seqs,
        }
    }
}

/// A commit thread's answer to one append.
pub(crate) type Reply = Result<Seqs, StorageError>;

/// The records of one append, with the CRC32C of their data when the
/// publisher computed it (see [`DataCrcs`]). A one-record append (a publish
/// that matches one flow, the common case) is kept inline: its list is
/// freed by the publisher's thread as it calls, where freeing is cheap,
/// rather than by the commit thread, where freeing what another thread
/// allocated cost about 130 instructions per append (callgrind, 16 x 256
/// ingest). The CRCs ride in here rather than beside it: a one-record
/// append's fits in the space the enum has anyway, so requests moved
/// through the inbox do not grow.
pub(crate) enum Entries {
    One(AppendEntry, Option<u32>),
    Many(Vec<AppendEntry>, DataCrcs),
}

impl Entries {
    /// The entries of an append; `hash`: compute their data's CRCs here
    /// (on the caller's thread).
    pub(crate) fn new(entries: Vec<AppendEntry>, hash: bool) -> Self {
        match <[AppendEntry; 1]>::try_from(entries) {
            Ok([entry]) => {
                let crc = hash.then(|| crate::crc::crc32c(&entry.data));
                Entries::One(entry, crc)
            }
            Err(entries) => {
                let crcs = if hash {
                    DataCrcs::of(&entries)
                } else {
                    DataCrcs::Absent
                };
                Entries::Many(entries, crcs)
            }
        }
    }

    /// `crc32c` of entry `i`'s data, if the publisher computed it.
    pub(crate) fn data_crc(&self, i: usize) -> Option<u32> {
        match self {
            Entries::One(_, crc) => crc.filter(|_| i == 0),
            Entries::Many(_, crcs) => crcs.get(i),
        }
    }
}

impl std::ops::Deref for Entries {
    type Target = [AppendEntry];

    fn deref(&self) -> &[AppendEntry] {
        match self {
            Entries::One(entry, _) => std::slice::from_ref(entry),
            Entries::Many(entries, _) => entries,
        }
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut [AppendEntry] {
        match self {
            Entries::One(entry, _) => std::slice::from_mut(entry),
            Entries::Many(entries, _) => entries,
        }
    }
}

/// The CRC32C of the data of each entry of an append of several, computed
/// by the publisher as it appends (on its own thread), so that the commit
/// thread, the store's one serial path, only extends it over a frame's
/// header (frame version 5, `record.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataCrcs {
    /// Not computed (a backend that does not frame records): the backend
    /// computes what it needs.
    Absent,
    /// Every entry has the same data (one record appended to several flows,
    /// as the broker does: hashed once, and nothing allocated).
    Same(u32),
    /// One per entry.
    Each(Box<[u32]>),
}

impl DataCrcs {
    /// The CRCs of `entries`' data. Entries whose data is the same buffer
    /// as the entry before (one record to several flows) reuse its CRC.
    pub(crate) fn of(entries: &[AppendEntry]) -> Self {
        let Some(first) = entries.first() else {
            return DataCrcs::Absent;
        };
        let first_crc = crate::crc::crc32c(&first.data);
        if entries.iter().all(|e| same_buffer(&e.data, &first.data)) {
            return DataCrcs::Same(first_crc);
        }
        let mut crcs = Vec::with_capacity(entries.len());
        let mut before = (&first.data, first_crc);
        for entry in entries {
            let crc = if same_buffer(before.0, &entry.data) {
                before.1
            } else {
                crate::crc::crc32c(&entry.data)
            };
            crcs.push(crc);
            before = (&entry.data, crc);
        }
        DataCrcs::Each(crcs.into_boxed_slice())
    }

    /// The CRC of entry `i`'s data, if computed.
    pub(crate) fn get(&self, i: usize) -> Option<u32> {
        match self {
            DataCrcs::Absent => None,
            DataCrcs::Same(crc) => Some(*crc),
            DataCrcs::Each(crcs) => crcs.get(i).copied(),
        }
    }
}

/// Whether two `Bytes` are the same bytes in memory (then their contents
/// are equal without comparing them).
fn same_buffer(a: &bytes::Bytes, b: &bytes::Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// One publisher's append, waiting for its commit.
pub(crate) struct CommitRequest {
    pub(crate) entries: Entries,
    pub(crate) reply: oneshot::Sender<Reply>,
    /// When it was appended ([`crate::clock::monotonic_ns`]).
    pub(crate) queued_ns: u64,
}

/// A histogram as Prometheus wants it: cumulative bucket counts
/// (`le[i]` counts observations `<= bounds[i]`), the count and the sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram<const N: usize> {
    /// Cumulative counts per upper bound.
    pub le: [u64; N],
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            le: [0; N],
            count: 0,
            sum: 0.0,
        }
    }
}

/// Lock-free histogram counters (non-cumulative per bucket, the last one
/// for values above every bound).
#[derive(Debug)]
struct Buckets<const N: usize> {
    bounds: [f64; N],
    counts: [AtomicU64; N],
    above: AtomicU64,
    /// Sum in millionths of the unit.
    sum_micros: AtomicU64,
}

impl<const N: usize> Buckets<N> {
    fn new(bounds: [f64; N]) -> Self {
        Self {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            above: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Adds one observation of `value`.
    fn observe(&self, value: f64) {
        let mut tally = Tally::new(self.bounds);
        tally.observe(value);
        self.add(&tally);
    }

    /// Adds observations tallied elsewhere.
    fn add(&self, tally: &Tally<N>) {
        for (count, n) in self.counts.iter().zip(&tally.counts) {
            if *n > 0 {
                count.fetch_add(*n, Ordering::Relaxed);
            }
        }
        if tally.above > 0 {
            self.above.fetch_add(tally.above, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(tally.sum_micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram<N> {
        let mut histogram = Histogram::default();
        let mut total = 0;
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            histogram.le[i] = total;
        }
        histogram.count = total + self.above.load(Ordering::Relaxed);
        histogram.sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        histogram
    }
}

/// Observations counted on one thread, then added to [`Buckets`] at once:
/// releasing a group of 2,000 appends paid two atomic additions per append
/// on the commit thread, now a dozen per group.
#[derive(Debug)]
pub(crate) struct Tally<const N: usize> {
    bounds: [f64; N],
    counts: [u64; N],
    above: u64,
    sum_micros: u64,
}

impl<const N: usize> Tally<N> {
    fn new(bounds: [f64; N]) -> Self {
        Self {
            bounds,
            counts: [0; N],
            above: 0,
            sum_micros: 0,
        }
    }

    pub(crate) fn observe(&mut self, value: f64) {
        match self.bounds.iter().position(|bound| value <= *bound) {
            Some(i) => self.counts[i] += 1,
            None => self.above += 1,
        }
        self.sum_micros += (value * 1e6) as u64;
    }
}

/// Commit latencies of one released batch (see [`CommitStats::add_latencies`]).
pub(crate) type LatencyTally = Tally<12>;

/// Counters of the committer, for metrics.
#[derive(Debug)]
pub struct CommitStats {
    commits: AtomicU64,
    records: AtomicU64,
    commit_nanos: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    latency: Buckets<12>,
    group_sizes: Buckets<10>,
}

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            commits: AtomicU64::new(0),
            records: AtomicU64::new(0),
            commit_nanos: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            latency: Buckets::new(COMMIT_LATENCY_BOUNDS),
            group_sizes: Buckets::new(GROUP_SIZE_BOUNDS),
        }
    }
}

/// A snapshot of [`CommitStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommitSnapshot {
    /// Group commits done (one flush each in disk mode).
    pub commits: u64,
    /// Records written by them.
    pub records: u64,
    /// Time spent writing and flushing.
    pub commit_seconds: f64,
    pub failures: u64,
    /// Appends refused by a limit (all flows).
    pub rejected: u64,
    /// Seconds from `append` to the resolved ticket, per append (accepted,
    /// refused or failed), over [`COMMIT_LATENCY_BOUNDS`].
    pub commit_latency: Histogram<12>,
    /// Records per group commit, over [`GROUP_SIZE_BOUNDS`].
    pub group_size: Histogram<10>,
}

impl CommitStats {
    /// A group commit wrote and synced for `nanos` (successfully or not).
    pub(crate) fn synced(&self, nanos: u64) {
        self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A group commit of `records` records succeeded.
    pub(crate) fn committed(&self, records: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.group_sizes.observe(records as f64);
    }

    /// A group commit failed.
    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An empty tally of commit latencies.
    pub(crate) fn latency_tally(&self) -> LatencyTally {
        Tally::new(COMMIT_LATENCY_BOUNDS)
    }

    /// Adds the commit latencies of a released batch.
    pub(crate) fn add_latencies(&self, tally: &LatencyTally) {
        self.latency.add(tally);
    }

    pub fn snapshot(&self) -> CommitSnapshot {
        CommitSnapshot {
            commits: self.commits.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            commit_seconds: self.commit_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            failures: self.failures.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            commit_latency: self.latency.snapshot(),
            group_size: self.group_sizes.snapshot(),
        }
    }
}

/// The group-commit thread (the writing half when pipelined).
pub(crate) struct Committer {
    pub(crate) shared: Arc<Shared>,
    /// Each flow's next sequence, counting groups written but not yet
    /// synced.
    pub(crate) next_seq: Vec<Seq>,
    pub(crate) limits: StoreLimits,
    pub(crate) clock: Arc<dyn Clock>,
    /// Which groups are synced by the syncing thread while the next one is
    /// written; `None`: never.
    pub(crate) pipeline_min: Option<PipelineThreshold>,
    /// The epoch the writer's sequences and files are in.
    epoch: u64,
}

impl Committer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        next_seq: Vec<Seq>,
        limits: StoreLimits,
        clock: Arc<dyn Clock>,
        pipeline_min: Option<PipelineThreshold>,
    ) -> Self {
        Self {
            shared,
            next_seq,
            limits,
            clock,
            pipeline_min,
            epoch: 0,
        }
    }

    /// Runs until the inbox is closed and empty; closes it for good when
    /// it ends, also by a panic, so that no ticket waits forever.
    pub(crate) fn run(mut self, inbox: Arc<Inbox>) {
        struct Abandon(Arc<Inbox>);
        impl Drop for Abandon {
            fn drop(&mut self) {
                self.0.abandon();
            }
        }
        let inbox = Abandon(inbox);
        let pipeline = self
            .pipeline_min
            .and_then(|_| Pipeline::start(&self.shared));
        // Requests taken from the inbox and not yet grouped, in order.
        let mut waiting: Vec<CommitRequest> = Vec::new();
        let mut last_taken = 0;
        loop {
            if waiting.is_empty() {
                // Room for the pushers' next list, allocated here rather
                // than under the inbox's lock.
                waiting.reserve(last_taken);
                if !inbox.0.take(&mut waiting) {
                    break;
                }
                last_taken = waiting.len();
            }
            let mut records = 0;
            let mut end = 0;
            while end < waiting.len() && records < MAX_GROUP_RECORDS {
                records += waiting[end].entries.len();
                end += 1;
            }
            let group = if end == waiting.len() {
                std::mem::take(&mut waiting)
            } else {
                waiting.drain(..end).collect()
            };
            let job = self.prepare(group, records);
            // Large groups on a slow disk, and every group while others are
            // in flight, go to the syncing thread; a light load or a fast
            // disk keeps the plain commit.
            let hand_over = pipeline.is_some()
                && (self.pipeline_min.is_some_and(|min| {
                    job.records >= min.min_records && self.shared.recent_sync() >= min.min_sync
                }) || self.shared.busy());
            if hand_over {
                self.shared.hand_over(job);
            } else {
                self.shared.commit_inline(job);
            }
        }
        if let Some(pipeline) = pipeline {
            pipeline.stop();
        }
    }

    /// Decides which requests of a group the limits let in: per request,
    /// `None` to let it in or the refusal. Atomic per request: one flow
    /// refusing refuses the whole append. Groups in flight count as queued.
    /// Empty when no limit can refuse anything (no `RejectNew` flow, no
    /// store limit): the common case then costs nothing per request.
    fn admit(&self, group: &[CommitRequest]) -> Vec<Option<StorageError>> {
        let flows = &self.shared.flows;
        let backend = &self.shared.backend;
        let any_reject = flows
            .iter()
            .any(|f| f.limits.overflow == Overflow::RejectNew && f.limits.is_bounded());
        if !any_reject && self.limits == StoreLimits::default() {
            return Vec::new();
        }
        let durable = backend.is_durable();
        let in_flight = self.shared.pending_bytes.load(Ordering::Relaxed);
        // Store limits: room left for this group, if limited.
        let budget_room = self.limits.max_disk_bytes.map(|max| {
            let used = backend
                .disk_bytes()
                .unwrap_or_else(|| flows.iter().map(FlowState::bytes).sum());
            max.saturating_sub(used + in_flight)
        });
        let free_room = match (durable, self.limits.min_free_bytes) {
            (true, Some(min)) => backend
                .free_bytes()
                .map(|free| free.saturating_sub(min).saturating_sub(in_flight)),
            _ => None,
        };
        let mut store_used = 0u64;
        // Queued records and bytes per flow, as this group fills them.
        let mut usage: Vec<(u64, u64)> = flows.iter().map(FlowState::usage).collect();
        let mut this = vec![(0u64, 0u64); flows.len()];
        group
            .iter()
            .map(|request| {
                let first_flow = |limit| {
                    let flow = request
                        .entries
                        .first()
                        .and_then(|e| flows.get(e.flow))
                        .map_or_else(String::new, |f| f.name.clone());
                    StorageError::QuotaExceeded { flow, limit }
                };
                let cost: u64 = request.entries.iter().map(|e| cost(durable, e)).sum();
                if budget_room.is_some_and(|room| store_used + cost > room) {
                    return Some(first_flow(QuotaLimit::StoreBudget));
                }
                if free_room.is_some_and(|room| store_used + cost > room) {
                    return Some(first_flow(QuotaLimit::FreeSpace));
                }
                for entry in request.entries.iter() {
                    this[entry.flow].0 += 1;
                    this[entry.flow].1 += entry.data.len() as u64;
                }
                let mut refusal = None;
                for entry in request.entries.iter() {
                    let (state, (messages, bytes)) = (&flows[entry.flow], this[entry.flow]);
                    if messages == 0 || state.limits.overflow != Overflow::RejectNew {
                        continue;
                    }
                    let (have_messages, have_bytes) = usage[entry.flow];
                    let limit = if state
                        .limits
                        .max_messages
                        .is_some_and(|max| have_messages + messages > max)
                    {
                        Some(QuotaLimit::Messages)
                    } else if state
                        .limits
                        .max_bytes
                        .is_some_and(|max| have_bytes + bytes > max)
                    {
                        Some(QuotaLimit::Bytes)
                    } else {
                        None
                    };
                    if let Some(limit) = limit {
                        refusal = Some(StorageError::QuotaExceeded {
                            flow: state.name.clone(),
                            limit,
                        });
                        break;
                    }
                }
                if refusal.is_none() {
                    store_used += cost;
                    for (flow, (messages, bytes)) in this.iter().enumerate() {
                        usage[flow].0 += messages;
                        usage[flow].1 += bytes;
                    }
                }
                this.iter_mut().for_each(|t| *t = (0, 0));
                refusal
            })
            .collect()
    }

    /// First half of a group commit: admit, sequence and write.
    ///
    /// The records' data is moved out of the requests (not cloned): the
    /// requests are only answered after this, and a refused request keeps
    /// its data untouched.
    fn prepare(&mut self, mut group: Vec<CommitRequest>, count: usize) -> Job {
        let now_ms = self.clock.now_ms();
        let refusals = self.admit(&group);
        let refusal = |i: usize| refusals.get(i).and_then(Option::as_ref);
        for (i, request) in group.iter().enumerate() {
            if refusal(i).is_some() {
                if let Some(state) = request
                    .entries
                    .first()
                    .and_then(|e| self.shared.flows.get(e.flow))
                {
                    state.rejected();
                }
                self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Both have one slot per flow; the smaller bound keeps a mismatch
        // from panicking.
        let flow_count = self.shared.flows.len().min(self.next_seq.len());
        let durable = self.shared.backend.is_durable();
        let mut records = Vec::with_capacity(count);
        let mut per_flow = vec![(0u64, 0u64); self.shared.flows.len()];
        let mut cost_total = 0;
        for (i, request) in group.iter_mut().enumerate() {
            if refusal(i).is_some() {
                continue;
            }
            // `QueueStore::append` refuses unknown flows before they get
            // here; the check keeps a bad index from panicking regardless.
            for j in 0..request.entries.len() {
                let data_crc = request.entries.data_crc(j);
                let entry = &mut request.entries[j];
                if entry.flow >= flow_count {
                    continue;
                }
                per_flow[entry.flow].0 += 1;
                per_flow[entry.flow].1 += entry.data.len() as u64;
                cost_total += cost(durable, entry);
                records.push(PendingRecord {
                    flow: entry.flow,
                    seq: 0,
                    time_ms: now_ms,
                    data: std::mem::take(&mut entry.data),
                    data_crc,
                });
            }
        }
        loop {
            let epoch = self.shared.epoch.load(Ordering::SeqCst);
            if epoch != self.epoch {
                // A group failed to sync: once nothing is in flight, cut
                // every log back to what is durable and sequence from there.
                self.shared.wait_drained();
                self.shared.backend.rollback();
                self.next_seq = lock(&self.shared.committed_next).clone();
                self.epoch = self.shared.epoch.load(Ordering::SeqCst);
            }
            let mut next = self.next_seq.clone();
            for record in &mut records {
                let slot = &mut next[record.flow];
                record.seq = *slot;
                *slot += 1;
            }
            let mut job = Job {
                group: Vec::new(),
                outcomes: Vec::new(),
                token: None,
                epoch: self.epoch,
                now_ms,
                records: records.len(),
                per_flow: vec![(0, 0); self.shared.flows.len()],
                next: next.clone(),
                cost: 0,
                write_nanos: 0,
                groups: 1,
            };
            if records.is_empty() {
                job.outcomes = outcomes(&group, &refusals, &records, flow_count);
                job.group = group;
                return job;
            }
            let touched: Vec<(FlowIndex, Seq)> = next
                .iter()
                .enumerate()
                .filter(|(flow, seq)| self.next_seq[*flow] != **seq)
                .map(|(flow, seq)| (flow, *seq))
                .collect();
            let started = Instant::now();
            match self.shared.backend.write(&records, &touched) {
                Ok(Some(token)) => {
                    if self.shared.epoch.load(Ordering::SeqCst) != self.epoch {
                        // Written after a group that failed meanwhile:
                        // cut back and write again.
                        continue;
                    }
                    self.next_seq = next;
                    for (state, (messages, bytes)) in self.shared.flows.iter().zip(&per_flow) {
                        if *messages > 0 {
                            state.pending(*messages, *bytes, true);
                        }
                    }
                    self.shared
                        .pending_bytes
                        .fetch_add(cost_total, Ordering::Relaxed);
                    job.outcomes = outcomes(&group, &refusals, &records, flow_count);
                    job.group = group;
                    job.token = Some(token);
                    job.per_flow = per_flow;
                    job.cost = cost_total;
                    job.write_nanos = started.elapsed().as_nanos() as u64;
                    return job;
                }
                // A segment must be rolled: wait for the groups in flight.
                Ok(None) => self.shared.wait_drained(),
                Err(err) => {
                    error!(%err, records = records.len(), "group commit failed; publishers are refused");
                    self.shared.stats.failed();
                    job.outcomes = group
                        .iter()
                        .enumerate()
                        .map(|(i, _)| Err(refusal(i).unwrap_or(&err).shared()))
                        .collect();
                    job.group = group;
                    return job;
                }
            }
        }
    }
}

/// Bytes an entry adds to the store (`durable`, disk: with framing).
fn cost(durable: bool, entry: &AppendEntry) -> u64 {
    if durable {
        // The largest frame it can take: the check stays on the safe side.
        max_frame_len(entry.data.len()) as u64
    } else {
        entry.data.len() as u64
    }
}

/// Each request's answer: the sequences of its records (`records` holds
/// those of the admitted requests' entries of known flows, in request
/// order), or its refusal.
fn outcomes(
    group: &[CommitRequest],
    refusals: &[Option<StorageError>],
    records: &[PendingRecord],
    flow_count: usize,
) -> Vec<Reply> {
    let mut records = records.iter();
    group
        .iter()
        .enumerate()
        .map(
            |(i, request)| match refusals.get(i).and_then(Option::as_ref) {
                Some(err) => Err(err.shared()),
                None => {
                    let known = request
                        .entries
                        .iter()
                        .filter(|e| e.flow < flow_count)
                        .count();
                    let mut seqs = records.by_ref().take(known).map(|r| r.seq);
                    Ok(match (known, seqs.next()) {
                        (1, Some(seq)) => Seqs::One(seq),
                        (_, first) => Seqs::Many(first.into_iter().chain(seqs).collect()),
                    })
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entries(flows: &[usize]) -> Vec<AppendEntry> {
        flows
            .iter()
            .map(|&flow| AppendEntry {
                flow,
                data: Bytes::from(format!("record for {flow}")),
            })
            .collect()
    }

    #[test]
    fn entries_keep_every_record_in_order_whatever_their_number() {
        for flows in [&[][..], &[3], &[0, 2], &[1, 0, 1]] {
            let kept = Entries::new(entries(flows), false);
            assert_eq!(
                matches!(kept, Entries::One(..)),
                flows.len() == 1,
                "one record is kept inline"
            );
            let seen: Vec<(usize, Bytes)> = kept.iter().map(|e| (e.flow, e.data.clone())).collect();
            let want: Vec<(usize, Bytes)> = entries(flows)
                .into_iter()
                .map(|e| (e.flow, e.data))
                .collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn data_crcs_are_each_entrys_and_one_record_to_several_flows_is_one() {
        let crc = |data: &Bytes| crate::crc::crc32c(data);
        assert_eq!(DataCrcs::of(&[]), DataCrcs::Absent);
        let one = entries(&[2]);
        let want = crc(&one[0].data);
        let kept = Entries::new(one.clone(), true);
        assert_eq!((kept.data_crc(0), kept.data_crc(1)), (Some(want), None));
        assert_eq!(Entries::new(one, false).data_crc(0), None);
        // The broker's gate: one buffer, cloned for each flow.
        let data = Bytes::from_static(b"to three flows");
        let shared: Vec<AppendEntry> = (0..3)
            .map(|flow| AppendEntry {
                flow,
                data: data.clone(),
            })
            .collect();
        assert_eq!(DataCrcs::of(&shared), DataCrcs::Same(crc(&data)));
        // Equal contents in different buffers, and different contents.
        let mut mixed = entries(&[0, 1]);
        mixed.push(AppendEntry {
            flow: 2,
            data: Bytes::from("record for 1"),
        });
        mixed.push(mixed[2].clone());
        let kept = Entries::new(mixed.clone(), true);
        for (i, entry) in mixed.iter().enumerate() {
            assert_eq!(kept.data_crc(i), Some(crc(&entry.data)), "entry {i}");
        }
        assert_eq!(kept.data_crc(4), None);
        assert_eq!(Entries::new(mixed, false).data_crc(0), None);
    }

    #[test]
    fn one_sequence_becomes_a_list_of_one() {
        assert_eq!(Vec::from(Seqs::One(7)), vec![7]);
        assert_eq!(Vec::from(Seqs::Many(vec![1, 9])), vec![1, 9]);
    }
}
