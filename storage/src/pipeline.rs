//! The second half of a group commit: syncing written groups and releasing
//! their publishers, on threads of their own so that the disk is kept busy.
//!
//! The committer (`committer.rs`) sequences and writes groups. When it
//! pipelines, it puts each written group into the *open batch* and goes
//! back to collecting; it never waits for a sync. The syncing thread takes
//! the whole open batch the moment its previous sync returns, makes it
//! durable with one `fdatasync` per file ([`WriteToken::absorb`]), makes it
//! visible, and hands it to the releasing thread, which drops what
//! overflows a `DropOldest` limit and resolves the tickets in order. So one
//! sync covers everything written while the sync before it ran (the batch
//! grows to what the disk's sync time lets in, as a raw writer with the
//! same batch would see), the next sync starts as soon as the previous one
//! returns (releasing 2,000 publishers no longer sits between two syncs),
//! and writing overlaps syncing.
//!
//! Durability is unchanged: a ticket resolves only after the `fdatasync`
//! covering its records returned, tickets resolve in the order written (one
//! syncing thread, one releasing thread, batches in order), and if a sync
//! fails that batch and every group written after it fail, and the logs are
//! cut back to what is durable before anything is written again (the
//! epoch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::backend::{Backend, WriteToken};
use crate::committer::{CommitRequest, CommitStats, Reply};
use crate::queue::FlowState;
use crate::{Seq, StorageError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One or more written groups on their way to be synced and released.
pub(crate) struct Job {
    pub(crate) group: Vec<CommitRequest>,
    /// Per request: its sequences, or why it was refused.
    pub(crate) outcomes: Vec<Reply>,
    /// `None` when nothing is to be synced (no records, or the write failed).
    pub(crate) token: Option<WriteToken>,
    pub(crate) epoch: u64,
    /// The append time of its first group (ms since the epoch).
    pub(crate) now_ms: u64,
    pub(crate) records: usize,
    /// Records and data bytes per flow.
    pub(crate) per_flow: Vec<(u64, u64)>,
    /// Each flow's next sequence after it.
    pub(crate) next: Vec<Seq>,
    /// Store bytes of its records.
    pub(crate) cost: u64,
    pub(crate) write_nanos: u64,
    /// Groups merged into it (each counted in `in_flight`).
    pub(crate) groups: usize,
}

impl Job {
    /// Appends a group written after this one: both are synced by one
    /// `fdatasync` per file and released in order.
    fn absorb(&mut self, later: Job) {
        // Groups of one batch are all written in the same epoch: the
        // committer waits for the open batch to drain before it moves to
        // a new epoch. Should that ever not hold, the older epoch wins, so
        // the whole batch fails rather than a stale group passing.
        self.epoch = self.epoch.min(later.epoch);
        self.group.extend(later.group);
        self.outcomes.extend(later.outcomes);
        self.token = match (self.token.take(), later.token) {
            (Some(mut token), Some(later)) => {
                token.absorb(later);
                Some(token)
            }
            (token, None) | (None, token) => token,
        };
        self.records += later.records;
        for (mine, theirs) in self.per_flow.iter_mut().zip(&later.per_flow) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
        self.next = later.next;
        self.cost += later.cost;
        self.write_nanos += later.write_nanos;
        self.groups += later.groups;
    }
}

/// A synced (or failed) job, ready to release.
pub(crate) struct Synced {
    job: Job,
    committed: bool,
}

/// The batch the syncing thread takes next.
#[derive(Default)]
struct Open {
    batch: Option<Job>,
    /// Set when the committer stops: the thread syncs what is left, then
    /// ends.
    stopping: bool,
}

/// What the committer, the syncing thread and the releasing thread share.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) flows: Arc<[FlowState]>,
    pub(crate) stats: Arc<CommitStats>,
    /// Bumped when a group fails to sync: groups written after it (with an
    /// older epoch) fail too, and the writer cuts the logs back before it
    /// writes again.
    pub(crate) epoch: AtomicU64,
    /// Each flow's next sequence after the last synced group.
    pub(crate) committed_next: Mutex<Vec<Seq>>,
    /// Groups written and not yet released (in the open batch, syncing,
    /// or releasing).
    in_flight: Mutex<usize>,
    drained: Condvar,
    /// Store bytes (with framing) of groups in flight, for the budget.
    pub(crate) pending_bytes: AtomicU64,
    /// A moving average of the disk's recent sync times (ns), for the
    /// committer's choice between the plain and the pipelined commit.
    recent_sync_nanos: AtomicU64,
    open: Mutex<Open>,
    batch_ready: Condvar,
}

impl Shared {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        flows: Arc<[FlowState]>,
        stats: Arc<CommitStats>,
        next_seq: Vec<Seq>,
    ) -> Self {
        Self {
            backend,
            flows,
            stats,
            epoch: AtomicU64::new(0),
            committed_next: Mutex::new(next_seq),
            in_flight: Mutex::new(0),
            drained: Condvar::new(),
            pending_bytes: AtomicU64::new(0),
            recent_sync_nanos: AtomicU64::new(0),
            open: Mutex::new(Open::default()),
            batch_ready: Condvar::new(),
        }
    }

    /// Whether groups are written and not yet released.
    /// The moving average of recent syncs (each weighs 1/8).
    pub(crate) fn recent_sync(&self) -> Duration {
        Duration::from_nanos(self.recent_sync_nanos.load(Ordering::Relaxed))
    }

    fn record_sync(&self, nanos: u64) {
        let old = self.recent_sync_nanos.load(Ordering::Relaxed);
        let average = old - old / 8 + nanos / 8;
        self.recent_sync_nanos.store(average, Ordering::Relaxed);
    }

    pub(crate) fn busy(&self) -> bool {
        *lock(&self.in_flight) > 0
    }

    /// Waits until every group written so far is released.
    pub(crate) fn wait_drained(&self) {
        let mut in_flight = lock(&self.in_flight);
        while *in_flight > 0 {
            in_flight = self
                .drained
                .wait(in_flight)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Commits a group on the calling thread (after every group in flight):
    /// sync, then release.
    pub(crate) fn commit_inline(&self, job: Job) {
        self.wait_drained();
        *lock(&self.in_flight) += job.groups;
        let synced = self.sync(job);
        self.release(synced);
    }

    /// Puts a written group into the open batch for the syncing thread.
    pub(crate) fn hand_over(&self, job: Job) {
        *lock(&self.in_flight) += job.groups;
        let mut open = lock(&self.open);
        match open.batch.as_mut() {
            // The syncing thread was told when this batch was opened.
            Some(batch) => batch.absorb(job),
            None => {
                open.batch = Some(job);
                drop(open);
                self.batch_ready.notify_one();
            }
        }
    }

    /// The next batch to sync; `None` once the committer stopped and
    /// nothing is left.
    fn take_batch(&self) -> Option<Job> {
        let mut open = lock(&self.open);
        loop {
            if let Some(batch) = open.batch.take() {
                return Some(batch);
            }
            if open.stopping {
                return None;
            }
            open = self
                .batch_ready
                .wait(open)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Sync, make visible, account: the part of a commit that must happen
    /// in order and as soon as possible.
    fn sync(&self, job: Job) -> Synced {
        let mut job = job;
        let mut committed = false;
        if let Some(token) = job.token.take() {
            if job.epoch != self.epoch.load(Ordering::SeqCst) {
                // Written after a group that failed: gone with it.
                fail(
                    &mut job.outcomes,
                    StorageError::CommitFailed(
                        "an earlier group commit failed; nothing of this append was stored".into(),
                    ),
                );
            } else {
                committed = self.sync_token(&mut job, token);
            }
        }
        for (state, (messages, bytes)) in self.flows.iter().zip(&job.per_flow) {
            if *messages > 0 {
                state.pending(*messages, *bytes, false);
            }
        }
        self.pending_bytes.fetch_sub(job.cost, Ordering::Relaxed);
        Synced { job, committed }
    }

    /// Makes a written batch durable and visible; false if the sync failed
    /// (then every group written after it fails too).
    fn sync_token(&self, job: &mut Job, token: WriteToken) -> bool {
        let started = Instant::now();
        let result = self.backend.sync(token);
        let sync_nanos = started.elapsed().as_nanos() as u64;
        self.record_sync(sync_nanos);
        self.stats.synced(job.write_nanos + sync_nanos);
        match result {
            Ok(()) => {
                *lock(&self.committed_next) = job.next.clone();
                self.stats.committed(job.records);
                for (state, (messages, bytes)) in self.flows.iter().zip(&job.per_flow) {
                    if *messages > 0 {
                        let head = state.lock_head();
                        state.appended(&head, *messages, *bytes, job.now_ms);
                    }
                }
                true
            }
            Err(err) => {
                error!(%err, records = job.records, "group commit failed; publishers are refused");
                self.stats.failed();
                // Fail the groups written after it, then cut every log
                // back to what is durable right away (a close would
                // otherwise sync the failed bytes). A group the writer
                // writes meanwhile sees the new epoch after its write and
                // is cut back and written again.
                self.epoch.fetch_add(1, Ordering::SeqCst);
                self.backend.rollback();
                fail(&mut job.outcomes, err);
                false
            }
        }
    }

    /// Drops what overflows, then resolves the tickets in order.
    fn release(&self, synced: Synced) {
        let Synced { job, committed } = synced;
        // Drop what overflows before releasing the publishers, so that a
        // resolved ticket finds every queue within its limits.
        if committed {
            for (flow, (messages, _)) in job.per_flow.iter().enumerate() {
                if *messages == 0 {
                    continue;
                }
                if let Err(err) = self.flows[flow].enforce_limits(&*self.backend, flow) {
                    warn!(flow = %self.flows[flow].name, %err, "cannot drop the oldest records of a full queue; retrying with the next append");
                }
            }
        }
        // One clock read for the whole batch: reading the clock per
        // request was a tenth of the CPU profile of a 16 x 256 ingest. The
        // latencies are counted first, so that a resolved ticket finds its
        // append in the histogram.
        let now = crate::clock::monotonic_ns();
        let mut latencies = self.stats.latency_tally();
        for request in &job.group {
            // A ping (empty append) is not a publish: keep it out of the
            // commit latency that operators read.
            if !request.entries.is_empty() {
                let nanos = now.saturating_sub(request.queued_ns);
                latencies.observe(nanos as f64 / 1e9);
            }
        }
        self.stats.add_latencies(&latencies);
        for (request, outcome) in job.group.into_iter().zip(job.outcomes) {
            let _ = request.reply.send(outcome);
        }
        let mut in_flight = lock(&self.in_flight);
        *in_flight = in_flight.saturating_sub(job.groups);
        if *in_flight == 0 {
            self.drained.notify_all();
        }
    }
}

fn fail(outcomes: &mut [Reply], err: StorageError) {
    for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
        *outcome = Err(err.shared());
    }
}

/// The syncing and releasing threads of a pipelined committer.
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    syncer: JoinHandle<()>,
    releaser: Option<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the threads; `None` (commits are then not pipelined) if the
    /// syncing thread cannot start. Without a releasing thread the syncing
    /// thread releases too.
    pub(crate) fn start(shared: &Arc<Shared>) -> Option<Self> {
        let (to_release, synced) = mpsc::channel::<Synced>();
        let releasing = shared.clone();
        let releaser = std::thread::Builder::new()
            .name("queue-release".into())
            .spawn(move || {
                while let Ok(batch) = synced.recv() {
                    releasing.release(batch);
                }
            })
            .map_err(|err| warn!(%err, "cannot start the release thread; the sync thread releases"))
            .ok();
        let to_release = releaser.as_ref().map(|_| to_release);
        let syncing = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("queue-sync".into())
            .spawn(move || {
                while let Some(batch) = syncing.take_batch() {
                    let synced = syncing.sync(batch);
                    match &to_release {
                        Some(tx) => {
                            if let Err(mpsc::SendError(synced)) = tx.send(synced) {
                                syncing.release(synced);
                            }
                        }
                        None => syncing.release(synced),
                    }
                }
            });
        match syncer {
            Ok(syncer) => Some(Self {
                shared: shared.clone(),
                syncer,
                releaser,
            }),
            Err(err) => {
                warn!(%err, "cannot start the sync thread; group commits are not pipelined");
                None
            }
        }
    }

    /// Syncs and releases what is left, then ends both threads.
    pub(crate) fn stop(self) {
        lock(&self.shared.open).stopping = true;
        self.shared.batch_ready.notify_all();
        let _ = self.syncer.join();
        if let Some(releaser) = self.releaser {
            let _ = releaser.join();
        }
    }
}
