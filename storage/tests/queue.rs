//! Queue contract tests, run against both backends.

use backhaul_storage::{AppendEntry, QueueStore, StorageMode};
use bytes::Bytes;

fn flows(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn entry(flow: usize, text: &str) -> AppendEntry {
    AppendEntry {
        flow,
        data: Bytes::copy_from_slice(text.as_bytes()),
    }
}

fn texts(records: &[backhaul_storage::QueuedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

async fn append_read_ack(mode: StorageMode) {
    let store = QueueStore::open(&mode, &flows(&["a", "b"])).unwrap();
    let seqs = store
        .append(vec![entry(0, "a1"), entry(1, "b1"), entry(0, "a2")])
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 1, 2]);
    let a = store.queue(0).unwrap();
    let b = store.queue(1).unwrap();
    assert_eq!(a.name(), "a");
    assert_eq!(texts(&a.read(1, 10, 1 << 20).await.unwrap()), ["a1", "a2"]);
    assert_eq!(texts(&b.read(1, 10, 1 << 20).await.unwrap()), ["b1"]);
    assert_eq!(a.stats().messages, 2);
    assert_eq!(a.stats().bytes, 4);

    assert_eq!(a.ack(1).await.unwrap(), 1);
    let rest = a.read(1, 10, 1 << 20).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].seq, texts(&rest)[0].as_str()), (2, "a2"));
    assert_eq!(a.stats().messages, 1);
    assert_eq!(a.stats().acked_total, 1);
    assert_eq!(
        b.stats().messages,
        1,
        "acks of one flow leave the other alone"
    );
}

#[tokio::test]
async fn disk_append_read_ack() {
    let dir = tempfile::tempdir().unwrap();
    append_read_ack(StorageMode::Disk(dir.path().join("q"))).await;
}

#[tokio::test]
async fn memory_append_read_ack() {
    append_read_ack(StorageMode::Memory).await;
}

async fn read_limits(mode: StorageMode) {
    let store = QueueStore::open(&mode, &flows(&["a"])).unwrap();
    let entries = (0..10).map(|i| entry(0, &format!("{i:04}"))).collect();
    store.append(entries).await.unwrap();
    let q = store.queue(0).unwrap();
    assert_eq!(
        texts(&q.read(1, 3, 1 << 20).await.unwrap()),
        ["0000", "0001", "0002"]
    );
    assert_eq!(texts(&q.read(4, 100, 9).await.unwrap()), ["0003", "0004"]);
    assert_eq!(
        q.read(4, 100, 1).await.unwrap().len(),
        1,
        "at least one record"
    );
    assert!(q.read(11, 10, 1 << 20).await.unwrap().is_empty());
}

#[tokio::test]
async fn disk_read_limits() {
    let dir = tempfile::tempdir().unwrap();
    read_limits(StorageMode::Disk(dir.path().join("q"))).await;
}

#[tokio::test]
async fn memory_read_limits() {
    read_limits(StorageMode::Memory).await;
}

#[tokio::test]
async fn restart_resumes_at_the_first_unacknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mode = StorageMode::Disk(dir.path().join("q"));
    {
        let store = QueueStore::open(&mode, &flows(&["a", "b"])).unwrap();
        let entries = (1..=5).map(|i| entry(0, &format!("a{i}"))).collect();
        store.append(entries).await.unwrap();
        store.append(vec![entry(1, "b1")]).await.unwrap();
        store.queue(0).unwrap().ack(3).await.unwrap();
    }
    // Reopen with the flows listed in another order: queues follow names.
    let store = QueueStore::open(&mode, &flows(&["b", "a"])).unwrap();
    let a = store.queue(1).unwrap();
    let records = a.read(1, 10, 1 << 20).await.unwrap();
    assert_eq!(texts(&records), ["a4", "a5"]);
    assert_eq!(records[0].seq, 4);
    assert_eq!(a.stats().messages, 2);
    assert_eq!(a.stats().recovered, 2);
    assert_eq!(
        texts(&store.queue(0).unwrap().read(1, 10, 1 << 20).await.unwrap()),
        ["b1"]
    );
    let seqs = store.append(vec![entry(1, "a6")]).await.unwrap();
    assert_eq!(seqs, vec![6], "sequences continue after a restart");
}

#[tokio::test]
async fn sequences_are_never_reused_after_the_queue_ran_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mode = StorageMode::Disk(dir.path().join("q"));
    {
        let store = QueueStore::open(&mode, &flows(&["a"])).unwrap();
        store
            .append(vec![entry(0, "x"), entry(0, "y")])
            .await
            .unwrap();
        store.queue(0).unwrap().ack(2).await.unwrap();
        assert_eq!(store.queue(0).unwrap().stats().messages, 0);
    }
    let store = QueueStore::open(&mode, &flows(&["a"])).unwrap();
    assert_eq!(store.append(vec![entry(0, "z")]).await.unwrap(), vec![3]);
}

#[tokio::test]
async fn concurrent_appends_share_group_commits_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        QueueStore::open(&StorageMode::Disk(dir.path().join("q")), &flows(&["a"])).unwrap(),
    );
    // Queue 2,000 appends before awaiting any, as many connections would.
    let tickets: Vec<_> = (0..2000)
        .map(|i| store.append(vec![entry(0, &format!("{i:05}"))]))
        .collect();
    let mut last = 0;
    for ticket in tickets {
        let seq = ticket.await.unwrap()[0];
        assert!(seq > last, "tickets resolve in call order");
        last = seq;
    }
    let stats = store.commit_stats();
    assert_eq!(stats.records, 2000);
    assert!(
        stats.commits < 2000,
        "appends waiting together share a flush (commits = {})",
        stats.commits
    );
    let records = store
        .queue(0)
        .unwrap()
        .read(1, 5000, usize::MAX)
        .await
        .unwrap();
    let expected: Vec<String> = (0..2000).map(|i| format!("{i:05}")).collect();
    assert_eq!(texts(&records), expected);
}

#[tokio::test]
async fn unknown_flows_are_refused() {
    let store = QueueStore::open(&StorageMode::Memory, &flows(&["a"])).unwrap();
    let err = store.append(vec![entry(3, "x")]).await.unwrap_err();
    assert_eq!(err.to_string(), "flow index 3 is not part of this store");
    assert!(store.queue(3).is_none());
}

#[tokio::test]
async fn appended_wakes_a_waiting_reader() {
    let store = QueueStore::open(&StorageMode::Memory, &flows(&["a"])).unwrap();
    let queue = store.queue(0).unwrap();
    let waiter = tokio::spawn(async move {
        queue.appended().await;
        queue.read(1, 10, 1024).await.unwrap().len()
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store.append(vec![entry(0, "x")]).await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("reader woke")
        .unwrap();
    assert_eq!(read, 1);
}

#[tokio::test]
async fn a_ping_passes_through_the_committer_without_writing_or_counting() {
    let dir = tempfile::tempdir().unwrap();
    let store = QueueStore::open(&StorageMode::Disk(dir.path().join("q")), &flows(&["a"])).unwrap();
    store.append(vec![entry(0, "a1")]).await.unwrap();
    let before = (store.commit_stats(), store.io_stats().unwrap());
    assert_eq!(store.ping().await.unwrap(), Vec::<u64>::new());
    let after = (store.commit_stats(), store.io_stats().unwrap());
    assert_eq!(after.0.commits, before.0.commits);
    assert_eq!(after.0.records, before.0.records);
    assert_eq!(after.0.commit_latency.count, 1, "only the real append");
    assert_eq!(after.1.fsyncs, before.1.fsyncs);
    assert_eq!(after.1.bytes_written, before.1.bytes_written);
    assert_eq!(store.queue(0).unwrap().stats().messages, 1);
}
