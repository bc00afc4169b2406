//! Replays the connection fuzzer's corpus (`broker/fuzz/corpus/connection`)
//! through the same entry point, so every input kept there stays a
//! regression test, and runs a few hundred random variations of it on
//! every test run (the fuzzer itself needs nightly): no panic, and the
//! connection task ends when the client leaves.

use std::path::Path;

use proptest::prelude::*;

/// The tests share one broker; the corpus test counts its connections.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection");
    let mut inputs: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let data = std::fs::read(&path).expect("read input");
            (path, data)
        })
        .collect();
    inputs.sort();
    inputs.into_iter().map(|(_, data)| data).collect()
}

#[test]
fn the_connection_corpus_runs_without_panics() {
    let _serial = serial();
    let inputs = corpus();
    assert!(inputs.len() >= 20, "only {} corpus inputs", inputs.len());
    let stats = backhaul_broker::fuzzing::stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let before = (
        load(&stats.connections_total),
        load(&stats.publishes_received),
    );
    for data in &inputs {
        backhaul_broker::fuzzing::connection(data);
    }
    assert_eq!(
        load(&stats.connections_total) - before.0,
        inputs.len() as u64
    );
    assert!(
        load(&stats.publishes_received) - before.1 >= 20,
        "the corpus reaches PUBLISH handling"
    );
    assert_eq!(
        load(&stats.connections_active),
        0,
        "every connection task ended"
    );
}

/// A corpus input with bytes overwritten, inserted and cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let inputs = corpus();
    (
        0..inputs.len(),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(move |(pick, edits)| {
            let mut data = inputs[pick].clone();
            for (at, byte, kind) in edits {
                let at = if data.is_empty() { 0 } else { at % data.len() };
                match kind {
                    0 if !data.is_empty() => data[at] = byte,
                    1 => data.insert(at, byte),
                    _ => data.truncate(at),
                }
            }
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_inputs_never_panic(data in mutated()) {
        let _serial = serial();
        backhaul_broker::fuzzing::connection(&data);
    }

    #[test]
    fn arbitrary_bytes_after_a_connect_never_panic(
        v5 in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut data = vec![0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 1, b'f'];
        if v5 {
            data = vec![0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0, 0, 1, b'f'];
        }
        data.extend(tail);
        let _serial = serial();
        backhaul_broker::fuzzing::connection(&data);
    }
}
