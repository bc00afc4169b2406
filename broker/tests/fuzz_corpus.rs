//! Replays the connection fuzzer's corpus (`broker/fuzz/corpus/connection`)
//! through the same entry point, so every input kept there stays a
//! regression test: no panic, and the task ends when the client leaves.

use std::path::Path;

#[test]
fn the_connection_corpus_runs_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read input");
        backhaul_broker::fuzzing::connection(&data);
        count += 1;
    }
    assert!(count >= 20, "only {count} corpus inputs");
}
