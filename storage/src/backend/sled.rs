use std::path::Path;
use std::sync::RwLock;

use sled::{Batch, Db, Tree};
use tracing::warn;

use super::{Backend, DropUntil, PendingRecord, ReadOutcome, Recovered, Removed};
use crate::{record, FlowIndex, QueuedRecord, Seq, StorageError};

const RECORD_PREFIX: u8 = 0x01;
const NEXT_SEQ_PREFIX: u8 = 0x02;

/// Queues on disk in sled (see the module docs for the key layout).
pub struct SledBackend {
    db: Db,
    queue: Tree,
    flow_ids: Tree,
    quarantine: Tree,
    /// Flow index -> persistent flow id, filled by `recover`.
    ids: RwLock<Vec<u32>>,
}

fn record_key(id: u32, seq: Seq) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[0] = RECORD_PREFIX;
    key[1..5].copy_from_slice(&id.to_be_bytes());
    key[5..13].copy_from_slice(&seq.to_be_bytes());
    key
}

fn next_seq_key(id: u32) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[0] = NEXT_SEQ_PREFIX;
    key[1..5].copy_from_slice(&id.to_be_bytes());
    key
}

fn seq_of(key: &[u8]) -> Seq {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&key[5..13]);
    Seq::from_be_bytes(seq)
}

fn be_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

impl SledBackend {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let open_error = |source| StorageError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(open_error)?;
        let queue = db.open_tree("queue").map_err(open_error)?;
        let flow_ids = db.open_tree("flow_ids").map_err(open_error)?;
        let quarantine = db.open_tree("quarantine").map_err(open_error)?;
        Ok(Self {
            db,
            queue,
            flow_ids,
            quarantine,
            ids: RwLock::new(Vec::new()),
        })
    }

    fn id(&self, flow: FlowIndex) -> Result<u32, StorageError> {
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        ids.get(flow)
            .copied()
            .ok_or(StorageError::UnknownFlow(flow))
    }

    fn flow_id(&self, name: &str) -> Result<u32, StorageError> {
        if let Some(id) = self.flow_ids.get(name.as_bytes())? {
            if let Ok(bytes) = <[u8; 4]>::try_from(id.as_ref()) {
                return Ok(u32::from_be_bytes(bytes));
            }
        }
        let id = u32::try_from(self.flow_ids.len()).unwrap_or(u32::MAX);
        self.flow_ids.insert(name.as_bytes(), &id.to_be_bytes())?;
        Ok(id)
    }

    fn recover_flow(&self, id: u32) -> Result<Recovered, StorageError> {
        let mut recovered = Recovered {
            next_seq: 1,
            ..Recovered::default()
        };
        if let Some(next) = self.queue.get(next_seq_key(id))? {
            recovered.next_seq = be_u64(&next).unwrap_or(1).max(1);
        }
        for entry in self
            .queue
            .range(record_key(id, 0)..=record_key(id, Seq::MAX))
        {
            let (key, value) = entry?;
            recovered.messages += 1;
            recovered.bytes += value.len().saturating_sub(5) as u64;
            recovered.next_seq = recovered.next_seq.max(seq_of(&key) + 1);
        }
        Ok(recovered)
    }

    fn quarantine(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.quarantine.insert(key, value)?;
        self.queue.remove(key)?;
        Ok(())
    }
}

impl Backend for SledBackend {
    fn recover(&self, flows: &[String]) -> Result<Vec<Recovered>, StorageError> {
        let ids = flows
            .iter()
            .map(|name| self.flow_id(name))
            .collect::<Result<Vec<_>, _>>()?;
        self.db.flush()?;
        let recovered = ids
            .iter()
            .map(|id| self.recover_flow(*id))
            .collect::<Result<Vec<_>, _>>()?;
        *self.ids.write().unwrap_or_else(|p| p.into_inner()) = ids;
        Ok(recovered)
    }

    fn commit(
        &self,
        records: &[PendingRecord],
        next_seqs: &[(FlowIndex, Seq)],
    ) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for r in records {
            batch.insert(
                &record_key(self.id(r.flow)?, r.seq),
                &*record::encode(&r.data),
            );
        }
        for (flow, next) in next_seqs {
            batch.insert(&next_seq_key(self.id(*flow)?), &next.to_be_bytes());
        }
        self.queue.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn read(
        &self,
        flow: FlowIndex,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<ReadOutcome, StorageError> {
        let id = self.id(flow)?;
        let mut outcome = ReadOutcome::default();
        let mut bytes = 0usize;
        for entry in self
            .queue
            .range(record_key(id, from)..=record_key(id, Seq::MAX))
        {
            let (key, value) = entry?;
            match record::decode(&value) {
                Ok(data) => {
                    if !outcome.records.is_empty() && bytes + data.len() > max_bytes {
                        break;
                    }
                    bytes += data.len();
                    // Version-1 framing keeps no append time.
                    outcome
                        .records
                        .push(QueuedRecord::new(seq_of(&key), data, 0));
                }
                Err(err) => {
                    warn!(flow, seq = seq_of(&key), %err, "quarantining a corrupt queue record");
                    self.quarantine(&key, &value)?;
                    outcome.quarantined += 1;
                    outcome.quarantined_bytes += value.len().saturating_sub(5) as u64;
                }
            }
            if outcome.records.len() >= max_count {
                break;
            }
        }
        Ok(outcome)
    }

    fn ack(&self, flow: FlowIndex, upto: Seq) -> Result<Removed, StorageError> {
        let id = self.id(flow)?;
        let mut batch = Batch::default();
        let mut removed = Removed::default();
        for entry in self.queue.range(record_key(id, 0)..=record_key(id, upto)) {
            let (key, value) = entry?;
            removed.messages += 1;
            removed.bytes += value.len().saturating_sub(5) as u64;
            batch.remove(key);
        }
        if removed.messages > 0 {
            removed.through = upto;
        }
        self.queue.apply_batch(batch)?;
        Ok(removed)
    }

    /// Overflow drops oldest first; expiry drops nothing (version-1 records
    /// keep no append time).
    fn drop_head(&self, flow: FlowIndex, until: DropUntil) -> Result<Removed, StorageError> {
        let DropUntil::Removed { messages, bytes } = until else {
            return Ok(Removed::default());
        };
        let id = self.id(flow)?;
        let mut batch = Batch::default();
        let mut removed = Removed::default();
        for entry in self
            .queue
            .range(record_key(id, 0)..=record_key(id, Seq::MAX))
        {
            if removed.messages >= messages && removed.bytes >= bytes {
                break;
            }
            let (key, value) = entry?;
            removed.through = seq_of(&key);
            removed.messages += 1;
            removed.bytes += value.len().saturating_sub(5) as u64;
            batch.remove(key);
        }
        self.queue.apply_batch(batch)?;
        Ok(removed)
    }

    fn head_time(&self, _flow: FlowIndex) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }

    fn is_durable(&self) -> bool {
        true
    }
}

/// Overwrites a stored record's bytes, for corruption tests.
#[cfg(test)]
pub(crate) fn overwrite_record(backend: &SledBackend, flow: FlowIndex, seq: Seq, value: &[u8]) {
    let id = backend.id(flow).expect("flow registered");
    backend
        .queue
        .insert(record_key(id, seq), value)
        .expect("overwrite");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_records_are_quarantined_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        backend.recover(&["a".to_string()]).unwrap();
        let records: Vec<PendingRecord> = (1..=3)
            .map(|seq| PendingRecord {
                flow: 0,
                seq,
                time_ms: 1_700_000_000_000,
                data: bytes::Bytes::from(format!("r{seq}")),
            })
            .collect();
        backend.commit(&records, &[(0, 4)]).unwrap();
        overwrite_record(&backend, 0, 2, b"\x01garbage");

        let outcome = backend.read(0, 1, 10, usize::MAX).unwrap();
        let seqs: Vec<Seq> = outcome.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(outcome.quarantined, 1);
        assert_eq!(backend.quarantine.len(), 1);
        let again = backend.read(0, 1, 10, usize::MAX).unwrap();
        assert_eq!(
            again.quarantined, 0,
            "quarantined once, then gone from the queue"
        );
        assert_eq!(backend.recover(&["a".to_string()]).unwrap()[0].messages, 2);
    }
}
