use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::backend::{Backend, Recovered};
use crate::{FlowIndex, Seq, StorageError};

/// One queued record as a flow reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    pub seq: Seq,
    pub data: Bytes,
}

/// A snapshot of one flow's queue counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Records waiting (appended, not acknowledged).
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
}

/// Shared counters and wake-up of one flow, updated by the committer and by
/// the flow's own acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct FlowState {
    pub(crate) name: String,
    messages: AtomicU64,
    bytes: AtomicU64,
    appended_total: AtomicU64,
    acked_total: AtomicU64,
    quarantined_total: AtomicU64,
    recovered: u64,
    notify: Notify,
}

impl FlowState {
    pub(crate) fn new(name: String, recovered: Recovered) -> Self {
        Self {
            name,
            messages: AtomicU64::new(recovered.messages),
            bytes: AtomicU64::new(recovered.bytes),
            recovered: recovered.messages,
            quarantined_total: AtomicU64::new(recovered.quarantined),
            ..Self::default()
        }
    }

    pub(crate) fn appended(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.appended_total.fetch_add(messages, Ordering::Relaxed);
        self.notify.notify_one();
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
        }
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            appended_total: self.appended_total.load(Ordering::Relaxed),
            acked_total: self.acked_total.load(Ordering::Relaxed),
            quarantined_total: self.quarantined_total.load(Ordering::Relaxed),
            recovered: self.recovered,
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
}

impl FlowQueue {
    pub(crate) fn new(
        index: FlowIndex,
        backend: Arc<dyn Backend>,
        flows: Arc<[FlowState]>,
    ) -> Self {
        Self {
            index,
            backend,
            flows,
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

    /// Up to `max_count` records (about `max_bytes`, at least one) with
    /// sequence `>= from`, oldest first. Corrupt records on the way are
    /// quarantined and counted, never returned.
    pub async fn read(
        &self,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<QueuedRecord>, StorageError> {
        let backend = self.backend.clone();
        let index = self.index;
        let outcome = tokio::task::spawn_blocking(move || {
            backend.read(index, from, max_count.max(1), max_bytes)
        })
        .await
        .map_err(|_| StorageError::CommitterStopped)??;
        if outcome.quarantined > 0 {
            let state = self.state();
            state.removed(outcome.quarantined, outcome.quarantined_bytes);
            state
                .quarantined_total
                .fetch_add(outcome.quarantined, Ordering::Relaxed);
        }
        Ok(outcome.records)
    }

    /// Removes every record with sequence `<= upto`. Not flushed: a power
    /// cut may bring back what was acknowledged since the last checkpoint
    /// sync (about a second in disk mode); a killed process loses nothing.
    pub async fn ack(&self, upto: Seq) -> Result<u64, StorageError> {
        let backend = self.backend.clone();
        let index = self.index;
        let removed = tokio::task::spawn_blocking(move || backend.ack(index, upto))
            .await
            .map_err(|_| StorageError::CommitterStopped)??;
        let state = self.state();
        state.removed(
            removed.messages + removed.quarantined,
            removed.bytes + removed.quarantined_bytes,
        );
        state
            .acked_total
            .fetch_add(removed.messages, Ordering::Relaxed);
        state
            .quarantined_total
            .fetch_add(removed.quarantined, Ordering::Relaxed);
        Ok(removed.messages)
    }

    /// Resolves when records were appended since the last call (or right
    /// away if some were appended before the first call).
    pub async fn appended(&self) {
        self.state().notify.notified().await;
    }

    pub fn stats(&self) -> QueueStats {
        self.state().stats()
    }
}
