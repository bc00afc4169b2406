//! The broker: rumqttd's router plus Backhaul's own listeners.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backhaul_storage::keyed::RetainedStore;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig, SegmentConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn, Instrument};

use crate::auth::Authentication;
use crate::authz::Authorization;
use crate::connection;
use crate::gate::DurableGate;
use crate::limits::Limits;
use crate::retained;
use crate::router_watch::RouterWatch;
use crate::session::Sessions;
use crate::stats::{Action, AuthFailure, ReasonCounters, Rejection};
use crate::websocket::WebSocketSettings;
use crate::will::{WillLink, WILL_LINK_CLIENT_ID};
use crate::{BrokerError, ConnectionError};

/// Settings of the device-facing broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub listeners: Vec<ListenerSettings>,
    /// The limits of listeners without their own; `max_connections` here
    /// caps all listeners together.
    pub limits: Limits,
    /// Who may publish and subscribe where.
    pub authorization: Arc<Authorization>,
}

/// One listener: its address, TLS, WebSocket and how it authenticates
/// clients.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub name: String,
    pub address: SocketAddr,
    /// `None` for plain TCP.
    pub tls: Option<Arc<ServerConfig>>,
    /// MQTT over WebSocket (over TLS when `tls` is set: `wss`).
    pub websocket: Option<WebSocketSettings>,
    pub authentication: Authentication,
    /// This listener's own limits (`max_connections` counted on this
    /// listener alone); `None`: the broker's.
    pub limits: Option<Limits>,
}

impl ListenerSettings {
    /// A plain TCP listener that lets anyone in.
    pub fn plain(name: impl Into<String>, address: SocketAddr) -> Self {
        Self {
            name: name.into(),
            address,
            tls: None,
            websocket: None,
            authentication: Authentication::Anonymous,
            limits: None,
        }
    }
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            limits: Limits::default(),
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
    /// Forwards not sent to a subscriber because they exceed the Maximum
    /// Packet Size it set in CONNECT (discarded as if delivered).
    pub publishes_too_large_for_client: AtomicU64,
}

/// What a connection asks of the router.
pub(crate) struct LinkRequest {
    pub(crate) client_id: String,
    pub(crate) clean_session: bool,
    pub(crate) topic_alias_max: u16,
}

pub(crate) type Connector =
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
    /// Where retained messages are kept across restarts (disk mode); unset:
    /// in the router's memory only.
    pub(crate) retained: OnceLock<Arc<RetainedStore>>,
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
    router: RouterWatch,
}

impl Broker {
    /// Starts rumqttd's router thread. Call [`Broker::bind`] next.
    pub fn new(settings: BrokerSettings, gate: DurableGate) -> Self {
        let router = router_config(settings.limits.max_connections);
        Self::with_router(settings, gate, router)
    }

    /// For tests of a router that dies: the router thread panics when a
    /// client subscribes to `filter` (rumqttd refuses a log segment of
    /// 0 bytes for it), as it does on its own internal errors.
    #[doc(hidden)]
    pub fn with_router_dying_on(settings: BrokerSettings, gate: DurableGate, filter: &str) -> Self {
        let mut router = router_config(settings.limits.max_connections);
        let fatal = SegmentConfig {
            max_segment_size: 0,
            max_segment_count: 1,
        };
        router.custom_segment = Some(HashMap::from([(filter.to_string(), fatal)]));
        Self::with_router(settings, gate, router)
    }

    fn with_router(settings: BrokerSettings, gate: DurableGate, router: RouterConfig) -> Self {
        let router_tx = Router::new(0, router).spawn();
        let (will_tx, will_rx, _) = LinkBuilder::new(WILL_LINK_CLIENT_ID, router_tx.clone())
            .build()
            .expect("a router that was just spawned accepts a link");
        let watched = router_tx.clone();
        let router = RouterWatch::new(move || !watched.is_disconnected());
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
                retained: OnceLock::new(),
                next_client: AtomicU64::new(1),
            }),
            router,
        }
    }

    /// Tells whether rumqttd's router thread still runs; see
    /// [`RouterWatch`].
    pub fn router_watch(&self) -> RouterWatch {
        self.router.clone()
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn stats(&self) -> Arc<BrokerStats> {
        self.shared.stats.clone()
    }

    /// Keeps retained messages in `store` from now on, after handing the
    /// ones it holds back to the router (see [`crate::retained`]). Call it
    /// before the listeners serve, so that the first subscriber gets them.
    /// Returns how many were restored.
    pub async fn keep_retained(&self, store: RetainedStore) -> Result<usize, BrokerError> {
        let stored = store.load();
        let restored = retained::republish(self.shared.connector.clone(), stored)
            .await
            .map_err(|err| BrokerError::RetainedRestore(err.to_string()))?;
        // Only this method sets it; a second call keeps the first store.
        let _ = self.shared.retained.set(Arc::new(store));
        Ok(restored)
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
                websocket = settings.websocket.as_ref().map(|ws| ws.path.as_str()),
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
                    websocket: settings.websocket.clone(),
                    authentication: settings.authentication.clone(),
                    limits: settings.limits.unwrap_or(self.shared.settings.limits),
                    connections: AtomicU64::new(0),
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
    pub(crate) websocket: Option<WebSocketSettings>,
    pub(crate) authentication: Authentication,
    /// The listener's limits (its own, or the broker's).
    pub(crate) limits: Limits,
    /// Connections open on this listener.
    pub(crate) connections: AtomicU64,
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
