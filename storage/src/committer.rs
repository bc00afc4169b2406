//! The group-commit thread.
//!
//! Publishers hand their appends to one thread through a channel. The thread
//! takes whatever is waiting (up to [`MAX_GROUP_RECORDS`]), assigns sequence
//! numbers, writes them as one atomic batch, flushes once, and only then
//! releases every waiting publisher. A publish therefore waits for at most
//! one flush in progress plus its own, and a busy broker pays one flush per
//! group rather than per message. The thread is a plain OS thread so a slow
//! disk never stalls the async workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::error;

use crate::backend::{Backend, PendingRecord};
use crate::queue::FlowState;
use crate::store::AppendEntry;
use crate::{FlowIndex, Seq, StorageError};

/// Upper bound of records in one group, so one flush stays short.
pub const MAX_GROUP_RECORDS: usize = 8192;

/// One publisher's append, waiting for its commit.
pub(crate) struct CommitRequest {
    pub(crate) entries: Vec<AppendEntry>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Seq>, StorageError>>,
}

/// Counters of the committer, for metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    commits: AtomicU64,
    records: AtomicU64,
    commit_nanos: AtomicU64,
    failures: AtomicU64,
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
}

impl CommitStats {
    pub fn snapshot(&self) -> CommitSnapshot {
        CommitSnapshot {
            commits: self.commits.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            commit_seconds: self.commit_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Committer {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) flows: Arc<[FlowState]>,
    pub(crate) next_seq: Vec<Seq>,
    pub(crate) stats: Arc<CommitStats>,
}

impl Committer {
    /// Runs until every sender is gone.
    pub(crate) fn run(mut self, requests: Receiver<CommitRequest>) {
        while let Ok(first) = requests.recv() {
            let mut group = vec![first];
            let mut records = group[0].entries.len();
            while records < MAX_GROUP_RECORDS {
                match requests.try_recv() {
                    Ok(request) => {
                        records += request.entries.len();
                        group.push(request);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.commit_group(group, records);
        }
    }

    fn commit_group(&mut self, group: Vec<CommitRequest>, count: usize) {
        let mut next = self.next_seq.clone();
        let mut records = Vec::with_capacity(count);
        let mut seqs_per_request = Vec::with_capacity(group.len());
        for request in &group {
            let mut seqs = Vec::with_capacity(request.entries.len());
            for entry in &request.entries {
                let Some(slot) = next.get_mut(entry.flow) else {
                    continue;
                };
                let seq = *slot;
                *slot += 1;
                seqs.push(seq);
                records.push(PendingRecord {
                    flow: entry.flow,
                    seq,
                    data: entry.data.clone(),
                });
            }
            seqs_per_request.push(seqs);
        }
        let touched: Vec<(FlowIndex, Seq)> = next
            .iter()
            .enumerate()
            .filter(|(flow, seq)| self.next_seq[*flow] != **seq)
            .map(|(flow, seq)| (flow, *seq))
            .collect();

        let started = Instant::now();
        let result = self.backend.commit(&records, &touched);
        self.stats
            .commit_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);

        match result {
            Ok(()) => {
                self.next_seq = next;
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .records
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                self.publish_stats(&records);
                for (request, seqs) in group.into_iter().zip(seqs_per_request) {
                    let _ = request.reply.send(Ok(seqs));
                }
            }
            Err(err) => {
                error!(%err, records = records.len(), "group commit failed; publishers are refused");
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                for request in group {
                    let _ = request.reply.send(Err(err.shared()));
                }
            }
        }
    }

    fn publish_stats(&self, records: &[PendingRecord]) {
        let mut per_flow = vec![(0u64, 0u64); self.flows.len()];
        for record in records {
            per_flow[record.flow].0 += 1;
            per_flow[record.flow].1 += record.data.len() as u64;
        }
        for (state, (messages, bytes)) in self.flows.iter().zip(per_flow) {
            if messages > 0 {
                state.appended(messages, bytes);
            }
        }
    }
}
