//! File I/O of the segment log, behind two small traits so the engine can run
//! on the real filesystem ([`RealFs`]) or on a model of one ([`ModelFs`])
//! that tests use to inject the faults a real disk produces rarely and at
//! random: a full disk (`ENOSPC`, with the short write before it), failing
//! `fdatasync`, and a crash that keeps only what was synced plus a torn
//! piece of what was not.
//!
//! The traits are positional (`read_at`/`write_at`) rather than cursor based
//! because a segment has one writer and several readers at different offsets,
//! and `pread`/`pwrite` let them share nothing but the file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// `ENOSPC`: what a full filesystem returns.
pub const ENOSPC: i32 = libc::ENOSPC;

/// Whether `err` means "no space left", which the engine treats as a
/// transient condition (refuse the append, keep going) rather than a fault.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
}

/// One open file.
pub trait FsFile: Send + Sync {
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads at `offset`; fewer bytes than asked only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes at `offset`; may write fewer bytes than given (short write).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// `fdatasync`: the data and the size are durable when this returns.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates (or extends) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`, retrying short writes; the error of
    /// the write that failed (for example `ENOSPC` after a short write).
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Reads until `buf` is full or the file ends; the number of bytes read.
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(done)
    }
}

/// A directory tree of files.
pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files and directories).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Creates a file (truncating an existing one), open for read and write.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for read and write.
    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `fsync` of a directory: makes created, renamed and removed entries
    /// durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Takes an exclusive lock on the store directory for as long as the
    /// returned guard lives, so two processes never write one log.
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>>;
    /// Bytes available to an unprivileged writer on the filesystem holding
    /// `path` (`statvfs`: `f_bavail * f_frsize`); `None` if unknown.
    fn free_bytes(&self, _path: &Path) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl FsFile for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        FileExt::write_at(self, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// An advisory `flock` held for the life of the store.
struct DirLock(#[allow(dead_code)] File);

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(file))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(
            OpenOptions::new().read(true).write(true).open(path)?,
        ))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        use std::os::unix::io::AsRawFd;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join("LOCK"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!("{} is in use by another process: {err}", path.display()),
            ));
        }
        Ok(Box::new(DirLock(file)))
    }
    fn free_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: statvfs writes into the zeroed struct it is given and
        // reads the NUL-terminated path; both outlive the call.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let free = u64::from(stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64);
        Ok(Some(free))
    }
}

/// Faults [`ModelFs`] injects.
#[derive(Debug, Default, Clone)]
struct Faults {
    /// Total bytes the filesystem holds; writes past it are short, then
    /// fail with `ENOSPC`.
    capacity: Option<u64>,
    /// This many next `fdatasync` calls (files or directories) fail with `EIO`.
    failing_syncs: u32,
    /// What `free_bytes` reports, whatever is stored (a filesystem shared
    /// with other writers).
    free_space: Option<u64>,
}

#[derive(Debug, Default)]
struct ModelFile {
    data: Vec<u8>,
    /// The content a crash keeps: `data` as of the last `sync_data`.
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct ModelState {
    files: BTreeMap<PathBuf, Arc<Mutex<ModelFile>>>,
    dirs: std::collections::BTreeSet<PathBuf>,
    faults: Faults,
    syncs: u64,
}

impl ModelState {
    fn used(&self) -> u64 {
        self.files.values().map(|f| lock(f).data.len() as u64).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-memory filesystem for tests, with fault injection and crash
/// simulation. Cloning shares the same tree.
#[derive(Debug, Default, Clone)]
pub struct ModelFs {
    state: Arc<Mutex<ModelState>>,
}

struct ModelHandle {
    fs: ModelFs,
    file: Arc<Mutex<ModelFile>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl ModelFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits the total bytes stored (`None`: unlimited).
    pub fn set_capacity(&self, capacity: Option<u64>) {
        lock(&self.state).faults.capacity = capacity;
    }

    /// Makes `free_bytes` report `free` (as if other writers shared the
    /// filesystem); `None` goes back to `capacity - used`.
    pub fn set_free_space(&self, free: Option<u64>) {
        lock(&self.state).faults.free_space = free;
    }

    /// Bytes stored in all files.
    pub fn used(&self) -> u64 {
        lock(&self.state).used()
    }

    /// Makes the next `count` syncs fail with `EIO`.
    pub fn fail_next_syncs(&self, count: u32) {
        lock(&self.state).faults.failing_syncs = count;
    }

    /// Successful `fdatasync`/directory syncs so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// The state after a power cut: every file keeps what was synced, plus
    /// the first `torn(unsynced_len)` bytes of what was written after it
    /// (a torn tail). Faults are cleared.
    pub fn crash(&self, torn: impl Fn(usize) -> usize) -> ModelFs {
        let state = lock(&self.state);
        let mut files = BTreeMap::new();
        for (path, file) in &state.files {
            let file = lock(file);
            let mut data = file.durable.clone();
            if file.data.len() > data.len() && file.data.starts_with(&data) {
                let extra = &file.data[data.len()..];
                data.extend_from_slice(&extra[..torn(extra.len()).min(extra.len())]);
            }
            files.insert(
                path.clone(),
                Arc::new(Mutex::new(ModelFile {
                    durable: data.clone(),
                    data,
                })),
            );
        }
        ModelFs {
            state: Arc::new(Mutex::new(ModelState {
                files,
                dirs: state.dirs.clone(),
                faults: Faults::default(),
                syncs: 0,
            })),
        }
    }

    /// Paths of all files, for assertions.
    pub fn files(&self) -> Vec<PathBuf> {
        lock(&self.state).files.keys().cloned().collect()
    }

    /// Runs `f` on a file's bytes (to corrupt it in tests); false if absent.
    pub fn modify(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let state = lock(&self.state);
        let Some(file) = state.files.get(path) else {
            return false;
        };
        let mut file = lock(file);
        f(&mut file.data);
        file.durable = file.data.clone();
        true
    }

    fn take_sync_fault(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        if state.faults.failing_syncs > 0 {
            state.faults.failing_syncs -= 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        state.syncs += 1;
        Ok(())
    }
}

impl FsFile for ModelHandle {
    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.file).data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let file = lock(&self.file);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        let n = buf.len().min(file.data.len() - start);
        buf[..n].copy_from_slice(&file.data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let state = lock(&self.fs.state);
        let used = state.used();
        let mut file = lock(&self.file);
        let offset =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = offset + buf.len();
        let growth = end.saturating_sub(file.data.len()) as u64;
        let mut n = buf.len();
        if let Some(capacity) = state.faults.capacity {
            let free = capacity.saturating_sub(used);
            if growth > free {
                // Short write up to the last free byte, then ENOSPC.
                let allowed = (file.data.len() as u64 + free).saturating_sub(offset as u64);
                n = usize::try_from(allowed).unwrap_or(0).min(buf.len());
                if n == 0 {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
            }
        }
        if file.data.len() < offset + n {
            file.data.resize(offset + n, 0);
        }
        file.data[offset..offset + n].copy_from_slice(&buf[..n]);
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.take_sync_fault()?;
        let mut file = lock(&self.file);
        file.durable = file.data.clone();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut file = lock(&self.file);
        file.data.resize(len, 0);
        if file.durable.len() > len {
            // A truncation reaches the disk with the next sync at the
            // latest; model it as immediate, the conservative choice for
            // readers of the crash image.
            file.durable.truncate(len);
        }
        Ok(())
    }
}

impl Fs for ModelFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.state);
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        let files = state.files.keys();
        let dirs = state.dirs.iter();
        Ok(files
            .chain(dirs)
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut state = lock(&self.state);
        if !path.parent().is_some_and(|p| state.dirs.contains(p)) {
            return Err(not_found(path));
        }
        let file = Arc::new(Mutex::new(ModelFile::default()));
        state.files.insert(path.to_path_buf(), file.clone());
        Ok(Box::new(ModelHandle {
            fs: self.clone(),
            file,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let state = lock(&self.state);
        let file = state
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        Ok(Box::new(ModelHandle {
            fs: self.clone(),
            file,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        let file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        self.take_sync_fault()
    }

    fn exists(&self, path: &Path) -> bool {
        let state = lock(&self.state);
        state.files.contains_key(path) || state.dirs.contains(path)
    }

    fn lock_dir(&self, _path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        Ok(Box::new(()))
    }

    /// `capacity - used` under a capacity (or the free space set with
    /// [`ModelFs::set_free_space`]); `None` when neither is set.
    fn free_bytes(&self, _path: &Path) -> io::Result<Option<u64>> {
        let state = lock(&self.state);
        if let Some(free) = state.faults.free_space {
            return Ok(Some(free));
        }
        Ok(state
            .faults
            .capacity
            .map(|capacity| capacity.saturating_sub(state.used())))
    }
}
