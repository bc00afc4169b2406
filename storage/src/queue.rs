use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::warn;

use crate::backend::{Backend, DropUntil, ReadOutcome, Recovered, Removed};
use crate::clock::{to_system_time, Clock};
use crate::limits::{Overflow, QueueLimits};
use crate::{FlowIndex, Seq, StorageError};

/// One queued record as a flow reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    pub seq: Seq,
    pub data: Bytes,
    /// When it was appended (the store's clock); `None` for a record
    /// written by an earlier build, which kept no append time. A forwarded
    /// message's expiry interval can be reduced by the time since.
    pub appended: Option<SystemTime>,
}

impl QueuedRecord {
    /// A record appended at `time_ms` (ms since the epoch; 0: unknown).
    pub fn new(seq: Seq, data: Bytes, time_ms: u64) -> Self {
        Self {
            seq,
            data,
            appended: (time_ms != 0).then(|| to_system_time(time_ms)),
        }
    }

    /// The append time in ms since the epoch, if known.
    pub fn appended_ms(&self) -> Option<u64> {
        self.appended
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
    }
}

/// A snapshot of one flow's queue counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Records waiting (appended, not acknowledged or dropped).
    pub messages: u64,
    /// Data bytes of those records.
    pub bytes: u64,
    /// Records appended since the store was opened.
    pub appended_total: u64,
    /// Records acknowledged since the store was opened.
    pub acked_total: u64,
    /// Corrupt records moved aside since the store was opened.
    pub quarantined_total: u64,
    /// Records found queued when the store was opened.
    pub recovered: u64,
    /// Records dropped by the `DropOldest` overflow policy since the store
    /// was opened.
    pub dropped_overflow_total: u64,
    /// Records skipped as expired (TTL) since the store was opened.
    pub expired_total: u64,
    /// Appends to this flow refused by a limit (`RejectNew`, store budget,
    /// free-space watermark) since the store was opened.
    pub rejected_total: u64,
    /// Age of the oldest queued record (by the store's clock); `None` when
    /// the queue is empty or the oldest record's append time is unknown.
    pub oldest_age: Option<Duration>,
}

/// The head of a queue: moved by acknowledgements, overflow drops and
/// expiry, one at a time.
#[derive(Debug, Default)]
pub(crate) struct Head {
    /// Expired records a read skipped that are still queued (records before
    /// them were being delivered): counted as expired once, and not as
    /// acknowledged when the head passes them.
    skipped_expired: BTreeSet<Seq>,
}

impl Head {
    /// Forgets the skipped records the head moved past (`<= through`); how
    /// many there were.
    fn passed(&mut self, through: Seq) -> u64 {
        let rest = self.skipped_expired.split_off(&through.saturating_add(1));
        let passed = self.skipped_expired.len() as u64;
        self.skipped_expired = rest;
        passed
    }
}

/// Shared counters, limits and wake-up of one flow, updated by the
/// committer and by the flow's own reads and acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct FlowState {
    pub(crate) name: String,
    pub(crate) limits: QueueLimits,
    messages: AtomicU64,
    bytes: AtomicU64,
    appended_total: AtomicU64,
    acked_total: AtomicU64,
    quarantined_total: AtomicU64,
    dropped_overflow_total: AtomicU64,
    expired_total: AtomicU64,
    rejected_total: AtomicU64,
    /// Records (and their data bytes) written by group commits still in
    /// flight (pipelined commits), for admission against limits.
    pending_messages: AtomicU64,
    pending_bytes: AtomicU64,
    /// Append time (ms since the epoch) of the oldest queued record; 0 when
    /// unknown or empty.
    head_time: AtomicU64,
    recovered: u64,
    head: Mutex<Head>,
    notify: Notify,
}

impl FlowState {
    pub(crate) fn new(name: String, limits: QueueLimits, recovered: Recovered) -> Self {
        Self {
            name,
            limits,
            messages: AtomicU64::new(recovered.messages),
            bytes: AtomicU64::new(recovered.bytes),
            recovered: recovered.messages,
            quarantined_total: AtomicU64::new(recovered.quarantined),
            ..Self::default()
        }
    }

    pub(crate) fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Queued records and bytes, counting groups in flight.
    pub(crate) fn usage(&self) -> (u64, u64) {
        (
            self.messages() + self.pending_messages.load(Ordering::Relaxed),
            self.bytes() + self.pending_bytes.load(Ordering::Relaxed),
        )
    }

    /// A group with `messages` records of this flow is in flight (`add`) or
    /// done (`!add`).
    pub(crate) fn pending(&self, messages: u64, bytes: u64, add: bool) {
        if add {
            self.pending_messages.fetch_add(messages, Ordering::Relaxed);
            self.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.pending_messages.fetch_sub(messages, Ordering::Relaxed);
            self.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn lock_head(&self) -> MutexGuard<'_, Head> {
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_head_time(&self, time_ms: Option<u64>) {
        self.head_time
            .store(time_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// Records were committed at `time_ms`. Call with the head locked, so
    /// that the oldest-record time stays consistent with acknowledgements.
    pub(crate) fn appended(&self, _head: &Head, messages: u64, bytes: u64, time_ms: u64) {
        if self.messages.load(Ordering::Relaxed) == 0 {
            self.head_time.store(time_ms, Ordering::Relaxed);
        }
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.appended_total.fetch_add(messages, Ordering::Relaxed);
        self.notify.notify_one();
    }

    pub(crate) fn rejected(&self) {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Saturating: after damage, byte counts are estimates and must not
    /// wrap around.
    fn removed(&self, messages: u64, bytes: u64) {
        let sub = |counter: &AtomicU64, n: u64| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        };
        sub(&self.messages, messages);
        sub(&self.bytes, bytes);
        if self.messages.load(Ordering::Relaxed) == 0 {
            self.bytes.store(0, Ordering::Relaxed);
            self.head_time.store(0, Ordering::Relaxed);
        }
    }

    /// Accounts for a head move; returns how many of the removed records
    /// were ones a read had already counted as expired.
    fn moved(&self, head: &mut Head, removed: &Removed) -> u64 {
        self.removed(
            removed.messages + removed.quarantined,
            removed.bytes + removed.quarantined_bytes,
        );
        self.quarantined_total
            .fetch_add(removed.quarantined, Ordering::Relaxed);
        if removed.through > 0 {
            head.passed(removed.through).min(removed.messages)
        } else {
            0
        }
    }

    fn quarantined(&self, outcome: &ReadOutcome) {
        if outcome.quarantined > 0 {
            self.removed(outcome.quarantined, outcome.quarantined_bytes);
            self.quarantined_total
                .fetch_add(outcome.quarantined, Ordering::Relaxed);
        }
    }

    /// Re-reads the oldest record's append time after the head moved.
    fn refresh_head_time(&self, backend: &dyn Backend, index: FlowIndex) {
        if self.messages.load(Ordering::Relaxed) == 0 {
            self.head_time.store(0, Ordering::Relaxed);
            return;
        }
        match backend.head_time(index) {
            Ok(time) => self.set_head_time(time),
            Err(err) => {
                warn!(flow = %self.name, %err, "cannot read the oldest record's time");
                self.head_time.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Acknowledges up to `upto` (blocking); the records acknowledged.
    fn ack(&self, backend: &dyn Backend, index: FlowIndex, upto: Seq) -> Result<u64, StorageError> {
        let mut head = self.lock_head();
        let removed = backend.ack(index, upto)?;
        let expired = self.moved(&mut head, &removed);
        let acked = removed.messages - expired;
        self.acked_total.fetch_add(acked, Ordering::Relaxed);
        if removed.messages + removed.quarantined > 0 {
            self.refresh_head_time(backend, index);
        }
        Ok(acked)
    }

    /// Drops the oldest records while the queue exceeds a `DropOldest`
    /// limit (blocking; the committer calls it after a group).
    pub(crate) fn enforce_limits(
        &self,
        backend: &dyn Backend,
        index: FlowIndex,
    ) -> Result<u64, StorageError> {
        if self.limits.overflow != Overflow::DropOldest || !self.limits.is_bounded() {
            return Ok(0);
        }
        let mut head = self.lock_head();
        let excess =
            |limit: Option<u64>, have: u64| limit.map_or(0, |max| have.saturating_sub(max));
        let messages = excess(self.limits.max_messages, self.messages());
        let bytes = excess(self.limits.max_bytes, self.bytes());
        if messages == 0 && bytes == 0 {
            return Ok(0);
        }
        let removed = backend.drop_head(index, DropUntil::Removed { messages, bytes })?;
        let expired = self.moved(&mut head, &removed);
        let dropped = removed.messages - expired;
        self.dropped_overflow_total
            .fetch_add(dropped, Ordering::Relaxed);
        self.refresh_head_time(backend, index);
        Ok(dropped)
    }

    /// Drops expired records at the head, if the head is at `from` or later
    /// (blocking).
    fn expire_head(
        &self,
        backend: &dyn Backend,
        index: FlowIndex,
        from: Seq,
        cutoff_ms: u64,
    ) -> Result<(), StorageError> {
        let head_time = self.head_time.load(Ordering::Relaxed);
        if self.messages() == 0 || (head_time != 0 && head_time > cutoff_ms) {
            // Nothing queued, or the oldest record is fresh: nothing to do.
            return Ok(());
        }
        let mut head = self.lock_head();
        let removed = backend.drop_head(index, DropUntil::Expired { cutoff_ms, from })?;
        let counted = self.moved(&mut head, &removed);
        self.expired_total
            .fetch_add(removed.messages - counted, Ordering::Relaxed);
        if removed.messages + removed.quarantined > 0 {
            self.refresh_head_time(backend, index);
        }
        Ok(())
    }

    /// Reads (blocking), skipping and counting expired records.
    fn read(
        &self,
        backend: &dyn Backend,
        index: FlowIndex,
        clock: &dyn Clock,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<crate::QueuedRecord>, StorageError> {
        let Some(ttl) = self.limits.ttl else {
            let outcome = backend.read(index, from, max_count, max_bytes)?;
            self.quarantined(&outcome);
            return Ok(outcome.records);
        };
        let cutoff = clock.now_ms().saturating_sub(ttl.as_millis() as u64);
        self.expire_head(backend, index, from, cutoff)?;
        let mut from = from;
        loop {
            let outcome = backend.read(index, from, max_count, max_bytes)?;
            self.quarantined(&outcome);
            let Some(last) = outcome.records.last().map(|r| r.seq) else {
                return Ok(Vec::new());
            };
            let (fresh, expired): (Vec<_>, Vec<_>) = outcome
                .records
                .into_iter()
                .partition(|r| !matches!(r.appended_ms(), Some(t) if t <= cutoff));
            if !expired.is_empty() {
                // Records before these are being delivered, or the clock
                // went back: skip them now, count them once.
                let mut head = self.lock_head();
                let mut newly = 0;
                for record in &expired {
                    if head.skipped_expired.insert(record.seq) {
                        newly += 1;
                    }
                }
                self.expired_total.fetch_add(newly, Ordering::Relaxed);
            }
            if !fresh.is_empty() {
                return Ok(fresh);
            }
            from = last + 1;
        }
    }

    fn stats(&self, now_ms: u64) -> QueueStats {
        let messages = self.messages.load(Ordering::Relaxed);
        let head_time = self.head_time.load(Ordering::Relaxed);
        QueueStats {
            messages,
            bytes: self.bytes.load(Ordering::Relaxed),
            appended_total: self.appended_total.load(Ordering::Relaxed),
            acked_total: self.acked_total.load(Ordering::Relaxed),
            quarantined_total: self.quarantined_total.load(Ordering::Relaxed),
            recovered: self.recovered,
            dropped_overflow_total: self.dropped_overflow_total.load(Ordering::Relaxed),
            expired_total: self.expired_total.load(Ordering::Relaxed),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
            oldest_age: (messages > 0 && head_time != 0)
                .then(|| Duration::from_millis(now_ms.saturating_sub(head_time))),
        }
    }
}

/// A data flow's handle on its queue: read in order from a sequence,
/// acknowledge up to a sequence, wait for new records.
#[derive(Clone)]
pub struct FlowQueue {
    index: FlowIndex,
    backend: Arc<dyn Backend>,
    flows: Arc<[FlowState]>,
    clock: Arc<dyn Clock>,
}

impl FlowQueue {
    pub(crate) fn new(
        index: FlowIndex,
        backend: Arc<dyn Backend>,
        flows: Arc<[FlowState]>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            index,
            backend,
            flows,
            clock,
        }
    }

    fn state(&self) -> &FlowState {
        &self.flows[self.index]
    }

    /// The flow's name, as the store was opened with.
    pub fn name(&self) -> &str {
        &self.state().name
    }

    pub fn index(&self) -> FlowIndex {
        self.index
    }

    /// The flow's limits, as the store was opened with.
    pub fn limits(&self) -> QueueLimits {
        self.state().limits
    }

    /// Up to `max_count` records (about `max_bytes`, at least one) with
    /// sequence `>= from`, oldest first. Corrupt records on the way are
    /// quarantined and counted, never returned; so are expired ones (the
    /// flow's TTL): at the head of the queue they are dropped, and when
    /// records before `from` are still queued (being delivered) they are
    /// skipped and dropped with the acknowledgement that passes them.
    pub async fn read(
        &self,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<QueuedRecord>, StorageError> {
        let backend = self.backend.clone();
        let flows = self.flows.clone();
        let clock = self.clock.clone();
        let index = self.index;
        tokio::task::spawn_blocking(move || {
            flows[index].read(&*backend, index, &*clock, from, max_count.max(1), max_bytes)
        })
        .await
        .map_err(|_| StorageError::CommitterStopped)?
    }

    /// Removes every record with sequence `<= upto`; the number of records
    /// acknowledged (not counting ones dropped or expired before). Not
    /// flushed: a power cut may bring back what was acknowledged since the
    /// last checkpoint sync (about a second in disk mode); a killed process
    /// loses nothing.
    pub async fn ack(&self, upto: Seq) -> Result<u64, StorageError> {
        let backend = self.backend.clone();
        let flows = self.flows.clone();
        let index = self.index;
        tokio::task::spawn_blocking(move || flows[index].ack(&*backend, index, upto))
            .await
            .map_err(|_| StorageError::CommitterStopped)?
    }

    /// Resolves when records were appended since the last call (or right
    /// away if some were appended before the first call).
    pub async fn appended(&self) {
        self.state().notify.notified().await;
    }

    pub fn stats(&self) -> QueueStats {
        self.state().stats(self.clock.now_ms())
    }
}
