//! CPU time and memory from `/proc`: of a child process (the edge, the
//! destination broker) and of groups of the harness's own threads (the
//! load generator, the counting subscriber, the in-process Event Hubs
//! peer), so the table shows which side was busy.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime, in seconds, of a `/proc/.../stat` file.
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; fields start after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// CPU seconds a process used so far.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat")).unwrap_or(0.0)
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
pub fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// The calling thread's id.
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// A named set of the harness's threads whose CPU is summed.
#[derive(Clone, Default)]
pub struct ThreadGroup(Arc<Mutex<Vec<u32>>>);

impl ThreadGroup {
    /// Adds the calling thread (use as a runtime's `on_thread_start`).
    pub fn register_current(&self) {
        if let Some(tid) = current_tid() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(tid);
        }
    }

    pub fn cpu_seconds(&self) -> f64 {
        let tids = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tids.iter()
            .filter_map(|tid| stat_cpu_seconds(&format!("/proc/self/task/{tid}/stat")))
            .sum()
    }
}

/// What can be measured for CPU.
#[derive(Clone)]
pub enum CpuSource {
    Process(u32),
    Threads(ThreadGroup),
}

impl CpuSource {
    fn seconds(&self) -> f64 {
        match self {
            CpuSource::Process(pid) => process_cpu_seconds(*pid),
            CpuSource::Threads(group) => group.cpu_seconds(),
        }
    }
}

/// CPU used between [`CpuMeter::start`] and [`CpuMeter::share`].
pub struct CpuMeter {
    source: CpuSource,
    cpu: f64,
    wall: Instant,
}

impl CpuMeter {
    pub fn start(source: CpuSource) -> Self {
        Self {
            cpu: source.seconds(),
            source,
            wall: Instant::now(),
        }
    }

    /// Percent of one core since the start.
    pub fn share(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        100.0 * (self.source.seconds() - self.cpu) / wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_its_threads() {
        let group = ThreadGroup::default();
        group.register_current();
        assert_eq!(group.0.lock().unwrap().len(), 1);
        assert!(stat_cpu_seconds("/proc/self/stat").is_some());
        let tid = group.0.lock().unwrap()[0];
        assert!(stat_cpu_seconds(&format!("/proc/self/task/{tid}/stat")).is_some());
        let (rss, hwm) = memory(std::process::id());
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
    }
}
