//! Property test of limits and expiry: both backends (the segment log on the
//! model filesystem with tiny segments, and memory) behave like a plain FIFO
//! model per flow with random per-flow limits (`DropOldest` or `RejectNew`,
//! by messages and bytes) and TTLs, under appends to several flows at once,
//! reads (also ahead of the head), acknowledgements, a clock that moves, and
//! for the disk: reopenings, crashes with torn tails and full disks.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backhaul_storage::backend::segment::io::ModelFs;
use backhaul_storage::backend::{Backend, MemoryBackend, SegmentBackend, SegmentConfig};
use backhaul_storage::clock::{Clock, ManualClock};
use backhaul_storage::{
    AppendEntry, FlowSpec, Overflow, QueueLimits, QueueStore, Seq, StorageError, StoreLimits,
};
use bytes::Bytes;
use proptest::prelude::*;

const FLOWS: usize = 3;
const START_MS: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(usize, usize)>),
    Read {
        flow: usize,
        skip: u64,
        max_count: usize,
        max_bytes: usize,
    },
    Ack {
        flow: usize,
        count: u64,
    },
    Tick {
        ms: u64,
    },
    Reopen,
    Crash {
        torn: usize,
    },
    DiskFull {
        room: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..FLOWS, 0usize..120), 1..8).prop_map(Op::Append),
        4 => (0..FLOWS, prop_oneof![3 => Just(0u64), 1 => 1u64..4], 1usize..30, 1usize..2000)
            .prop_map(|(flow, skip, max_count, max_bytes)| Op::Read { flow, skip, max_count, max_bytes }),
        3 => (0..FLOWS, 0u64..15).prop_map(|(flow, count)| Op::Ack { flow, count }),
        3 => (0u64..3000).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::Reopen),
        1 => (0usize..40).prop_map(|torn| Op::Crash { torn }),
        1 => (0u64..300).prop_map(|room| Op::DiskFull { room }),
    ]
}

fn limits() -> impl Strategy<Value = QueueLimits> {
    (
        prop::option::of(1u64..12),
        prop::option::of(50u64..1500),
        prop_oneof![Just(Overflow::DropOldest), Just(Overflow::RejectNew)],
        prop::option::of(500u64..8000),
    )
        .prop_map(|(max_messages, max_bytes, overflow, ttl)| QueueLimits {
            max_messages,
            max_bytes,
            overflow,
            ttl: ttl.map(Duration::from_millis),
        })
}

#[derive(Debug, Default, Clone)]
struct FlowModel {
    limits: QueueLimits,
    /// (seq, append time, data)
    queued: VecDeque<(Seq, u64, Bytes)>,
    next: Seq,
    /// Everything `<= head` is acknowledged or dropped.
    head: Seq,
    /// Expired records a read skipped that are still queued.
    skipped: BTreeSet<Seq>,
    dropped: u64,
    expired: u64,
    rejected: u64,
}

impl FlowModel {
    fn bytes(&self) -> u64 {
        self.queued.iter().map(|(_, _, d)| d.len() as u64).sum()
    }

    fn over(&self) -> bool {
        self.limits
            .max_messages
            .is_some_and(|max| self.queued.len() as u64 > max)
            || self.limits.max_bytes.is_some_and(|max| self.bytes() > max)
    }

    /// Pops the head record; whether it was one a read skipped as expired.
    fn pop(&mut self) -> bool {
        let Some((seq, _, _)) = self.queued.pop_front() else {
            return false;
        };
        self.head = self.head.max(seq);
        self.skipped.remove(&seq)
    }

    fn cutoff(&self, now: u64) -> Option<u64> {
        self.limits
            .ttl
            .map(|ttl| now.saturating_sub(ttl.as_millis() as u64))
    }

    /// What a read returns, updating the model as the store does.
    fn read(
        &mut self,
        now: u64,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Vec<(Seq, Bytes)> {
        let cutoff = self.cutoff(now);
        if let Some(cutoff) = cutoff {
            if self.head + 1 >= from {
                while self
                    .queued
                    .front()
                    .is_some_and(|(_, time, _)| *time <= cutoff)
                {
                    if !self.pop() {
                        self.expired += 1;
                    }
                }
            }
        }
        let mut from = from;
        loop {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for (seq, time, data) in self.queued.iter().filter(|(s, _, _)| *s >= from) {
                if batch.len() == max_count || (!batch.is_empty() && bytes + data.len() > max_bytes)
                {
                    break;
                }
                bytes += data.len();
                batch.push((*seq, *time, data.clone()));
            }
            let Some(last) = batch.last().map(|r| r.0) else {
                return Vec::new();
            };
            let mut fresh = Vec::new();
            for (seq, time, data) in batch {
                if cutoff.is_some_and(|c| time <= c) {
                    if self.skipped.insert(seq) {
                        self.expired += 1;
                    }
                } else {
                    fresh.push((seq, data));
                }
            }
            if !fresh.is_empty() || cutoff.is_none() {
                return fresh;
            }
            from = last + 1;
        }
    }
}

enum Kind {
    Disk,
    Memory,
}

struct Harness {
    kind: Kind,
    fs: ModelFs,
    clock: Arc<ManualClock>,
    specs: Vec<FlowSpec>,
    store: Option<QueueStore>,
}

impl Harness {
    fn open(&mut self) {
        let specs = self.specs.clone();
        self.open_with(&specs);
    }

    fn open_with(&mut self, specs: &[FlowSpec]) {
        self.store = None;
        let backend: Arc<dyn Backend> = match self.kind {
            Kind::Disk => {
                let config = SegmentConfig {
                    max_segment_bytes: 512,
                    max_record_bytes: 1 << 16,
                };
                Arc::new(
                    SegmentBackend::open_with(Path::new("/q"), Arc::new(self.fs.clone()), config)
                        .expect("open"),
                )
            }
            Kind::Memory => Arc::new(MemoryBackend::new()),
        };
        self.store = Some(
            QueueStore::open_backend_with(
                backend,
                specs,
                StoreLimits::default(),
                self.clock.clone(),
            )
            .expect("recover"),
        );
    }

    fn store(&self) -> &QueueStore {
        self.store.as_ref().expect("open store")
    }
}

fn fail(e: StorageError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn run(kind: Kind, flow_limits: Vec<QueueLimits>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let disk = matches!(kind, Kind::Disk);
        let specs: Vec<FlowSpec> = flow_limits
            .iter()
            .enumerate()
            .map(|(i, limits)| FlowSpec::with_limits(format!("flow{i}"), *limits))
            .collect();
        let mut h = Harness {
            kind,
            fs: ModelFs::new(),
            clock: Arc::new(ManualClock::new(START_MS)),
            specs,
            store: None,
        };
        h.open();
        let mut model: Vec<FlowModel> = flow_limits
            .iter()
            .map(|limits| FlowModel {
                limits: *limits,
                next: 1,
                ..FlowModel::default()
            })
            .collect();
        let mut counter = 0u64;
        for op in ops {
            let now = h.clock.now_ms();
            match op {
                Op::Append(entries) => {
                    let entries: Vec<AppendEntry> = entries
                        .into_iter()
                        .map(|(flow, len)| {
                            counter += 1;
                            let mut data = counter.to_le_bytes().to_vec();
                            data.resize(len.max(8), (counter % 251) as u8);
                            AppendEntry {
                                flow,
                                data: Bytes::from(data),
                            }
                        })
                        .collect();
                    // RejectNew: the whole append is refused if any flow
                    // would go over.
                    let refused = (0..FLOWS).any(|flow| {
                        let m = &model[flow];
                        let mine: Vec<&AppendEntry> =
                            entries.iter().filter(|e| e.flow == flow).collect();
                        let bytes: u64 = mine.iter().map(|e| e.data.len() as u64).sum();
                        !mine.is_empty()
                            && m.limits.overflow == Overflow::RejectNew
                            && (m
                                .limits
                                .max_messages
                                .is_some_and(|max| m.queued.len() as u64 + mine.len() as u64 > max)
                                || m.limits
                                    .max_bytes
                                    .is_some_and(|max| m.bytes() + bytes > max))
                    });
                    match h.store().append(entries.clone()).await {
                        Ok(seqs) => {
                            prop_assert!(!refused, "an append over a RejectNew limit was accepted");
                            for (entry, seq) in entries.iter().zip(seqs) {
                                let m = &mut model[entry.flow];
                                prop_assert_eq!(seq, m.next, "sequence");
                                m.next += 1;
                                m.queued.push_back((seq, now, entry.data.clone()));
                            }
                            let touched: BTreeSet<usize> = entries.iter().map(|e| e.flow).collect();
                            for flow in touched {
                                let m = &mut model[flow];
                                if m.limits.overflow == Overflow::DropOldest {
                                    while m.over() {
                                        if !m.pop() {
                                            m.dropped += 1;
                                        }
                                    }
                                }
                            }
                        }
                        Err(StorageError::QuotaExceeded { flow, .. }) => {
                            prop_assert!(refused, "refused without reason (flow {})", flow);
                            let first = entries[0].flow;
                            model[first].rejected += 1;
                        }
                        Err(StorageError::DiskFull { .. }) if disk => {
                            prop_assert!(!refused, "a quota refusal reported as disk full");
                        }
                        Err(other) => prop_assert!(false, "append failed: {}", other),
                    }
                    h.fs.set_capacity(None);
                }
                Op::Read {
                    flow,
                    skip,
                    max_count,
                    max_bytes,
                } => {
                    let m = &mut model[flow];
                    let from = m.head + 1 + skip;
                    let expect = m.read(now, from, max_count, max_bytes);
                    let got = h
                        .store()
                        .queue(flow)
                        .expect("queue")
                        .read(from, max_count, max_bytes)
                        .await
                        .map_err(fail)?;
                    let got: Vec<(Seq, Bytes)> = got.into_iter().map(|r| (r.seq, r.data)).collect();
                    prop_assert_eq!(got, expect);
                }
                Op::Ack { flow, count } => {
                    let m = &mut model[flow];
                    let upto = m.head + count;
                    let acked = h
                        .store()
                        .queue(flow)
                        .expect("queue")
                        .ack(upto)
                        .await
                        .map_err(fail)?;
                    let mut expect = 0;
                    while m.queued.front().is_some_and(|(s, _, _)| *s <= upto) {
                        if !m.pop() {
                            expect += 1;
                        }
                    }
                    m.head = m.head.max(upto.min(m.next - 1));
                    prop_assert_eq!(acked, expect);
                }
                Op::Tick { ms } => h.clock.advance(Duration::from_millis(ms)),
                Op::Reopen if disk => {
                    h.open();
                    for m in model.iter_mut() {
                        m.skipped.clear();
                        (m.dropped, m.expired, m.rejected) = (0, 0, 0);
                    }
                }
                Op::Crash { torn } if disk => {
                    h.store = None;
                    h.fs = h.fs.crash(|unsynced| torn.min(unsynced));
                    // Look at what survived without limits (a read with a
                    // TTL would expire some of it), then reopen with them.
                    let unlimited: Vec<FlowSpec> = h
                        .specs
                        .iter()
                        .map(|s| FlowSpec::new(s.name.clone()))
                        .collect();
                    h.open_with(&unlimited);
                    // Acknowledgements and drops since the last checkpoint
                    // sync may come back; nothing else may be missing.
                    for (flow, m) in model.iter_mut().enumerate() {
                        m.skipped.clear();
                        (m.dropped, m.expired, m.rejected) = (0, 0, 0);
                        let got = h
                            .store()
                            .queue(flow)
                            .expect("queue")
                            .read(1, usize::MAX, usize::MAX)
                            .await
                            .map_err(fail)?;
                        let first = got.first().map_or(m.next, |r| r.seq);
                        prop_assert!(first <= m.head + 1, "a queued record vanished");
                        let back = got.iter().take_while(|r| r.seq <= m.head).count();
                        let rest: Vec<Seq> = got[back..].iter().map(|r| r.seq).collect();
                        let expect: Vec<Seq> = m.queued.iter().map(|(s, _, _)| *s).collect();
                        prop_assert_eq!(rest, expect);
                        for record in got[..back].iter().rev() {
                            let time = record.appended_ms().expect("append time");
                            m.queued.push_front((record.seq, time, record.data.clone()));
                        }
                        m.head = first - 1;
                    }
                    h.open();
                }
                Op::DiskFull { room } if disk => {
                    h.fs.set_capacity(Some(h.fs.used() + room));
                }
                Op::Reopen | Op::Crash { .. } | Op::DiskFull { .. } => {}
            }
            let now = h.clock.now_ms();
            for (flow, m) in model.iter().enumerate() {
                let stats = h.store().queue(flow).expect("queue").stats();
                prop_assert_eq!(
                    stats.messages,
                    m.queued.len() as u64,
                    "messages of flow {}",
                    flow
                );
                prop_assert_eq!(stats.bytes, m.bytes(), "bytes of flow {}", flow);
                prop_assert_eq!(stats.quarantined_total, 0);
                prop_assert_eq!(
                    stats.dropped_overflow_total,
                    m.dropped,
                    "dropped of flow {}",
                    flow
                );
                prop_assert_eq!(stats.expired_total, m.expired, "expired of flow {}", flow);
                prop_assert_eq!(
                    stats.rejected_total,
                    m.rejected,
                    "rejected of flow {}",
                    flow
                );
                let age = m
                    .queued
                    .front()
                    .map(|(_, time, _)| Duration::from_millis(now - time));
                prop_assert_eq!(stats.oldest_age, age, "oldest age of flow {}", flow);
            }
        }
        Ok(())
    })
}

proptest! {
    // 64 cases by default for CI speed; `PROPTEST_CASES=2000` for a soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn disk_queues_with_limits_match_the_model(
        flow_limits in prop::collection::vec(limits(), FLOWS),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(Kind::Disk, flow_limits, ops)?;
    }

    #[test]
    fn memory_queues_with_limits_match_the_model(
        flow_limits in prop::collection::vec(limits(), FLOWS),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(Kind::Memory, flow_limits, ops)?;
    }
}
