//! `backhaul-bench`: Backhaul (disk and memory mode) and a Mosquitto bridge
//! side by side on loopback, same load generator, same destination, one
//! markdown report. See `backhaul_chaos_tests::bench` and `--help`.
//!
//! ```text
//! cargo build --release -p backhaul-bridge -p backhaul-chaos-tests
//! target/release/backhaul-bench            # writes BENCHMARKS.md
//! target/release/backhaul-bench --quick --output /tmp/b.md
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use backhaul_chaos_tests::bench::args::{Args, USAGE};
use backhaul_chaos_tests::bench::interrupts::{describe_growth, DiskInterrupts};
use backhaul_chaos_tests::bench::report::{Report, Sample};
use backhaul_chaos_tests::bench::scenarios::{crash, outage, steady, Settings};
use backhaul_chaos_tests::bench::systems::Runtimes;
use backhaul_chaos_tests::bench::{machine, payload, placement};

/// Text after this line of an existing report is kept when it is rewritten
/// (findings written by hand).
const KEEP_MARKER: &str =
    "<!-- backhaul-bench: text below is kept when the report is rewritten -->";

const SETUP: &str = "\
- **Load generator**: raw MQTT 3.1.1 QoS 1 publishers (in this process, on
  their own thread), each with its window of unacknowledged messages in
  flight and many PUBLISH packets per write; payloads carry the publisher,
  a number and the send time, padded to the payload size. Topics
  `factory/p<n>`.
- **Destination**: a second Mosquitto (`persistence true`,
  `max_queued_messages 1000000`, `max_inflight_messages 1000`) with one
  counting subscriber (persistent session, QoS 1, `cloud/#`) that records
  every (publisher, number): lost, duplicated and out-of-order messages are
  counted; {subscriber_reads}. For `backhaul-eventhubs`, the in-tree Event
  Hubs AMQP peer (default options: 5 ms settle latency, 2 ms network
  latency each way, 4 partitions) in this process on its own thread; its
  store is the count.
- **Mosquitto bridge**: edge Mosquitto with `persistence true`, default
  autosave (`autosave_interval 1800`), `max_queued_messages` above the
  backlog, `max_inflight_messages 1000`, and `connection cloud`, `topic
  factory/# out 1 \"\" cloud/`, `cleansession false`, `restart_timeout 1`,
  `bridge_protocol_version {bridge_protocol}` (`--bridge-protocol`;
  Backhaul speaks MQTT 5).
- **Backhaul**: the release `backhaul` binary, one flow `factory/#` →
  `cloud/${inputTopic}` on the destination's MQTT endpoint
  (`maxInflightMessages: 1000`, the window the bridge gets from the edge's
  `max_inflight_messages 1000`; other settings default), or → the Event
  Hubs peer (default batching: 1,000 messages, 5 ms; 4 batches in
  flight); `retry: {maxBackoffSeconds: 1}` to match the bridge's
  `restart_timeout 1`. Disk mode acknowledges a PUBLISH after `fdatasync`.
  Default scheduling (`cpuScheduling: Batch`: Linux `SCHED_BATCH`).
- **Placement**: every process may run on every core, unless the command
  above has `--destination-cpu N`: then the destination Mosquitto runs
  alone on CPU N and everything else on the other CPUs; with
  `--subscriber-cpu N` too, the counting subscriber's and the Event Hubs
  peer's threads join it there (one remote host of one core). The edge's
  disk still interrupts the CPUs the kernel routes it to (the machine
  table's last row): a destination CPU among them pays for the edge's
  flushes, as no remote host would, and the bench warns.
- **Trials**: each system runs every scenario on fresh processes and a
  fresh directory, one message end to end first. Systems alternate within
  each run, so the ratios (Backhaul ÷ Mosquitto) are computed run by run and
  then their median is shown.
  - *1 ingest*: the destination is down; PUBACKs per second from the first
    write to the last PUBACK of the backlog.
  - *2 steady*: the destination is up; the messages published at full
    speed; end-to-end = delivered / (first write → last arrival); latency =
    arrival − send time of every message (so it includes the queueing of a
    saturated pipeline).
  - *3 outage and replay*: the destination goes down (Mosquitto: SIGTERM,
    sessions saved; Event Hubs peer: connections cut and refused), the
    backlog is published, the edge's VmRSS is read (scenario 5), the
    destination returns; first replayed arrival after the destination
    listens again; drain = first → last backlog arrival; meanwhile a live
    publisher sends at a fixed rate and its messages' latency is measured.
  - *4 kill -9*: as 3, but the edge is killed with SIGKILL right after the
    last PUBACK, restarted on the same data, then the destination returns;
    % of PUBACKed messages that arrived (waiting until all did or nothing
    arrived for the quiet time).
- CPU is utime + stime from `/proc/<pid>/stat` (edge, destination
  Mosquitto) or `/proc/self/task/<tid>/stat` (generator, subscriber, peer
  threads), in % of one core over the phase; for the replay, over the
  drain (first → last replayed arrival), the window of the replay rate.";

/// [`SETUP`] with what this run's flags chose.
fn setup(settings: &Settings) -> String {
    let subscriber_reads = match settings.subscriber_pace {
        None => "it reads whenever data came".to_string(),
        Some(pace) => format!(
            "it waits {} ms after each read (`--subscriber-pace-ms`)",
            pace.as_millis()
        ),
    };
    SETUP
        .replace("{subscriber_reads}", &subscriber_reads)
        .replace("{bridge_protocol}", settings.bridge_protocol)
}

fn backhaul_bin(args: &Args) -> Result<PathBuf> {
    if let Some(path) = &args.backhaul_bin {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("BACKHAUL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the executable's directory")?;
    // target/<profile>/backhaul-bench, or target/<profile>/deps/… in tests.
    for candidate in [dir.join("backhaul"), dir.join("../backhaul")] {
        if candidate.exists() {
            return Ok(candidate.canonicalize()?);
        }
    }
    anyhow::bail!(
        "no backhaul binary beside {}: build it (cargo build --release -p backhaul-bridge) \
         or pass --backhaul-bin",
        exe.display()
    )
}

fn kept_text(output: &Path) -> String {
    std::fs::read_to_string(output)
        .ok()
        .and_then(|text| {
            text.split_once(KEEP_MARKER)
                .map(|(_, kept)| kept.to_string())
        })
        .unwrap_or_else(|| "\n".to_string())
}

fn render(args: &Args, command: &str, machine: &[(String, String)], report: &Report) -> String {
    let mut out = String::new();
    let s = &args.settings;
    let _ = writeln!(out, "# Benchmarks: Backhaul vs a Mosquitto bridge\n");
    let _ = writeln!(
        out,
        "Written by `backhaul-bench` (`chaos-tests/src/bin/backhaul-bench.rs`, code in \
         `chaos-tests/src/bench/`). Figures are medians of {} run(s), each run in brackets; \
         no test asserts on them. Command:\n\n```sh\n{command}\n```\n",
        args.runs
    );
    let _ = writeln!(
        out,
        "Sizes: {} messages at steady state, a backlog of {} during outages, {} publishers \
         with {} in flight each, live traffic {} msg/s during the replay, waits end after {} s \
         without an arrival.\n",
        s.messages,
        s.backlog,
        s.publishers,
        s.window,
        s.live_rate,
        s.quiet.as_secs()
    );
    let _ = writeln!(out, "## Machine\n\n| item | value |\n|---|---|");
    for (item, value) in machine {
        let _ = writeln!(out, "| {item} | {value} |");
    }
    let _ = writeln!(out, "\n## Setup\n\n{}\n", setup(s));
    let _ = writeln!(out, "## Figures\n\n{}", report.figures_table());
    let _ = writeln!(
        out,
        "## Counts (all runs summed)\n\nEvery message the publishers got a PUBACK for, \
         and what the destination received of them.\n\n{}",
        report.counts_table()
    );
    let _ = writeln!(
        out,
        "## CPU (medians, % of one core)\n\n{}",
        report.cpu_table()
    );
    let errors = report.errors();
    if !errors.is_empty() {
        let _ = writeln!(out, "## Errors\n");
        for e in errors {
            let _ = writeln!(out, "- {}", e.replace('\n', " "));
        }
        out.push('\n');
    }
    out.push_str(KEEP_MARKER);
    out
}

fn run() -> Result<bool> {
    let args = match Args::parse(std::env::args().skip(1)) {
        Err(err) if err.to_string() == USAGE => {
            println!("{USAGE}");
            return Ok(true);
        }
        other => other?,
    };
    let backhaul = backhaul_bin(&args)?;
    std::env::set_var("BACKHAUL_BIN", &backhaul);
    payload::now_ns();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut machine = machine::describe(&args.settings.dir, &backhaul);
    if let Some(cpu) = args.settings.destination_cpu {
        placement::keep_off(cpu)?;
    }
    if let Some(cpu) = args.settings.subscriber_cpu {
        placement::check("--subscriber-cpu", cpu)?;
    }
    let disk = DiskInterrupts::of(&args.settings.dir);
    if let Some(disk) = &disk {
        let remote = [
            ("--destination-cpu", args.settings.destination_cpu),
            ("--subscriber-cpu", args.settings.subscriber_cpu),
        ];
        for (flag, cpu) in remote {
            if let Some(warning) = cpu.and_then(|cpu| disk.warning(flag, cpu, &args.settings.dir)) {
                eprintln!("backhaul-bench: warning: {warning}");
            }
        }
    }
    let disk_before = disk.as_ref().map(DiskInterrupts::per_cpu);
    let runtimes = Runtimes::new(args.settings.subscriber_cpu)?;
    let mut samples = Vec::new();
    for run in 0..args.runs {
        for &size in &args.sizes {
            for system in &args.systems {
                let mut sample = Sample {
                    system: *system,
                    size,
                    run,
                    steady: None,
                    outage: None,
                    crash: None,
                    errors: Vec::new(),
                };
                let tag = format!("run {}/{} {size} B {}", run + 1, args.runs, system.key);
                if args.scenarios.steady {
                    eprintln!("{tag}: steady state");
                    match steady(system, size, &args.settings, &runtimes) {
                        Ok(r) => sample.steady = Some(r),
                        Err(e) => sample.errors.push(format!("steady: {e:#}")),
                    }
                }
                if args.scenarios.outage {
                    eprintln!("{tag}: outage and replay");
                    match outage(system, size, &args.settings, &runtimes) {
                        Ok(r) => sample.outage = Some(r),
                        Err(e) => sample.errors.push(format!("outage: {e:#}")),
                    }
                }
                if args.scenarios.crash {
                    eprintln!("{tag}: kill -9");
                    match crash(system, size, &args.settings, &runtimes) {
                        Ok(r) => sample.crash = Some(r),
                        Err(e) => sample.errors.push(format!("kill -9: {e:#}")),
                    }
                }
                eprintln!("{tag}: {sample:?}");
                samples.push(sample);
            }
        }
    }
    if let (Some(disk), Some(before)) = (&disk, disk_before) {
        machine.push((
            format!(
                "interrupts of the disk under {} ({}) during the run",
                args.settings.dir.display(),
                disk.device
            ),
            describe_growth(&before, &disk.per_cpu()),
        ));
    }
    let report = Report {
        samples: &samples,
        systems: &args.systems,
        sizes: &args.sizes,
        runs: args.runs,
    };
    let mut text = render(&args, &command, &machine, &report);
    text.push_str(&kept_text(&args.output));
    std::fs::write(&args.output, &text)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("{}", report.figures_table());
    println!("{}", report.counts_table());
    eprintln!("report written to {}", args.output.display());
    Ok(report.errors().is_empty())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("backhaul-bench: some trials failed (see the Errors section)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("backhaul-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
