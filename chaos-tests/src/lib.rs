//! Backhaul's test kit: start the built `backhaul` binary and real peers
//! (Mosquitto from Debian) on loopback, publish numbered QoS 1 streams with
//! real MQTT clients, count what arrives. The fault suites in `tests/` use
//! it; nothing here is a mock, but for [`entra_authority`]: Entra ID's token
//! endpoint cannot run here, so a stand-in answers as it does.
//!
//! - [`process`]: the `backhaul` and `mosquitto` processes.
//! - [`config`]: configuration directories for a test.
//! - [`mqtt`]: a numbered publisher that records PUBACKs and a subscriber
//!   that records every message with its Backhaul id.
//! - [`eventhubs_peer`]: an Event Hubs AMQP peer with fault switches.
//! - [`entra_authority`]: the Entra ID token endpoint stand-in.
//! - [`docker`], [`images`], [`chaos`]: the same in containers, with faults
//!   injected through the Docker engine (the `chaos_*` suites).
//! - [`bench`]: the `backhaul-bench` harness (Backhaul vs a Mosquitto bridge).

pub mod bench;
pub mod chaos;
pub mod config;
pub mod docker;
pub mod entra_authority;
pub mod eventhubs_peer;
pub mod images;
pub mod mqtt;
pub mod process;

use std::net::TcpListener;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("loopback has free ports")
}
