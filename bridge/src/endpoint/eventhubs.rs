//! Azure Event Hubs over AMQP 1.0, with the official SDK
//! (`azure_messaging_eventhubs` 0.16, pinned exactly: it is pre-1.0).
//!
//! The flow's rendered `dataDestination` is the event hub. The sink walks
//! the flow's window in order and cuts it into SDK batches
//! (`create_batch` / `try_add_event_data`): a new one starts when the
//! partition target changes (per [`PartitionStrategy`]), when the SDK says
//! it is full, or at `batch_max_messages`. Every event carries the
//! message's stable id as its AMQP message-id.
//!
//! Up to `max_in_flight_batches` (default 4) SDK batches are on their way
//! at once, each on its own connection ([`in_flight`]): waiting for each
//! batch's settlement before sending the next left both sides idle most of
//! the time (issue 4). A batch whose events the size bound says fit
//! ([`size_bound`]) is filled in its own task while the next one starts;
//! the flow reads one batch more than there are in flight
//! ([`Sink::window_batches`]), so one is ready whenever one is confirmed. Batches with a partition key or a fixed partition stay
//! one at a time per key, so their order holds even when one fails and is
//! sent again; batches without a key share the connections freely.
//!
//! What the SDK does not do, this sink does (`shared/reference/eventhubs-amqp.md`):
//! - every SDK call has a time-out ([`EventHubsEndpoint::operation_timeout`]):
//!   a send issued as the connection dies, a silent peer, a transfer that is
//!   never settled all hang otherwise; and a batch waiting for its
//!   settlement fails as soon as its connection's socket closes
//!   ([`socket`]), instead of at the time-out;
//! - `TCP_NODELAY` on the SDK's connections ([`socket`]);
//! - after a time-out or any error other than a throttling rejection the
//!   clients are dropped (and the batches in flight stopped), so the next
//!   `send` opens new connections (the SDK never retries `open`) and sends
//!   the window again from its first unconfirmed message;
//! - the SDK's own retries are kept short ([`sdk_retry_options`]): the flow
//!   owns the long back-off;
//! - errors are classified ([`classify`]): `server-busy` and
//!   `resource-limit-exceeded` are throttling; unauthorized, not found, a
//!   bad connection string or partition are fatal (the flow parks); the
//!   rest is transient;
//! - a window the peer confirmed in part (an error after some SDK batches
//!   were accepted) is resumed where it stopped when the same window comes
//!   again, so only the SDK batches in flight at the error can be
//!   duplicated;
//! - a message too large for an empty SDK batch is reported with
//!   [`SendError::too_large`], after the messages before it were delivered.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core_amqp::error::{AmqpError, AmqpErrorKind};
use azure_core_amqp::message::{
    AmqpApplicationProperties, AmqpMessageBody, AmqpMessageId, AmqpMessageProperties,
};
use azure_core_amqp::{AmqpOrderedMap, AmqpSimpleValue};
use azure_messaging_eventhubs::error::ErrorKind as SdkErrorKind;
use azure_messaging_eventhubs::models::AmqpMessage;
use azure_messaging_eventhubs::{ConnectionString, EventHubsError, ProducerClient, RetryOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{ErrorKind, OutboundMessage, SendError, Sink};

mod in_flight;
mod job;
mod size_bound;
mod socket;

use in_flight::{InFlight, InFlightQueue};
use job::{BatchJob, Filled};
use socket::ClientSocket;

/// Application property that carries the MQTT topic (with
/// `copy_mqtt_properties`).
pub const TOPIC_PROPERTY: &str = "mqtt-topic";
/// Application properties for the other MQTT 5 properties, named as Azure IoT
/// Operations names them for Kafka headers. The content type goes to the AMQP
/// `content-type` property instead.
pub const PAYLOAD_FORMAT_PROPERTY: &str = "Payload Format Indicator";
pub const RESPONSE_TOPIC_PROPERTY: &str = "Response Topic";
pub const MESSAGE_EXPIRY_PROPERTY: &str = "Message Expiry Interval";
pub const CORRELATION_DATA_PROPERTY: &str = "Correlation Data";

/// Default for [`EventHubsEndpoint::max_in_flight_batches`].
pub const DEFAULT_MAX_IN_FLIGHT_BATCHES: usize = 4;

/// Default for [`EventHubsEndpoint::operation_timeout`].
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How events are placed on partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PartitionStrategy {
    /// No key: the service balances.
    #[default]
    Default,
    /// The MQTT topic is the partition key.
    Topic,
    /// The named MQTT user property is the partition key (no key when the
    /// message lacks it).
    Property(String),
    /// Every event goes to this partition id.
    Static(String),
}

/// The settings of one Event Hubs endpoint.
#[derive(Clone)]
pub struct EventHubsEndpoint {
    /// `NAME.servicebus.windows.net`. Used when the connection string has
    /// no `Endpoint`, and always with an Entra ID credential.
    pub namespace: String,
    /// Secret: never logged, not in `Debug`.
    pub credential: EventHubsCredential,
    /// Reads the credential again (from its secret files) after the
    /// service refused it, so corrected secrets apply without a restart.
    pub reload_credential: Option<CredentialSource>,
    /// `amqp://host:port` or `amqps://host:port` to connect to instead of
    /// the namespace (private endpoints, proxies, tests). The scheme decides
    /// TLS.
    pub custom_endpoint: Option<String>,
    pub partition_strategy: PartitionStrategy,
    /// MQTT 5 user properties, topic and other properties become
    /// application properties; the content type becomes the AMQP content
    /// type.
    pub copy_mqtt_properties: bool,
    /// Most events in one SDK batch (at least 1).
    pub batch_max_messages: usize,
    /// Largest SDK batch in bytes; `None` (or more than the link allows)
    /// uses the link's `max-message-size`.
    pub batch_max_bytes: Option<u64>,
    /// Longest wait for any one SDK call (open, create batch, send).
    pub operation_timeout: Duration,
    /// SDK batches on their way at once (over all hubs), each on its own
    /// AMQP connection (at least 1). Batches with a partition key or a fixed
    /// partition go one at a time per key whatever this says.
    pub max_in_flight_batches: usize,
}

/// Produces the current credential, or says why it cannot.
pub type CredentialSource = Arc<dyn Fn() -> Result<EventHubsCredential, String> + Send + Sync>;

/// How the sink proves who it is to Event Hubs.
#[derive(Clone)]
pub enum EventHubsCredential {
    /// A connection string with `SharedAccessKeyName`/`SharedAccessKey` or
    /// `SharedAccessSignature` (a SAS token put through CBS).
    ConnectionString(String),
    /// An Entra ID token credential, a service principal (see
    /// [`super::entra`]); its tokens go through CBS as `jwt`.
    Entra(Arc<dyn TokenCredential>),
}

impl EventHubsEndpoint {
    /// Settings with the defaults: `Default` partitioning, properties
    /// copied, batches of up to 1000 events and the link's size, 30 s
    /// time-outs, 4 batches in flight.
    pub fn new(namespace: impl Into<String>, connection_string: impl Into<String>) -> Self {
        Self::with_credential(
            namespace,
            EventHubsCredential::ConnectionString(connection_string.into()),
        )
    }

    /// [`EventHubsEndpoint::new`] with any credential.
    pub fn with_credential(namespace: impl Into<String>, credential: EventHubsCredential) -> Self {
        Self {
            namespace: namespace.into(),
            credential,
            reload_credential: None,
            custom_endpoint: None,
            partition_strategy: PartitionStrategy::Default,
            copy_mqtt_properties: true,
            batch_max_messages: 1000,
            batch_max_bytes: None,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_in_flight_batches: DEFAULT_MAX_IN_FLIGHT_BATCHES,
        }
    }
}

impl fmt::Debug for EventHubsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHubsEndpoint")
            .field("namespace", &self.namespace)
            .field("credential", &"<secret>")
            .field("custom_endpoint", &self.custom_endpoint)
            .field("partition_strategy", &self.partition_strategy)
            .field("copy_mqtt_properties", &self.copy_mqtt_properties)
            .field("batch_max_messages", &self.batch_max_messages)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_in_flight_batches", &self.max_in_flight_batches)
            .finish()
    }
}

/// The SDK's own retries: a few quick ones within about 3 s. Longer
/// outages are the flow's to ride out, with the batch kept queued.
pub fn sdk_retry_options() -> RetryOptions {
    RetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(100),
        max_delay: azure_core::time::Duration::seconds(1),
        max_retries: 3,
        max_total_elapsed: azure_core::time::Duration::seconds(3),
    }
}

/// Where one SDK batch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    Any,
    Key(String),
    Partition(String),
}

/// What a previous call confirmed before it failed: the window is known by
/// its first message, the prefix by its length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    first_id: String,
    confirmed: usize,
}

impl Progress {
    fn of(window: &[OutboundMessage], confirmed: usize) -> Option<Self> {
        if confirmed == 0 {
            return None;
        }
        Some(Self {
            first_id: window.first()?.id.clone(),
            confirmed,
        })
    }

    /// How many leading messages of `window` are already delivered.
    fn confirmed_in(&self, window: &[OutboundMessage]) -> usize {
        let same =
            window.len() > self.confirmed && window.first().map(|m| &m.id) == Some(&self.first_id);
        if same {
            self.confirmed
        } else {
            0
        }
    }
}

/// The task sending one SDK batch.
type SendTask = JoinHandle<Result<(), SendError>>;

/// How a batch in flight reports its filling.
type FillReport = oneshot::Receiver<Result<Filled, SendError>>;

/// A batch's task, and its fill report when the sink did not wait for it
/// (it was sure every event fits, see [`size_bound`]).
struct BatchTask {
    handle: SendTask,
    unread_fill: Option<FillReport>,
}

/// An open SDK client (one AMQP connection) and its TCP socket.
#[derive(Clone)]
struct Client {
    producer: Arc<ProducerClient>,
    socket: ClientSocket,
}

/// The Event Hubs sink of one data flow.
pub struct EventHubsSink {
    settings: EventHubsEndpoint,
    /// The credential, checked once (a connection string given its
    /// `Endpoint`).
    credential: Result<EventHubsCredential, SendError>,
    application_id: String,
    /// The open clients of each hub, by lane (see [`in_flight`]).
    lanes: HashMap<String, Vec<Option<Client>>>,
    in_flight: InFlightQueue<BatchTask>,
    /// Set by a fatal error: the next connection reads the credential again.
    reload_pending: bool,
    /// Whether `batch_max_bytes` fits the link (it is dropped if not).
    use_max_bytes: bool,
    progress: Option<Progress>,
    /// The sender link's largest message, once the SDK named it.
    link_max: Option<u64>,
    /// Resolves when the last batch started was handed to the SDK.
    last_handed: Option<oneshot::Receiver<()>>,
    /// Whether a run of events the size bound says fits may start without
    /// waiting for its filling; off for good if the bound was ever wrong.
    trust_bound: bool,
}

impl EventHubsSink {
    /// `application_id` names the AMQP container and the sender links
    /// (`<id>-rust-sender`): use the appliance and flow.
    pub fn new(settings: EventHubsEndpoint, application_id: impl Into<String>) -> Self {
        let credential = checked_credential(&settings);
        Self {
            use_max_bytes: settings.batch_max_bytes.is_some(),
            settings,
            credential,
            application_id: application_id.into(),
            lanes: HashMap::new(),
            in_flight: InFlightQueue::default(),
            reload_pending: false,
            progress: None,
            link_max: None,
            last_handed: None,
            trust_bound: true,
        }
    }

    pub fn settings(&self) -> &EventHubsEndpoint {
        &self.settings
    }

    fn lanes_per_hub(&self) -> usize {
        self.settings.max_in_flight_batches.max(1)
    }

    /// The open client of `hub` for `lane`, opening one if needed.
    /// A client whose connection closed meanwhile (the peer went away or
    /// dropped an idle connection) is replaced before it is used: the SDK
    /// would reconnect by itself, on a socket the batch task does not watch.
    async fn client(&mut self, hub: &str, lane: usize) -> Result<Client, SendError> {
        let lanes = self.lanes_per_hub();
        if let Some(slot) = self.lanes.get_mut(hub).and_then(|l| l.get_mut(lane)) {
            match slot.take() {
                Some(client) if client.socket.is_closed() => {
                    debug!(hub, lane, "the connection closed; opening a new one");
                    close_in_background(Vec::new(), vec![client.producer]);
                }
                Some(client) => {
                    *slot = Some(client.clone());
                    return Ok(client);
                }
                None => {}
            }
        }
        let opened = self.open(hub).await?;
        let slots = self.lanes.entry(hub.to_string()).or_default();
        slots.resize(lanes.max(slots.len()), None);
        slots[lane] = Some(opened.clone());
        Ok(opened)
    }

    /// A new client (AMQP connection) to `hub`, with `TCP_NODELAY` (see
    /// [`socket`]).
    async fn open(&mut self, hub: &str) -> Result<Client, SendError> {
        self.reload_credential();
        let credential = self.credential.clone()?;
        if hub.is_empty() {
            return Err(fatal(
                "the data flow's destination (the event hub name) is empty",
            ));
        }
        let mut builder = ProducerClient::builder()
            .with_application_id(self.application_id.clone())
            .with_retry_options(sdk_retry_options());
        if let Some(endpoint) = &self.settings.custom_endpoint {
            builder = builder.with_custom_endpoint(endpoint.clone());
        }
        let before = socket::Before::look(socket::endpoint_port(
            self.settings.custom_endpoint.as_deref(),
        ));
        let opening = async {
            match credential {
                EventHubsCredential::ConnectionString(connection_string) => {
                    builder
                        .open_with_connection_string(&connection_string, Some(hub))
                        .await
                }
                EventHubsCredential::Entra(credential) => {
                    builder
                        .open(&self.settings.namespace, hub, credential)
                        .await
                }
            }
        };
        let opened = tokio::time::timeout(self.settings.operation_timeout, opening)
            .await
            .map_err(|_| {
                SendError::transient(format!(
                    "no AMQP connection to event hub {hub} within {:?}",
                    self.settings.operation_timeout
                ))
            })?
            .map_err(|err| sdk_error(&format!("connecting to event hub {hub}"), &err))?;
        let socket = before.new_client();
        if !socket.known() {
            debug!(
                hub,
                "the client's TCP socket was not found: no TCP_NODELAY, no watch"
            );
        }
        info!(hub, "connected to Event Hubs");
        Ok(Client {
            producer: Arc::new(opened),
            socket,
        })
    }

    /// After a fatal error, takes the credential as its secrets say now.
    fn reload_credential(&mut self) {
        if !std::mem::take(&mut self.reload_pending) {
            return;
        }
        let Some(reload) = self.settings.reload_credential.clone() else {
            return;
        };
        match reload() {
            Ok(credential) => {
                let mut settings = self.settings.clone();
                settings.credential = credential;
                self.credential = checked_credential(&settings);
                self.settings = settings;
            }
            Err(problem) => {
                warn!(%problem, "the credential cannot be read again; keeping the last one")
            }
        }
    }

    /// Stops the batches in flight (their outcome is unknown: they are
    /// sent again) and drops every client: the next send reconnects.
    fn reset(&mut self) {
        let stopped: Vec<SendTask> = self
            .in_flight
            .drain()
            .map(|batch| {
                batch.task.handle.abort();
                batch.task.handle
            })
            .collect();
        let clients: Vec<(String, Arc<ProducerClient>)> = self
            .lanes
            .drain()
            .flat_map(|(hub, lanes)| {
                lanes
                    .into_iter()
                    .flatten()
                    .map(move |c| (hub.clone(), c.producer))
            })
            .collect();
        for (hub, _) in &clients {
            debug!(hub, "dropping the Event Hubs client");
        }
        close_in_background(stopped, clients.into_iter().map(|(_, c)| c).collect());
    }

    /// Starts SDK batches from the first message not yet in flight, while a
    /// lane is free and the order allows it (see [`in_flight`]). Returns the
    /// window position of a message too large for an empty batch, if it
    /// stopped there.
    async fn start_batches(
        &mut self,
        window: &[OutboundMessage],
        confirmed: usize,
    ) -> Result<Option<usize>, SendError> {
        loop {
            let next = confirmed + self.in_flight.submitted();
            let Some(first) = window.get(next) else {
                return Ok(None);
            };
            let hub = first.destination.clone();
            let placement = self.placement(first);
            let lanes = self.lanes_per_hub();
            let Some(lane) = self.in_flight.may_start(&hub, &placement, lanes) else {
                return Ok(None);
            };
            let client = self.client(&hub, lane).await?;
            let messages = self.candidates(&window[next..], &hub, &placement);
            let limit = self.batch_limit();
            let all_fit = self.trust_bound
                && limit.is_some_and(|limit| self.bound(messages, &placement) <= limit);
            let copy = self.settings.copy_mqtt_properties;
            let (handed_tx, handed_rx) = oneshot::channel();
            let job = BatchJob {
                client: client.producer,
                socket: client.socket,
                events: messages.iter().map(|m| amqp_message(m, copy)).collect(),
                hub: hub.clone(),
                placement: placement.clone(),
                max_bytes: if all_fit {
                    limit
                } else {
                    self.use_max_bytes
                        .then_some(self.settings.batch_max_bytes)
                        .flatten()
                },
                all_fit,
                learn_link_max: self.link_max.is_none(),
                after: self.last_handed.take(),
                handed: handed_tx,
                timeout: self.settings.operation_timeout,
            };
            self.last_handed = Some(handed_rx);
            let count = messages.len();
            let (filled_tx, filled_rx) = oneshot::channel();
            let handle = tokio::spawn(job.run(filled_tx));
            let (count, unread_fill) = if all_fit {
                (count, Some(filled_rx))
            } else {
                let filled = filled_rx
                    .await
                    .unwrap_or_else(|_| Err(SendError::transient("the batch task stopped")))?;
                self.learn(&filled);
                (filled.count, None)
            };
            if count == 0 {
                return Ok(Some(next));
            }
            self.in_flight.push(InFlight {
                first_id: first.id.clone(),
                count,
                hub,
                placement,
                lane,
                task: BatchTask {
                    handle,
                    unread_fill,
                },
            });
        }
    }

    /// What a filled batch told about the link.
    fn learn(&mut self, filled: &Filled) {
        if filled.dropped_max_bytes {
            self.use_max_bytes = false;
        }
        if let Some(max) = filled.link_max {
            self.link_max = Some(max);
        }
    }

    /// The size limit of a batch, once the link's is known: the link's, or
    /// the configured `batch_max_bytes` below it.
    fn batch_limit(&self) -> Option<u64> {
        let link = self.link_max?;
        Some(match self.settings.batch_max_bytes {
            Some(max) if max <= link => max,
            _ => link,
        })
    }

    /// The most bytes an SDK batch of `messages` can take: the SDK counts
    /// the first event twice (it sizes the envelope from it).
    fn bound(&self, messages: &[OutboundMessage], placement: &Placement) -> u64 {
        let copy = self.settings.copy_mqtt_properties;
        let key = match placement {
            Placement::Key(key) => Some(key.as_str()),
            _ => None,
        };
        let first = messages
            .first()
            .map_or(0, |m| size_bound::event_bound(m, copy, key));
        first
            + messages
                .iter()
                .map(|m| size_bound::event_bound(m, copy, key))
                .sum::<u64>()
    }

    /// After a batch failed: if it was started sure to fit and did not,
    /// the bound is wrong for this traffic, and every later batch waits
    /// for its filling.
    fn check_bound(&mut self, batch: Option<&mut InFlight<BatchTask>>) {
        let Some(batch) = batch else { return };
        let Some(fill) = batch.task.unread_fill.as_mut() else {
            return;
        };
        if let Ok(Ok(filled)) = fill.try_recv() {
            self.learn(&filled);
            if filled.count < batch.count {
                warn!(
                    took = filled.count,
                    bound_said = batch.count,
                    "an Event Hubs batch took fewer events than the size bound said; \
                     waiting for each batch's filling from now on"
                );
                self.trust_bound = false;
            }
        }
    }

    /// The messages for an SDK batch from the front of `messages`: those
    /// with the same hub and placement, up to `batch_max_messages`.
    fn candidates<'m>(
        &self,
        messages: &'m [OutboundMessage],
        hub: &str,
        placement: &Placement,
    ) -> &'m [OutboundMessage] {
        let strategy = &self.settings.partition_strategy;
        let count = messages
            .iter()
            .take(self.settings.batch_max_messages.max(1))
            .take_while(|m| m.destination == hub && placement_of(strategy, m) == *placement)
            .count();
        &messages[..count]
    }

    /// Sends from `window[confirmed..]` until at least `want` messages at its
    /// front are confirmed, counting them in `confirmed`.
    async fn deliver(
        &mut self,
        window: &[OutboundMessage],
        want: usize,
        confirmed: &mut usize,
    ) -> Result<(), SendError> {
        let mut too_large_at = None;
        loop {
            if too_large_at.is_none() {
                too_large_at = self.start_batches(window, *confirmed).await?;
            }
            if *confirmed >= want {
                return Ok(());
            }
            let Some(front) = self.in_flight.front_mut() else {
                let at = too_large_at.unwrap_or(*confirmed);
                let message = &window[at];
                return Err(SendError::too_large(
                    at,
                    &message.id,
                    format!(
                        "{} payload bytes do not fit an empty Event Hubs batch",
                        message.message.payload.len()
                    ),
                ));
            };
            let outcome = (&mut front.task.handle).await;
            let mut batch = self.in_flight.pop_front();
            if outcome.as_ref().is_ok_and(|sent| sent.is_err()) {
                self.check_bound(batch.as_mut());
            }
            match outcome {
                Ok(Ok(())) => *confirmed += batch.map_or(0, |b| b.count),
                Ok(Err(err)) => return Err(err),
                Err(stopped) => {
                    return Err(SendError::transient(format!(
                        "the task sending a batch stopped: {stopped}"
                    )))
                }
            }
        }
    }

    /// After an error: remembers what was confirmed, and drops the
    /// connections unless the peer only asked to slow down (and nothing
    /// else was in flight).
    fn failed(&mut self, window: &[OutboundMessage], confirmed: usize, err: &SendError) {
        self.progress = if err.too_large_index().is_some() {
            None
        } else {
            Progress::of(window, confirmed)
        };
        self.reload_pending |= err.kind == ErrorKind::Fatal;
        let keep = err.kind == ErrorKind::Throttled || err.too_large_index().is_some();
        if !keep || !self.in_flight.is_empty() {
            // A time-out, a broken connection, a state we do not trust, or
            // batches whose outcome we will not learn: the next send starts
            // on new connections.
            self.reset();
        }
    }

    fn placement(&self, message: &OutboundMessage) -> Placement {
        placement_of(&self.settings.partition_strategy, message)
    }
}

fn placement_of(strategy: &PartitionStrategy, message: &OutboundMessage) -> Placement {
    match strategy {
        PartitionStrategy::Default => Placement::Any,
        PartitionStrategy::Topic => Placement::Key(message.message.topic.clone()),
        PartitionStrategy::Property(name) => message
            .message
            .user_properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| Placement::Key(value.clone()))
            .unwrap_or(Placement::Any),
        PartitionStrategy::Static(id) => Placement::Partition(id.clone()),
    }
}

/// The event for one message, as the AMQP message the SDK batches: the
/// payload as its one data section, the stable id as its message-id and,
/// when copying, the MQTT content type and properties (user properties
/// last: one named like a built-in replaces it).
///
/// Built here rather than as the SDK's `EventData`, which the SDK converts
/// into this same message through a `HashMap` of the properties and a
/// second copy of the body: about 1,000 instructions less per event
/// (callgrind, 200-byte events; the SDK's `try_add` then serializes each
/// event twice, about 11,500 instructions each).
pub fn amqp_message(outbound: &OutboundMessage, copy_mqtt_properties: bool) -> AmqpMessage {
    let message = &outbound.message;
    let mut properties = AmqpMessageProperties {
        message_id: Some(AmqpMessageId::from(outbound.id.clone())),
        ..Default::default()
    };
    let mut builder =
        AmqpMessage::builder().with_body(AmqpMessageBody::Binary(vec![message.payload.to_vec()]));
    if copy_mqtt_properties {
        if let Some(content_type) = &message.content_type {
            properties.content_type = Some(content_type.clone().into());
        }
        builder = builder.with_application_properties(AmqpApplicationProperties(
            application_properties(message),
        ));
    }
    builder.with_properties(properties).build()
}

/// The MQTT properties of `message` as AMQP application properties.
fn application_properties(
    message: &backhaul_broker::StoredMessage,
) -> AmqpOrderedMap<String, AmqpSimpleValue> {
    let built_in: [(&str, Option<AmqpSimpleValue>); 5] = [
        (TOPIC_PROPERTY, Some(message.topic.as_str().into())),
        (
            PAYLOAD_FORMAT_PROPERTY,
            message
                .payload_format_indicator
                .map(|f| f.to_string().into()),
        ),
        (
            RESPONSE_TOPIC_PROPERTY,
            message.response_topic.as_deref().map(Into::into),
        ),
        (
            MESSAGE_EXPIRY_PROPERTY,
            message
                .message_expiry_interval
                .map(|e| e.to_string().into()),
        ),
        (
            CORRELATION_DATA_PROPERTY,
            message.correlation_data.as_ref().map(|d| d.to_vec().into()),
        ),
    ];
    let mut map = AmqpOrderedMap::new();
    for (key, value) in built_in {
        if let Some(value) = value {
            map.insert(key.to_string(), value);
        }
    }
    for (key, value) in &message.user_properties {
        map.remove(key.as_str());
        map.insert(key.clone(), value.as_str().into());
    }
    map
}

#[async_trait]
impl Sink for EventHubsSink {
    async fn send(&mut self, batch: &[OutboundMessage]) -> Result<(), SendError> {
        self.send_window(batch, batch.len()).await.map(|_| ())
    }

    /// Keeps up to `max_in_flight_batches` SDK batches in flight across
    /// calls (see [`in_flight`]); returns once the front `want` messages are
    /// confirmed. After an error every batch still in flight is stopped and
    /// the window is sent again from the first message not confirmed.
    async fn send_window(
        &mut self,
        window: &[OutboundMessage],
        want: usize,
    ) -> Result<usize, SendError> {
        let mut confirmed = match self.progress.take() {
            Some(progress) => progress.confirmed_in(window),
            None => 0,
        };
        if confirmed > 0 {
            debug!(
                skipped = confirmed,
                "resuming a window after the part already confirmed"
            );
        }
        if !self.in_flight.matches(window, confirmed) {
            // Not the window these batches came from: their outcome does
            // not count.
            self.reset();
        }
        match self.deliver(window, want, &mut confirmed).await {
            Ok(()) => Ok(confirmed),
            Err(err) => {
                self.failed(window, confirmed, &err);
                Err(err)
            }
        }
    }

    /// One flow batch for each SDK batch in flight, and one more, so that
    /// a batch is ready whenever one is confirmed. (A flow batch and an SDK
    /// batch both hold up to `batching.maxMessages` events.)
    fn window_batches(&self) -> usize {
        self.lanes_per_hub() + 1
    }

    async fn close(&mut self) {
        let stopped: Vec<SendTask> = self.in_flight.drain().map(|b| b.task.handle).collect();
        for task in stopped {
            // Stopped, then awaited: its hold on the client goes with it.
            task.abort();
            let _ = task.await;
        }
        for (_, lanes) in self.lanes.drain() {
            for client in lanes.into_iter().flatten() {
                if let Ok(client) = Arc::try_unwrap(client.producer) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                }
            }
        }
    }
}

impl Drop for EventHubsSink {
    fn drop(&mut self) {
        self.reset();
    }
}

/// Closes clients without waiting for them (they may be stuck on a dead
/// connection), once the stopped tasks that used them are gone; dropping
/// them is the fallback.
fn close_in_background(stopped: Vec<SendTask>, clients: Vec<Arc<ProducerClient>>) {
    if stopped.is_empty() && clients.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                for task in stopped {
                    let _ = task.await;
                }
                for client in clients {
                    if let Ok(client) = Arc::try_unwrap(client) {
                        let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                    }
                }
            });
        }
        Err(_) => drop(clients),
    }
}

fn fatal(message: impl Into<String>) -> SendError {
    SendError::new(ErrorKind::Fatal, message.into())
}

/// The credential to open with, checked; a connection string is given the
/// namespace as `Endpoint` when it has none. Errors never quote secrets.
fn checked_credential(settings: &EventHubsEndpoint) -> Result<EventHubsCredential, SendError> {
    if let Some(endpoint) = &settings.custom_endpoint {
        let scheme_ok = endpoint.starts_with("amqp://") || endpoint.starts_with("amqps://");
        if !scheme_ok || endpoint.contains('@') {
            return Err(fatal(format!(
                "customEndpoint {endpoint:?} must be amqp://host:port or amqps://host:port, \
                 without credentials"
            )));
        }
    }
    match &settings.credential {
        EventHubsCredential::ConnectionString(connection_string) => {
            checked_connection_string(connection_string, &settings.namespace)
                .map(EventHubsCredential::ConnectionString)
        }
        EventHubsCredential::Entra(credential) if !settings.namespace.is_empty() => {
            Ok(EventHubsCredential::Entra(credential.clone()))
        }
        EventHubsCredential::Entra(_) => Err(fatal(
            "an Entra ID credential needs the namespace (host) of the event hubs",
        )),
    }
}

fn checked_connection_string(
    connection_string: &str,
    namespace: &str,
) -> Result<String, SendError> {
    let mut connection_string = connection_string.trim().to_string();
    let has_endpoint = connection_string
        .split(';')
        .any(|part| part.trim().to_ascii_lowercase().starts_with("endpoint="));
    if !has_endpoint {
        if namespace.is_empty() {
            return Err(fatal(
                "the Event Hubs connection string has no Endpoint and no namespace is set",
            ));
        }
        connection_string = format!(
            "Endpoint=sb://{}/;{connection_string}",
            namespace.trim_end_matches('/')
        );
    }
    if connection_string.parse::<ConnectionString>().is_err() {
        return Err(fatal(
            "the Event Hubs connection string is not valid (it needs Endpoint and \
             SharedAccessKeyName/SharedAccessKey or SharedAccessSignature)",
        ));
    }
    Ok(connection_string)
}

/// A classified [`SendError`] for an SDK error.
fn sdk_error(doing: &str, err: &EventHubsError) -> SendError {
    SendError::new(classify(err), format!("{doing}: {err}"))
}

/// How the flow should treat an SDK error.
pub fn classify(err: &EventHubsError) -> ErrorKind {
    if let Some(condition) = condition(err) {
        return match condition.as_str() {
            "com.microsoft:server-busy" | "amqp:resource-limit-exceeded" => ErrorKind::Throttled,
            "amqp:unauthorized-access"
            | "amqp:not-found"
            | "com.microsoft:argument-out-of-range"
            | "com.microsoft:argument-error"
            | "com.microsoft:entity-disabled"
            | "amqp:link:message-size-exceeded"
            | "amqp:not-allowed" => ErrorKind::Fatal,
            _ => ErrorKind::Transient,
        };
    }
    if let Some(status) = management_status(err) {
        return match status {
            401 | 403 | 404 | 400 => ErrorKind::Fatal,
            429 | 503 => ErrorKind::Throttled,
            _ => ErrorKind::Transient,
        };
    }
    if credential_refused(err) {
        return ErrorKind::Fatal;
    }
    let text = err.to_string();
    // The service refuses a link to a hub that does not exist with a null
    // target; the SDK reports that and drops the detach's `amqp:not-found`.
    if text.contains("Target field is None") || text.contains("conflicts with EntityPath") {
        return ErrorKind::Fatal;
    }
    ErrorKind::Transient
}

/// Whether Entra ID refused the credential (the token request answered
/// 400, 401 or 403: a wrong secret, an unknown principal or tenant): the
/// flow parks until the configuration changes. An unreachable authority is
/// transient.
fn credential_refused(err: &EventHubsError) -> bool {
    use azure_core::error::ErrorKind as CoreKind;
    use std::error::Error as _;
    let refused = |core: &azure_core::Error| match core.kind() {
        CoreKind::HttpResponse { status, .. } => {
            matches!(u16::from(*status), 400 | 401 | 403)
        }
        _ => false,
    };
    if let SdkErrorKind::AzureCore(core) = &err.kind {
        if refused(core) {
            return true;
        }
    }
    let mut cause = err.source();
    for _ in 0..16 {
        let Some(current) = cause else {
            return false;
        };
        if current
            .downcast_ref::<azure_core::Error>()
            .is_some_and(refused)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// The AMQP error condition inside an SDK error, if any.
pub fn condition(err: &EventHubsError) -> Option<String> {
    match &err.kind {
        SdkErrorKind::AmqpError(amqp) => find_amqp(amqp, |e| match e.kind() {
            AmqpErrorKind::AmqpDescribedError(d) => Some(d.condition.as_ref().to_string()),
            _ => None,
        }),
        SdkErrorKind::SendRejected(Some(d)) => Some(d.condition.as_ref().to_string()),
        _ => None,
    }
}

fn management_status(err: &EventHubsError) -> Option<u16> {
    match &err.kind {
        SdkErrorKind::AmqpError(amqp) => find_amqp(amqp, |e| match e.kind() {
            AmqpErrorKind::ManagementStatusCode(status, _) => Some(u16::from(*status)),
            _ => None,
        }),
        _ => None,
    }
}

/// The first `pick` that matches along an AMQP error's source chain.
fn find_amqp<T>(err: &AmqpError, pick: impl Fn(&AmqpError) -> Option<T>) -> Option<T> {
    use std::error::Error as _;
    if let Some(found) = pick(err) {
        return Some(found);
    }
    let mut cause = err.source();
    for _ in 0..16 {
        let current = cause?;
        if let Some(amqp) = current.downcast_ref::<AmqpError>() {
            if let Some(found) = pick(amqp) {
                return Some(found);
            }
        }
        cause = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhaul_broker::StoredMessage;

    fn outbound(id: &str, topic: &str) -> OutboundMessage {
        OutboundMessage {
            id: id.to_string(),
            destination: "hub".to_string(),
            message: StoredMessage {
                topic: topic.to_string(),
                user_properties: vec![("device".to_string(), "d1".to_string())],
                ..Default::default()
            },
        }
    }

    /// What the SDK makes of the same message built as its `EventData` (the
    /// sink's way until session 7).
    fn through_event_data(outbound: &OutboundMessage, copy: bool) -> AmqpMessage {
        use azure_messaging_eventhubs::models::EventData;
        let message = &outbound.message;
        let mut event = EventData::builder()
            .with_body(message.payload.to_vec())
            .with_message_id(outbound.id.clone());
        if copy {
            if let Some(content_type) = &message.content_type {
                event = event.with_content_type(content_type.clone());
            }
            event = event.add_property(TOPIC_PROPERTY.to_string(), message.topic.as_str());
            if let Some(format) = message.payload_format_indicator {
                event = event.add_property(PAYLOAD_FORMAT_PROPERTY.to_string(), format.to_string());
            }
            if let Some(topic) = &message.response_topic {
                event = event.add_property(RESPONSE_TOPIC_PROPERTY.to_string(), topic.as_str());
            }
            if let Some(expiry) = message.message_expiry_interval {
                event = event.add_property(MESSAGE_EXPIRY_PROPERTY.to_string(), expiry.to_string());
            }
            if let Some(data) = &message.correlation_data {
                event = event.add_property(CORRELATION_DATA_PROPERTY.to_string(), data.to_vec());
            }
            for (key, value) in &message.user_properties {
                event = event.add_property(key.clone(), value.as_str());
            }
        }
        event.build().into()
    }

    fn sorted_application_properties(message: &AmqpMessage) -> Vec<(String, AmqpSimpleValue)> {
        let mut all: Vec<_> = message
            .application_properties
            .iter()
            .flat_map(|p| p.0.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn the_amqp_message_is_the_one_the_sdk_made_of_event_data() {
        let mut full = outbound("appliance/flow/42", "plant/line1/temp");
        full.message.payload = bytes::Bytes::from_static(b"{\"t\":21.5}");
        full.message.content_type = Some("application/json".to_string());
        full.message.payload_format_indicator = Some(1);
        full.message.response_topic = Some("reply/here".to_string());
        full.message.message_expiry_interval = Some(3600);
        full.message.correlation_data = Some(bytes::Bytes::from_static(b"corr"));
        full.message.user_properties = vec![
            ("device".to_string(), "d1".to_string()),
            (TOPIC_PROPERTY.to_string(), "renamed".to_string()),
            ("device".to_string(), "d2".to_string()),
        ];
        let mut bare = outbound("appliance/flow/43", "plant/line1/temp");
        bare.message.user_properties.clear();
        for (message, copy) in [(&full, true), (&full, false), (&bare, true), (&bare, false)] {
            let (ours, sdks) = (
                amqp_message(message, copy),
                through_event_data(message, copy),
            );
            assert_eq!(ours.body, sdks.body);
            assert_eq!(ours.properties, sdks.properties);
            assert_eq!(ours.header, sdks.header);
            assert_eq!(ours.message_annotations, sdks.message_annotations);
            assert_eq!(
                sorted_application_properties(&ours),
                sorted_application_properties(&sdks),
                "copy {copy}"
            );
            if sorted_application_properties(&ours).len() <= 1 {
                // One property or none: no map order to differ in.
                assert_eq!(
                    AmqpMessage::serialize(&ours).unwrap(),
                    AmqpMessage::serialize(&sdks).unwrap()
                );
            }
        }
        let properties = sorted_application_properties(&amqp_message(&full, true));
        let value = |key: &str| {
            properties
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            value("device"),
            Some(AmqpSimpleValue::from("d2")),
            "the last one wins"
        );
        assert_eq!(
            value(TOPIC_PROPERTY),
            Some(AmqpSimpleValue::from("renamed"))
        );
        assert_eq!(properties.len(), 6, "{properties:?}");
    }

    #[test]
    fn placements_follow_the_strategy() {
        let m = outbound("1", "plant/a");
        assert_eq!(
            placement_of(&PartitionStrategy::Default, &m),
            Placement::Any
        );
        assert_eq!(
            placement_of(&PartitionStrategy::Topic, &m),
            Placement::Key("plant/a".into())
        );
        assert_eq!(
            placement_of(&PartitionStrategy::Property("device".into()), &m),
            Placement::Key("d1".into())
        );
        assert_eq!(
            placement_of(&PartitionStrategy::Property("missing".into()), &m),
            Placement::Any
        );
        assert_eq!(
            placement_of(&PartitionStrategy::Static("3".into()), &m),
            Placement::Partition("3".into())
        );
    }

    #[test]
    fn progress_applies_only_to_the_same_window() {
        let batch = vec![outbound("a", "t"), outbound("b", "t"), outbound("c", "t")];
        let progress = Progress::of(&batch, 2).unwrap();
        assert_eq!(progress.confirmed_in(&batch), 2);
        assert_eq!(progress.confirmed_in(&batch[1..]), 0);
        assert_eq!(
            progress.confirmed_in(&batch[..2]),
            0,
            "nothing left to send"
        );
        let other = vec![outbound("x", "t"), outbound("b", "t"), outbound("c", "t")];
        assert_eq!(progress.confirmed_in(&other), 0);
        assert_eq!(Progress::of(&batch, 0), None);
    }

    #[test]
    fn connection_strings_are_checked_and_never_quoted() {
        let secret = "SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0LXZhbHVl";
        let mut settings = EventHubsEndpoint::new("ns.servicebus.windows.net", secret);
        let Ok(EventHubsCredential::ConnectionString(cs)) = checked_credential(&settings) else {
            panic!("a valid connection string");
        };
        assert!(cs.starts_with("Endpoint=sb://ns.servicebus.windows.net/;"));

        settings.credential =
            EventHubsCredential::ConnectionString("garbage-c2VjcmV0LXZhbHVl".into());
        let Err(err) = checked_credential(&settings) else {
            panic!("garbage refused");
        };
        assert_eq!(err.kind, ErrorKind::Fatal);
        assert!(!err.message.contains("c2VjcmV0LXZhbHVl"));

        settings.credential = EventHubsCredential::ConnectionString(secret.into());
        settings.custom_endpoint = Some("http://127.0.0.1:1".into());
        assert!(matches!(
            checked_credential(&settings),
            Err(SendError {
                kind: ErrorKind::Fatal,
                ..
            })
        ));
        assert!(!format!("{settings:?}").contains("c2VjcmV0LXZhbHVl"));
    }
}
