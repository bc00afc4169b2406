#![no_main]
//! Whole transformations: arbitrary settings YAML, NUL, arbitrary payload.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backhaul_mapping::fuzzing::message(data));
