//! Unit tests of the segment log on the model filesystem and on real files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::io::{Fs, ModelFs, RealFs};
use super::*;
use crate::backend::{Backend, PendingRecord};

/// A backend plus the next sequence of each flow, as the committer keeps it.
struct Harness {
    backend: SegmentBackend,
    next: Vec<Seq>,
    recovered: Vec<Recovered>,
}

fn small() -> SegmentConfig {
    SegmentConfig {
        max_segment_bytes: 256,
        max_record_bytes: 1 << 20,
    }
}

fn open(fs: Arc<dyn Fs>, dir: &Path, flows: &[&str]) -> Harness {
    let backend = SegmentBackend::open_with(dir, fs, small()).expect("open");
    let names: Vec<String> = flows.iter().map(|s| s.to_string()).collect();
    let recovered = backend.recover(&names).expect("recover");
    Harness {
        next: recovered.iter().map(|r| r.next_seq).collect(),
        backend,
        recovered,
    }
}

impl Harness {
    fn append(&mut self, flow: usize, texts: &[String]) -> Result<Vec<Seq>, StorageError> {
        let mut seq = self.next[flow];
        let records: Vec<PendingRecord> = texts
            .iter()
            .map(|t| {
                seq += 1;
                PendingRecord {
                    flow,
                    seq: seq - 1,
                    time_ms: 1_700_000_000_000,
                    data: Bytes::copy_from_slice(t.as_bytes()),
                    // As the store passes them: computed by the publisher.
                    data_crc: Some(crate::crc::crc32c(t.as_bytes())),
                }
            })
            .collect();
        self.backend.commit(&records, &[])?;
        self.next[flow] = seq;
        Ok(records.iter().map(|r| r.seq).collect())
    }

    fn append_n(&mut self, flow: usize, n: usize, tag: &str) -> Vec<Seq> {
        let texts: Vec<String> = (0..n).map(|i| format!("{tag}-{i:04}-payload")).collect();
        self.append(flow, &texts).expect("append")
    }

    fn read_all(&self, flow: usize) -> (Vec<(Seq, String)>, u64) {
        let out = self
            .backend
            .read(flow, 1, usize::MAX, usize::MAX)
            .expect("read");
        let records = out
            .records
            .iter()
            .map(|r| (r.seq, String::from_utf8_lossy(&r.data).into_owned()))
            .collect();
        (records, out.quarantined)
    }
}

fn segments(fs: &dyn Fs, dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs
        .list_dir(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

fn root() -> PathBuf {
    PathBuf::from("/store")
}

#[test]
fn segments_of_an_earlier_build_are_read_and_sealed() {
    // A segment as the previous build wrote it: no time base in the header,
    // version-2 frames without append times.
    let fs = ModelFs::new();
    let dir = root().join("flow-a");
    fs.create_dir_all(&dir).unwrap();
    let mut bytes = encode_header_v1(1, 0, 0).to_vec();
    for i in 0..3u32 {
        crate::record::encode_frame_v2(i, format!("old-{i}").as_bytes(), &mut bytes);
    }
    let file = fs.create(&segment_path(&dir, 1)).unwrap();
    file.write_all_at(&bytes, 0).unwrap();
    file.sync_data().unwrap();
    drop(file);

    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!(h.recovered[0].messages, 3);
    assert_eq!(h.recovered[0].bytes, 15);
    assert_eq!(h.backend.head_time(0).unwrap(), None, "no append time");
    assert_eq!(h.append_n(0, 2, "new"), vec![4, 5]);
    assert_eq!(
        segments(&fs, &dir).len(),
        2,
        "new frames go to a new segment"
    );
    let read = h.backend.read(0, 1, usize::MAX, usize::MAX).unwrap();
    let texts: Vec<String> = read
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "old-0",
            "old-1",
            "old-2",
            "new-0000-payload",
            "new-0001-payload"
        ]
    );
    assert_eq!(read.records[0].appended, None);
    assert_eq!(read.records[3].appended_ms(), Some(1_700_000_000_000));
    h.backend.ack(0, 3).unwrap();
    assert_eq!(h.backend.head_time(0).unwrap(), Some(1_700_000_000_000));
    drop(h);
    let h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!(h.recovered[0].messages, 2);
    assert_eq!(h.backend.head_time(0).unwrap(), Some(1_700_000_000_000));
    assert_eq!(h.read_all(0).0.len(), 2);
}

/// Writes segment `base` of flow `a` as the previous build did: a 32-byte
/// header with the time base in seconds, version-3 frames.
fn write_v3_segment(fs: &ModelFs, base: Seq, prev: Seq, texts: &[&str]) -> PathBuf {
    let dir = root().join("flow-a");
    fs.create_dir_all(&dir).unwrap();
    let time_base = 1_700_000_000_000;
    let mut bytes = encode_header_v1(base, prev, time_base).to_vec();
    for (i, text) in texts.iter().enumerate() {
        let (seq, time) = (i as u32, 250 * i as u32);
        crate::record::encode_frame_v3(seq, time, text.as_bytes(), &mut bytes);
    }
    let path = segment_path(&dir, base);
    let file = fs.create(&path).unwrap();
    file.write_all_at(&bytes, 0).unwrap();
    file.sync_data().unwrap();
    path
}

#[test]
fn segments_of_the_previous_build_recover_and_replay() {
    let fs = ModelFs::new();
    write_v3_segment(&fs, 1, 0, &["v3-one", "v3-two"]);
    write_v3_segment(&fs, 3, 1, &["v3-three", "v3-four", "v3-five"]);

    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!(h.recovered[0].messages, 5);
    assert_eq!(h.recovered[0].bytes, 6 + 6 + 8 + 7 + 7);
    assert_eq!(h.recovered[0].quarantined, 0);
    assert_eq!(h.backend.head_time(0).unwrap(), Some(1_700_000_000_000));
    assert_eq!(h.append_n(0, 2, "v5"), vec![6, 7]);
    let dir = root().join("flow-a");
    assert_eq!(segments(&fs, &dir).len(), 3, "v5 frames start a segment");

    let read = h.backend.read(0, 1, usize::MAX, usize::MAX).unwrap();
    let got: Vec<(Seq, String, Option<u64>)> = read
        .records
        .iter()
        .map(|r| {
            let text = String::from_utf8_lossy(&r.data).into_owned();
            (r.seq, text, r.appended_ms())
        })
        .collect();
    let t = 1_700_000_000_000;
    assert_eq!(
        got,
        [
            (1, "v3-one".into(), Some(t)),
            (2, "v3-two".into(), Some(t + 250)),
            (3, "v3-three".into(), Some(t)),
            (4, "v3-four".into(), Some(t + 250)),
            (5, "v3-five".into(), Some(t + 500)),
            (6, "v5-0000-payload".into(), Some(t)),
            (7, "v5-0001-payload".into(), Some(t)),
        ]
    );
    let removed = h.backend.ack(0, 4).unwrap();
    assert_eq!((removed.messages, removed.bytes), (4, 27));
    drop(h);

    // Reopened: the sealed v3 segment counted from its size, the v5 one
    // scanned; bytes exact.
    let h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!(h.recovered[0].messages, 3);
    assert_eq!(h.recovered[0].bytes, 7 + 2 * 15);
    assert_eq!(h.recovered[0].next_seq, 8);
    let seqs: Vec<Seq> = h.read_all(0).0.iter().map(|r| r.0).collect();
    assert_eq!(seqs, [5, 6, 7]);
}

/// Writes segment `base` of flow `a` as the build before this one did: the
/// 48-byte header naming frame version 4, version-4 frames (times 100 ms
/// apart). Returns the data bytes written.
fn write_v4_segment(fs: &ModelFs, base: Seq, prev: (Seq, u64), texts: &[&str]) -> u64 {
    let dir = root().join("flow-a");
    fs.create_dir_all(&dir).unwrap();
    let time_base = 1_700_000_000_000;
    let mut bytes = encode_header_v4(base, prev.0, prev.1, time_base).to_vec();
    for (i, text) in texts.iter().enumerate() {
        crate::record::encode_frame_v4(i as u32, 100 * i as u32, text.as_bytes(), &mut bytes);
    }
    let file = fs.create(&segment_path(&dir, base)).unwrap();
    file.write_all_at(&bytes, 0).unwrap();
    file.sync_data().unwrap();
    texts.iter().map(|t| t.len() as u64).sum()
}

#[test]
fn a_store_of_v4_frames_reopens_and_reads() {
    let fs = ModelFs::new();
    let first = write_v4_segment(&fs, 1, (0, 0), &["v4-one", "v4-two", "v4-three"]);
    write_v4_segment(&fs, 4, (1, first), &["v4-four", "v4-five"]);

    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!(h.recovered[0].messages, 5);
    assert_eq!(h.recovered[0].bytes, 6 + 6 + 8 + 7 + 7);
    assert_eq!(h.recovered[0].quarantined, 0);
    assert_eq!(h.recovered[0].next_seq, 6);
    assert_eq!(h.append_n(0, 2, "v5"), vec![6, 7]);
    let dir = root().join("flow-a");
    assert_eq!(segments(&fs, &dir).len(), 3, "v5 frames start a segment");

    let t = 1_700_000_000_000;
    let expected: Vec<(Seq, String, Option<u64>)> = vec![
        (1, "v4-one".into(), Some(t)),
        (2, "v4-two".into(), Some(t + 100)),
        (3, "v4-three".into(), Some(t + 200)),
        (4, "v4-four".into(), Some(t)),
        (5, "v4-five".into(), Some(t + 100)),
        (6, "v5-0000-payload".into(), Some(t)),
        (7, "v5-0001-payload".into(), Some(t)),
    ];
    let read_all = |h: &Harness, from: Seq| -> Vec<(Seq, String, Option<u64>)> {
        let read = h.backend.read(0, from, usize::MAX, usize::MAX).unwrap();
        assert_eq!(read.quarantined, 0);
        read.records
            .iter()
            .map(|r| {
                let text = String::from_utf8_lossy(&r.data).into_owned();
                (r.seq, text, r.appended_ms())
            })
            .collect()
    };
    assert_eq!(read_all(&h, 1), expected);
    drop(h);

    // Reopened under this build: the sealed v4 segments counted from the
    // headers after them, the v5 one scanned; everything reads back.
    let h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!(h.recovered[0].messages, 7);
    assert_eq!(h.recovered[0].bytes, 34 + 2 * 15);
    assert_eq!(h.recovered[0].next_seq, 8);
    assert_eq!(read_all(&h, 1), expected);
    let removed = h.backend.ack(0, 4).unwrap();
    assert_eq!((removed.messages, removed.bytes), (4, 27));
    assert_eq!(read_all(&h, 5), expected[4..]);
}

#[test]
fn a_damaged_v4_frame_is_quarantined_and_reading_resumes_after_it() {
    let fs = ModelFs::new();
    write_v4_segment(&fs, 1, (0, 0), &["v4-one", "v4-two", "v4-three"]);
    // The newest segment after it, so that segment 1 is sealed.
    write_v4_segment(&fs, 4, (1, 20), &["v4-four"]);
    let path = segment_path(&root().join("flow-a"), 1);
    let file = fs.open(&path).unwrap();
    // The data of the second frame: after the header and the first frame
    // (4 bytes of header, 6 of data, 4 of CRC).
    let at = HEADER_LEN as u64 + 14 + 5;
    file.write_all_at(b"X", at).unwrap();
    file.sync_data().unwrap();
    drop(file);

    let h = open(Arc::new(fs.clone()), &root(), &["a"]);
    let (records, quarantined) = h.read_all(0);
    assert_eq!(quarantined, 1);
    let seqs: Vec<Seq> = records.iter().map(|r| r.0).collect();
    assert_eq!(seqs, [1, 3, 4]);
}

#[test]
fn sealed_v5_segments_are_counted_from_the_next_header() {
    let fs = ModelFs::new();
    let h = open(Arc::new(fs.clone()), &root(), &["a"]);
    // Records of different sizes (1-byte and 2-byte length varints) and
    // times (1- to 3-byte time varints): no fixed overhead to divide by.
    let mut texts = Vec::new();
    let mut total = 0u64;
    for i in 0..12usize {
        let text = "y".repeat(if i % 3 == 0 { 150 } else { 9 + i });
        total += text.len() as u64;
        texts.push(text);
    }
    for (i, text) in texts.iter().enumerate() {
        let record = PendingRecord {
            flow: 0,
            seq: h.next[0] + i as u64,
            time_ms: 1_700_000_000_000 + (i as u64).pow(6),
            data: Bytes::copy_from_slice(text.as_bytes()),
            data_crc: None,
        };
        h.backend.commit(&[record], &[]).unwrap();
    }
    let dir = root().join("flow-a");
    assert!(segments(&fs, &dir).len() >= 4, "{:?}", segments(&fs, &dir));
    drop(h);
    let h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!((h.recovered[0].messages, h.recovered[0].bytes), (12, total));
    let read = h.backend.read(0, 1, usize::MAX, usize::MAX).unwrap();
    assert_eq!(read.records.len(), 12);
    for (i, record) in read.records.iter().enumerate() {
        assert_eq!(
            record.appended_ms(),
            Some(1_700_000_000_000 + (i as u64).pow(6)),
            "record {i}"
        );
    }
}

#[test]
fn drops_from_the_head_by_count_bytes_and_age() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    let flow_dir = root().join("flow-a");
    for _ in 0..6 {
        h.append_n(0, 5, "x");
    }
    let before = segments(&fs, &flow_dir).len();
    let removed = h
        .backend
        .drop_head(
            0,
            DropUntil::Removed {
                messages: 20,
                bytes: 0,
            },
        )
        .unwrap();
    assert_eq!((removed.messages, removed.through), (20, 20));
    h.backend.settle();
    assert!(
        segments(&fs, &flow_dir).len() < before,
        "dropped segments deleted"
    );
    // 14 data bytes per record: at least 30 bytes means 3 records.
    let removed = h
        .backend
        .drop_head(
            0,
            DropUntil::Removed {
                messages: 0,
                bytes: 30,
            },
        )
        .unwrap();
    assert_eq!((removed.messages, removed.bytes), (3, 42));
    // Every record has the same time: a cutoff before it drops nothing, one
    // at it drops all, but not while records before `from` are in flight.
    let expired = |cutoff_ms, from| DropUntil::Expired { cutoff_ms, from };
    let t = 1_700_000_000_000;
    assert_eq!(
        h.backend.drop_head(0, expired(t - 1, 24)).unwrap().messages,
        0
    );
    assert_eq!(h.backend.drop_head(0, expired(t, 26)).unwrap().messages, 0);
    assert_eq!(h.backend.drop_head(0, expired(t, 24)).unwrap().messages, 7);
    assert!(h.read_all(0).0.is_empty());
    assert_eq!(h.backend.head_time(0).unwrap(), None);
}

#[test]
fn rolls_segments_and_deletes_acknowledged_ones() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    let flow_dir = root().join("flow-a");
    let seqs = h.append_n(0, 10, "x");
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    for _ in 0..5 {
        h.append_n(0, 4, "y");
    }
    let files = segments(&fs, &flow_dir);
    assert!(files.len() >= 3, "small segments roll: {files:?}");
    let (records, _) = h.read_all(0);
    assert_eq!(records.len(), 30);
    assert_eq!(records.last().map(|r| r.0), Some(30));

    let removed = h.backend.ack(0, 22).unwrap();
    assert_eq!(removed.messages, 22);
    assert_eq!(removed.bytes, 10 * 14 + 12 * 14);
    assert_eq!(removed.through, 22);
    h.backend.settle();
    let left = segments(&fs, &flow_dir);
    assert!(left.len() < files.len(), "acknowledged segments deleted");
    assert_eq!(h.read_all(0).0.first().map(|r| r.0), Some(23));

    // Everything acknowledged: the newest segment stays and keeps the
    // sequence across a restart.
    h.backend.ack(0, 30).unwrap();
    h.backend.settle();
    assert_eq!(segments(&fs, &flow_dir).len(), 1);
    drop(h);
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    assert_eq!(h.recovered[0].next_seq, 31);
    assert_eq!(h.recovered[0].messages, 0);
    assert_eq!(h.append_n(0, 1, "z"), vec![31]);
}

#[test]
fn acknowledged_segments_are_deleted_after_their_checkpoint_is_synced() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    let flow_dir = root().join("flow-a");
    for _ in 0..10 {
        h.append_n(0, 4, "x");
    }
    let files = segments(&fs, &flow_dir).len();
    // The checkpoint cannot be synced: nothing is deleted, the
    // acknowledgement itself succeeds.
    fs.fail_next_syncs(10);
    assert_eq!(h.backend.ack(0, 20).unwrap().messages, 20);
    h.backend.settle();
    assert_eq!(segments(&fs, &flow_dir).len(), files);
    fs.fail_next_syncs(0);
    // The next acknowledgement asks again; a power cut after the deletion
    // keeps a checkpoint that covers every deleted segment.
    h.backend.ack(0, 24).unwrap();
    h.backend.settle();
    let left = segments(&fs, &flow_dir);
    assert!(left.len() < files, "{left:?}");
    let image = fs.crash(|_| 0);
    drop(h);
    let h = open(Arc::new(image), &root(), &["a"]);
    assert_eq!(h.recovered[0].quarantined, 0, "nothing taken for lost");
    let first = h.read_all(0).0.first().map(|r| r.0);
    assert!(first.is_some_and(|seq| seq <= 25), "{first:?}");
}

#[test]
fn the_reclaim_thread_syncs_the_checkpoint_once_an_interval_passed() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    h.append_n(0, 3, "x");
    let first_after_power_cut = |fs: &ModelFs| {
        let h = open(Arc::new(fs.crash(|_| 0)), &root(), &["a"]);
        h.read_all(0).0.first().map(|r| r.0)
    };
    // Within the interval the checkpoint is only written, not synced: a
    // power cut re-delivers the acknowledged records.
    h.backend.ack(0, 1).unwrap();
    h.backend.settle();
    assert_eq!(first_after_power_cut(&fs), Some(1));
    // The first acknowledgement after it has the reclaim thread sync it.
    std::thread::sleep(ledger::SYNC_INTERVAL + std::time::Duration::from_millis(50));
    h.backend.ack(0, 2).unwrap();
    h.backend.settle();
    assert_eq!(first_after_power_cut(&fs), Some(3));
}

#[test]
fn acknowledging_what_was_read_counts_records_and_bytes_exactly() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    // Records of varying sizes over many small segments.
    let texts: Vec<String> = (0..60).map(|i| "r".repeat(1 + i % 7 * 5)).collect();
    for chunk in texts.chunks(6) {
        h.append(0, chunk).expect("append");
    }
    let size = |seqs: std::ops::RangeInclusive<Seq>| -> u64 {
        seqs.map(|seq| texts[seq as usize - 1].len() as u64).sum()
    };
    // Read two batches ahead, then acknowledge them one by one, then
    // read and acknowledge in step; a partial acknowledgement in between.
    let first = h.backend.read(0, 1, 7, usize::MAX).expect("read").records;
    let second = h.backend.read(0, 8, 9, usize::MAX).expect("read").records;
    assert_eq!((first.len(), second.len()), (7, 9));
    let mut acked = 0;
    for upto in [7, 16] {
        let removed = h.backend.ack(0, upto).expect("ack");
        assert_eq!(removed.messages, upto - acked, "ack {upto}");
        assert_eq!(removed.bytes, size(acked + 1..=upto), "ack {upto}");
        assert_eq!(removed.through, upto);
        acked = upto;
    }
    let mut next = 17;
    for (count, upto) in [(10, 26), (5, 29), (0, 31), (13, 44), (16, 60)] {
        if count > 0 {
            let batch = h.backend.read(0, next, count, usize::MAX).expect("read");
            assert_eq!(
                batch.records.last().map(|r| r.seq),
                Some(next + count as u64 - 1)
            );
            next += count as u64;
        }
        let removed = h.backend.ack(0, upto).expect("ack");
        assert_eq!(removed.messages, upto - acked, "ack {upto}");
        assert_eq!(removed.bytes, size(acked + 1..=upto), "ack {upto}");
        acked = upto;
        if upto < 60 {
            // The head after it, as the acknowledger sees it.
            assert!(h.backend.head_time(0).expect("head").is_some());
        }
    }
    assert!(h.backend.head_time(0).expect("head").is_none());
    h.backend.settle();
    drop(h);
    let h = open(Arc::new(fs), &root(), &["a"]);
    assert_eq!(h.recovered[0].messages, 0);
    assert_eq!(h.recovered[0].next_seq, 61);
}

#[test]
fn a_group_never_takes_a_segment_past_its_size() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    // Groups of 4 frames of 22 bytes (88) into segments of at most 256
    // bytes with a 48-byte header: two groups per segment, not three.
    for _ in 0..10 {
        h.append_n(0, 4, "x");
    }
    // One group larger than a segment gets a segment of its own.
    h.append_n(0, 12, "big");
    h.append_n(0, 1, "after");
    let dir = root().join("flow-a");
    let sizes: Vec<u64> = segments(&fs, &dir)
        .iter()
        .map(|name| fs.open(&dir.join(name)).unwrap().size().unwrap())
        .collect();
    let header = HEADER_LEN as u64;
    assert_eq!(
        sizes,
        [
            vec![header + 2 * 88; 5],
            vec![header + 12 * 24, header + 26]
        ]
        .concat()
    );
}

#[test]
fn recovery_counts_messages_and_bytes_without_reading_old_segments() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a", "b"]);
    for _ in 0..8 {
        h.append_n(0, 5, "a");
    }
    h.append_n(1, 3, "b");
    h.backend.ack(0, 7).unwrap();
    drop(h);
    let h = open(Arc::new(fs.clone()), &root(), &["b", "a"]);
    assert_eq!(h.recovered[1].messages, 33);
    assert_eq!(h.recovered[1].bytes, 33 * 14);
    assert_eq!(h.recovered[1].next_seq, 41);
    assert_eq!(h.recovered[0].messages, 3);
    assert_eq!(h.read_all(1).0.first().map(|r| r.0), Some(8));
}

#[test]
fn disk_full_refuses_appends_cleanly_and_recovers_by_itself() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a", "b"]);
    h.append_n(0, 5, "ok");
    h.append_n(1, 5, "ok");
    fs.set_capacity(Some(fs.used() + 40));
    let mut refused = 0;
    for i in 0..20 {
        match h.append(0, &[format!("fill-{i:04}-payload")]) {
            Ok(_) => {}
            Err(StorageError::DiskFull { .. }) => refused += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(refused > 0, "the disk filled up");
    // A group spanning two flows fails in both, leaving neither changed.
    let before_b = h.read_all(1).0.len();
    let records = vec![
        PendingRecord {
            flow: 1,
            seq: h.next[1],
            time_ms: 1_700_000_000_000,
            data: Bytes::from_static(b"both"),
            data_crc: None,
        },
        PendingRecord {
            flow: 0,
            seq: h.next[0],
            time_ms: 1_700_000_000_000,
            data: Bytes::from(vec![7u8; 400]),
            data_crc: Some(crate::crc::crc32c(&[7u8; 400])),
        },
    ];
    assert!(h.backend.commit(&records, &[]).is_err());
    assert_eq!(h.read_all(1).0.len(), before_b, "no partial group");

    // Nothing corrupt: the crash image reads back cleanly.
    let image = fs.crash(|n| n);
    let check = open(Arc::new(image), &root(), &["a", "b"]);
    let (records, quarantined) = check.read_all(0);
    assert_eq!(quarantined, 0);
    assert_eq!(records.len() as u64, h.next[0] - 1);
    drop(check);

    // Space comes back (acknowledging frees segments, or the operator
    // frees the disk): appends resume without intervention.
    fs.set_capacity(None);
    let seqs = h.append_n(0, 3, "after");
    assert_eq!(seqs[0], h.next[0] - 3);
    let (records, quarantined) = h.read_all(0);
    assert_eq!(quarantined, 0);
    let expect: Vec<Seq> = (1..h.next[0]).collect();
    assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), expect);
}

#[test]
fn a_failed_sync_fails_the_group_and_the_next_one_succeeds() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
    h.append_n(0, 3, "a");
    fs.fail_next_syncs(1);
    let err = h.append(0, &["lost".to_string()]).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert_eq!(
        h.append_n(0, 1, "b"),
        vec![4],
        "the failed group's sequence is reused"
    );
    let (records, _) = h.read_all(0);
    assert_eq!(records.len(), 4);
    assert_eq!(records[3].1, "b-0000-payload");
}

#[test]
fn a_torn_tail_is_cut_and_durable_records_survive() {
    for keep in [1usize, 7, 13, 20] {
        let fs = ModelFs::new();
        let mut h = open(Arc::new(fs.clone()), &root(), &["a"]);
        h.append_n(0, 4, "durable");
        // Written but never synced: a crash mid-commit.
        let flow_dir = root().join("flow-a");
        let newest = segments(&fs, &flow_dir).pop().unwrap();
        let path = flow_dir.join(&newest);
        let mut frame = Vec::new();
        let data = b"torn-record-payload";
        let data_crc = crate::crc::crc32c(data);
        crate::record::encode_frame(99, 0, data, data_crc, &mut frame);
        let handle = fs.open(&path).unwrap();
        let len = handle.size().unwrap();
        handle.write_all_at(&frame, len).unwrap();
        let image = fs.crash(|unsynced| keep.min(unsynced));
        drop(h);
        let mut h = open(Arc::new(image.clone()), &root(), &["a"]);
        assert_eq!(h.recovered[0].messages, 4, "keep {keep}");
        assert_eq!(h.recovered[0].quarantined, 0);
        assert_eq!(h.append_n(0, 1, "next"), vec![5]);
        let (records, q) = h.read_all(0);
        assert_eq!((records.len(), q), (5, 0));
    }
}

#[test]
fn crash_image_keeps_every_committed_group() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a", "b"]);
    for i in 0..30 {
        h.append_n(i % 2, 1 + i % 3, "g");
    }
    h.backend.ack(0, 5).unwrap();
    let expect_a = h.read_all(0).0;
    let expect_b = h.read_all(1).0;
    let image = fs.crash(|n| n / 2);
    let h2 = open(Arc::new(image), &root(), &["a", "b"]);
    // The checkpoint was not synced yet: acknowledged records may come
    // back (at-least-once), unacknowledged ones all do.
    let after = h2.read_all(0).0;
    let redelivered = after.iter().filter(|r| r.0 <= 5).count();
    assert!(redelivered <= 5);
    assert_eq!(after[redelivered..], expect_a[..]);
    assert_eq!(h2.read_all(1).0, expect_b);
}

/// Real files: damage segments the way a disk or an operator can.
mod corruption {
    use super::*;

    struct Setup {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        flow_dir: PathBuf,
    }

    /// Flow `a` with 60 records in several segments, flow `b` with 5.
    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let mut h = open(Arc::new(RealFs), &dir, &["a", "b"]);
        for _ in 0..12 {
            h.append_n(0, 5, "a");
        }
        h.append_n(1, 5, "b");
        drop(h);
        Setup {
            flow_dir: dir.join("flow-a"),
            dir,
            _tmp: tmp,
        }
    }

    fn seg(s: &Setup, index: usize) -> PathBuf {
        s.flow_dir.join(&segments(&RealFs, &s.flow_dir)[index])
    }

    fn quarantine_files(s: &Setup) -> usize {
        std::fs::read_dir(s.dir.join("quarantine")).unwrap().count()
    }

    /// Opens, reads everything, and checks flow `b` is untouched.
    fn reopen(s: &Setup) -> (Harness, Vec<Seq>, u64) {
        let h = open(Arc::new(RealFs), &s.dir, &["a", "b"]);
        let (records, quarantined) = h.read_all(0);
        assert_eq!(h.read_all(1).0.len(), 5, "the other flow keeps serving");
        let seqs = records.iter().map(|r| r.0).collect();
        (h, seqs, quarantined)
    }

    #[test]
    fn a_flipped_byte_quarantines_one_record() {
        let s = setup();
        let path = seg(&s, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        // Second frame's data of the second segment (frames of these
        // records: 4 header bytes, 14 of data, 4 of CRC).
        let at = HEADER_LEN + 22 + 4 + 5;
        bytes[at] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let (mut h, seqs, quarantined) = reopen(&s);
        assert_eq!(quarantined, 1);
        assert_eq!(seqs.len(), 59);
        let missing: Vec<Seq> = (1..=60).filter(|s| !seqs.contains(s)).collect();
        assert_eq!(missing.len(), 1);
        assert_eq!(quarantine_files(&s), 1);
        // Counted once, also when acknowledged past.
        let removed = h.backend.ack(0, 60).unwrap();
        assert_eq!((removed.messages, removed.quarantined), (59, 0));
        assert_eq!(h.append_n(0, 1, "new"), vec![61]);
    }

    #[test]
    fn a_corrupt_length_skips_to_the_next_valid_frame() {
        let s = setup();
        let path = seg(&s, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        // The length varint of the first frame: 16,383 bytes, past the end.
        bytes[HEADER_LEN + 1] = 0xff;
        bytes[HEADER_LEN + 2] = 0x7f;
        std::fs::write(&path, &bytes).unwrap();
        let (_h, seqs, quarantined) = reopen(&s);
        assert_eq!(quarantined, 1);
        assert_eq!(seqs.len(), 59);
    }

    #[test]
    fn a_damaged_header_is_scanned_past_for_the_bytes_before_it() {
        let s = setup();
        let path = seg(&s, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let h = open(Arc::new(RealFs), &s.dir, &["a", "b"]);
        let (records, _) = h.read_all(0);
        // Every record of these is 14 bytes; the ones before the damaged
        // segment were counted by reading their segment.
        assert_eq!(h.recovered[0].messages, records.len() as u64);
        assert_eq!(h.recovered[0].bytes, 14 * records.len() as u64);
    }

    #[test]
    fn frames_cut_out_of_a_v5_segment_are_a_counted_gap() {
        let s = setup();
        let path = seg(&s, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        // Remove the second and third frames (22 bytes each) whole: the
        // fourth frame's sequence tells the gap from damage.
        bytes.drain(HEADER_LEN + 22..HEADER_LEN + 66);
        std::fs::write(&path, &bytes).unwrap();
        let (_h, seqs, quarantined) = reopen(&s);
        assert_eq!(quarantined, 2);
        assert_eq!(seqs.len(), 58);
        let missing: Vec<Seq> = (1..=60).filter(|s| !seqs.contains(s)).collect();
        assert_eq!(missing.len(), 2);
        assert_eq!(missing[1], missing[0] + 1);
        assert_eq!(quarantine_files(&s), 0, "no damaged bytes to keep");
    }

    #[test]
    fn every_cut_of_the_newest_v5_segment_recovers_the_whole_frames() {
        let s = setup();
        let newest = segments(&RealFs, &s.flow_dir).len() - 1;
        let path = seg(&s, newest);
        let bytes = std::fs::read(&path).unwrap();
        let base: Seq = parse_segment_name(&path.file_name().unwrap().to_string_lossy()).unwrap();
        for cut in HEADER_LEN..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let h = open(Arc::new(RealFs), &s.dir, &["a", "b"]);
            let whole = ((cut - HEADER_LEN) / 22) as u64;
            assert_eq!(h.recovered[0].quarantined, 0, "cut {cut}");
            assert_eq!(h.recovered[0].next_seq, base + whole, "cut {cut}");
            assert_eq!(h.read_all(0).0.len() as u64, base - 1 + whole);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                (HEADER_LEN as u64) + 22 * whole,
                "torn tail cut off at {cut}"
            );
        }
    }

    #[test]
    fn a_truncated_segment_loses_only_its_tail() {
        let s = setup();
        let path = seg(&s, 1);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // A frame of these records is 22 bytes: cut into two.
        file.set_len(len - 40).unwrap();
        drop(file);
        let (h, seqs, quarantined) = reopen(&s);
        assert!(quarantined >= 2, "{quarantined}");
        assert_eq!(seqs.len() as u64 + quarantined, 60);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(h.recovered[0].next_seq, 61);
    }

    #[test]
    fn a_missing_segment_is_counted_and_skipped() {
        let s = setup();
        let gone = seg(&s, 2);
        std::fs::remove_file(&gone).unwrap();
        let (h, seqs, quarantined) = reopen(&s);
        let lost = h.recovered[0].quarantined;
        assert!(lost > 0, "counted at start-up");
        assert_eq!(quarantined, 0, "and not again when read");
        assert_eq!(seqs.len() as u64 + lost, 60);
        assert_eq!(h.recovered[0].messages, 60 - lost);
    }

    #[test]
    fn a_missing_first_segment_is_counted_not_taken_as_acknowledged() {
        let s = setup();
        std::fs::remove_file(seg(&s, 0)).unwrap();
        let (h, seqs, _) = reopen(&s);
        let lost = h.recovered[0].quarantined;
        assert!(lost > 0);
        assert_eq!(seqs.len() as u64 + lost, 60);
    }

    #[test]
    fn a_zero_length_segment_is_moved_aside() {
        let s = setup();
        let path = seg(&s, 1);
        std::fs::write(&path, b"").unwrap();
        let (h, seqs, _) = reopen(&s);
        let lost = h.recovered[0].quarantined;
        assert!(lost > 0);
        assert_eq!(seqs.len() as u64 + lost, 60);
        assert!(!path.exists());
        assert_eq!(quarantine_files(&s), 1);
    }

    #[test]
    fn a_zero_length_newest_segment_is_a_torn_roll() {
        let s = setup();
        let newest = segments(&RealFs, &s.flow_dir).len() - 1;
        let path = seg(&s, newest);
        let base: Seq = parse_segment_name(&path.file_name().unwrap().to_string_lossy()).unwrap();
        std::fs::write(&path, b"").unwrap();
        let (mut h, seqs, _) = reopen(&s);
        assert_eq!(seqs.len() as u64, base - 1);
        assert_eq!(h.append_n(0, 1, "z"), vec![base]);
        // The rewritten header names the real predecessor: the next start
        // finds nothing missing.
        drop(h);
        let (h, seqs, quarantined) = reopen(&s);
        assert_eq!((h.recovered[0].quarantined, quarantined), (0, 0));
        assert_eq!(seqs.len() as u64, base);
    }

    #[test]
    fn a_damaged_header_moves_the_segment_aside() {
        let s = setup();
        let path = seg(&s, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (h, seqs, _) = reopen(&s);
        let lost = h.recovered[0].quarantined;
        assert!(lost > 0);
        assert_eq!(seqs.len() as u64 + lost, 60);
        assert_eq!(quarantine_files(&s), 1);
    }

    #[test]
    fn garbage_files_are_ignored() {
        let s = setup();
        std::fs::write(s.flow_dir.join("notes.txt"), b"hello").unwrap();
        std::fs::write(s.flow_dir.join("123.seg"), b"x").unwrap();
        let (_h, seqs, q) = reopen(&s);
        assert_eq!((seqs.len(), q), (60, 0));
    }

    #[test]
    fn a_second_process_cannot_open_the_same_store() {
        let s = setup();
        let _first = SegmentBackend::open(&s.dir).unwrap();
        assert!(SegmentBackend::open(&s.dir).is_err());
    }
}

#[test]
fn a_group_over_several_flows_syncs_each_file_once_and_fails_whole() {
    let fs = ModelFs::new();
    let mut h = open(Arc::new(fs.clone()), &root(), &["a", "b", "c"]);
    for flow in 0..3 {
        h.append_n(flow, 1, "first");
    }
    let group = |h: &Harness, text: &'static str| -> Vec<PendingRecord> {
        (0..3)
            .map(|flow| PendingRecord {
                flow,
                seq: h.next[flow],
                time_ms: 1_700_000_000_000,
                data: Bytes::from_static(text.as_bytes()),
                data_crc: None,
            })
            .collect()
    };
    let syncs = fs.syncs();
    let stats = h.backend.io_stats().unwrap();
    h.backend.commit(&group(&h, "second"), &[]).unwrap();
    assert_eq!(fs.syncs() - syncs, 3, "one fdatasync per touched segment");
    assert_eq!(h.backend.io_stats().unwrap().fsyncs - stats.fsyncs, 3);
    for flow in 0..3 {
        h.next[flow] += 1;
    }
    fs.fail_next_syncs(1);
    assert!(h.backend.commit(&group(&h, "lost"), &[]).is_err());
    for flow in 0..3 {
        assert_eq!(
            h.read_all(flow).0.len(),
            2,
            "flow {flow}: the failed group left nothing"
        );
    }
    h.backend.commit(&group(&h, "third"), &[]).unwrap();
    for flow in 0..3 {
        let texts: Vec<String> = h.read_all(flow).0.into_iter().map(|r| r.1).collect();
        assert_eq!(texts[1..], ["second".to_string(), "third".to_string()]);
    }
}
