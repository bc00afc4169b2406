//! The limits a listener applies to its clients.
//!
//! The broker has one set ([`crate::BrokerSettings::limits`]); a listener
//! may have its own ([`crate::ListenerSettings::limits`]), for example a
//! larger packet size for gateways on one port and a tight connection cap
//! for a WebSocket port. `max_connections` is counted per listener for a
//! listener's own limits, and across all listeners for the broker's.

use std::time::Duration;

/// Limits on what clients may do; exceeding one closes only that client's
/// connection (counted by reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most open connections; a client beyond it gets CONNACK "quota
    /// exceeded" (MQTT 5) or "server unavailable" (3.1.1).
    pub max_connections: usize,
    /// Largest packet a client may send.
    pub max_packet_size: usize,
    /// Most QoS 1/2 publishes an MQTT 5 client may have unacknowledged
    /// (advertised in CONNACK); one more closes it with 0x93.
    pub receive_maximum: u16,
    /// How long a new connection may take to finish its TLS and WebSocket
    /// handshakes and send CONNECT.
    pub connect_timeout: Duration,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_packet_size: 1024 * 1024,
            receive_maximum: 100,
            connect_timeout: Duration::from_secs(10),
            max_topic_length: 1024,
            max_topic_levels: 32,
        }
    }
}
