//! Limits beyond the model test: the store budget and the free-space
//! watermark (on the model filesystem, which reports free space like
//! `statvfs`), atomicity of appends to several flows, expiry and the oldest
//! age with a manual clock, and the commit metrics. No timing assertions.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backhaul_storage::backend::segment::io::ModelFs;
use backhaul_storage::backend::{Backend, MemoryBackend, SegmentBackend, SegmentConfig};
use backhaul_storage::clock::ManualClock;
use backhaul_storage::{
    AppendEntry, FlowSpec, Overflow, QueueLimits, QueueStore, QuotaLimit, StorageError,
    StorageMode, StoreLimits,
};
use bytes::Bytes;

const T0: u64 = 1_700_000_000_000;

fn entry(flow: usize, len: usize) -> AppendEntry {
    AppendEntry {
        flow,
        data: Bytes::from(vec![b'x'; len]),
    }
}

fn model_backend(fs: &ModelFs) -> Arc<dyn Backend> {
    let config = SegmentConfig {
        max_segment_bytes: 4096,
        max_record_bytes: 1 << 20,
    };
    Arc::new(SegmentBackend::open_with(Path::new("/q"), Arc::new(fs.clone()), config).unwrap())
}

fn open(
    backend: Arc<dyn Backend>,
    flows: &[FlowSpec],
    limits: StoreLimits,
    clock: &Arc<ManualClock>,
) -> QueueStore {
    QueueStore::open_backend_with(backend, flows, limits, clock.clone()).unwrap()
}

fn quota(err: StorageError) -> (String, QuotaLimit) {
    match err {
        StorageError::QuotaExceeded { flow, limit } => (flow, limit),
        other => panic!("expected a quota refusal, got {other}"),
    }
}

/// Appends 100-byte records to flow 0 until one is refused; how many fit.
async fn fill(store: &QueueStore) -> (u64, StorageError) {
    let mut appended = 0;
    loop {
        match store.append(vec![entry(0, 100)]).await {
            Ok(_) => appended += 1,
            Err(err) => return (appended, err),
        }
        assert!(appended < 100_000, "never refused");
    }
}

#[tokio::test]
async fn the_store_budget_refuses_every_flow_and_recovers_after_acks() {
    let fs = ModelFs::new();
    let clock = Arc::new(ManualClock::new(T0));
    // DropOldest without its own limits: only the store budget applies.
    let flows = [FlowSpec::new("a"), FlowSpec::new("b")];
    let limits = StoreLimits {
        max_disk_bytes: Some(20_000),
        min_free_bytes: None,
    };
    let store = open(model_backend(&fs), &flows, limits, &clock);
    let (appended, err) = fill(&store).await;
    assert_eq!(quota(err), ("a".to_string(), QuotaLimit::StoreBudget));
    assert!(appended > 100, "most of the budget was usable: {appended}");
    let disk = store.disk_bytes().unwrap();
    // Within the budget, but for the header of a segment started by the
    // last group (48 bytes).
    assert!(disk <= 20_000 + 48, "within the budget: {disk}");
    // Every flow is refused, the disk is fine, the queue is intact.
    let err = store.append(vec![entry(1, 100)]).await.unwrap_err();
    assert_eq!(quota(err), ("b".to_string(), QuotaLimit::StoreBudget));
    assert!(err_is_transient(&store).await);
    let a = store.queue(0).unwrap();
    assert_eq!(a.stats().messages, appended);
    assert_eq!(a.stats().rejected_total, 1);
    assert_eq!(store.queue(1).unwrap().stats().rejected_total, 1);
    assert_eq!(store.commit_stats().rejected, 2);

    // Acknowledging half deletes segments: appends resume, no restart.
    a.ack(appended / 2).await.unwrap();
    store.settle();
    assert!(store.disk_bytes().unwrap() < disk);
    let (more, err) = fill(&store).await;
    assert!(more > 10, "appends resumed: {more}");
    assert_eq!(quota(err).1, QuotaLimit::StoreBudget);
}

/// A refused append leaves the store working: reads still succeed.
async fn err_is_transient(store: &QueueStore) -> bool {
    let records = store
        .queue(0)
        .unwrap()
        .read(1, 5, usize::MAX)
        .await
        .unwrap();
    records.len() == 5
}

#[tokio::test]
async fn the_free_space_watermark_refuses_appends_until_space_returns() {
    let fs = ModelFs::new();
    let clock = Arc::new(ManualClock::new(T0));
    let limits = StoreLimits {
        max_disk_bytes: None,
        min_free_bytes: Some(1_000_000),
    };
    let store = open(model_backend(&fs), &[FlowSpec::new("a")], limits, &clock);
    // Unknown free space (no capacity): nothing to enforce.
    store.append(vec![entry(0, 100)]).await.unwrap();

    // Another writer fills the filesystem: 1 MB + 500 bytes free.
    fs.set_free_space(Some(1_000_500));
    assert_eq!(store.free_bytes(), Some(1_000_500));
    store.append(vec![entry(0, 100)]).await.unwrap();
    let err = store.append(vec![entry(0, 1000)]).await.unwrap_err();
    assert_eq!(quota(err), ("a".to_string(), QuotaLimit::FreeSpace));
    fs.set_free_space(Some(10));
    let err = store.append(vec![entry(0, 1)]).await.unwrap_err();
    assert!(err.is_quota_exceeded() && !err.is_disk_full());
    assert_eq!(store.queue(0).unwrap().stats().messages, 2);

    // Space returns: appends succeed again.
    fs.set_free_space(Some(50_000_000));
    store.append(vec![entry(0, 1000)]).await.unwrap();

    // The watermark also follows what the store itself writes.
    fs.set_free_space(None);
    fs.set_capacity(Some(fs.used() + 1_000_000 + 2_000));
    let (appended, err) = fill(&store).await;
    assert_eq!(quota(err).1, QuotaLimit::FreeSpace);
    assert!(
        (10..=20).contains(&appended),
        "about 2,000 bytes were usable: {appended}"
    );
}

#[tokio::test]
async fn real_filesystems_report_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let store = QueueStore::open_with(
        &StorageMode::Disk(dir.path().join("q")),
        &[FlowSpec::new("a")],
        StoreLimits {
            max_disk_bytes: Some(1 << 30),
            min_free_bytes: Some(1),
        },
    )
    .unwrap();
    assert!(store.free_bytes().is_some_and(|free| free > 0));
    store.append(vec![entry(0, 10)]).await.unwrap();
    // An impossible watermark refuses.
    drop(store);
    let store = QueueStore::open_with(
        &StorageMode::Disk(dir.path().join("q")),
        &[FlowSpec::new("a")],
        StoreLimits {
            max_disk_bytes: None,
            min_free_bytes: Some(u64::MAX / 2),
        },
    )
    .unwrap();
    let err = store.append(vec![entry(0, 10)]).await.unwrap_err();
    assert_eq!(quota(err).1, QuotaLimit::FreeSpace);
}

async fn atomic_across_flows(backend: Arc<dyn Backend>) {
    let clock = Arc::new(ManualClock::new(T0));
    let full = QueueLimits {
        max_messages: Some(2),
        overflow: Overflow::RejectNew,
        ..QueueLimits::default()
    };
    let flows = [FlowSpec::with_limits("a", full), FlowSpec::new("b")];
    let store = open(backend, &flows, StoreLimits::default(), &clock);
    store
        .append(vec![entry(0, 1), entry(1, 1), entry(0, 1)])
        .await
        .unwrap();
    // `a` is full: an append to both is refused in both.
    let err = store
        .append(vec![entry(1, 1), entry(0, 1)])
        .await
        .unwrap_err();
    assert_eq!(quota(err), ("a".to_string(), QuotaLimit::Messages));
    let b = store.queue(1).unwrap();
    assert_eq!(b.stats().messages, 1, "nothing of the refused append in b");
    // Appends to `b` alone are fine; the sequence of b has no gap.
    assert_eq!(store.append(vec![entry(1, 1)]).await.unwrap(), vec![2]);
    // Acknowledging in `a` makes room.
    store.queue(0).unwrap().ack(1).await.unwrap();
    assert_eq!(
        store.append(vec![entry(1, 1), entry(0, 1)]).await.unwrap(),
        vec![3, 3]
    );
}

#[tokio::test]
async fn an_append_to_several_flows_is_refused_whole_disk() {
    atomic_across_flows(model_backend(&ModelFs::new())).await;
}

#[tokio::test]
async fn an_append_to_several_flows_is_refused_whole_memory() {
    atomic_across_flows(Arc::new(MemoryBackend::new())).await;
}

async fn drop_oldest_and_expiry(backend: Arc<dyn Backend>) {
    let clock = Arc::new(ManualClock::new(T0));
    let limits = QueueLimits {
        max_messages: Some(5),
        max_bytes: Some(1000),
        overflow: Overflow::DropOldest,
        ttl: Some(Duration::from_secs(60)),
    };
    let store = open(
        backend,
        &[FlowSpec::with_limits("a", limits)],
        StoreLimits::default(),
        &clock,
    );
    let q = store.queue(0).unwrap();
    assert_eq!(q.limits(), limits);
    for _ in 0..8 {
        store.append(vec![entry(0, 10)]).await.unwrap();
        clock.advance(Duration::from_secs(10));
    }
    let stats = q.stats();
    assert_eq!((stats.messages, stats.dropped_overflow_total), (5, 3));
    // The oldest left is record 4, appended at T0 + 30 s; now is T0 + 80 s.
    assert_eq!(stats.oldest_age, Some(Duration::from_secs(50)));
    // Record 9 (600 bytes) takes the count over: record 4 goes.
    store.append(vec![entry(0, 600)]).await.unwrap();
    assert_eq!(q.stats().bytes, 640);
    store.append(vec![entry(0, 400)]).await.unwrap();
    let stats = q.stats();
    assert_eq!((stats.messages, stats.bytes), (2, 1000));
    assert_eq!(stats.dropped_overflow_total, 3 + 5);
    let records = q.read(1, 10, usize::MAX).await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![9, 10]
    );
    assert_eq!(records[0].appended_ms(), Some(T0 + 80_000));

    // Expiry: record 10 (T0 + 80 s) is 61 s old at T0 + 141 s, record 11
    // (T0 + 140 s) 1 s.
    assert_eq!(q.ack(9).await.unwrap(), 1);
    clock.advance(Duration::from_secs(60));
    store.append(vec![entry(0, 1)]).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(q.stats().oldest_age, Some(Duration::from_secs(61)));
    let records = q.read(10, 10, usize::MAX).await.unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![11]);
    let stats = q.stats();
    assert_eq!(
        (stats.messages, stats.expired_total, stats.acked_total),
        (1, 1, 1)
    );
    assert_eq!(stats.oldest_age, Some(Duration::from_secs(1)));
    assert_eq!(q.ack(11).await.unwrap(), 1);
    assert_eq!(q.stats().oldest_age, None);
}

#[tokio::test]
async fn drop_oldest_and_expiry_disk() {
    drop_oldest_and_expiry(model_backend(&ModelFs::new())).await;
}

#[tokio::test]
async fn drop_oldest_and_expiry_memory() {
    drop_oldest_and_expiry(Arc::new(MemoryBackend::new())).await;
}

#[tokio::test]
async fn memory_mode_has_a_store_budget_too() {
    let clock = Arc::new(ManualClock::new(T0));
    let limits = StoreLimits {
        max_disk_bytes: Some(1_000),
        // Ignored in memory mode.
        min_free_bytes: Some(u64::MAX),
    };
    let store = open(
        Arc::new(MemoryBackend::new()),
        &[FlowSpec::new("a")],
        limits,
        &clock,
    );
    let (appended, err) = fill(&store).await;
    assert_eq!(appended, 10);
    assert_eq!(quota(err).1, QuotaLimit::StoreBudget);
    store.queue(0).unwrap().ack(3).await.unwrap();
    let (appended, _) = fill(&store).await;
    assert_eq!(appended, 3);
}

#[tokio::test]
async fn commit_metrics_count_every_append_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        QueueStore::open(&StorageMode::Disk(dir.path().join("q")), &["a".to_string()]).unwrap();
    let tickets: Vec<_> = (0..200).map(|_| store.append(vec![entry(0, 50)])).collect();
    for ticket in tickets {
        ticket.await.unwrap();
    }
    let stats = store.commit_stats();
    assert_eq!(stats.commit_latency.count, 200);
    assert!(stats.commit_latency.le.windows(2).all(|w| w[0] <= w[1]));
    assert!(*stats.commit_latency.le.last().unwrap() <= 200);
    assert!(stats.commit_latency.sum > 0.0);
    assert_eq!(stats.group_size.count, stats.commits);
    assert_eq!(stats.group_size.sum as u64, 200);
    let io = store.io_stats().unwrap();
    assert!(io.fsyncs >= stats.commits);
    assert!(io.bytes_written >= 200 * 50);
    assert!(store.disk_bytes().unwrap() >= 200 * 50);
}
