//! The writing end of a flow's log: the newest segment, appended to by the
//! group-commit thread only.
//!
//! A group is staged in memory, written with one positional write, and made
//! durable with one `fdatasync` of the segment. Until that sync succeeds the
//! committed length does not move, readers do not see the bytes, and a
//! failure (a full disk, a short write, a failed sync) truncates the file
//! back to the committed length, so a failed group leaves no trace that a
//! later group could be confused with.

use std::io;
use std::path::{Path, PathBuf};

use super::io::{Fs, FsFile};
use super::{encode_header, segment_path, time_base_for, HEADER_LEN};
use crate::record::encode_frame;
use crate::Seq;

/// The segment being appended to.
pub(crate) struct Active {
    pub(crate) base: Seq,
    /// The time base of its frames (ms since the epoch; 0: an earlier
    /// build's segment, never appended to).
    pub(crate) time_base: u64,
    file: Box<dyn FsFile>,
    /// Committed (written and synced) bytes.
    pub(crate) len: u64,
    /// Whether a failed group may have left bytes past `len` that a
    /// truncation could not yet remove.
    dirty_tail: bool,
}

/// A flow's writer.
pub(crate) struct Writer {
    dir: PathBuf,
    pub(crate) active: Option<Active>,
    staged: Vec<u8>,
    pub(crate) staged_records: u64,
    pub(crate) staged_bytes: u64,
}

impl Writer {
    pub(crate) fn new(dir: PathBuf, active: Option<Active>) -> Self {
        Self {
            dir,
            active,
            staged: Vec::new(),
            staged_records: 0,
            staged_bytes: 0,
        }
    }

    /// Opens an existing segment to append after its first `len` bytes.
    pub(crate) fn resume(
        fs: &dyn Fs,
        path: &Path,
        base: Seq,
        time_base: u64,
        len: u64,
    ) -> io::Result<Active> {
        Ok(Active {
            base,
            time_base,
            file: fs.open(path)?,
            len,
            dirty_tail: false,
        })
    }

    /// Whether the next group (sequences `first..=last`, appended at
    /// `time`) must start a new segment first.
    pub(crate) fn needs_roll(
        &self,
        max_segment_bytes: u64,
        first: Seq,
        last: Seq,
        time: u64,
    ) -> bool {
        match &self.active {
            Some(active) => {
                (active.len >= max_segment_bytes && active.len > HEADER_LEN as u64)
                    || first < active.base
                    || last - active.base >= u64::from(u32::MAX)
                    || active.time_base == 0
                    || time.saturating_sub(active.time_base) > u64::from(u32::MAX)
            }
            None => true,
        }
    }

    /// Starts segment `base` (after segment `prev`) at time `now` (ms since
    /// the epoch): writes its header, syncs it and the directory, and makes
    /// it the active segment. The old active segment needs nothing: every
    /// group was synced when committed. Returns the new segment's time base.
    pub(crate) fn roll(&mut self, fs: &dyn Fs, base: Seq, prev: Seq, now: u64) -> io::Result<u64> {
        let path = segment_path(&self.dir, base);
        let time_base = time_base_for(now);
        let created = (|| {
            let file = fs.create(&path)?;
            file.write_all_at(&encode_header(base, prev, time_base), 0)?;
            file.sync_data()?;
            fs.sync_dir(&self.dir)?;
            Ok(file)
        })();
        match created {
            Ok(file) => {
                self.active = Some(Active {
                    base,
                    time_base,
                    file,
                    len: HEADER_LEN as u64,
                    dirty_tail: false,
                });
                Ok(time_base)
            }
            Err(err) => {
                // Leave no half-made segment behind; if even this fails,
                // recovery treats a headerless newest segment as torn.
                let _ = fs.remove_file(&path);
                Err(err)
            }
        }
    }

    /// Stages one record of the next group, appended at `time` (ms since
    /// the epoch).
    pub(crate) fn stage(&mut self, seq: Seq, time: u64, data: &[u8]) {
        let (base, time_base) = self
            .active
            .as_ref()
            .map_or((seq, time), |active| (active.base, active.time_base));
        // `needs_roll` keeps a segment under 2^32 records and its time
        // deltas under 2^32 ms, so these fit. A clock that went back is
        // clamped to the time base: the record looks younger, never older.
        let delta = u32::try_from(seq - base).unwrap_or(u32::MAX);
        let time_delta = u32::try_from(time.saturating_sub(time_base)).unwrap_or(u32::MAX);
        encode_frame(delta, time_delta, data, &mut self.staged);
        self.staged_records += 1;
        self.staged_bytes += data.len() as u64;
    }

    /// Bytes staged for the next group.
    pub(crate) fn staged_len(&self) -> u64 {
        self.staged.len() as u64
    }

    /// Writes the staged group after the committed bytes (not yet synced).
    pub(crate) fn write(&mut self) -> io::Result<()> {
        let active = self.active.as_mut().ok_or_else(no_segment)?;
        if active.dirty_tail {
            active.file.set_len(active.len)?;
            active.dirty_tail = false;
        }
        active.file.write_all_at(&self.staged, active.len)
    }

    /// Makes the written group durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.active
            .as_ref()
            .ok_or_else(no_segment)?
            .file
            .sync_data()
    }

    /// The group is durable: moves the committed length past it. Returns the
    /// new committed length.
    pub(crate) fn finish(&mut self) -> u64 {
        let len = self.staged.len() as u64;
        self.clear_staged();
        match self.active.as_mut() {
            Some(active) => {
                active.len += len;
                active.len
            }
            None => 0,
        }
    }

    /// The group failed (here or in another flow of the same group): drops
    /// it and cuts the file back to the committed length.
    pub(crate) fn rollback(&mut self) {
        self.clear_staged();
        if let Some(active) = self.active.as_mut() {
            if active.file.set_len(active.len).is_err() {
                active.dirty_tail = true;
            }
        }
    }

    fn clear_staged(&mut self) {
        self.staged.clear();
        self.staged_records = 0;
        self.staged_bytes = 0;
    }

    /// Syncs the active segment (on close).
    pub(crate) fn close(&mut self) -> io::Result<()> {
        match &self.active {
            Some(active) => active.file.sync_data(),
            None => Ok(()),
        }
    }
}

fn no_segment() -> io::Error {
    io::Error::other("no active segment")
}
