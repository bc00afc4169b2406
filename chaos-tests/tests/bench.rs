//! `backhaul-bench --quick` end to end: tiny sizes, one run, every system
//! and scenario. Asserts the report's shape and that its counts reconcile
//! (Backhaul loses nothing it acknowledged); speeds are never asserted.

use std::collections::HashMap;
use std::process::Command;

use backhaul_chaos_tests::bench::interrupts::DiskInterrupts;
use backhaul_chaos_tests::process::backhaul_bin;

const SYSTEMS: [&str; 4] = [
    "backhaul-disk",
    "backhaul-memory",
    "mosquitto",
    "backhaul-eventhubs",
];
const SIZES: [&str; 2] = ["200 B", "2048 B"];
const QUICK_MESSAGES: u64 = 3_000;

/// The rows of the markdown table that follows `heading`, as cells.
fn table(report: &str, heading: &str) -> Vec<Vec<String>> {
    let start = report
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{report}"));
    report[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Runs `backhaul-bench --quick` with `args` in a temporary directory,
/// asserts it succeeded and returns its report.
fn quick_run(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("BENCHMARKS.md");
    let run = Command::new(env!("CARGO_BIN_EXE_backhaul-bench"))
        .arg("--quick")
        .args(args)
        .arg("--dir")
        .arg(tmp.path())
        .arg("--output")
        .arg(&output)
        .arg("--backhaul-bin")
        .arg(backhaul_bin().unwrap())
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        run.status.success(),
        "backhaul-bench failed: {}\n{}\n{report}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    report
}

/// Where the bench directory is on a disk with interrupt lines of its own,
/// the machine table counts them per CPU, and disk mode's flushes made
/// some.
fn disk_interrupts_are_counted(report: &str) {
    let Some(disk) = DiskInterrupts::of(&std::env::temp_dir()) else {
        return;
    };
    let machine = table(report, "## Machine");
    let row = machine
        .iter()
        .find(|row| row[0].starts_with("interrupts of the disk under"))
        .unwrap_or_else(|| panic!("no disk interrupts row:\n{report}"));
    assert!(row[0].contains(&format!("({})", disk.device)), "{row:?}");
    let total: u64 = row[1]
        .split(", ")
        .map(|cpu| {
            let (_, count) = cpu.split_once(": ").expect("CPU n: count");
            count.replace(',', "").parse::<u64>().expect("a count")
        })
        .sum();
    assert!(
        total > 0,
        "disk mode flushed, so the disk interrupted: {row:?}"
    );
}

#[test]
fn quick_run_reports_every_row_and_backhaul_loses_nothing() {
    let report = quick_run(&[]);
    for section in [
        "## Machine",
        "## Setup",
        "## Figures",
        "## Counts",
        "## CPU",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }
    assert!(!report.contains("## Errors"), "{report}");
    assert!(report.contains("--quick"), "the exact command is recorded");
    disk_interrupts_are_counted(&report);

    // Figures: a header with every system and both ratios, 20 rows per size.
    let figures = table(&report, "## Figures");
    let header = &figures[0];
    for column in [
        "Backhaul disk → Mosquitto",
        "Backhaul memory → Mosquitto",
        "Mosquitto bridge → Mosquitto",
        "Backhaul disk → Event Hubs peer",
        "backhaul-disk ÷ Mosquitto",
        "backhaul-memory ÷ Mosquitto",
        "goal",
    ] {
        assert!(header.contains(&column.to_string()), "{column}: {header:?}");
    }
    let rows = &figures[2..];
    assert_eq!(rows.len(), 2 * 20, "{report}");
    for size in SIZES {
        let labels: Vec<&str> = rows
            .iter()
            .filter(|r| r[0] == size)
            .map(|r| r[1].as_str())
            .collect();
        assert_eq!(labels.len(), 20, "{size}");
        for prefix in ["1 ", "2 ", "3 ", "4 ", "5 ", "generator"] {
            assert!(labels.iter().any(|l| l.starts_with(prefix)), "{prefix}");
        }
        // Every figure of every system was measured (none is "–").
        for row in rows.iter().filter(|r| r[0] == size) {
            for (cell, column) in row[2..6].iter().zip(&header[2..6]) {
                assert!(
                    cell.starts_with("**"),
                    "{size} {} {column}: {cell:?}",
                    row[1]
                );
            }
        }
        let killed = rows
            .iter()
            .find(|r| r[0] == size && r[1].starts_with("4 kill -9"))
            .unwrap();
        assert_eq!(
            killed[2], "**100**",
            "Backhaul disk delivers every PUBACKed message"
        );
        assert_eq!(killed[5], "**100**", "also with the Event Hubs peer");
    }

    // Counts: one row per system, size and scenario; they reconcile.
    let counts = table(&report, "## Counts");
    let mut seen: HashMap<(String, String, String), Vec<u64>> = HashMap::new();
    for row in &counts[2..] {
        let numbers: Vec<u64> = row[3..].iter().map(|c| c.parse().unwrap()).collect();
        let [runs, acked, delivered, lost, _duplicates, _reordered] = numbers[..] else {
            panic!("{row:?}");
        };
        assert_eq!(runs, 1, "{row:?}");
        assert_eq!(acked, delivered + lost, "counts reconcile: {row:?}");
        seen.insert((row[0].clone(), row[1].clone(), row[2].clone()), numbers);
    }
    for system in SYSTEMS {
        for size in SIZES {
            for scenario in ["2 steady", "3 outage", "3 live", "4 kill -9"] {
                let key = (system.to_string(), size.to_string(), scenario.to_string());
                let numbers = seen
                    .get(&key)
                    .unwrap_or_else(|| panic!("no counts row {key:?}:\n{report}"));
                let (acked, lost, reordered) = (numbers[1], numbers[3], numbers[5]);
                if scenario != "3 live" {
                    assert_eq!(acked, QUICK_MESSAGES, "{key:?}");
                } else {
                    assert!(acked > 0, "live messages were published: {key:?}");
                }
                let durable = system != "mosquitto"
                    && !(system == "backhaul-memory" && scenario == "4 kill -9");
                if durable {
                    assert_eq!(lost, 0, "Backhaul loses nothing: {key:?}");
                }
                // The Event Hubs flow has no partition key: its batches go
                // two at a time on two connections, and without a key Event
                // Hubs keeps no order (README, Event Hubs).
                if durable && system != "backhaul-eventhubs" {
                    assert_eq!(
                        reordered, 0,
                        "Backhaul keeps each publisher's order: {key:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_bridge_can_speak_mqtt_5_and_the_subscriber_can_be_paced() {
    let report = quick_run(&[
        "--sizes",
        "200",
        "--systems",
        "mosquitto",
        "--scenarios",
        "outage",
        "--bridge-protocol",
        "mqttv50",
        "--subscriber-pace-ms",
        "1",
    ]);
    assert!(!report.contains("## Errors"), "{report}");
    for setup in [
        "`bridge_protocol_version mqttv50`",
        "it waits 1 ms after each read (`--subscriber-pace-ms`)",
    ] {
        assert!(report.contains(setup), "{setup}:\n{report}");
    }
    // Mosquitto saves its queue at a clean stop, so the bridge speaking
    // MQTT 5 delivers the whole backlog to the paced subscriber.
    let counts = table(&report, "## Counts");
    let outage = counts[2..]
        .iter()
        .find(|row| row[2] == "3 outage")
        .unwrap_or_else(|| panic!("no outage row:\n{report}"));
    assert_eq!(outage[0], "mosquitto");
    let [acked, delivered, lost, duplicates] =
        [4, 5, 6, 7].map(|i| outage[i].parse::<u64>().unwrap());
    assert_eq!(
        (acked, delivered, lost, duplicates),
        (QUICK_MESSAGES, QUICK_MESSAGES, 0, 0),
        "{report}"
    );
}
