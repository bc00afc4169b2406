//! Large-backlog benchmark: memory and reopen time with a backlog of many
//! gigabytes (the issue's goals: under 64 MB resident and under 2 s to
//! reopen with 10 GB queued).
//!
//! ```text
//! BACKHAUL_BENCH_BACKLOG_GB=10 cargo bench -p backhaul-storage --bench backlog
//! ```
//!
//! One process fills a disk-mode queue with `BACKHAUL_BENCH_BACKLOG_GB`
//! (default 1) of `BACKHAUL_BENCH_RECORD`-byte records (default 200) in
//! appends of 1000, 8 in flight. Then, for each of `BACKHAUL_BENCH_RUNS`
//! (default 3) runs, a fresh process (this program again) drops the page
//! cache when it may (root: `/proc/sys/vm/drop_caches`), opens the store,
//! reads and acknowledges the first 1,000,000 records, and reports its open
//! time and its resident memory (VmRSS after the replay, VmHWM peak), so the
//! fill's own memory does not count. `BACKHAUL_BENCH_DIR` chooses the
//! directory (default: the temp dir); it is removed at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use backhaul_storage::{QueueStore, StorageMode};

const PHASE: &str = "BACKHAUL_BENCH_PHASE";
const REPLAYED: u64 = 1_000_000;

fn proc_status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn flows() -> Vec<String> {
    vec!["bench".to_string()]
}

/// Fills `queue` with `bytes` of `record`-byte records; returns the count.
fn fill(queue: &Path, bytes: u64, record: usize) -> u64 {
    let records = bytes / record as u64 / 1000 * 1000;
    runtime().block_on(async {
        let store =
            QueueStore::open(&StorageMode::Disk(queue.to_path_buf()), &flows()).expect("open");
        common::fill(&store, records / 1000, record).await;
    });
    records
}

/// The child: open, replay the first records, print `open_ms rss_mb hwm_mb cold`.
fn reopen(queue: &Path) {
    let cold = std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok();
    let opened = Instant::now();
    let store =
        QueueStore::open(&StorageMode::Disk(queue.to_path_buf()), &flows()).expect("reopen");
    let open_ms = opened.elapsed().as_secs_f64() * 1000.0;
    let queue = store.queue(0).expect("queue");
    runtime().block_on(async {
        let mut next = 1;
        while next <= REPLAYED {
            let records = queue.read(next, 1000, 1 << 20).await.expect("read");
            let Some(last) = records.last().map(|r| r.seq) else {
                break;
            };
            queue.ack(last).await.expect("ack");
            next = last + 1;
        }
    });
    println!(
        "{open_ms} {} {} {cold}",
        proc_status_mb("VmRSS:"),
        proc_status_mb("VmHWM:")
    );
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => count_files(&e.path()),
                _ => 1,
            })
            .sum()
    })
}

fn row(what: &str, values: Vec<f64>, digits: usize) {
    let (median, runs) = common::median(values);
    let runs: Vec<String> = runs.iter().map(|v| format!("{v:.digits$}")).collect();
    println!("| {what} | **{median:.digits$}** [{}] |", runs.join(", "));
}

fn main() {
    let root = std::env::var("BACKHAUL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("backhaul-bench-backlog"));
    let queue = root.join("q");
    if std::env::var(PHASE).is_ok_and(|p| p == "reopen") {
        reopen(&queue);
        return;
    }
    let gigabytes = common::env_usize("BACKHAUL_BENCH_BACKLOG_GB", 1) as u64;
    let record = common::env_usize("BACKHAUL_BENCH_RECORD", 200);
    let runs = common::env_usize("BACKHAUL_BENCH_RUNS", 3).max(1);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&queue).expect("bench dir");

    let started = Instant::now();
    let records = fill(&queue, gigabytes << 30, record);
    let fill_secs = started.elapsed().as_secs_f64();
    let segments = count_files(&queue);
    println!(
        "backhaul-storage backlog benchmark: {records} records of {record} bytes \
         ({gigabytes} GiB), dir {}, filled in {fill_secs:.0} s ({:.0} records/s), \
         {segments} files; medians of {runs} reopening processes [runs]",
        root.display(),
        records as f64 / fill_secs
    );
    println!();
    println!("| measurement | value |");
    println!("|---|---|");
    let mut open_ms = Vec::new();
    let mut rss = Vec::new();
    let mut hwm = Vec::new();
    let mut cold = true;
    for _ in 0..runs {
        let output = Command::new(std::env::current_exe().expect("this program"))
            .env(PHASE, "reopen")
            .env("BACKHAUL_BENCH_DIR", &root)
            .output()
            .expect("reopening process");
        let text = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "child said: {text} {:?}", output.stderr);
        open_ms.push(fields[0].parse().unwrap_or(f64::NAN));
        rss.push(fields[1].parse().unwrap_or(f64::NAN));
        hwm.push(fields[2].parse().unwrap_or(f64::NAN));
        cold &= fields[3] == "true";
    }
    let cache = if cold {
        "page cache dropped"
    } else {
        "page cache warm (not root)"
    };
    row(
        &format!("reopen with {gigabytes} GiB queued, ms ({cache})"),
        open_ms,
        1,
    );
    row(
        &format!("resident memory after reading and acknowledging {REPLAYED} records, MB"),
        rss,
        0,
    );
    row("peak resident memory of that process (VmHWM), MB", hwm, 0);
    let _ = std::fs::remove_dir_all(&root);
}
