//! The writing end of a flow's log: the newest segment, appended to by the
//! group-commit thread only.
//!
//! A group is staged in memory, written with one positional write, and made
//! durable with one `fdatasync` of the segment. Until that sync succeeds the
//! committed length does not move and readers do not see the bytes. With
//! pipelined commits the next group may be written after it (at `written`)
//! while it syncs, so the file holds three parts: committed bytes (`len`),
//! written bytes in flight, then nothing. A failed write truncates back to
//! where that group started; a failed sync truncates back to the committed
//! length (the groups written after the failed one fail too), so a failed
//! group leaves no trace that a later group could be confused with. A
//! segment is only rolled when no group of the flow is in flight.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::io::{Fs, FsFile};
use super::{encode_header, segment_path, time_base_for, HEADER_LEN};
use crate::record::{encode_frame, Framing};
use crate::Seq;

/// The segment being appended to.
pub(crate) struct Active {
    pub(crate) base: Seq,
    /// The time base of its frames (ms since the epoch).
    pub(crate) time_base: u64,
    /// The frame version of its records: a segment of an earlier build's
    /// frames is never appended to.
    pub(crate) framing: Framing,
    pub(crate) file: Arc<dyn FsFile>,
    /// Committed (written and synced) bytes.
    pub(crate) len: u64,
    /// Written bytes (committed ones and groups in flight).
    pub(crate) written: u64,
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
        framing: Framing,
        len: u64,
    ) -> io::Result<Active> {
        Ok(Active {
            base,
            time_base,
            framing,
            file: Arc::from(fs.open(path)?),
            len,
            written: len,
            dirty_tail: false,
        })
    }

    /// Whether the next group (sequences `first..=last`, the last appended
    /// at `time`, at most `group_bytes` of frames) must start a new segment
    /// first: it would take the segment past `max_segment_bytes` (unless
    /// the segment is empty), its sequences or times would not fit the
    /// frames' deltas, or the segment holds an earlier build's frames.
    pub(crate) fn needs_roll(
        &self,
        max_segment_bytes: u64,
        (first, last): (Seq, Seq),
        time: u64,
        group_bytes: u64,
    ) -> bool {
        match &self.active {
            Some(active) => {
                let has_records = active.written > HEADER_LEN as u64;
                (has_records && active.written.saturating_add(group_bytes) > max_segment_bytes)
                    || first < active.base
                    || last - active.base >= u64::from(u32::MAX)
                    || active.framing != Framing::CURRENT
                    || time.saturating_sub(active.time_base) > u64::from(u32::MAX)
            }
            None => true,
        }
    }

    /// Starts segment `base` (after segment `prev`, which holds
    /// `prev_data_bytes` data bytes) at time `now` (ms since the epoch):
    /// writes its header, syncs it and the directory, and makes it the
    /// active segment. The old active segment needs nothing: every group
    /// was synced when committed. Returns the new segment's time base.
    pub(crate) fn roll(
        &mut self,
        fs: &dyn Fs,
        base: Seq,
        (prev, prev_data_bytes): (Seq, u64),
        now: u64,
    ) -> io::Result<u64> {
        let path = segment_path(&self.dir, base);
        let time_base = time_base_for(now);
        let created = (|| {
            let file = fs.create(&path)?;
            file.write_all_at(&encode_header(base, prev, prev_data_bytes, time_base), 0)?;
            file.sync_data()?;
            fs.sync_dir(&self.dir)?;
            Ok(file)
        })();
        match created {
            Ok(file) => {
                self.active = Some(Active {
                    base,
                    time_base,
                    framing: Framing::CURRENT,
                    file: Arc::from(file),
                    len: HEADER_LEN as u64,
                    written: HEADER_LEN as u64,
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
    /// the epoch). `data_crc` is `crc32c(data)` if the publisher computed
    /// it; otherwise it is computed here.
    pub(crate) fn stage(&mut self, seq: Seq, time: u64, data: &[u8], data_crc: Option<u32>) {
        let (base, time_base) = self
            .active
            .as_ref()
            .map_or((seq, time), |active| (active.base, active.time_base));
        // `needs_roll` keeps a segment under 2^32 records and its time
        // deltas under 2^32 ms, so these fit. A clock that went back is
        // clamped to the time base: the record looks younger, never older.
        let delta = u32::try_from(seq - base).unwrap_or(u32::MAX);
        let time_delta = u32::try_from(time.saturating_sub(time_base)).unwrap_or(u32::MAX);
        let data_crc = data_crc.unwrap_or_else(|| crate::crc::crc32c(data));
        debug_assert_eq!(data_crc, crate::crc::crc32c(data), "a wrong data CRC");
        encode_frame(delta, time_delta, data, data_crc, &mut self.staged);
        self.staged_records += 1;
        self.staged_bytes += data.len() as u64;
    }

    /// Whether groups of this flow are written but not yet committed.
    pub(crate) fn in_flight(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.written > a.len)
    }

    /// Writes the staged group after the written bytes (not yet synced) and
    /// clears the stage. Returns the file, the group's start offset and its
    /// end offset. On failure, the file is cut back to where the group
    /// started.
    pub(crate) fn write(&mut self) -> io::Result<(Arc<dyn FsFile>, u64, u64)> {
        let staged_len = self.staged.len() as u64;
        let Some(active) = self.active.as_mut() else {
            self.clear_staged();
            return Err(no_segment());
        };
        let start = active.written;
        let mut result = Ok(());
        if active.dirty_tail {
            result = active.file.set_len(start);
            active.dirty_tail = result.is_err();
        }
        if result.is_ok() {
            result = active.file.write_all_at(&self.staged, start);
        }
        let outcome = match result {
            Ok(()) => {
                active.written = start + staged_len;
                Ok((active.file.clone(), start, active.written))
            }
            Err(err) => {
                if active.file.set_len(start).is_err() {
                    active.dirty_tail = true;
                }
                Err(err)
            }
        };
        self.clear_staged();
        outcome
    }

    /// Cuts the file back to `to` (the start of a group that failed in
    /// another flow).
    pub(crate) fn cut(&mut self, to: u64) {
        if let Some(active) = self.active.as_mut() {
            active.written = to.max(active.len);
            active.dirty_tail = active.file.set_len(active.written).is_err();
        }
    }

    /// A group written up to `end` is durable: moves the committed length.
    pub(crate) fn committed(&mut self, end: u64) {
        if let Some(active) = self.active.as_mut() {
            active.len = active.len.max(end);
        }
    }

    /// Cuts the file back to the committed length (after a failed sync:
    /// every group written after the committed bytes fails).
    pub(crate) fn rollback(&mut self) {
        self.clear_staged();
        if let Some(active) = self.active.as_mut() {
            if active.written > active.len || active.dirty_tail {
                active.written = active.len;
                active.dirty_tail = active.file.set_len(active.len).is_err();
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
