//! The reclaim thread: deletes acknowledged segments off the acknowledging
//! path.
//!
//! A segment may only be deleted once the checkpoint covering it is synced
//! (see the module docs), and on this project's VM one `fdatasync` takes
//! 0.2 ms in the disk's fast state and 3.5-8 ms in its slow one. Done
//! inline, that sync stalled the acknowledgement that crossed a segment
//! boundary: about 50 of them per million 200-byte records replayed, a
//! third of the replay time in the slow state. Here the acknowledgement
//! only asks, and one thread per store syncs and deletes, while the flow
//! reads and acknowledges on. The same thread does the ledger's periodic
//! sync (`ledger.rs`), so no acknowledgement ever waits for `fdatasync`
//! unless this thread falls far behind. Requests for a flow already queued
//! are merged; dropping the store finishes the queued ones first. If the
//! thread falls [`MAX_WAITING`] segments behind, the acknowledgement
//! deletes them itself, so acknowledged data on disk stays within about
//! that many segments per flow.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::warn;

use super::flow::FlowLog;

/// Acknowledged segments a flow may keep waiting for the thread before an
/// acknowledgement deletes them itself (16 MiB of 4 MiB segments). The
/// thread deletes every waiting segment after one sync, so it keeps up as
/// long as a sync plus the unlinks take less than a replay takes to read
/// the segments: in the reference VM's slow state (syncs of 4-12 ms,
/// unlinks of 1-2 ms) that leaves it 2-3 segments behind at 2M records/s,
/// so a bound of 2 made acknowledgements sync and delete inline, stalling
/// the replay for a sync each time without making the disk faster. 4
/// leaves the thread that room; mid-replay space amplification of a
/// 200 MB backlog stays under about 1.2 (measured in `BENCHMARKS.md`).
const MAX_WAITING: usize = 4;

enum Job {
    Reclaim(Arc<FlowLog>),
    /// Answered once every job queued before it is done.
    Barrier(mpsc::Sender<()>),
}

/// The reclaim thread of one store.
pub(crate) struct Reclaimer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reclaimer {
    /// Starts the thread; if it cannot start, segments are reclaimed
    /// inline, as the acknowledgement's own last step.
    pub(crate) fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("backhaul-reclaim".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Reclaim(log) => {
                            log.reclaim_queued.store(false, Ordering::SeqCst);
                            log.reclaim();
                        }
                        Job::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        let (jobs, thread) = match spawned {
            Ok(handle) => (Some(tx), Some(handle)),
            Err(err) => {
                warn!(%err, "cannot start the segment reclaim thread; deleting acknowledged segments inline");
                (None, None)
            }
        };
        Self {
            jobs: Mutex::new(jobs),
            thread: Mutex::new(thread),
        }
    }

    /// Asks for `log`'s wholly acknowledged segments (`waiting` of them)
    /// to be deleted, and its checkpoint synced if `sync_due`. When the
    /// thread is behind by [`MAX_WAITING`] segments (a replay faster than
    /// the disk syncs, or a starved thread), the caller deletes them
    /// itself: what acknowledged data keeps on disk stays bounded.
    pub(crate) fn request(&self, log: &Arc<FlowLog>, waiting: usize, sync_due: bool) {
        if waiting == 0 && !sync_due {
            return;
        }
        if waiting >= MAX_WAITING {
            log.reclaim();
            return;
        }
        if log.reclaim_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let sent = jobs
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Reclaim(log.clone())).is_ok());
        drop(jobs);
        if !sent {
            log.reclaim_queued.store(false, Ordering::SeqCst);
            log.reclaim();
        }
    }

    /// Waits until every request made before has been carried out.
    pub(crate) fn settle(&self) {
        let (done, wait) = mpsc::channel();
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let sent = jobs
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Barrier(done)).is_ok());
        drop(jobs);
        if sent {
            let _ = wait.recv();
        }
    }

    /// Carries out the queued requests and stops the thread.
    pub(crate) fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
