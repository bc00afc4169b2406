//! Crash test: a child process appends, reads and acknowledges in a loop on
//! a disk queue and is killed with SIGKILL at a random moment, over and over
//! on the same directory. After every kill the parent reopens the store and
//! checks the contract:
//!
//! - every record whose append the child saw resolve (durable) is still
//!   queued with the same content, or was acknowledged;
//! - nothing the child saw acknowledged comes back (a killed process keeps
//!   its page cache, so checkpoints written before the kill count);
//! - nothing unacknowledged is missing, CRCs verify (nothing quarantined),
//!   and sequences are never reused.
//!
//! `BACKHAUL_CRASH_ITERATIONS` sets the number of kills: 20 by default for
//! CI, 200 for the soak (`BACKHAUL_CRASH_ITERATIONS=200 cargo test -p
//! backhaul-storage --test crash`). `BACKHAUL_CRASH_SEED` replays a run.
//!
//! The child is this same test binary, re-run with `crash_child` selected
//! and `BACKHAUL_CRASH_CHILD_DIR` set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_storage::backend::segment::io::RealFs;
use backhaul_storage::backend::{SegmentBackend, SegmentConfig};
use backhaul_storage::{AppendEntry, QueueStore, Seq, StorageMode};
use bytes::Bytes;

const FLOWS: usize = 2;

fn names() -> Vec<String> {
    vec!["alpha".to_string(), "beta".to_string()]
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A record carries the CRC32C of its body in front, so any record read
/// back can be checked on its own.
fn make_record(rng: &mut Rng) -> (Bytes, u32) {
    let len = 16 + rng.below(300) as usize;
    let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let crc = crc32c::crc32c(&body);
    let mut data = crc.to_le_bytes().to_vec();
    data.extend_from_slice(&body);
    (Bytes::from(data), crc)
}

fn self_check(data: &[u8]) -> Option<u32> {
    let crc = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
    (crc32c::crc32c(&data[4..]) == crc).then_some(crc)
}

fn say(line: String) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child's loop; does nothing unless started by the parent.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("BACKHAUL_CRASH_CHILD_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("BACKHAUL_CRASH_CHILD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Small segments, so rolls and deletions happen under the kills too.
        let config = SegmentConfig {
            max_segment_bytes: 16 * 1024,
            ..SegmentConfig::default()
        };
        let backend = SegmentBackend::open_with(Path::new(&dir), Arc::new(RealFs), config)
            .expect("open store");
        let store =
            Arc::new(QueueStore::open_backend(Arc::new(backend), &names()).expect("open store"));
        say("READY".to_string());
        let mut tasks = Vec::new();
        for appender in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(appender) | 1);
                loop {
                    let n = 1 + rng.below(6) as usize;
                    let mut entries = Vec::new();
                    let mut crcs = Vec::new();
                    for _ in 0..n {
                        let (data, crc) = make_record(&mut rng);
                        entries.push(AppendEntry {
                            flow: rng.below(FLOWS as u64) as usize,
                            data,
                        });
                        crcs.push(crc);
                    }
                    let flows: Vec<usize> = entries.iter().map(|e| e.flow).collect();
                    let seqs = store.append(entries).await.expect("append");
                    for ((flow, seq), crc) in flows.iter().zip(seqs).zip(crcs) {
                        say(format!("D {flow} {seq} {crc:08x}"));
                    }
                }
            }));
        }
        for flow in 0..FLOWS {
            let queue = store.queue(flow).expect("queue");
            tasks.push(tokio::spawn(async move {
                let mut next: Seq = 1;
                loop {
                    let records = queue.read(next, 40, 1 << 20).await.expect("read");
                    let Some(last) = records.last().map(|r| r.seq) else {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    };
                    for record in &records {
                        assert!(self_check(&record.data).is_some(), "record verifies");
                    }
                    say(format!("K {flow} {last}"));
                    queue.ack(last).await.expect("ack");
                    say(format!("A {flow} {last}"));
                    next = last + 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        std::process::exit(0);
    });
}

#[derive(Default)]
struct FlowTruth {
    /// Durable appends the child saw resolve: seq -> crc.
    durable: BTreeMap<Seq, u32>,
    /// Highest acknowledgement the child started / saw complete.
    ack_started: Seq,
    ack_done: Seq,
    /// Every record ever read back by the parent: seq -> crc.
    seen: BTreeMap<Seq, u32>,
}

fn verify(dir: &Path, truth: &mut [FlowTruth], round: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = QueueStore::open(&StorageMode::Disk(dir.into()), &names())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        for (flow, t) in truth.iter_mut().enumerate() {
            let queue = store.queue(flow).expect("queue");
            let records = queue.read(1, usize::MAX, usize::MAX).await.expect("read");
            let stats = queue.stats();
            if stats.quarantined_total != 0 {
                let listing = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("ls -laR {} ; od -A d -t x1 {}/ledger", dir.display(), dir.join(format!("flow-{}", names()[flow])).display()))
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let firsts: Vec<Seq> = records.iter().take(3).map(|r| r.seq).collect();
                panic!(
                    "round {round} flow {flow}: {} quarantined (recovered {}), first records {firsts:?}, acked started {} done {}, durable {:?}..{:?}\n{listing}",
                    stats.quarantined_total, stats.recovered, t.ack_started, t.ack_done,
                    t.durable.keys().next(), t.durable.keys().next_back()
                );
            }
            assert_eq!(stats.messages, records.len() as u64, "round {round} flow {flow}");
            let floor = match records.first() {
                Some(first) => first.seq - 1,
                None => Seq::MAX,
            };
            assert!(
                records.is_empty() || floor >= t.ack_done,
                "round {round} flow {flow}: acknowledged up to {} but {floor} is the floor",
                t.ack_done
            );
            let present: BTreeMap<Seq, u32> = records
                .iter()
                .map(|r| {
                    let crc = self_check(&r.data).unwrap_or_else(|| {
                        panic!("round {round} flow {flow}: record {} fails its check", r.seq)
                    });
                    (r.seq, crc)
                })
                .collect();
            assert!(
                records.windows(2).all(|w| w[1].seq == w[0].seq + 1),
                "round {round} flow {flow}: sequences contiguous"
            );
            for (seq, crc) in &t.durable {
                if *seq <= t.ack_started && (records.is_empty() || *seq <= floor) {
                    continue; // acknowledged
                }
                assert_eq!(
                    present.get(seq),
                    Some(crc),
                    "round {round} flow {flow}: durable record {seq} missing or changed (floor {floor}, acked {})",
                    t.ack_started
                );
            }
            for (seq, crc) in &present {
                if let Some(old) = t.seen.insert(*seq, *crc) {
                    assert_eq!(old, *crc, "round {round} flow {flow}: sequence {seq} reused");
                }
                if let Some(durable) = t.durable.get(seq) {
                    assert_eq!(durable, crc, "round {round} flow {flow}: sequence {seq} reused");
                }
            }
        }
    });
}

#[test]
fn sigkill_at_random_points_loses_no_durable_record() {
    if std::env::var("BACKHAUL_CRASH_CHILD_DIR").is_ok() {
        return;
    }
    let iterations: usize = std::env::var("BACKHAUL_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("BACKHAUL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash test: {iterations} iterations, BACKHAUL_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    // Kept for inspection when the test fails.
    let tmp = tmp.keep();
    let dir = tmp.join("queues");
    let exe = std::env::current_exe().expect("test binary");
    let mut truth: Vec<FlowTruth> = (0..FLOWS).map(|_| FlowTruth::default()).collect();
    let (mut durable, mut acked) = (0usize, 0usize);
    for round in 0..iterations {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("BACKHAUL_CRASH_CHILD_DIR", &dir)
            .env("BACKHAUL_CRASH_CHILD_SEED", rng.next().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let delay = Duration::from_millis(20 + rng.below(400));
        let started = Instant::now();
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let lines = lines.join().expect("reader");
        assert!(
            lines.iter().any(|l| l == "READY") || started.elapsed() < Duration::from_secs(5),
            "round {round}: the child never opened the store"
        );
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["D", flow, seq, crc] => {
                    let (flow, seq): (usize, Seq) = (flow.parse().unwrap(), seq.parse().unwrap());
                    let crc = u32::from_str_radix(crc, 16).unwrap();
                    truth[flow].durable.insert(seq, crc);
                    durable += 1;
                }
                ["K", flow, upto] => {
                    let t = &mut truth[flow.parse::<usize>().unwrap()];
                    t.ack_started = t.ack_started.max(upto.parse().unwrap());
                }
                ["A", flow, upto] => {
                    let t = &mut truth[flow.parse::<usize>().unwrap()];
                    t.ack_done = t.ack_done.max(upto.parse().unwrap());
                    acked += 1;
                }
                _ => {}
            }
        }
        verify(&dir, &mut truth, round);
    }
    println!("crash test: {iterations} kills, {durable} durable appends, {acked} acknowledgements checked");
    assert!(durable > 0, "the children appended something");
    let _ = std::fs::remove_dir_all(&tmp);
}
