use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Backend, PendingRecord, ReadOutcome, Recovered, Removed};
use crate::{FlowIndex, QueuedRecord, Seq, StorageError};

/// Queues in RAM: same interface and ordering as the disk backend, lost on
/// restart.
#[derive(Default)]
pub struct MemoryBackend {
    flows: Mutex<Vec<VecDeque<(Seq, Bytes)>>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_flow<T>(
        &self,
        flow: FlowIndex,
        f: impl FnOnce(&mut VecDeque<(Seq, Bytes)>) -> T,
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
            flows[record.flow].push_back((record.seq, record.data.clone()));
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
            let start = queue.partition_point(|(seq, _)| *seq < from);
            let mut outcome = ReadOutcome::default();
            let mut bytes = 0usize;
            for (seq, data) in queue.iter().skip(start).take(max_count) {
                if !outcome.records.is_empty() && bytes + data.len() > max_bytes {
                    break;
                }
                bytes += data.len();
                outcome.records.push(QueuedRecord {
                    seq: *seq,
                    data: data.clone(),
                });
            }
            outcome
        })
    }

    fn ack(&self, flow: FlowIndex, upto: Seq) -> Result<Removed, StorageError> {
        self.with_flow(flow, |queue| {
            let mut removed = Removed::default();
            while queue.front().is_some_and(|(seq, _)| *seq <= upto) {
                if let Some((_, data)) = queue.pop_front() {
                    removed.messages += 1;
                    removed.bytes += data.len() as u64;
                }
            }
            removed
        })
    }

    fn is_durable(&self) -> bool {
        false
    }
}
