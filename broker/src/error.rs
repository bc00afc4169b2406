use std::net::SocketAddr;

use backhaul_storage::StorageError;
use rumqttd::local::LinkError;
use rumqttd::protocol::Error as CodecError;

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("listener '{name}' cannot bind {address}: {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hand the stored retained messages to the router: {0}")]
    RetainedRestore(String),
}

/// Why a device connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT: {0}")]
    Codec(#[from] CodecError),
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    #[error("closed before CONNECT")]
    ClosedBeforeConnect,
    #[error("the first packet was not CONNECT")]
    NotConnect,
    #[error("a second CONNECT on the same connection")]
    SecondConnect,
    #[error("no message within 1.5 times the keep-alive")]
    KeepAliveTimeout,
    #[error("topic alias {0} was never set on this connection")]
    UnknownTopicAlias(u16),
    #[error("router link: {0}")]
    Link(String),
    #[error("the router has stopped")]
    RouterGone,
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    #[error("WebSocket handshake refused: {0}")]
    WebSocketHandshake(String),
    #[error("topic {} of {length} bytes is longer than the limit of {max}", if *filter { "filter" } else { "name" })]
    TopicTooLong {
        filter: bool,
        length: usize,
        max: usize,
    },
    #[error("topic {} has {levels} levels, more than the limit of {max}", if *filter { "filter" } else { "name" })]
    TooManyTopicLevels {
        filter: bool,
        levels: usize,
        max: usize,
    },
    #[error("more than Receive Maximum ({0}) unacknowledged QoS 1/2 publishes")]
    ReceiveMaximumExceeded(u16),
    #[error("invalid will: {0}")]
    InvalidWill(#[from] crate::WillError),
    #[error("another connection took the client id over")]
    TakenOver,
    #[error("durable append failed, publish refused: {0}")]
    Storage(#[from] StorageError),
}

/// rumqttd's `LinkError` carries a whole router event; keep only its text.
impl From<LinkError> for ConnectionError {
    fn from(err: LinkError) -> Self {
        ConnectionError::Link(err.to_string())
    }
}
