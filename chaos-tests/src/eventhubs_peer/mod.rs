//! An in-process Azure Event Hubs peer: an AMQP 1.0 server (on `fe2o3-amqp`'s
//! acceptor side) that the official Event Hubs SDK talks to unchanged, over
//! plain TCP on loopback (`with_custom_endpoint("amqp://127.0.0.1:<port>")`).
//!
//! It emulates the parts of the service a producer touches
//! (`shared/reference/eventhubs-amqp.md` §3):
//!
//! - [`connection`]: TCP accept, SASL ANONYMOUS, the AMQP connection and its
//!   sessions; each link is routed by its node address. Every connection
//!   runs through a byte pump, so a test can freeze it or cut it.
//! - [`cbs`]: the `$cbs` node; `put-token` is answered with status 202 (or
//!   401 while tokens are rejected).
//! - [`management`]: the `$management` node; `READ` of the event hub and of
//!   each partition.
//! - [`events`]: sender links to `amqps://<ns>/<hub>` and
//!   `amqps://<ns>/<hub>/Partitions/<id>`; settles each transfer per the
//!   fault switches.
//! - [`batch`]: batch envelopes (message format `0x80013700`) unpacked into
//!   their events.
//! - [`store`]: every received event with its hub, partition id, partition
//!   key, message id, application properties, content type and body, for a
//!   test to inspect and wait on.
//! - [`faults`]: switches a test can flip at any time: refuse connections,
//!   accept and stay silent, reject transfers with an AMQP condition, never
//!   settle (blackhole), drop TCP connections, settle slowly.
//!
//! Not emulated: receiving (consumer links), geo-replication, idle time-outs,
//! quotas other than `max-message-size`, real token validation.

pub mod batch;
pub mod cbs;
pub mod connection;
pub mod events;
pub mod faults;
pub mod management;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::{AbortHandle, JoinHandle};

pub use faults::{Faults, Rejection};
pub use store::{PropertyValue, ReceivedEvent};

/// The namespace that connection strings for the peer name. The SDK keeps it
/// as the AMQP host name and in every link address; the socket goes to the
/// custom endpoint.
pub const DEFAULT_NAMESPACE: &str = "backhaul-test.servicebus.windows.net";

/// Message format of an Event Hubs batch envelope.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// See [`PeerOptions::settle_latency`].
pub const DEFAULT_SETTLE_LATENCY: Duration = Duration::from_millis(5);

/// See [`PeerOptions::network_latency`].
pub const DEFAULT_NETWORK_LATENCY: Duration = Duration::from_millis(2);

/// How the peer presents itself.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Address to listen on: loopback, or every interface
    /// (`0.0.0.0`) when the peer runs in a container of the chaos suites.
    pub listen_address: std::net::IpAddr,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Partitions of every event hub: ids `"0"` to `"<n-1>"`.
    pub partition_count: u32,
    /// Event hubs that exist; `None` accepts any name. Links and management
    /// reads for other names fail with `amqp:not-found` / status 404.
    pub hubs: Option<Vec<String>>,
    /// `max-message-size` advertised on event links (the SDK sizes batches
    /// from it).
    pub max_message_size: u64,
    /// The namespace used by [`EventHubsPeer::connection_string`].
    pub namespace: String,
    /// The least time between a transfer's arrival and its disposition, on
    /// every node. A real service takes milliseconds; the SDK's AMQP stack
    /// (`fe2o3-amqp` 0.16.2, `link/sender_link.rs`
    /// `send_payload_with_transfer`) records an unsettled delivery only
    /// after the transfer is written, so a disposition that comes back
    /// faster is lost and that send never completes.
    pub settle_latency: Duration,
    /// One-way delay of every byte, both ways, as a network would add. The
    /// SDK's AMQP stack drops links and sessions without waiting for the
    /// peer's answer; a reply that comes back within microseconds can hit a
    /// handle it already forgot, and it then ends the session with
    /// `unattached-handle` and closes the connection.
    pub network_latency: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            listen_address: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 0,
            partition_count: 4,
            hubs: None,
            max_message_size: 1024 * 1024,
            namespace: DEFAULT_NAMESPACE.to_string(),
            settle_latency: DEFAULT_SETTLE_LATENCY,
            network_latency: DEFAULT_NETWORK_LATENCY,
        }
    }
}

/// Counters of what the peer saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// TCP connections accepted and served (or frozen).
    pub connections: u64,
    /// TCP connections reset at once because of [`Faults::refuse`].
    pub refused: u64,
    /// Connections cut by [`EventHubsPeer::drop_connections`] or
    /// [`Faults::drop_on_transfer`].
    pub dropped: u64,
    /// Event transfers (single events or batch envelopes) received.
    pub transfers: u64,
    /// Transfers rejected because of [`Faults::reject`].
    pub rejected: u64,
    /// Transfers left unsettled because of [`Faults::blackhole`].
    pub blackholed: u64,
    /// CBS `put-token` requests.
    pub put_tokens: u64,
    /// `$management` READ requests.
    pub management_reads: u64,
    /// Sender links refused like the service refuses them (unknown hub or
    /// partition): a null target, then a detach with the error.
    pub attaches_refused: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    transfers: AtomicU64,
    rejected: AtomicU64,
    blackholed: AtomicU64,
    put_tokens: AtomicU64,
    management_reads: AtomicU64,
    pub(crate) attaches_refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> PeerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            connections: get(&self.connections),
            refused: get(&self.refused),
            dropped: get(&self.dropped),
            transfers: get(&self.transfers),
            rejected: get(&self.rejected),
            blackholed: get(&self.blackholed),
            put_tokens: get(&self.put_tokens),
            management_reads: get(&self.management_reads),
            attaches_refused: get(&self.attaches_refused),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed)
}

/// One CBS `put-token` the peer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbsToken {
    /// The `name` property: the audience, e.g. `amqps://<ns>/<hub>`.
    pub audience: String,
    /// `servicebus.windows.net:sastoken` or `jwt`.
    pub token_type: String,
    /// The token itself (the request's string body).
    pub token: String,
    /// The status code the peer answered.
    pub status: u16,
}

/// State shared by the accept loop, the connections and the handle.
pub(crate) struct Shared {
    pub(crate) options: PeerOptions,
    faults: Mutex<Faults>,
    /// `true` while [`Faults::silent`]: every connection's bytes stop.
    pub(crate) frozen: watch::Sender<bool>,
    pub(crate) store: store::EventStore,
    pub(crate) counters: Counters,
    pub(crate) tokens: Mutex<Vec<CbsToken>>,
    connections: Mutex<HashMap<u64, AbortHandle>>,
    next_connection: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Waits out [`PeerOptions::settle_latency`] before a disposition.
    pub(crate) async fn settle_latency(&self) {
        let latency = self.options.settle_latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Cuts one connection: its byte pump (and with it the TCP socket) and
    /// its AMQP tasks stop.
    pub(crate) fn drop_connection(&self, id: u64) {
        if let Some(handle) = lock(&self.connections).remove(&id) {
            bump(&self.counters.dropped);
            handle.abort();
        }
    }
}

/// A running peer. Dropping it stops the listener and cuts every connection.
pub struct EventHubsPeer {
    shared: Arc<Shared>,
    port: u16,
    accept_task: JoinHandle<()>,
}

impl EventHubsPeer {
    /// Starts a peer with default options on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(PeerOptions::default()).await
    }

    pub async fn start_with(options: PeerOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind((options.listen_address, options.port)).await?;
        let port = listener.local_addr()?.port();
        let (frozen, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            options,
            faults: Mutex::new(Faults::default()),
            frozen,
            store: store::EventStore::new(),
            counters: Counters::default(),
            tokens: Mutex::new(Vec::new()),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(connection::accept_loop(listener, shared.clone()));
        Ok(Self {
            shared,
            port,
            accept_task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to give the SDK's `with_custom_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    pub fn namespace(&self) -> &str {
        &self.shared.options.namespace
    }

    /// A connection string with a (meaningless) shared access key for the
    /// peer's namespace, with `EntityPath` when `hub` is given. The SDK
    /// ignores the port in `Endpoint`; pair it with [`Self::endpoint`].
    pub fn connection_string(&self, hub: Option<&str>) -> String {
        let mut cs = format!(
            "Endpoint=sb://{}/;SharedAccessKeyName=RootManageSharedAccessKey;\
             SharedAccessKey=YmFja2hhdWwtdGVzdC1rZXktbm90LWEtc2VjcmV0",
            self.shared.options.namespace
        );
        if let Some(hub) = hub {
            cs.push_str(";EntityPath=");
            cs.push_str(hub);
        }
        cs
    }

    pub fn partition_ids(&self) -> Vec<String> {
        (0..self.shared.options.partition_count)
            .map(|p| p.to_string())
            .collect()
    }

    // ---- fault switches -------------------------------------------------

    /// The current switches.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces every switch at once.
    pub fn set_faults(&self, faults: Faults) {
        let silent = faults.silent;
        *lock(&self.shared.faults) = faults;
        self.shared.frozen.send_replace(silent);
    }

    fn update(&self, change: impl FnOnce(&mut Faults)) {
        let mut faults = self.faults();
        change(&mut faults);
        self.set_faults(faults);
    }

    /// Clears every switch (frozen connections resume).
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// New TCP connections are reset at once.
    pub fn refuse_connections(&self, on: bool) {
        self.update(|f| f.refuse = on);
    }

    /// New connections are accepted and never answered; existing ones stop
    /// passing bytes either way. Everything resumes when switched off.
    pub fn stay_silent(&self, on: bool) {
        self.update(|f| f.silent = on);
    }

    /// Event transfers are rejected with this AMQP error condition, e.g.
    /// `com.microsoft:server-busy` or `amqp:unauthorized-access`; `None`
    /// accepts them again.
    pub fn reject_transfers(&self, condition: Option<&str>) {
        self.update(|f| {
            f.reject = condition.map(|c| Rejection {
                condition: c.to_string(),
                description: Some(format!("rejected by the test peer: {c}")),
            })
        });
    }

    /// Event transfers are received but never settled (and not stored).
    pub fn blackhole(&self, on: bool) {
        self.update(|f| f.blackhole = on);
    }

    /// Each event transfer is settled only after this delay.
    pub fn settle_slowly(&self, delay: Option<Duration>) {
        self.update(|f| f.settle_delay = delay);
    }

    /// An event transfer is stored, then its connection is cut before it is
    /// settled: the sender cannot know it arrived (an in-flight cut).
    pub fn drop_on_transfer(&self, on: bool) {
        self.update(|f| f.drop_on_transfer = on);
    }

    /// CBS `put-token` is answered with status 401 (bad credentials).
    pub fn reject_tokens(&self, on: bool) {
        self.update(|f| f.reject_tokens = on);
    }

    /// Cuts every open connection now (the TCP socket closes).
    pub fn drop_connections(&self) {
        let ids: Vec<u64> = lock(&self.shared.connections).keys().copied().collect();
        for id in ids {
            self.shared.drop_connection(id);
        }
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.connections).len()
    }

    // ---- what arrived ---------------------------------------------------

    /// Every stored event, in arrival order.
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.shared.store.all()
    }

    /// Forgets the stored events (sequence numbers keep counting).
    pub fn clear_events(&self) {
        self.shared.store.clear();
    }

    /// Waits until at least `count` events are stored; returns all of them,
    /// or an error saying how many arrived within `timeout`.
    pub async fn wait_for_events(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedEvent>> {
        self.shared.store.wait_for(count, timeout).await
    }

    /// Every event stored from now on (shared with the store, not copied).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ReceivedEvent>> {
        self.shared.store.subscribe()
    }

    pub fn stats(&self) -> PeerStats {
        self.shared.counters.snapshot()
    }

    /// The CBS tokens put so far.
    pub fn tokens(&self) -> Vec<CbsToken> {
        lock(&self.shared.tokens).clone()
    }
}

impl Drop for EventHubsPeer {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.drop_connections();
    }
}

/// The hub and partition id named by an event link's target address:
/// `amqps://<ns>/<hub>` or `amqps://<ns>/<hub>/Partitions/<id>` (the scheme
/// and namespace are optional).
pub fn parse_target(address: &str) -> (String, Option<String>) {
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => address,
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let hub = parts.first().copied().unwrap_or("").to_string();
    let partition = match parts.as_slice() {
        [_, p, id, ..] if p.eq_ignore_ascii_case("partitions") => Some(id.to_string()),
        _ => None,
    };
    (hub, partition)
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("amqps://ns.servicebus.windows.net/hub"),
            ("hub".to_string(), None)
        );
        assert_eq!(
            parse_target("amqps://ns/hub/Partitions/3"),
            ("hub".to_string(), Some("3".to_string()))
        );
        assert_eq!(
            parse_target("hub/partitions/0"),
            ("hub".to_string(), Some("0".to_string()))
        );
    }
}
