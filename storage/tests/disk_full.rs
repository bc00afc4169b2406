//! Disk full on a real filesystem: a 2 MiB tmpfs. Appends are refused with a
//! disk-full error, nothing stored is damaged, and appends resume by
//! themselves once space is freed (by an operator deleting a file, or by
//! acknowledgements deleting segments).
//!
//! Needs permission to mount (root in most CI containers); without it the
//! test prints why and passes without checking anything. The model
//! filesystem tests (`src/backend/segment/tests.rs`, `tests/segment_model.rs`)
//! cover the same rules everywhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use backhaul_storage::backend::{SegmentBackend, SegmentConfig};
use backhaul_storage::{AppendEntry, QueueStore, Seq};
use bytes::Bytes;

struct Mount {
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mount {
    fn new(size: &str) -> Result<Self, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = tmp.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { path, _tmp: tmp })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn open(dir: &Path) -> QueueStore {
    let config = SegmentConfig {
        max_segment_bytes: 64 * 1024,
        ..SegmentConfig::default()
    };
    let backend = SegmentBackend::open_with(
        dir,
        Arc::new(backhaul_storage::backend::segment::io::RealFs),
        config,
    )
    .expect("open");
    QueueStore::open_backend(Arc::new(backend), &["a".to_string(), "b".to_string()])
        .expect("recover")
}

fn record(i: u64) -> Bytes {
    let mut data = format!("record-{i:08}-").into_bytes();
    data.resize(1000, b'x');
    Bytes::from(data)
}

/// 8 records, 4 per flow.
fn batch(counter: u64) -> Vec<AppendEntry> {
    (0..8)
        .map(|k| AppendEntry {
            flow: (k % 2) as usize,
            data: record(counter + k),
        })
        .collect()
}

/// Appends batches of 8 records until the disk refuses one; the number of
/// records appended.
async fn fill(store: &QueueStore, counter: &mut u64) -> u64 {
    let mut appended = 0;
    loop {
        match store.append(batch(*counter)).await {
            Ok(seqs) => {
                appended += seqs.len() as u64;
                *counter += 8;
            }
            Err(err) => {
                assert!(err.is_disk_full(), "refused as disk full, got: {err}");
                return appended;
            }
        }
        assert!(appended < 100_000, "the tmpfs never filled up");
    }
}

async fn check_readable(store: &QueueStore) -> Vec<u64> {
    let mut counts = Vec::new();
    for queue in store.queues() {
        let records = queue.read(1, usize::MAX, usize::MAX).await.expect("read");
        assert!(records.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert!(records.iter().all(|r| r.data.starts_with(b"record-")));
        assert_eq!(queue.stats().quarantined_total, 0, "nothing damaged");
        assert_eq!(queue.stats().messages, records.len() as u64);
        counts.push(records.len() as u64);
    }
    counts
}

#[tokio::test]
async fn a_full_tmpfs_refuses_appends_cleanly_and_recovers() {
    let mount = match Mount::new("2m") {
        Ok(mount) => mount,
        Err(reason) => {
            println!("SKIPPED: cannot mount a small tmpfs ({reason}); the model filesystem tests cover disk full");
            return;
        }
    };
    let dir = mount.path.join("queues");
    // Ballast an operator can delete later.
    let ballast = mount.path.join("ballast");
    std::fs::write(&ballast, vec![0u8; 256 * 1024]).expect("ballast");

    let mut counter = 0;
    let store = open(&dir);
    let first = fill(&store, &mut counter).await;
    assert!(first > 500, "most of the tmpfs was usable: {first}");
    // Further appends of the refused size keep being refused, cleanly (a
    // smaller one may still fit in the slack of a tmpfs page).
    for _ in 0..5 {
        let err = store.append(batch(0)).await.unwrap_err();
        assert!(err.is_disk_full(), "{err}");
    }
    let before = check_readable(&store).await;
    assert_eq!(before.iter().sum::<u64>(), first);
    drop(store);

    // Nothing is corrupt after a restart on the full disk.
    let store = open(&dir);
    assert_eq!(check_readable(&store).await, before);

    // The operator frees space: appends resume without a restart.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let more = fill(&store, &mut counter).await;
    assert!(more > 100, "appends resumed after space was freed: {more}");

    // Acknowledging deletes segments and frees space too.
    let a = store.queue(0).expect("queue");
    let total_a = a.stats().messages;
    let upto: Seq = a.read(1, usize::MAX, usize::MAX).await.unwrap()[(total_a / 2) as usize].seq;
    a.ack(upto).await.expect("ack on a full disk");
    store.settle();
    let after_ack = fill(&store, &mut counter).await;
    assert!(
        after_ack > 50,
        "acknowledged segments freed space: {after_ack}"
    );
    check_readable(&store).await;
    // The store's files are released once the store and every queue handle
    // are gone.
    drop((a, store));
    let store = open(&dir);
    check_readable(&store).await;
}
