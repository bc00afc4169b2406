//! Property test: the disk queue (segment log on the model filesystem, tiny
//! segments so rolls and deletions happen constantly) behaves like a plain
//! in-memory FIFO per flow under any sequence of appends, reads,
//! acknowledgements, reopenings, crashes with torn tails and full disks.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use backhaul_storage::backend::segment::io::ModelFs;
use backhaul_storage::backend::{SegmentBackend, SegmentConfig};
use backhaul_storage::{AppendEntry, QueueStore, Seq, StorageError};
use bytes::Bytes;
use proptest::prelude::*;

const FLOWS: usize = 3;

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
        6 => prop::collection::vec((0..FLOWS, 0usize..120), 1..12).prop_map(Op::Append),
        4 => (0..FLOWS, 0u64..4, 1usize..30, 1usize..2000)
            .prop_map(|(flow, skip, max_count, max_bytes)| Op::Read { flow, skip, max_count, max_bytes }),
        4 => (0..FLOWS, 0u64..15).prop_map(|(flow, count)| Op::Ack { flow, count }),
        1 => Just(Op::Reopen),
        1 => (0usize..40).prop_map(|torn| Op::Crash { torn }),
        1 => (0u64..300).prop_map(|room| Op::DiskFull { room }),
    ]
}

#[derive(Default, Clone)]
struct FlowModel {
    queued: VecDeque<(Seq, Bytes)>,
    next: Seq,
    acked: Seq,
}

fn names() -> Vec<String> {
    (0..FLOWS).map(|i| format!("flow{i}")).collect()
}

fn open(fs: &ModelFs) -> QueueStore {
    let config = SegmentConfig {
        max_segment_bytes: 512,
        max_record_bytes: 1 << 16,
    };
    let backend =
        SegmentBackend::open_with(Path::new("/q"), Arc::new(fs.clone()), config).expect("open");
    QueueStore::open_backend(Arc::new(backend), &names()).expect("recover")
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut fs = ModelFs::new();
        let mut store = open(&fs);
        let mut model: Vec<FlowModel> = vec![
            FlowModel {
                next: 1,
                ..FlowModel::default()
            };
            FLOWS
        ];
        let mut counter = 0u64;
        for op in ops {
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
                    match store.append(entries.clone()).await {
                        Ok(seqs) => {
                            for (entry, seq) in entries.iter().zip(seqs) {
                                let m = &mut model[entry.flow];
                                prop_assert_eq!(seq, m.next, "sequence");
                                m.next += 1;
                                m.queued.push_back((seq, entry.data.clone()));
                            }
                        }
                        Err(StorageError::DiskFull { .. }) => {}
                        Err(other) => prop_assert!(false, "append failed: {}", other),
                    }
                    fs.set_capacity(None);
                }
                Op::Read {
                    flow,
                    skip,
                    max_count,
                    max_bytes,
                } => {
                    let m = &model[flow];
                    let from = m.acked + 1 + skip;
                    let got = store
                        .queue(flow)
                        .expect("queue")
                        .read(from, max_count, max_bytes)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut expect = Vec::new();
                    let mut bytes = 0;
                    for (seq, data) in m.queued.iter().filter(|(s, _)| *s >= from) {
                        if expect.len() == max_count
                            || (!expect.is_empty() && bytes + data.len() > max_bytes)
                        {
                            break;
                        }
                        bytes += data.len();
                        expect.push((*seq, data.clone()));
                    }
                    let got: Vec<(Seq, Bytes)> = got.into_iter().map(|r| (r.seq, r.data)).collect();
                    prop_assert_eq!(got, expect);
                }
                Op::Ack { flow, count } => {
                    let m = &mut model[flow];
                    let upto = m.acked + count;
                    let removed = store
                        .queue(flow)
                        .expect("queue")
                        .ack(upto)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut expect = 0;
                    while m.queued.front().is_some_and(|(s, _)| *s <= upto) {
                        m.queued.pop_front();
                        expect += 1;
                    }
                    m.acked = m.acked.max(upto.min(m.next - 1));
                    prop_assert_eq!(removed, expect);
                }
                Op::Reopen => {
                    drop(store);
                    store = open(&fs);
                }
                Op::Crash { torn } => {
                    drop(store);
                    fs = fs.crash(|unsynced| torn.min(unsynced));
                    store = open(&fs);
                    // Acknowledgements since the last checkpoint sync may
                    // come back; nothing unacknowledged may be missing.
                    for (flow, m) in model.iter_mut().enumerate() {
                        let got = store
                            .queue(flow)
                            .expect("queue")
                            .read(1, usize::MAX, usize::MAX)
                            .await
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let first = got.first().map_or(m.next, |r| r.seq);
                        prop_assert!(first <= m.acked + 1, "an unacknowledged record vanished");
                        let back = got.iter().take_while(|r| r.seq <= m.acked).count();
                        let rest: Vec<Seq> = got[back..].iter().map(|r| r.seq).collect();
                        let expect: Vec<Seq> = m.queued.iter().map(|(s, _)| *s).collect();
                        prop_assert_eq!(rest, expect);
                        // Re-delivered records become queued again.
                        for record in got[..back].iter().rev() {
                            m.queued.push_front((record.seq, record.data.clone()));
                        }
                        m.acked = first - 1;
                    }
                }
                Op::DiskFull { room } => {
                    fs.set_capacity(Some(fs.used() + room));
                }
            }
            for (flow, m) in model.iter().enumerate() {
                let stats = store.queue(flow).expect("queue").stats();
                prop_assert_eq!(
                    stats.messages,
                    m.queued.len() as u64,
                    "messages of flow {}",
                    flow
                );
                let bytes: usize = m.queued.iter().map(|(_, d)| d.len()).sum();
                prop_assert_eq!(stats.bytes, bytes as u64, "bytes of flow {}", flow);
                prop_assert_eq!(stats.quarantined_total, 0);
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
    fn disk_queue_matches_a_fifo_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
