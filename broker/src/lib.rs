//! Backhaul's device-facing MQTT broker.
//!
//! Devices connect to Backhaul's own listeners; each connection task decodes
//! MQTT 3.1.1 and 5 with rumqttd's codec and attaches the client to rumqttd's
//! router through a local link, so device-to-device traffic works as in any
//! broker. Before a QoS 1/2 PUBLISH is acknowledged it passes the
//! [`DurableGate`], which appends it to every matching data flow's queue and
//! holds the PUBACK until the append is durable (see `rumqttd.md`, option A:
//! stock rumqttd acknowledges before anything reaches disk).
//!
//! - [`topic`]: topic filters and matching.
//! - [`message`]: the stored form of a publish ([`StoredMessage`]).
//! - [`gate`]: the durable gate.
//! - [`broker`]: router, listeners and settings; [`limits`]: what a
//!   listener allows its clients.
//! - `codec` and `connection`: framing and the per-connection task.
//! - [`tls`], [`auth`], [`passwd`], [`authz`]: listener TLS, who a client
//!   is, password files, and what it may publish and subscribe to.
//! - [`websocket`]: MQTT over WebSocket listeners.
//! - [`retained`]: retained messages kept across restarts.
//! - [`router_watch`]: noticing that rumqttd's router thread has died.
//! - [`stats`]: refusals counted by reason, for metrics.
//! - `will` and `session`: will messages and session lifetimes, which
//!   Backhaul keeps itself because rumqttd's router does not for local links.

pub mod auth;
pub mod authz;
pub mod broker;
mod codec;
mod connection;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod limits;
pub mod message;
mod origin;
pub mod passwd;
pub mod retained;
pub mod router_watch;
mod session;
pub mod stats;
pub mod tls;
pub mod topic;
pub mod websocket;
mod will;

pub use auth::Authentication;
pub use authz::Authorization;
pub use broker::{BoundListener, Broker, BrokerSettings, BrokerStats, ListenerSettings};
pub use error::{BrokerError, ConnectionError};
pub use gate::{DurableGate, FlowRoute};
pub use limits::Limits;
pub use message::StoredMessage;
pub use router_watch::RouterWatch;
pub use topic::{FilterError, TopicFilter};
pub use websocket::WebSocketSettings;
pub use will::WillError;
