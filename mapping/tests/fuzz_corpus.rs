//! Replays the fuzzers' corpus (`mapping/fuzz/corpus`) through the same entry
//! points, so every input that ever found a bug stays a regression test.

use std::path::Path;

use backhaul_mapping::fuzzing;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read input");
        run(&data);
        count += 1;
    }
    count
}

#[test]
fn the_expression_corpus_runs_without_panics() {
    assert!(replay("expression", fuzzing::expression) > 10);
}

#[test]
fn the_message_corpus_runs_without_panics() {
    assert!(replay("message", fuzzing::message) > 10);
}
