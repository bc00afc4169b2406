use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Backend, DropUntil, PendingRecord, ReadOutcome, Recovered, Removed};
use crate::{FlowIndex, QueuedRecord, Seq, StorageError};

/// One queued record in RAM.
#[derive(Debug, Clone)]
struct Entry {
    seq: Seq,
    time_ms: u64,
    data: Bytes,
}

/// Queues in RAM: same interface, ordering, limits and expiry as the disk
/// backend, lost on restart.
#[derive(Default)]
pub struct MemoryBackend {
    flows: Mutex<Vec<VecDeque<Entry>>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_flow<T>(
        &self,
        flow: FlowIndex,
        f: impl FnOnce(&mut VecDeque<Entry>) -> T,
    ) -> Result<T, StorageError> {
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let queue = flows.get_mut(flow).ok_or(StorageError::UnknownFlow(flow))?;
        Ok(f(queue))
    }
}

impl Backend for MemoryBackend {
    fn recover(&self, flows: &[String]) -> Result<Vec<Recovered>, StorageError> {
        let mut queues = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        queues.resize_with(flows.len(), VecDeque::new);
        Ok(flows
            .iter()
            .map(|_| Recovered {
                next_seq: 1,
                ..Recovered::default()
            })
            .collect())
    }

    fn commit(
        &self,
        records: &[PendingRecord],
        _next_seqs: &[(FlowIndex, Seq)],
    ) -> Result<(), StorageError> {
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bad) = records.iter().find(|r| r.flow >= flows.len()) {
            return Err(StorageError::UnknownFlow(bad.flow));
        }
        for record in records {
            flows[record.flow].push_back(Entry {
                seq: record.seq,
                time_ms: record.time_ms,
                data: record.data.clone(),
            });
        }
        Ok(())
    }

    fn read(
        &self,
        flow: FlowIndex,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<ReadOutcome, StorageError> {
        self.with_flow(flow, |queue| {
            let start = queue.partition_point(|e| e.seq < from);
            let mut outcome = ReadOutcome::default();
            let mut bytes = 0usize;
            for entry in queue.iter().skip(start).take(max_count) {
                if !outcome.records.is_empty() && bytes + entry.data.len() > max_bytes {
                    break;
                }
                bytes += entry.data.len();
                outcome.records.push(QueuedRecord::new(
                    entry.seq,
                    entry.data.clone(),
                    entry.time_ms,
                ));
            }
            outcome
        })
    }

    fn ack(&self, flow: FlowIndex, upto: Seq) -> Result<Removed, StorageError> {
        self.with_flow(flow, |queue| {
            let mut removed = Removed::default();
            while queue.front().is_some_and(|e| e.seq <= upto) {
                if let Some(entry) = queue.pop_front() {
                    removed.messages += 1;
                    removed.bytes += entry.data.len() as u64;
                    removed.through = entry.seq;
                }
            }
            removed
        })
    }

    fn drop_head(&self, flow: FlowIndex, until: DropUntil) -> Result<Removed, StorageError> {
        self.with_flow(flow, |queue| {
            let mut removed = Removed::default();
            if let DropUntil::Expired { from, .. } = until {
                if queue.front().is_some_and(|e| e.seq < from) {
                    return removed;
                }
            }
            while let Some(front) = queue.front() {
                let keep = match until {
                    DropUntil::Removed { messages, bytes } => {
                        removed.messages >= messages && removed.bytes >= bytes
                    }
                    DropUntil::Expired { cutoff_ms, .. } => {
                        front.time_ms == 0 || front.time_ms > cutoff_ms
                    }
                };
                if keep {
                    break;
                }
                if let Some(entry) = queue.pop_front() {
                    removed.messages += 1;
                    removed.bytes += entry.data.len() as u64;
                    removed.through = entry.seq;
                }
            }
            removed
        })
    }

    fn head_time(&self, flow: FlowIndex) -> Result<Option<u64>, StorageError> {
        self.with_flow(flow, |queue| {
            queue.front().map(|e| e.time_ms).filter(|time| *time != 0)
        })
    }

    fn is_durable(&self) -> bool {
        false
    }
}
