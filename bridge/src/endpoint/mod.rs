//! Endpoints: where a data flow delivers. Each type implements [`Sink`]:
//! deliver a batch in order and succeed only once the destination has
//! confirmed all of it. Errors are classified so the flow knows whether to
//! retry soon, later, or park.
//!
//! - [`mqtt`]: a remote MQTT broker (MQTT 5, rumqttc).
//! - [`local_storage`]: JSON Lines files on this machine.

pub mod entra;
pub mod eventhubs;
pub mod local_storage;
pub mod mqtt;

use std::path::PathBuf;

use async_trait::async_trait;
use backhaul_broker::StoredMessage;

use crate::config::{Endpoint, Flow};

/// One message on its way to a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    /// Stable id: `<appliance id>/<flow>/<queue sequence>`.
    pub id: String,
    /// The rendered `dataDestination` (topic, or folder).
    pub destination: String,
    pub message: StoredMessage,
}

/// How a failed send should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network or peer trouble: back off and retry the same batch.
    Transient,
    /// The peer asks us to slow down: back off longer.
    Throttled,
    /// Configuration or authorization: retry only rarely; the data stays.
    Fatal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Fatal => "fatal",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub kind: ErrorKind,
    pub message: String,
    /// Set when message `index` of the batch can never be sent (too large
    /// for the destination even alone) and the messages before it were
    /// delivered: the flow dead-letters it and goes on with the rest.
    pub too_large: Option<usize>,
}

impl SendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            too_large: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// Message `index` of the batch (id `id`) can never be sent; see
    /// [`SendError::too_large`]. Its kind is `Fatal`: a caller that ignores
    /// the index parks the flow rather than dropping anything.
    pub fn too_large(index: usize, id: &str, detail: impl std::fmt::Display) -> Self {
        Self {
            too_large: Some(index),
            ..Self::new(
                ErrorKind::Fatal,
                format!("message {index} ({id}) is too large to send: {detail}"),
            )
        }
    }

    /// The index of the message that cannot be sent, if that is the error.
    pub fn too_large_index(&self) -> Option<usize> {
        self.too_large
    }
}

/// A destination of one data flow.
#[async_trait]
pub trait Sink: Send {
    /// Delivers `batch` in order. `Ok` only when the destination confirmed
    /// every message; after an error the caller sends the same batch again.
    async fn send(&mut self, batch: &[OutboundMessage]) -> Result<(), SendError>;

    /// Delivers from `window` in order while keeping messages in flight
    /// across calls: returns once at least `want` (1 ..= `window.len()`)
    /// messages at its front are confirmed, with how many are. The caller
    /// then drops that many from the front, may append more at the back and
    /// calls again with the rest, so a sink with an in-flight window never
    /// waits for the tail of one batch before starting the next. After an
    /// error the caller passes the same window again and the sink sends it
    /// from its first message; a [`SendError::too_large`] index counts from
    /// the window's front.
    ///
    /// The default sends the first `want` messages as one batch.
    async fn send_window(
        &mut self,
        window: &[OutboundMessage],
        want: usize,
    ) -> Result<usize, SendError> {
        self.send(&window[..want]).await.map(|()| want)
    }

    /// How many flow batches the caller should hold in its window (read
    /// ahead of the oldest unconfirmed one): enough for every message this
    /// sink can have in flight, and one more ready when a slot frees.
    fn window_batches(&self) -> usize {
        2
    }

    /// Releases connections and files.
    async fn close(&mut self);
}

/// What sinks need besides their endpoint's settings.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub appliance_id: String,
    pub data_dir: PathBuf,
}

/// The sink for `flow`'s destination endpoint.
pub fn build(endpoint: &Endpoint, flow: &Flow, context: &SinkContext) -> Option<Box<dyn Sink>> {
    match endpoint {
        Endpoint::LocalBroker => None,
        Endpoint::Mqtt(settings) => Some(Box::new(mqtt::MqttSink::new(
            settings.clone(),
            mqtt::client_id(settings, &context.appliance_id, &flow.name),
        ))),
        Endpoint::EventHubs(hubs) => Some(Box::new(eventhubs::EventHubsSink::new(
            hubs.settings.clone(),
            format!("backhaul-{}-{}", context.appliance_id, flow.name),
        ))),
        Endpoint::LocalStorage(settings) => Some(Box::new(local_storage::LocalStorageSink::new(
            settings.folder(&context.data_dir),
            flow.name.clone(),
            settings.max_file_bytes,
        ))),
    }
}
