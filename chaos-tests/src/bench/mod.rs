//! `backhaul-bench`: Backhaul and a Mosquitto bridge side by side, on
//! loopback, in the same run, with the same load generator and the same
//! destination; one markdown report (`BENCHMARKS.md` at the repository
//! root). Issue 4.
//!
//! - [`wire`], [`payload`], [`publisher`]: the load generator (raw MQTT
//!   3.1.1, QoS 1, deep in-flight windows, numbered and timestamped
//!   payloads).
//! - [`subscriber`], [`collector`]: the counting side (every id: losses,
//!   duplicates, order, latency).
//! - [`systems`]: the edges and destinations under test.
//! - [`scenarios`]: steady state, outage and replay, kill -9.
//! - [`cpu`]: CPU and memory from `/proc`.
//! - [`placement`]: the destination alone on a CPU (`--destination-cpu`);
//!   [`interrupts`]: which CPUs the disk's interrupts take time from.
//! - [`report`], [`machine`]: the tables and the machine description.
//! - [`args`]: the command line.

pub mod args;
pub mod collector;
pub mod cpu;
pub mod interrupts;
pub mod machine;
pub mod payload;
pub mod placement;
pub mod publisher;
pub mod report;
pub mod scenarios;
pub mod subscriber;
pub mod systems;
pub mod wire;
