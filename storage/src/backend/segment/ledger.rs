//! The ledger: a flow's acknowledgement checkpoint.
//!
//! Acknowledging must be cheap (a flow acknowledges every batch), and it
//! must never rewrite queue data. The ledger is one small file with two
//! fixed 32-byte slots, `[magic "BHL1"][generation u64][acked u64]
//! [reserved u32][crc32c u32]`, written alternately in place. A torn write
//! can only damage the slot being written, so the other one still holds the
//! previous checkpoint; recovery takes the valid slot with the higher
//! generation.
//!
//! A checkpoint is written to the page cache on every acknowledgement (so a
//! killed process loses nothing) and synced at most once per
//! [`SYNC_INTERVAL`] and when the store closes, so a power cut re-delivers at
//! most the acknowledgements of about that long: at-least-once, never loss.
//! The periodic sync is not done by the acknowledgement itself: the first
//! acknowledgement after the interval asks the reclaim thread
//! (`reclaimer.rs`) for it, so that a replay never waits for the disk (one
//! `fdatasync` takes 4-12 ms on the reference VM in its slow state, and
//! hundreds of ms while other writers fill the journal).
//! Losing a checkpoint is safe because segments are only deleted after their
//! records are acknowledged, and recovery treats every sequence below the
//! first remaining segment as acknowledged.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{Fs, FsFile};
use crate::Seq;

const MAGIC: &[u8; 4] = b"BHL1";
const SLOT: usize = 32;

/// How often, at most, an acknowledgement also syncs the ledger.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A flow's acknowledgement checkpoint file.
pub(crate) struct Ledger {
    file: Arc<dyn FsFile>,
    generation: u64,
    acked: Seq,
    dirty: bool,
    last_sync: Instant,
}

fn encode(generation: u64, acked: Seq) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..4].copy_from_slice(MAGIC);
    slot[4..12].copy_from_slice(&generation.to_le_bytes());
    slot[12..20].copy_from_slice(&acked.to_le_bytes());
    let crc = crc32c::crc32c(&slot[..24]);
    slot[24..28].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<(u64, Seq)> {
    if slot.len() < SLOT || &slot[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(slot[24..28].try_into().ok()?);
    if crc != crc32c::crc32c(&slot[..24]) {
        return None;
    }
    let generation = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    let acked = u64::from_le_bytes(slot[12..20].try_into().ok()?);
    Some((generation, acked))
}

impl Ledger {
    /// Opens the ledger at `path`, creating it if absent (the caller syncs
    /// the directory). Returns it with the last checkpointed acknowledgement
    /// (0: nothing acknowledged, or both slots unreadable).
    pub(crate) fn open(fs: &dyn Fs, path: &Path) -> io::Result<Self> {
        let file: Arc<dyn FsFile> = if fs.exists(path) {
            Arc::from(fs.open(path)?)
        } else {
            Arc::from(fs.create(path)?)
        };
        let mut buf = [0u8; 2 * SLOT];
        let n = file.read_full_at(&mut buf, 0)?;
        let best = [decode(&buf[..n.min(SLOT)]), decode(&buf[SLOT.min(n)..n])]
            .into_iter()
            .flatten()
            .max_by_key(|(generation, _)| *generation);
        let (generation, acked) = best.unwrap_or((0, 0));
        if n < 2 * SLOT {
            // Give the file its full size now, so that checkpoints are
            // overwrites in place and never need space: acknowledging must
            // keep working on a full disk, since it is what frees space.
            let mut init = [0u8; 2 * SLOT];
            init[..SLOT].copy_from_slice(&encode(generation, acked));
            init[SLOT..].copy_from_slice(&encode(generation, acked));
            file.write_all_at(&init, 0)?;
            file.sync_data()?;
        }
        Ok(Self {
            file,
            generation,
            acked,
            dirty: false,
            last_sync: Instant::now(),
        })
    }

    /// The last recorded acknowledgement.
    pub(crate) fn acked(&self) -> Seq {
        self.acked
    }

    /// The file and the last recorded acknowledgement: once the file is
    /// synced (by anyone, later), that checkpoint or a newer one is durable
    /// (a later write goes to the other slot, or overwrites this one with a
    /// newer generation).
    pub(crate) fn recorded(&self) -> (Arc<dyn FsFile>, Seq) {
        (self.file.clone(), self.acked)
    }

    /// Records that every sequence `<= acked` is acknowledged.
    pub(crate) fn record(&mut self, acked: Seq) -> io::Result<()> {
        let generation = self.generation + 1;
        let offset = (generation % 2) * SLOT as u64;
        self.file.write_all_at(&encode(generation, acked), offset)?;
        self.generation = generation;
        self.acked = acked;
        self.dirty = true;
        Ok(())
    }

    /// Whether the last checkpoint is not durable and the last sync is
    /// [`SYNC_INTERVAL`] ago.
    pub(crate) fn sync_due(&self) -> bool {
        self.dirty && self.last_sync.elapsed() >= SYNC_INTERVAL
    }

    /// The generation of the last recorded checkpoint: pass it to
    /// [`Ledger::synced`] after syncing the file from
    /// [`Ledger::recorded`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The file was synced (the sync started at `started`) after checkpoint
    /// `generation` was recorded: that one is durable, later ones not yet.
    pub(crate) fn synced(&mut self, generation: u64, started: Instant) {
        if generation == self.generation {
            self.dirty = false;
        }
        self.last_sync = self.last_sync.max(started);
    }

    /// Makes the last checkpoint durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::io::ModelFs;
    use super::*;

    #[test]
    fn survives_a_torn_slot() {
        let fs = ModelFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let path = dir.join("ledger");
        let mut ledger = Ledger::open(&fs, &path).unwrap();
        assert_eq!(ledger.acked(), 0);
        ledger.record(5).unwrap();
        ledger.record(9).unwrap();
        assert_eq!(Ledger::open(&fs, &path).unwrap().acked(), 9);
        // Tear the slot of generation 2 (acked 9): generation 1 remains.
        fs.modify(&path, |data| data[0] ^= 0xff);
        assert_eq!(Ledger::open(&fs, &path).unwrap().acked(), 5);
        fs.modify(&path, |data| data.truncate(0));
        assert_eq!(Ledger::open(&fs, &path).unwrap().acked(), 0);
    }
}
