//! Disk queue benchmark: prints the engine's figures beside the raw ceiling
//! of the same disk, as medians of 3 runs (the spread in brackets).
//!
//! ```text
//! cargo bench -p backhaul-storage --bench queue
//! BACKHAUL_BENCH_DIR=/data/tmp BACKHAUL_BENCH_RECORDS=1000000 cargo bench -p backhaul-storage --bench queue
//! ```
//!
//! - raw ceiling: 200-byte records appended to one file, one `fdatasync`
//!   per batch (16, 100, 1000 records);
//! - durable ingest: 16 concurrent appenders through `QueueStore`, each with
//!   1 or 64 appends in flight (a broker connection with an inflight
//!   window), one record per append; latency is call to resolved ticket;
//! - replay: read batches of 1000 and acknowledge each, from a backlog;
//! - space amplification: disk bytes / live record bytes with the backlog
//!   in place and half of it acknowledged; reopen time with the backlog;
//! - the disk alone: the latency of one `fdatasync` after appending 4 KiB,
//!   measured right before each ingest run, so that the engine's commit
//!   latency can be read against what the disk gave at that moment; and the
//!   raw ceiling at the run's own group size, measured right after it, so
//!   that the share of the ceiling is taken run by run in one disk state.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use backhaul_storage::backend::SegmentBackend;
use backhaul_storage::{AppendEntry, FlowSpec, QueueStore, StorageMode, StoreOptions};
use bytes::Bytes;

const RECORD: usize = 200;
/// Each ingest measurement stops after this long (the disk's sync latency
/// varies 25x on the reference VM).
const TIME_LIMIT: Duration = Duration::from_secs(4);

/// Runs per measurement (`BACKHAUL_BENCH_RUNS`, default 3).
fn runs() -> usize {
    common::env_usize("BACKHAUL_BENCH_RUNS", 3).max(1)
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// Allocated bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                total += disk_bytes(&entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// How long the raw ceiling paired with one engine run lasts.
const PAIRED_RAW: Duration = Duration::from_secs(2);

/// Raw ceiling: records/s appending `batch` records per write + fdatasync,
/// for at most `limit`.
fn raw_ceiling(root: &Path, batch: usize, total: usize, limit: Duration) -> f64 {
    let dir = fresh_dir(root, "raw");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .expect("raw file");
    let buf = vec![0x5au8; RECORD * batch];
    let started = Instant::now();
    let mut written = 0;
    while written < total && started.elapsed() < limit {
        file.write_all(&buf).expect("write");
        file.sync_data().expect("fdatasync");
        written += batch;
    }
    let rate = written as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// How long a sample of the disk's own sync latency lasts.
const SYNC_SAMPLE: Duration = Duration::from_millis(500);

/// p50 and p99 of a sorted list of microseconds, in ms.
fn percentiles_ms(sorted_us: &[u32]) -> (f64, f64) {
    let pct = |p: f64| {
        let at = ((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1));
        sorted_us.get(at).copied().unwrap_or(0) as f64 / 1000.0
    };
    (pct(0.50), pct(0.99))
}

/// The disk alone: p50 and p99 (ms) of one `fdatasync` after appending
/// 4 KiB to a file, one at a time for [`SYNC_SAMPLE`].
fn disk_sync_latency(dir: &Path) -> (f64, f64) {
    let path = dir.join("sync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("probe file");
    let block = vec![0xa5u8; 4096];
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < SYNC_SAMPLE || latencies.len() < 20 {
        file.write_all(&block).expect("write");
        let at = Instant::now();
        file.sync_data().expect("fdatasync");
        latencies.push(at.elapsed().as_micros() as u32);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    latencies.sort_unstable();
    percentiles_ms(&latencies)
}

struct Ingest {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    group: f64,
    commit_ms: f64,
    /// The disk's own fdatasync latency right before the run, p50 and p99.
    disk_p50_ms: f64,
    disk_p99_ms: f64,
    /// The raw ceiling at this run's own group size, measured right after
    /// it (the disk's sync latency changes state within minutes on the
    /// reference VM, so a ceiling taken later is not comparable).
    raw_same_batch: f64,
}

/// How the store commits groups in an ingest run.
#[derive(Clone, Copy, PartialEq)]
enum Commit {
    /// One group at a time: write, sync, release.
    Plain,
    /// Always pipelined from `PIPELINE_MIN_RECORDS` on, whatever the disk.
    Pipelined,
    /// The store's default: pipelined only while syncs are slow.
    Default,
}

impl Commit {
    fn label(self) -> &'static str {
        match self {
            Commit::Plain => "plain",
            Commit::Pipelined => "pipelined",
            Commit::Default => "default, pipelined on a slow disk",
        }
    }

    /// Its name in `BACKHAUL_BENCH_MODES`.
    fn key(self) -> &'static str {
        match self {
            Commit::Plain => "plain",
            Commit::Pipelined => "pipelined",
            Commit::Default => "default",
        }
    }

    fn options(self) -> StoreOptions {
        match self {
            Commit::Plain => StoreOptions {
                pipeline_min_records: None,
                ..StoreOptions::default()
            },
            Commit::Pipelined => StoreOptions {
                pipeline_min_sync: Duration::ZERO,
                ..StoreOptions::default()
            },
            Commit::Default => StoreOptions::default(),
        }
    }
}

/// Durable ingest through the store: `appenders` tasks, `window` appends in
/// flight each, groups committed as `commit` says.
fn ingest(root: &Path, appenders: usize, window: usize, total: usize, commit: Commit) -> Ingest {
    let dir = fresh_dir(root, "ingest");
    let (disk_p50_ms, disk_p99_ms) = disk_sync_latency(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let backend = SegmentBackend::open(&dir.join("q")).expect("open");
        let store = Arc::new(
            QueueStore::open_backend_options(
                Arc::new(backend),
                &[FlowSpec::new("bench")],
                commit.options(),
            )
            .expect("open"),
        );
        let issued = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let store = store.clone();
            let issued = issued.clone();
            tasks.push(tokio::spawn(async move {
                let data = Bytes::from(vec![0x5au8; RECORD]);
                let mut inflight = VecDeque::new();
                let mut latencies = Vec::new();
                loop {
                    let more = started.elapsed() < TIME_LIMIT
                        && issued.fetch_add(1, Ordering::Relaxed) < total as u64;
                    if more {
                        let ticket = store.append(vec![AppendEntry {
                            flow: 0,
                            data: data.clone(),
                        }]);
                        inflight.push_back((Instant::now(), ticket));
                        if inflight.len() < window {
                            continue;
                        }
                    }
                    let Some((at, ticket)) = inflight.pop_front() else {
                        break;
                    };
                    ticket.await.expect("durable append");
                    latencies.push(at.elapsed().as_micros() as u32);
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("appender"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let (p50_ms, p99_ms) = percentiles_ms(&latencies);
        let stats = store.commit_stats();
        Ingest {
            rate: latencies.len() as f64 / elapsed,
            p50_ms,
            p99_ms,
            group: stats.records as f64 / stats.commits.max(1) as f64,
            commit_ms: stats.commit_seconds * 1000.0 / stats.commits.max(1) as f64,
            disk_p50_ms,
            disk_p99_ms,
            raw_same_batch: 0.0,
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    let batch = result.group.round().max(1.0) as usize;
    Ingest {
        raw_same_batch: raw_ceiling(root, batch, total, PAIRED_RAW),
        ..result
    }
}

struct Replay {
    rate: f64,
    amp_full: f64,
    /// Half acknowledged, measured at once (segment deletion, one
    /// `fdatasync` behind the acknowledgements, may lag a full-speed
    /// replay) and once the deletions queued so far are done.
    amp_half_running: f64,
    amp_half: f64,
    reopen_ms: f64,
    rss_mb: f64,
}

/// Builds a backlog of `backlog` records, reopens the store, then reads and
/// acknowledges all of it.
fn replay(root: &Path, backlog: usize) -> Replay {
    let dir = fresh_dir(root, "replay");
    let q = dir.join("q");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let live = (backlog * RECORD) as f64;
        {
            let store = QueueStore::open(&StorageMode::Disk(q.clone()), &["bench".to_string()])
                .expect("open");
            common::fill(&store, (backlog / 1000) as u64, RECORD).await;
        }
        let amp_full = disk_bytes(&q) as f64 / live;
        let opened = Instant::now();
        let store = QueueStore::open(&StorageMode::Disk(q.clone()), &["bench".to_string()])
            .expect("reopen");
        let reopen_ms = opened.elapsed().as_secs_f64() * 1000.0;
        let queue = store.queue(0).expect("queue");
        assert_eq!(queue.stats().messages, (backlog / 1000 * 1000) as u64);
        let started = Instant::now();
        let mut next = 1;
        let mut done = 0usize;
        let mut amp_half = 0.0;
        let mut amp_half_running = 0.0;
        let mut paused = Duration::ZERO;
        let mut rss = 0.0f64;
        loop {
            let records = queue.read(next, 1000, 1 << 20).await.expect("read");
            let Some(last) = records.last().map(|r| r.seq) else {
                break;
            };
            queue.ack(last).await.expect("ack");
            done += records.len();
            next = last + 1;
            if amp_half == 0.0 && done >= backlog / 2 {
                // Kept out of the replay time.
                let pause = Instant::now();
                let live = ((backlog - done) * RECORD) as f64;
                amp_half_running = disk_bytes(&q) as f64 / live;
                store.settle();
                amp_half = disk_bytes(&q) as f64 / live;
                rss = rss.max(rss_mb());
                paused = pause.elapsed();
            }
        }
        let rate = done as f64 / (started.elapsed() - paused).as_secs_f64();
        rss = rss.max(rss_mb());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        Replay {
            rate,
            amp_full,
            amp_half_running,
            amp_half,
            reopen_ms,
            rss_mb: rss,
        }
    })
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn row(what: &str, values: Vec<f64>, fmt: impl Fn(f64) -> String) -> f64 {
    let (median, runs) = common::median(values);
    let runs: Vec<String> = runs.iter().map(|v| fmt(*v)).collect();
    println!("| {what} | **{}** [{}] |", fmt(median), runs.join(", "));
    median
}

/// The rows of one ingest mode.
fn ingest_rows(label: &str, runs: &[Ingest]) {
    let ms = |v: f64| format!("{v:.2}");
    row(
        &format!("{label}, durable records/s"),
        runs.iter().map(|r| r.rate).collect(),
        fmt_rate,
    );
    row(
        &format!("{label}, commit latency p50, ms"),
        runs.iter().map(|r| r.p50_ms).collect(),
        ms,
    );
    row(
        &format!("{label}, commit latency p99, ms"),
        runs.iter().map(|r| r.p99_ms).collect(),
        ms,
    );
    row(
        &format!("{label}: the disk alone just before, fdatasync of a 4 KiB append p50, ms"),
        runs.iter().map(|r| r.disk_p50_ms).collect(),
        ms,
    );
    row(
        &format!("{label}: the disk alone just before, fdatasync of a 4 KiB append p99, ms"),
        runs.iter().map(|r| r.disk_p99_ms).collect(),
        ms,
    );
    row(
        &format!("{label}, records per group commit"),
        runs.iter().map(|r| r.group).collect(),
        |v| format!("{v:.0}"),
    );
    row(
        &format!("{label}, committer time per group (write + fdatasync), ms"),
        runs.iter().map(|r| r.commit_ms).collect(),
        ms,
    );
    // The fair ceiling: the raw file at the run's own group size, right
    // after it; the share is the median of the run-by-run shares.
    row(
        &format!("{label}, raw ceiling at the same batch, right after each run, records/s"),
        runs.iter().map(|r| r.raw_same_batch).collect(),
        fmt_rate,
    );
    row(
        &format!("{label}, share of the raw ceiling at the same batch (run by run), %"),
        runs.iter()
            .map(|r| 100.0 * r.rate / r.raw_same_batch.max(1.0))
            .collect(),
        |v| format!("{v:.0}"),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let root = std::env::var("BACKHAUL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("backhaul-bench"));
    std::fs::create_dir_all(&root).expect("bench root");
    let total = common::env_usize("BACKHAUL_BENCH_RECORDS", 1_000_000);
    // `BACKHAUL_BENCH_ONLY=ingest` skips the raw rows and the replay,
    // `BACKHAUL_BENCH_ONLY=replay` everything but the replay;
    // `BACKHAUL_BENCH_WINDOWS=256,1024` chooses the inflight windows.
    let only_ingest = std::env::var("BACKHAUL_BENCH_ONLY").is_ok_and(|v| v == "ingest");
    let windows: Vec<usize> = std::env::var("BACKHAUL_BENCH_WINDOWS")
        .ok()
        .map(|v| v.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 64, 256]);
    println!(
        "backhaul-storage queue benchmark: {RECORD}-byte records, dir {}, medians of {} runs [runs]",
        root.display(),
        runs()
    );
    println!();
    println!("| measurement | value |");
    println!("|---|---|");
    let mut raw = Vec::new();
    let only_replay = std::env::var("BACKHAUL_BENCH_ONLY").is_ok_and(|v| v == "replay");
    let batches: &[usize] = if only_ingest || only_replay {
        &[]
    } else {
        &[16, 100, 1000]
    };
    let windows = if only_replay { Vec::new() } else { windows };
    for &batch in batches {
        let runs = (0..runs())
            .map(|_| raw_ceiling(&root, batch, total, TIME_LIMIT))
            .collect();
        raw.push((
            batch,
            row(
                &format!("raw ceiling: append + fdatasync per batch of {batch}, records/s"),
                runs,
                fmt_rate,
            ),
        ));
    }
    // `BACKHAUL_BENCH_MODES=plain` (or `plain,default`, ...) measures only
    // those commit modes: A/B runs of two builds then spend the machine on
    // the mode they compare.
    let wanted = std::env::var("BACKHAUL_BENCH_MODES").unwrap_or_default();
    let wanted = |mode: &str| wanted.is_empty() || wanted.split(',').any(|m| m.trim() == mode);
    for window in windows {
        // The commit modes take turns run by run, so that all see the same
        // disk states.
        let modes = [Commit::Plain, Commit::Pipelined, Commit::Default];
        let mut results: [Vec<Ingest>; 3] = Default::default();
        for run in 0..runs() {
            for turn in 0..modes.len() {
                let index = (run + turn) % modes.len();
                if wanted(modes[index].key()) {
                    results[index].push(ingest(&root, 16, window, total, modes[index]));
                }
            }
        }
        for (mode, runs) in modes.iter().zip(&results) {
            if runs.is_empty() {
                continue;
            }
            ingest_rows(
                &format!(
                    "engine ({} commit): 16 appenders x {window} in flight",
                    mode.label()
                ),
                runs,
            );
        }
        let [plain, pipelined, default] = &results;
        // Run i of each mode ran back to back with the others' run i.
        for (name, other) in [("pipelined", pipelined), ("default", default)] {
            if plain.is_empty() || other.is_empty() {
                continue;
            }
            row(
                &format!("16 appenders x {window} in flight: {name} / plain durable records/s, run by run"),
                plain
                    .iter()
                    .zip(other)
                    .map(|(plain, other)| other.rate / plain.rate.max(1.0))
                    .collect(),
                |v| format!("{v:.2}x"),
            );
        }
    }
    if only_ingest {
        let _ = std::fs::remove_dir_all(&root);
        return;
    }
    let backlog = total;
    let runs: Vec<Replay> = (0..runs()).map(|_| replay(&root, backlog)).collect();
    row(
        &format!("replay: read 1000 + ack, backlog of {backlog}, records/s"),
        runs.iter().map(|r| r.rate).collect(),
        fmt_rate,
    );
    row(
        "space amplification, full backlog (disk bytes / record bytes)",
        runs.iter().map(|r| r.amp_full).collect(),
        |v| format!("{v:.3}"),
    );
    row(
        "space amplification, half acknowledged (acknowledged segments deleted)",
        runs.iter().map(|r| r.amp_half).collect(),
        |v| format!("{v:.3}"),
    );
    row(
        "space amplification, half acknowledged, in the middle of the full-speed replay",
        runs.iter().map(|r| r.amp_half_running).collect(),
        |v| format!("{v:.3}"),
    );
    row(
        &format!("reopen with a backlog of {backlog}, ms"),
        runs.iter().map(|r| r.reopen_ms).collect(),
        |v| format!("{v:.1}"),
    );
    row(
        "process RSS during replay, MB",
        runs.iter().map(|r| r.rss_mb).collect(),
        |v| format!("{v:.0}"),
    );
    let _ = std::fs::remove_dir_all(&root);
}
