//! Where the benchmark's processes run: `--destination-cpu N` and
//! `--subscriber-cpu N`.
//!
//! By default every process may run on every core, so on a 2-core machine
//! the edge and the destination take time from each other, and each one's
//! wake-ups and interrupts land on the other's time. With a destination CPU
//! the destination Mosquitto runs alone on that CPU and everything else
//! (this process's threads: generator, counting subscriber, Event Hubs
//! peer; and the edges it starts) on the others: nearer to an edge and a
//! destination on two hosts. Not the same: over loopback the sender's
//! system call still runs the receiver's TCP input, so part of each side's
//! network work is still done on the other's CPU.

use std::io;

use anyhow::{bail, Context, Result};

/// Keeps this thread, and every thread and process it starts from now on,
/// off `cpu`. Call before any other thread exists.
pub fn keep_off(cpu: usize) -> Result<()> {
    let online = online_cpus();
    check("--destination-cpu", cpu)?;
    if online < 2 {
        bail!("--destination-cpu needs at least 2 CPUs; this machine has 1");
    }
    let others: Vec<usize> = (0..online).filter(|c| *c != cpu).collect();
    set_affinity(0, &others).context("sched_setaffinity for the benchmark's own threads")
}

/// Refuses a CPU this machine lacks, naming the `flag` that asked for it.
pub fn check(flag: &str, cpu: usize) -> Result<()> {
    let online = online_cpus();
    if cpu >= online {
        bail!("{flag} {cpu}: this machine has CPUs 0 to {}", online - 1);
    }
    Ok(())
}

/// Puts the calling thread on `cpu` alone.
pub fn pin_current(cpu: usize) -> io::Result<()> {
    set_affinity(0, &[cpu])
}

/// Puts every thread of process `pid` on `cpu` alone.
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of process {pid}"))?;
    for task in tasks {
        let name = task?.file_name();
        let Some(tid) = name.to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        set_affinity(tid, &[cpu])
            .with_context(|| format!("pinning thread {tid} of process {pid} to CPU {cpu}"))?;
    }
    Ok(())
}

/// The CPUs of a kernel CPU list (`0-1`, `3`, `0,2-3`); `None` if it is
/// not one.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(first.parse::<usize>().ok()?..=last.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system value.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// `tid` 0 is the calling thread.
fn set_affinity(tid: i32, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is plain bits; CPU_ZERO/CPU_SET only write into
    // the set we own, and sched_setaffinity reads `size_of` bytes of it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs a task may run on (`Cpus_allowed_list` of a `status` file
/// such as `/proc/thread-self/status`), for tests.
#[cfg(test)]
pub(crate) fn allowed_list(path: &str) -> String {
    let status = std::fs::read_to_string(path).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_process_runs_on_that_cpu_alone() {
        if online_cpus() < 2 {
            eprintln!("skipped: one CPU");
            return;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        pin(child.id(), 1).unwrap();
        let allowed = allowed_list(&format!("/proc/{}/status", child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(allowed, "1");
    }

    #[test]
    fn kept_off_a_cpu_the_thread_and_what_it_starts_run_elsewhere() {
        if online_cpus() < 2 {
            eprintln!("skipped: one CPU");
            return;
        }
        let (mine, childs) = std::thread::spawn(|| {
            keep_off(0).unwrap();
            let mine = allowed_list("/proc/thread-self/status");
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let childs = allowed_list(&format!("/proc/{}/status", child.id()));
            child.kill().unwrap();
            child.wait().unwrap();
            (mine, childs)
        })
        .join()
        .unwrap();
        let others = if online_cpus() == 2 {
            "1".to_string()
        } else {
            format!("1-{}", online_cpus() - 1)
        };
        assert_eq!(
            (mine.as_str(), childs.as_str()),
            (others.as_str(), others.as_str())
        );
    }

    #[test]
    fn cpu_lists_are_read_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("0-x"), None);
    }

    #[test]
    fn a_cpu_the_machine_lacks_is_refused_by_name() {
        let online = online_cpus();
        let err = keep_off(online).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "--destination-cpu {online}: this machine has CPUs 0 to {}",
                online - 1
            )
        );
    }
}
