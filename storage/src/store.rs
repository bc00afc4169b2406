use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::{Backend, MemoryBackend, SegmentBackend};
use crate::clock::{Clock, SystemClock};
use crate::committer::{
    CommitRequest, CommitSnapshot, CommitStats, Committer, Entries, PipelineThreshold, Reply,
};
use crate::inbox::Inbox;
use crate::limits::{FlowSpec, StoreLimits};
use crate::pipeline::Shared;
use crate::queue::{FlowQueue, FlowState};
use crate::{FlowIndex, Seq, StorageError};

/// Where the queues live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageMode {
    /// On disk under this directory (one segment log per flow); appends are
    /// flushed before they resolve.
    Disk(PathBuf),
    /// In RAM; lost on restart.
    Memory,
}

/// How a store is opened beyond its flows.
#[derive(Clone)]
pub struct StoreOptions {
    pub limits: StoreLimits,
    /// The clock appends are stamped with.
    pub clock: Arc<dyn Clock>,
    /// Pipelined group commit: a group of at least this many records is
    /// synced (and its publishers released) by a second thread while the
    /// committer sequences and writes the next group. `None`: every group
    /// is written, synced and released before the next one starts (the
    /// plain commit). Default: [`crate::committer::PIPELINE_MIN_RECORDS`].
    pub pipeline_min_records: Option<usize>,
    /// ... and only while the disk's recent syncs (a moving average) take at
    /// least this long: with fast syncs the hand-over to other threads costs
    /// more than the overlap gains. `Duration::ZERO`: whatever the disk.
    /// Default: [`crate::committer::PIPELINE_MIN_SYNC`].
    pub pipeline_min_sync: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            limits: StoreLimits::default(),
            clock: Arc::new(SystemClock),
            pipeline_min_records: Some(crate::committer::PIPELINE_MIN_RECORDS),
            pipeline_min_sync: crate::committer::PIPELINE_MIN_SYNC,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("limits", &self.limits)
            .field("pipeline_min_records", &self.pipeline_min_records)
            .field("pipeline_min_sync", &self.pipeline_min_sync)
            .finish_non_exhaustive()
    }
}

/// One record to append to one flow's queue.
#[derive(Debug, Clone)]
pub struct AppendEntry {
    pub flow: FlowIndex,
    pub data: Bytes,
}

/// The queues of all data flows, sharing one group-commit thread.
pub struct QueueStore {
    backend: Arc<dyn Backend>,
    flows: Arc<[FlowState]>,
    inbox: Arc<Inbox>,
    committer: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
    clock: Arc<dyn Clock>,
    limits: StoreLimits,
}

impl QueueStore {
    /// Opens the store with one queue per name in `flows`; queue `i` is the
    /// flow `flows[i]`. Queues of flows no longer listed stay on disk
    /// untouched.
    /// No limits: see [`QueueStore::open_with`].
    pub fn open(mode: &StorageMode, flows: &[String]) -> Result<Self, StorageError> {
        let specs: Vec<FlowSpec> = flows.iter().map(FlowSpec::new).collect();
        Self::open_with(mode, &specs, StoreLimits::default())
    }

    /// Opens the store with one queue per flow in `flows`, each with its
    /// limits, and the store-wide `limits` (see [`crate::limits`]); queue
    /// `i` is the flow `flows[i]`. Queues of flows no longer listed stay on
    /// disk untouched. Limits may change from one opening to the next.
    pub fn open_with(
        mode: &StorageMode,
        flows: &[FlowSpec],
        limits: StoreLimits,
    ) -> Result<Self, StorageError> {
        let backend: Arc<dyn Backend> = match mode {
            StorageMode::Disk(dir) => Arc::new(SegmentBackend::open(dir)?),
            StorageMode::Memory => Arc::new(MemoryBackend::new()),
        };
        Self::open_backend_with(backend, flows, limits, Arc::new(SystemClock))
    }

    /// Opens the store on a given backend (tests and benchmarks use this to
    /// run the segment log on a model filesystem or with small segments).
    pub fn open_backend(backend: Arc<dyn Backend>, flows: &[String]) -> Result<Self, StorageError> {
        let specs: Vec<FlowSpec> = flows.iter().map(FlowSpec::new).collect();
        Self::open_backend_with(
            backend,
            &specs,
            StoreLimits::default(),
            Arc::new(SystemClock),
        )
    }

    /// Opens the store on a given backend with limits and a clock (tests
    /// pass a [`crate::clock::ManualClock`]).
    pub fn open_backend_with(
        backend: Arc<dyn Backend>,
        flows: &[FlowSpec],
        limits: StoreLimits,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StorageError> {
        Self::open_backend_options(
            backend,
            flows,
            StoreOptions {
                limits,
                clock,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens the store on a given backend with every option.
    pub fn open_backend_options(
        backend: Arc<dyn Backend>,
        flows: &[FlowSpec],
        options: StoreOptions,
    ) -> Result<Self, StorageError> {
        let StoreOptions {
            limits,
            clock,
            pipeline_min_records,
            pipeline_min_sync,
        } = options;
        let names: Vec<String> = flows.iter().map(|f| f.name.clone()).collect();
        let recovered = backend.recover(&names)?;
        let next_seq: Vec<Seq> = recovered.iter().map(|r| r.next_seq).collect();
        let flows: Arc<[FlowState]> = flows
            .iter()
            .zip(recovered)
            .map(|(spec, recovered)| FlowState::new(spec.name.clone(), spec.limits, recovered))
            .collect();
        for (index, flow) in flows.iter().enumerate() {
            if flow.messages() > 0 {
                flow.set_head_time(backend.head_time(index)?);
            }
        }
        let stats = Arc::new(CommitStats::default());
        let inbox = Arc::new(Inbox::default());
        let shared = Arc::new(Shared::new(
            backend.clone(),
            flows.clone(),
            stats.clone(),
            next_seq.clone(),
        ));
        let committer = Committer::new(
            shared,
            next_seq,
            limits,
            clock.clone(),
            pipeline_min_records.map(|min_records| PipelineThreshold {
                min_records,
                min_sync: pipeline_min_sync,
            }),
        );
        let committer = std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn({
                let inbox = inbox.clone();
                move || committer.run(inbox)
            })
            .map_err(|err| {
                StorageError::CommitFailed(format!("cannot start the commit thread: {err}"))
            })?;
        Ok(Self {
            backend,
            flows,
            inbox,
            committer: Some(committer),
            stats,
            clock,
            limits,
        })
    }

    /// Appends records to one or more queues atomically. The returned ticket
    /// resolves to each entry's sequence once the append is committed
    /// (flushed in disk mode). Tickets resolve in the order of the calls.
    /// A limit refuses the whole append with
    /// [`StorageError::QuotaExceeded`] (see [`crate::limits`]).
    ///
    /// In disk mode the CRC32C of each record's data is computed here, on
    /// the caller's thread, so that the commit thread only extends it over
    /// each frame's header (frame version 5, [`crate::record`]).
    pub fn append(&self, entries: Vec<AppendEntry>) -> CommitTicket {
        if let Some(bad) = entries.iter().find(|e| e.flow >= self.flows.len()) {
            return CommitTicket::ready(Err(StorageError::UnknownFlow(bad.flow)));
        }
        let hash = self.backend.is_durable();
        let (reply, receiver) = oneshot::channel();
        let request = CommitRequest {
            entries: Entries::new(entries, hash),
            reply,
            queued_ns: crate::clock::monotonic_ns(),
        };
        match self.inbox.push(request) {
            Ok(()) => CommitTicket {
                receiver: Some(receiver),
                ready: None,
            },
            _ => CommitTicket::ready(Err(StorageError::CommitterStopped)),
        }
    }

    /// Resolves once the commit thread has taken an empty append and
    /// released it in order after the groups before it: proof that commits
    /// still progress (the systemd watchdog asks this). It writes and
    /// flushes nothing, and is not counted as a commit.
    pub fn ping(&self) -> CommitTicket {
        self.append(Vec::new())
    }

    /// The queue of flow `index`.
    pub fn queue(&self, index: FlowIndex) -> Option<FlowQueue> {
        (index < self.flows.len()).then(|| {
            FlowQueue::new(
                index,
                self.backend.clone(),
                self.flows.clone(),
                self.clock.clone(),
            )
        })
    }

    /// Every flow's queue, in index order.
    pub fn queues(&self) -> Vec<FlowQueue> {
        (0..self.flows.len())
            .filter_map(|index| self.queue(index))
            .collect()
    }

    /// Whether appends survive a crash.
    pub fn is_durable(&self) -> bool {
        self.backend.is_durable()
    }

    pub fn commit_stats(&self) -> CommitSnapshot {
        self.stats.snapshot()
    }

    /// Bytes the queues take on disk (disk mode), for space accounting.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.backend.disk_bytes()
    }

    /// Waits until the space freed by acknowledgements so far is given back
    /// (disk mode deletes acknowledged segments on a thread of its own,
    /// right after the acknowledgement; blocking: call from
    /// `spawn_blocking` in async code).
    pub fn settle(&self) {
        self.backend.settle();
    }

    /// Fsyncs and bytes written (disk mode), for metrics.
    pub fn io_stats(&self) -> Option<crate::backend::IoStats> {
        self.backend.io_stats()
    }

    /// Bytes free on the store's filesystem (disk mode, `statvfs`).
    pub fn free_bytes(&self) -> Option<u64> {
        self.backend.free_bytes()
    }

    /// The store-wide limits it was opened with.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }
}

impl Drop for QueueStore {
    /// Finishes the commits in progress and releases the files, so the same
    /// directory can be opened again right away.
    fn drop(&mut self) {
        self.inbox.close();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// Resolves when an append is committed; see [`QueueStore::append`].
#[must_use = "an append is only durable once its ticket resolves"]
pub struct CommitTicket {
    receiver: Option<oneshot::Receiver<Reply>>,
    ready: Option<Result<Vec<Seq>, StorageError>>,
}

impl CommitTicket {
    /// A ticket that is already resolved.
    pub fn ready(result: Result<Vec<Seq>, StorageError>) -> Self {
        Self {
            receiver: None,
            ready: Some(result),
        }
    }
}

impl Future for CommitTicket {
    type Output = Result<Vec<Seq>, StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.ready.take() {
            return Poll::Ready(result);
        }
        match self.receiver.as_mut() {
            Some(receiver) => Pin::new(receiver).poll(cx).map(|r| match r {
                Ok(reply) => reply.map(Vec::from),
                Err(_) => Err(StorageError::CommitterStopped),
            }),
            None => Poll::Ready(Err(StorageError::CommitterStopped)),
        }
    }
}
