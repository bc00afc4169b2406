//! Property test of pipelined group commits: many appends in flight at once
//! (the committer writes the next group while the previous one syncs),
//! failing syncs and a full disk injected while groups are in flight, tiny
//! segments so rolls happen constantly. Afterwards every flow holds exactly
//! the records of the appends that succeeded, in order, with contiguous
//! sequences, nothing quarantined, also after a reopen and after a crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backhaul_storage::backend::segment::io::ModelFs;
use backhaul_storage::backend::{SegmentBackend, SegmentConfig};
use backhaul_storage::{
    AppendEntry, CommitTicket, FlowSpec, QueueStore, Seq, StorageError, StoreOptions,
};
use bytes::Bytes;
use proptest::prelude::*;

const FLOWS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Issue appends without waiting for them.
    Issue(Vec<Vec<(usize, usize)>>),
    FailSyncs(u32),
    DiskFull(u64),
    DiskFree,
    /// Wait for every ticket issued so far.
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(
            prop::collection::vec((0..FLOWS, 1usize..150), 1..4),
            1..40
        )
        .prop_map(Op::Issue),
        1 => (1u32..3).prop_map(Op::FailSyncs),
        1 => (0u64..2000).prop_map(Op::DiskFull),
        1 => Just(Op::DiskFree),
        2 => Just(Op::Settle),
    ]
}

fn open(fs: &ModelFs, pipeline_min_records: Option<usize>) -> QueueStore {
    let config = SegmentConfig {
        max_segment_bytes: 700,
        max_record_bytes: 1 << 16,
    };
    let backend =
        SegmentBackend::open_with(Path::new("/q"), Arc::new(fs.clone()), config).expect("open");
    let flows: Vec<FlowSpec> = (0..FLOWS).map(|i| FlowSpec::new(format!("f{i}"))).collect();
    QueueStore::open_backend_options(
        Arc::new(backend),
        &flows,
        StoreOptions {
            pipeline_min_records,
            // The model filesystem syncs at once: pipeline whatever the disk.
            pipeline_min_sync: Duration::ZERO,
            ..StoreOptions::default()
        },
    )
    .expect("recover")
}

type Expected = Vec<BTreeMap<Seq, Bytes>>;

async fn settle(
    tickets: &mut Vec<(Vec<AppendEntry>, CommitTicket)>,
    expected: &mut Expected,
) -> Result<(), TestCaseError> {
    for (entries, ticket) in tickets.drain(..) {
        match ticket.await {
            Ok(seqs) => {
                prop_assert_eq!(seqs.len(), entries.len());
                for (entry, seq) in entries.iter().zip(seqs) {
                    let before = expected[entry.flow].insert(seq, entry.data.clone());
                    prop_assert!(before.is_none(), "sequence {} given twice", seq);
                }
            }
            Err(StorageError::DiskFull { .. } | StorageError::CommitFailed(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error: {}", other),
        }
    }
    Ok(())
}

async fn check(store: &QueueStore, expected: &Expected) -> Result<(), TestCaseError> {
    for (flow, want) in expected.iter().enumerate() {
        let queue = store.queue(flow).expect("queue");
        let got = queue
            .read(1, usize::MAX, usize::MAX)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: Vec<(Seq, Bytes)> = got.into_iter().map(|r| (r.seq, r.data)).collect();
        let want: Vec<(Seq, Bytes)> = want.iter().map(|(s, d)| (*s, d.clone())).collect();
        prop_assert_eq!(&got, &want, "flow {}", flow);
        let contiguous = got.iter().enumerate().all(|(i, (s, _))| *s == i as u64 + 1);
        prop_assert!(contiguous, "sequences of flow {} have gaps", flow);
        prop_assert_eq!(queue.stats().messages, want.len() as u64);
        prop_assert_eq!(queue.stats().quarantined_total, 0);
    }
    Ok(())
}

fn run(pipelined: Option<usize>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let fs = ModelFs::new();
        let mut store = open(&fs, pipelined);
        let mut expected: Expected = vec![BTreeMap::new(); FLOWS];
        let mut tickets = Vec::new();
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Issue(appends) => {
                    for append in appends {
                        let entries: Vec<AppendEntry> = append
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
                        let ticket = store.append(entries.clone());
                        tickets.push((entries, ticket));
                    }
                    // Let the committer start on them.
                    tokio::task::yield_now().await;
                }
                Op::FailSyncs(n) => fs.fail_next_syncs(n),
                Op::DiskFull(room) => fs.set_capacity(Some(fs.used() + room)),
                Op::DiskFree => fs.set_capacity(None),
                Op::Settle => {
                    settle(&mut tickets, &mut expected).await?;
                    fs.set_capacity(None);
                    fs.fail_next_syncs(0);
                    check(&store, &expected).await?;
                }
            }
        }
        settle(&mut tickets, &mut expected).await?;
        fs.set_capacity(None);
        fs.fail_next_syncs(0);
        check(&store, &expected).await?;
        drop(store);
        store = open(&fs, pipelined);
        check(&store, &expected).await?;
        // Everything acknowledged as durable survives a power cut.
        drop(store);
        let image = fs.crash(|_| 0);
        let store = open(&image, pipelined);
        check(&store, &expected).await?;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pipelined_commits_keep_exactly_the_acknowledged_appends(
        ops in prop::collection::vec(op(), 1..30),
        min in prop_oneof![Just(1usize), 2usize..40],
    ) {
        // Small thresholds: every group (or most) goes through the syncing
        // thread, some are synced inline between them.
        run(Some(min), ops)?;
    }

    #[test]
    fn plain_commits_keep_exactly_the_acknowledged_appends(
        ops in prop::collection::vec(op(), 1..30),
    ) {
        run(None, ops)?;
    }
}
