#![no_main]
//! The expression parser and evaluator on arbitrary text.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backhaul_mapping::fuzzing::expression(data));
