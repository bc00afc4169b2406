//! The broker: rumqttd's router plus Backhaul's own listeners.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn, Instrument};

use crate::auth::Authentication;
use crate::authz::Authorization;
use crate::connection;
use crate::gate::DurableGate;
use crate::session::Sessions;
use crate::stats::{Action, AuthFailure, ReasonCounters, Rejection};
use crate::will::{WillLink, WILL_LINK_CLIENT_ID};
use crate::{BrokerError, ConnectionError};

/// Settings of the device-facing broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub listeners: Vec<ListenerSettings>,
    /// Largest packet a client may send.
    pub max_packet_size: usize,
    /// How long a new connection may take to finish its TLS handshake and
    /// send CONNECT.
    pub connect_timeout: Duration,
    /// Most open connections (all listeners); a client beyond it gets
    /// CONNACK "quota exceeded" (MQTT 5) or "server unavailable" (3.1.1).
    pub max_connections: usize,
    /// Most QoS 1/2 publishes an MQTT 5 client may have unacknowledged
    /// (advertised in CONNACK); one more closes it with 0x93.
    pub receive_maximum: u16,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Who may publish and subscribe where.
    pub authorization: Arc<Authorization>,
}

/// One listener: its address, TLS and how it authenticates clients.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub name: String,
    pub address: SocketAddr,
    /// `None` for plain TCP.
    pub tls: Option<Arc<ServerConfig>>,
    pub authentication: Authentication,
}

impl ListenerSettings {
    /// A plain TCP listener that lets anyone in.
    pub fn plain(name: impl Into<String>, address: SocketAddr) -> Self {
        Self {
            name: name.into(),
            address,
            tls: None,
            authentication: Authentication::Anonymous,
        }
    }
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            receive_maximum: 100,
            max_topic_length: 1024,
            max_topic_levels: 32,
            authorization: Arc::new(Authorization::allow_all()),
        }
    }
}

/// Counters of the broker, for metrics.
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub connections_active: AtomicU64,
    pub connections_total: AtomicU64,
    pub publishes_received: AtomicU64,
    /// Publishes that matched at least one data flow.
    pub publishes_gated: AtomicU64,
    /// Publishes whose durable append failed (no PUBACK was sent).
    pub publishes_refused: AtomicU64,
    /// Clients not let in, by reason.
    pub auth_failures: ReasonCounters<AuthFailure>,
    /// Publishes and subscriptions the authorization rules refused.
    pub authorization_denied: ReasonCounters<Action>,
    /// Packets and connections a limit refused.
    pub packets_rejected: ReasonCounters<Rejection>,
    /// Will messages published (after an abnormal end or DISCONNECT 0x04).
    pub wills_published: AtomicU64,
}

/// What a connection asks of the router.
pub(crate) struct LinkRequest {
    pub(crate) client_id: String,
    pub(crate) clean_session: bool,
    pub(crate) topic_alias_max: u16,
}

type Connector =
    dyn Fn(LinkRequest) -> Result<(LinkTx, LinkRx, Notification), ConnectionError> + Send + Sync;

/// State every connection shares.
pub(crate) struct Shared {
    pub(crate) settings: BrokerSettings,
    pub(crate) gate: DurableGate,
    /// Attaches a client to the router (blocking: run off the async workers).
    pub(crate) connector: Arc<Connector>,
    pub(crate) stats: Arc<BrokerStats>,
    /// Password checks running at once: Argon2 takes tens of milliseconds
    /// and ~19 MiB each, so a flood of logins must queue, not fill memory.
    pub(crate) verify_slots: Semaphore,
    /// Session expiry, delayed wills and takeovers, per client id.
    pub(crate) sessions: Sessions,
    /// The router link wills are published through.
    pub(crate) will_link: WillLink,
    next_client: AtomicU64,
}

impl Shared {
    pub(crate) fn assign_client_id(&self) -> String {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        format!("backhaul-auto-{n}")
    }
}

/// The device-facing broker.
pub struct Broker {
    shared: Arc<Shared>,
}

impl Broker {
    /// Starts rumqttd's router thread. Call [`Broker::bind`] next.
    pub fn new(settings: BrokerSettings, gate: DurableGate) -> Self {
        let router_tx = Router::new(0, router_config(settings.max_connections)).spawn();
        let (will_tx, will_rx, _) = LinkBuilder::new(WILL_LINK_CLIENT_ID, router_tx.clone())
            .build()
            .expect("a router that was just spawned accepts a link");
        let connector = move |request: LinkRequest| {
            LinkBuilder::new(&request.client_id, router_tx.clone())
                .clean_session(request.clean_session)
                .topic_alias_max(request.topic_alias_max)
                .build()
                .map_err(ConnectionError::from)
        };
        Self {
            shared: Arc::new(Shared {
                settings,
                gate,
                connector: Arc::new(connector),
                stats: Arc::new(BrokerStats::default()),
                verify_slots: Semaphore::new(VERIFY_SLOTS),
                sessions: Sessions::default(),
                will_link: WillLink::new(will_tx, will_rx),
                next_client: AtomicU64::new(1),
            }),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn stats(&self) -> Arc<BrokerStats> {
        self.shared.stats.clone()
    }

    /// Binds every listener, so address errors surface before the broker
    /// reports ready.
    pub async fn bind(&self) -> Result<Vec<BoundListener>, BrokerError> {
        let mut bound = Vec::new();
        for settings in &self.shared.settings.listeners {
            let listener = TcpListener::bind(settings.address)
                .await
                .map_err(|source| BrokerError::Bind {
                    name: settings.name.clone(),
                    address: settings.address,
                    source,
                })?;
            let address = listener.local_addr().unwrap_or(settings.address);
            let authentication = match &settings.authentication {
                Authentication::Anonymous => "anonymous",
                Authentication::Password(_) => "password",
                Authentication::X509 => "x509",
            };
            info!(
                listener = %settings.name,
                %address,
                tls = settings.tls.is_some(),
                authentication,
                "MQTT listener bound"
            );
            let on_network = !address.ip().is_loopback();
            if settings.authentication.is_anonymous() && on_network {
                warn!(listener = %settings.name, %address, "this listener lets any client on the network connect without authentication (allowAnonymous)");
            }
            let password = matches!(settings.authentication, Authentication::Password(_));
            if password && settings.tls.is_none() && on_network {
                warn!(listener = %settings.name, %address, "passwords reach this listener unencrypted: add tls to it");
            }
            bound.push(BoundListener {
                name: settings.name.clone(),
                address,
                listener,
                shared: self.shared.clone(),
                context: Arc::new(ListenerContext {
                    tls: settings.tls.clone().map(TlsAcceptor::from),
                    authentication: settings.authentication.clone(),
                }),
            });
        }
        Ok(bound)
    }
}

/// Router limits. Device subscribers read from rumqttd's in-memory logs;
/// data flows never do, so these only bound what ordinary subscribers can
/// fall behind by.
fn router_config(max_connections: usize) -> RouterConfig {
    RouterConfig {
        // Room for connections being refused while others close.
        max_connections: max_connections + 10,
        max_outgoing_packet_count: 200,
        max_segment_size: 16 * 1024 * 1024,
        max_segment_count: 4,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// Concurrent password checks (see [`Shared::verify_slots`]).
const VERIFY_SLOTS: usize = 4;

/// What a connection needs of its listener.
pub(crate) struct ListenerContext {
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) authentication: Authentication,
}

/// A bound listener, ready to accept.
pub struct BoundListener {
    name: String,
    address: SocketAddr,
    listener: TcpListener,
    shared: Arc<Shared>,
    context: Arc<ListenerContext>,
}

impl BoundListener {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Accepts connections forever; each one runs in its own task (TLS
    /// handshake included), so a slow client never holds up the accept loop.
    pub async fn serve(self) {
        let span = tracing::info_span!("listener", name = %self.name, address = %self.address);
        async move {
            loop {
                match self.listener.accept().await {
                    Ok((stream, peer)) => {
                        tokio::spawn(connection::serve(
                            stream,
                            peer,
                            self.shared.clone(),
                            self.context.clone(),
                        ));
                    }
                    Err(err) => {
                        warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}
