//! `spec.cpuScheduling` reaches every thread of the running appliance but
//! the flows' (`flow-worker`, always the normal policy): the test starts
//! `backhaul run` and reads each thread's policy from
//! `/proc/<pid>/task/<tid>/stat` once the appliance is ready.

use std::path::Path;

use backhaul_chaos_tests::config::{appliance_yaml, TestAppliance};
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::process::Backhaul;

/// Linux's policy numbers (`sched.h`).
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// Starts the appliance with `extra` spec lines; ready when this returns.
fn start(dir: &Path, extra: &str) -> Backhaul {
    let appliance = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Disk",
    };
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("appliance.yaml"),
        appliance_yaml(&appliance, extra),
    )
    .unwrap();
    Backhaul::start(&config, &dir.join("data"), appliance.metrics_port).expect("backhaul starts")
}

/// Every thread's name and scheduling policy (field 41 of its `stat`).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            let name_end = stat.rfind(')').unwrap();
            let name = stat[stat.find('(').unwrap() + 1..name_end].to_string();
            // Fields after the name start at field 3 (state).
            let fields: Vec<&str> = stat[name_end + 2..].split(' ').collect();
            (name, fields[41 - 3].parse().unwrap())
        })
        .collect()
}

#[test]
fn every_thread_but_the_flows_runs_as_batch_by_default_and_normal_when_configured() {
    for (extra, want) in [
        ("", SCHED_BATCH),
        ("  cpuScheduling: Normal\n", SCHED_OTHER),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let running = start(tmp.path(), extra);
        let threads = thread_policies(running.pid());
        let names: Vec<&str> = threads.iter().map(|(name, _)| name.as_str()).collect();
        assert!(
            names.iter().any(|n| n.starts_with("tokio"))
                && names.iter().any(|n| n.starts_with("queue-commit"))
                && names.iter().any(|n| n.starts_with("flow-worker")),
            "the runtimes' and the store's threads are there: {names:?}"
        );
        for (name, policy) in &threads {
            let want = if name.starts_with("flow-worker") {
                SCHED_OTHER
            } else {
                want
            };
            assert_eq!(*policy, want, "thread {name} with {extra:?}");
        }
    }
}
