//! How Linux schedules the appliance's threads (`spec.cpuScheduling`).
//!
//! Why `SCHED_BATCH` by default: on an industrial PC Backhaul shares a few
//! cores with other programs, and its threads wake often and briefly (a
//! commit per group, a PUBACK per read). Under the normal policy each of
//! those wake-ups may preempt whatever is running. Measured in the replay
//! benchmark (BENCHMARKS.md, session 6), where the destination broker shares
//! the two cores: it was preempted thousands of times per second and got
//! 74-87 % of a core; with `SCHED_BATCH` 91-95 %, and the replay ran 11 %
//! faster. A batch thread still gets its full share of the CPU; it only
//! waits for the running program's time slice to end instead of cutting it
//! short, which matters only when every core is busy.
//!
//! The policy is set on the calling thread before the runtime starts, and
//! every thread created after it inherits it.
//!
//! Except the data flows' threads: they run on a runtime of their own
//! ([`flow_runtime`]) under the normal policy. A flow's round trip (read a
//! batch, send it, wait for its acknowledgements, acknowledge it in the
//! queue) crosses a thread boundary at each step; on the runtime shared
//! with the broker's connections, each step queued behind the connection
//! tasks of a full-speed ingest, and with every core busy a batch thread's
//! wake-up waited for a time slice. Measured in the steady-state benchmark
//! (BENCHMARKS.md, session 10): while devices published at full speed,
//! reading a batch took 1.2-2.0 ms instead of 0.3-0.4 ms, and
//! acknowledging it 0.8-1.6 ms (11 µs of it work) instead of 0.04-0.09 ms;
//! on a runtime of their own those waits shrank by about 70 %, and under
//! the normal policy the flow forwarded more end to end in 7 of 8 paired
//! runs (median +8-11 %). A flow wakes about 250-1,000 times a second
//! (per batch of PUBACKs, see the MQTT sink's `low_water`, and per queue
//! step); a destination broker sharing the cores kept 91-97 % of a core
//! while the flow replayed to it.

use crate::config::CpuSchedulingSpec;

/// Sets the calling thread's scheduling policy (and so that of every thread
/// it creates afterwards).
pub fn apply(policy: CpuSchedulingSpec) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let policy = match policy {
            CpuSchedulingSpec::Batch => libc::SCHED_BATCH,
            CpuSchedulingSpec::Normal => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid
        // sched_param (priority 0, as both policies require).
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
    Ok(())
}

/// The runtime the data flows run on, apart from the broker's connections:
/// `flow-worker` threads (and their blocking pool) under the normal policy,
/// whatever `spec.cpuScheduling` says for the rest (see the module
/// documentation).
pub fn flow_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("flow-worker")
        .on_thread_start(|| {
            if let Err(err) = apply(CpuSchedulingSpec::Normal) {
                tracing::warn!(%err, "a flow thread keeps the scheduling policy it started with");
            }
        })
        .enable_all()
        .build()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn current_policy() -> libc::c_int {
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn batch_then_normal_on_a_thread_of_its_own() {
        std::thread::spawn(|| {
            apply(CpuSchedulingSpec::Batch).expect("SCHED_BATCH needs no privilege");
            assert_eq!(current_policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(current_policy).join().unwrap();
            assert_eq!(child, libc::SCHED_BATCH, "threads created later inherit it");
            apply(CpuSchedulingSpec::Normal).unwrap();
            assert_eq!(current_policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn flow_threads_run_under_the_normal_policy_when_the_rest_is_batch() {
        std::thread::spawn(|| {
            apply(CpuSchedulingSpec::Batch).unwrap();
            let runtime = flow_runtime().expect("a runtime");
            let (worker, blocking) = runtime.block_on(async {
                let worker = tokio::spawn(async { current_policy() }).await.unwrap();
                let blocking = tokio::task::spawn_blocking(current_policy).await.unwrap();
                (worker, blocking)
            });
            assert_eq!(worker, libc::SCHED_OTHER, "a flow-worker thread");
            assert_eq!(blocking, libc::SCHED_OTHER, "a thread of its blocking pool");
            assert_eq!(
                current_policy(),
                libc::SCHED_BATCH,
                "the caller keeps its own"
            );
        })
        .join()
        .unwrap();
    }
}
