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
}
