#![no_main]
//! Arbitrary bytes from a client to a broker connection task.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backhaul_broker::fuzzing::connection(data));
