//! One device connection: Backhaul's replacement for rumqttd's remote link.
//!
//! The task owns the socket. It decodes packets with rumqttd's codec and
//! attaches the client to rumqttd's router through a local link, so
//! subscriptions, wildcards and retained messages behave as in any broker.
//! PUBLISHes pass the [`DurableGate`] first: their PUBACK/PUBREC is written
//! here, in order, once the gate's commit ticket resolves; the router only
//! sees a QoS 0 copy for its subscribers and so never acknowledges for us.
//! That copy is marked with its [`Origin`], and what the router forwards to
//! this client passes [`forward`] (delivered QoS, subscription options, the
//! client's Maximum Packet Size) before it is written.
//!
//! Security runs here too, in the connection's own task and within the
//! connect timeout: the TLS and WebSocket handshakes, authentication
//! (password checks on the blocking pool), then per packet the limits and
//! the authorization rules. A PUBLISH the rules deny never reaches the gate nor the router.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backhaul_storage::keyed::RetainedWrite;
use backhaul_storage::{CommitTicket, StorageError};
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnectReturnCode, Disconnect, DisconnectReasonCode, Error as CodecError, Packet, PubAck,
    PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish, PublishProperties, QoS,
    Subscribe, SubscribeProperties, SubscribeReasonCode,
};
use rumqttd::Notification;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{sleep_until, timeout_at, Instant};
use tracing::{debug, info, warn, Instrument};

mod admission;
mod forward;
mod limits;
mod reframe;
mod router_acks;
mod suback;
mod subscription_tag;

use self::admission::{check_password, handshake, refuse};
use self::limits::{check_topic, count_rejection, disconnect_reason, too_many_connections};
use self::router_acks::{Route, RouterAcks};
use self::suback::SubAckAssembly;
use self::subscription_tag::SubscriptionTag;
use crate::auth::Authentication;
use crate::authz::{Grants, Requester};
use crate::broker::{ListenerContext, Shared};
use crate::codec::{peek_publish, Codec, PublishHeader};
use crate::limits::Limits;
use crate::message::StoredMessage;
use crate::origin::Origin;
use crate::retained;
use crate::session::{self, attach, session_expiry, Ending};
use crate::stats::{Action, AuthFailure, Rejection};
use crate::will::{is_reserved_client_id, Will};
use crate::ConnectionError;

/// A client's byte stream: plain TCP, TLS over it, and either of them
/// carrying WebSocket.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type Io = Box<dyn Stream>;

/// Serves one accepted socket (or, for fuzzing, any byte stream) until it
/// closes.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    listener: Arc<ListenerContext>,
) {
    let span = tracing::info_span!("connection", %peer, client_id = tracing::field::Empty);
    async move {
        shared
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        let _open = OpenConnection::count(&shared, &listener);
        match Connection::open(stream, &shared, &listener).await {
            Ok(Some(mut connection)) => {
                let result = connection.run(&shared).await;
                let reason = result.as_ref().err().and_then(disconnect_reason);
                if let Err(err) = &result {
                    count_rejection(&shared, err);
                }
                let taken_over = matches!(result, Err(ConnectionError::TakenOver));
                connection.close(reason, !taken_over).await;
                match &result {
                    Ok(departure) => debug!(?departure, "connection closed"),
                    Err(err) => info!(%err, "connection closed"),
                }
                session::connection_ended(&shared, connection.ending(&result)).await;
            }
            Ok(None) => {}
            Err(err) => {
                count_rejection(&shared, &err);
                info!(%err, "connection refused");
            }
        }
    }
    .instrument(span)
    .await
}

/// Counts an open connection (in the broker and on its listener) until
/// dropped, also when its task unwinds.
struct OpenConnection(Arc<Shared>, Arc<ListenerContext>);

impl OpenConnection {
    fn count(shared: &Arc<Shared>, listener: &Arc<ListenerContext>) -> Self {
        shared
            .stats
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        listener.connections.fetch_add(1, Ordering::Relaxed);
        Self(shared.clone(), listener.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        self.1.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Connection {
    reader: ReadHalf<Io>,
    writer: WriteHalf<Io>,
    codec: Codec,
    inbuf: BytesMut,
    outbuf: BytesMut,
    link_tx: LinkTx,
    link_rx: LinkRx,
    keep_alive: Option<Duration>,
    /// PUBACKs/PUBRECs waiting for their commit, in arrival order.
    pending: FuturesOrdered<PendingAck>,
    /// QoS 2 packet ids received and not yet released by PUBREL.
    qos2_received: HashSet<u16>,
    topic_aliases: HashMap<u16, Bytes>,
    /// What the authorization policy grants this client.
    grants: Grants,
    /// QoS 1 publishes whose PUBACK is not written yet (Receive Maximum).
    inflight_qos1: usize,
    /// The client's SUBACKs, put together from the router's per filter.
    subacks: SubAckAssembly,
    /// The acks the router is owed for its forwards, in its order.
    router_acks: RouterAcks,
    /// The client's Maximum Packet Size (MQTT 5 CONNECT), if it set one.
    client_max_packet_size: Option<usize>,
    /// Topic aliases the router assigned whose first message (with the
    /// topic) was not sent to the client: alias to topic.
    untold_aliases: HashMap<u16, Bytes>,
    /// A session the router keeps after the connection (clean session off,
    /// or an MQTT 5 Session Expiry Interval).
    persistent: bool,
    /// The limits of the listener the client came in on.
    limits: Limits,
    client_id: String,
    /// This connection's turn with its client id (see [`Sessions`](crate::session)).
    generation: u64,
    /// The CONNECT's will, published unless the client disconnects normally.
    will: Option<Will>,
    /// How long the session outlives this connection; `None` for ever.
    session_expiry: Option<Duration>,
    /// Whether the router keeps the session's state after the connection.
    router_keeps_state: bool,
}

/// How a client left, when it did not break a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// It sent DISCONNECT with this reason (always "normal" on 3.1.1).
    Disconnect(DisconnectReasonCode),
    /// It closed the socket without DISCONNECT.
    Closed,
}

/// Whether a connection that ended so publishes its will: always, except
/// after a DISCONNECT with reason 0x00 (MQTT 5 reason 0x04 asks for it).
fn publishes_will(end: &Result<Departure, ConnectionError>) -> bool {
    !matches!(
        end,
        Ok(Departure::Disconnect(
            DisconnectReasonCode::NormalDisconnection
        ))
    )
}

impl Connection {
    /// Runs the TLS handshake, reads CONNECT, authenticates, attaches the
    /// client to the router and answers CONNACK. `None` when the client was
    /// refused with a CONNACK.
    async fn open<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        stream: S,
        shared: &Shared,
        listener: &ListenerContext,
    ) -> Result<Option<Self>, ConnectionError> {
        let limits = listener.limits;
        let deadline = Instant::now() + limits.connect_timeout;
        let (io, certificate_cn) = timeout_at(deadline, handshake(stream, listener, shared))
            .await
            .map_err(|_| ConnectionError::ConnectTimeout)??;
        let (mut reader, mut writer) = tokio::io::split(io);
        let mut inbuf = BytesMut::with_capacity(8 * 1024);
        let read_connect = read_connect(&mut reader, &mut inbuf, limits.max_packet_size);
        let (codec, packet) = timeout_at(deadline, read_connect)
            .await
            .map_err(|_| ConnectionError::ConnectTimeout)??;
        let Packet::Connect(connect, props, will, will_props, login) = packet else {
            return Err(ConnectionError::NotConnect);
        };
        let v5 = codec.is_v5();
        if too_many_connections(shared, listener) {
            shared.stats.packets_rejected.inc(Rejection::MaxConnections);
            let code = if v5 {
                ConnectReturnCode::QuotaExceeded
            } else {
                ConnectReturnCode::ServiceUnavailable
            };
            info!("refused: too many connections");
            refuse(&codec, &mut writer, code).await?;
            return Ok(None);
        }
        let identity = match &listener.authentication {
            Authentication::Anonymous => None,
            Authentication::X509 => match certificate_cn {
                Some(cn) => Some(cn),
                None => {
                    shared.stats.auth_failures.inc(AuthFailure::BadCertificate);
                    info!("refused: the client certificate has no subject CN");
                    refuse(&codec, &mut writer, ConnectReturnCode::NotAuthorized).await?;
                    return Ok(None);
                }
            },
            Authentication::Password(file) => match check_password(shared, file, login).await {
                Ok(username) => Some(username),
                Err(reason) => {
                    shared.stats.auth_failures.inc(reason);
                    info!(reason = reason.label(), "refused: bad username or password");
                    refuse(&codec, &mut writer, ConnectReturnCode::BadUserNamePassword).await?;
                    return Ok(None);
                }
            },
        };
        let mut outbuf = BytesMut::with_capacity(8 * 1024);
        // MQTT 3.1.1 requires a clean session with an empty client id;
        // MQTT 5 lets the server assign one either way.
        let empty_without_clean_session =
            connect.client_id.is_empty() && !connect.clean_session && !v5;
        if empty_without_clean_session || is_reserved_client_id(&connect.client_id) {
            info!(client_id = %connect.client_id, "refused: client id not valid here");
            refuse(
                &codec,
                &mut writer,
                ConnectReturnCode::ClientIdentifierNotValid,
            )
            .await?;
            return Ok(None);
        }
        let mut client_id = connect.client_id.clone();
        let mut assigned = None;
        if client_id.is_empty() {
            client_id = shared.assign_client_id();
            assigned = Some(client_id.clone());
        }
        tracing::Span::current().record("client_id", client_id.as_str());
        let grants = shared.settings.authorization.grants_for(Requester {
            identity: identity.as_deref(),
            client_id: &client_id,
        });
        let will = match will.map(|w| Will::from_connect(w, will_props)).transpose() {
            Ok(will) => will,
            Err(err) => {
                if v5 {
                    shared.stats.packets_rejected.inc(Rejection::Malformed);
                    info!(%err, "refused: invalid will");
                    refuse(&codec, &mut writer, ConnectReturnCode::TopicNameInvalid).await?;
                    return Ok(None);
                }
                return Err(ConnectionError::InvalidWill(err));
            }
        };
        if let Some(will) = &will {
            check_topic(&will.topic, false, &limits)?;
            if !grants.may_publish(&will.topic) {
                shared.stats.authorization_denied.inc(Action::Publish);
                info!(topic = %will.topic, "refused: the will topic is not granted for publish");
                refuse(&codec, &mut writer, ConnectReturnCode::NotAuthorized).await?;
                return Ok(None);
            }
        }
        let expiry = session_expiry(
            v5,
            connect.clean_session,
            props.as_ref().and_then(|p| p.session_expiry_interval),
        );
        let router_keeps_state = expiry != Some(Duration::ZERO) || !connect.clean_session;
        let topic_alias_max = props.as_ref().and_then(|p| p.topic_alias_max).unwrap_or(0);
        let client_max_packet_size = props
            .as_ref()
            .and_then(|p| p.max_packet_size)
            .and_then(|size| usize::try_from(size).ok());
        let (generation, (mut link_tx, link_rx, notification)) = attach(
            shared,
            &client_id,
            connect.clean_session,
            router_keeps_state,
            topic_alias_max,
        )
        .await?;
        let connack = async {
            if let Some(Packet::ConnAck(ack, ack_props)) = notification.into() {
                let ack_props = codec.is_v5().then(|| {
                    let mut p = ack_props.unwrap_or_default();
                    p.assigned_client_identifier = assigned;
                    p.receive_max = Some(limits.receive_maximum);
                    p.max_packet_size = u32::try_from(limits.max_packet_size).ok();
                    p
                });
                codec.write(Packet::ConnAck(ack, ack_props), &mut outbuf)?;
            }
            writer.write_all(&outbuf).await?;
            writer.flush().await?;
            Ok::<(), ConnectionError>(())
        };
        if let Err(err) = connack.await {
            // Attached but never connected: leave the router and the
            // session registry as if the client had not come.
            shared.sessions.abandon(&client_id, generation);
            let disconnect = Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            };
            let _ = link_tx.send(Packet::Disconnect(disconnect, None)).await;
            return Err(err);
        }
        outbuf.clear();
        debug!(
            keep_alive = connect.keep_alive,
            v5 = codec.is_v5(),
            identity = identity.as_deref(),
            "connected"
        );
        Ok(Some(Self {
            reader,
            writer,
            codec,
            inbuf,
            outbuf,
            link_tx,
            link_rx,
            keep_alive: (connect.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
            pending: FuturesOrdered::new(),
            qos2_received: HashSet::new(),
            topic_aliases: HashMap::new(),
            grants,
            inflight_qos1: 0,
            subacks: SubAckAssembly::default(),
            router_acks: RouterAcks::default(),
            client_max_packet_size,
            untold_aliases: HashMap::new(),
            // What matters for the router is whether it saves the session.
            persistent: router_keeps_state,
            client_id,
            generation,
            will,
            session_expiry: expiry,
            router_keeps_state,
            limits,
        }))
    }

    /// What the session registry needs once the connection is over.
    fn ending(&mut self, end: &Result<Departure, ConnectionError>) -> Ending {
        Ending {
            client_id: self.client_id.clone(),
            generation: self.generation,
            will: self.will.take().filter(|_| publishes_will(end)),
            expiry: self.session_expiry,
            router_keeps_state: self.router_keeps_state,
        }
    }

    /// Serves the client until it leaves or breaks a rule.
    async fn run(&mut self, shared: &Shared) -> Result<Departure, ConnectionError> {
        let far_future = Duration::from_secs(86400 * 365);
        let mut deadline = Instant::now() + self.keep_alive.unwrap_or(far_future);
        // Packets a client sent right behind its CONNECT (before CONNACK, as
        // MQTT allows) were read with it: handle them before waiting.
        if !self.inbuf.is_empty() {
            let disconnected = self.handle_input(shared).await?;
            self.flush().await?;
            if let Some(reason) = disconnected {
                return Ok(Departure::Disconnect(reason));
            }
        }
        loop {
            tokio::select! {
                read = self.reader.read_buf(&mut self.inbuf) => {
                    if read? == 0 {
                        return Ok(Departure::Closed);
                    }
                    deadline = Instant::now() + self.keep_alive.unwrap_or(far_future);
                    if let Some(reason) = self.handle_input(shared).await? {
                        self.flush().await?;
                        return Ok(Departure::Disconnect(reason));
                    }
                }
                Some((header, kind, denied, result)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.acknowledge(header, kind, denied, result, shared)?;
                }
                notification = self.link_rx.next() => {
                    let notification = match notification {
                        Ok(notification) => notification,
                        // The router drops a link whose client id another
                        // connection took.
                        Err(_) if !shared.sessions.is_current(&self.client_id, self.generation) => {
                            return Err(ConnectionError::TakenOver);
                        }
                        Err(err) => return Err(err.into()),
                    };
                    let Some(notification) = notification else { continue };
                    self.notified(notification, shared).await?;
                }
                _ = sleep_until(deadline) => return Err(ConnectionError::KeepAliveTimeout),
            }
            self.flush().await?;
        }
    }

    /// Handles one notification of the router: a forward, an ack for the
    /// client, or a request to wake the link.
    async fn notified(
        &mut self,
        notification: Notification,
        shared: &Shared,
    ) -> Result<(), ConnectionError> {
        if let Notification::Forward(forward) = notification {
            return self.forward(forward, shared).await;
        }
        match Option::<Packet>::from(notification) {
            Some(Packet::SubAck(ack, props)) => {
                if let Some(whole) = self.subacks.router_acked(ack) {
                    self.codec
                        .write(Packet::SubAck(whole, props), &mut self.outbuf)?;
                }
            }
            Some(Packet::PubRel(rel, props)) => {
                if self.router_acks.router_released(rel.pkid) {
                    self.codec
                        .write(Packet::PubRel(rel, props), &mut self.outbuf)?;
                } else {
                    let comps = self.router_acks.completions();
                    self.send_to_router(comps).await?;
                }
            }
            Some(packet) => {
                self.codec.write(packet, &mut self.outbuf)?;
            }
            None => self.link_rx.wake().await?,
        }
        Ok(())
    }

    /// Routes a client's PUBACK, PUBREC or PUBCOMP through the ledger of
    /// the router's in-flight forwards.
    async fn client_ack(&mut self, packet: Packet) -> Result<(), ConnectionError> {
        let route = match &packet {
            Packet::PubAck(ack, _) => self.router_acks.client_acked(ack.pkid),
            Packet::PubRec(rec, _) => self.router_acks.client_acked(rec.pkid),
            Packet::PubComp(comp, _) => self.router_acks.client_completed(comp.pkid),
            _ => Route::PassThrough,
        };
        match route {
            Route::PassThrough => self.send_to_router(vec![packet]).await,
            Route::ToRouter(packets) => self.send_to_router(packets).await,
        }
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if !self.outbuf.is_empty() {
            self.writer.write_all(&self.outbuf).await?;
            // A no-op on TCP; WebSocket and TLS send what they buffered.
            self.writer.flush().await?;
            self.outbuf.clear();
        }
        Ok(())
    }

    /// Handles every complete packet in the input buffer. The reason code
    /// when the client sent DISCONNECT.
    async fn handle_input(
        &mut self,
        shared: &Shared,
    ) -> Result<Option<DisconnectReasonCode>, ConnectionError> {
        loop {
            let header = peek_publish(&self.inbuf);
            let packet = match self
                .codec
                .read(&mut self.inbuf, self.limits.max_packet_size)
            {
                Ok(packet) => packet,
                Err(CodecError::InsufficientBytes(_)) => return Ok(None),
                Err(err) => return Err(err.into()),
            };
            match packet {
                Packet::Publish(publish, props) => {
                    let header =
                        header.ok_or(ConnectionError::Codec(CodecError::MalformedPacket))?;
                    self.handle_publish(header, publish, props, shared).await?;
                }
                Packet::PubRel(rel, _) => {
                    self.qos2_received.remove(&rel.pkid);
                    let comp = PubComp {
                        pkid: rel.pkid,
                        reason: PubCompReason::Success,
                    };
                    self.codec
                        .write(Packet::PubComp(comp, None), &mut self.outbuf)?;
                }
                Packet::PingReq(_) => {
                    self.codec.write(
                        Packet::PingResp(rumqttd::protocol::PingResp),
                        &mut self.outbuf,
                    )?;
                }
                Packet::Disconnect(disconnect, props) => {
                    self.update_session_expiry(props.and_then(|p| p.session_expiry_interval));
                    return Ok(Some(disconnect.reason_code));
                }
                Packet::Connect(..) => return Err(ConnectionError::SecondConnect),
                Packet::Subscribe(subscribe, props) => {
                    self.handle_subscribe(subscribe, props, shared).await?;
                }
                packet @ Packet::Unsubscribe(..) => {
                    self.link_tx.send(packet).await?;
                }
                packet @ (Packet::PubAck(..) | Packet::PubRec(..) | Packet::PubComp(..)) => {
                    self.client_ack(packet).await?;
                }
                other => {
                    warn!(packet = ?other, "unexpected packet from a client");
                    return Err(ConnectionError::Codec(CodecError::IncorrectPacketFormat));
                }
            }
        }
    }

    async fn handle_publish(
        &mut self,
        header: PublishHeader,
        publish: Publish,
        mut props: Option<PublishProperties>,
        shared: &Shared,
    ) -> Result<(), ConnectionError> {
        shared
            .stats
            .publishes_received
            .fetch_add(1, Ordering::Relaxed);
        let topic = self.resolve_topic(publish.topic, props.as_mut())?;
        let topic_text = std::str::from_utf8(&topic)
            .map_err(|_| CodecError::TopicNotUtf8)?
            .to_owned();
        check_topic(&topic_text, false, &self.limits)?;
        let duplicate_qos2 = header.qos == 2 && !self.qos2_received.insert(header.pkid);
        if self.codec.is_v5() && header.qos > 0 && !duplicate_qos2 {
            let inflight =
                self.inflight_qos1 + self.qos2_received.len() + usize::from(header.qos == 1);
            if inflight > usize::from(self.limits.receive_maximum) {
                return Err(ConnectionError::ReceiveMaximumExceeded(
                    self.limits.receive_maximum,
                ));
            }
        }
        if !self.grants.may_publish(&topic_text) {
            // Denied: neither the gate nor the router sees it. MQTT 5 says
            // so in the PUBACK/PUBREC (0x87); 3.1.1 has no negative ack, so
            // the client gets its ordinary one (else it would resend the
            // message forever) and the message is dropped.
            shared.stats.authorization_denied.inc(Action::Publish);
            debug!(topic = %topic_text, "publish denied by the authorization rules");
            if header.qos > 0 {
                self.push_ack(
                    header,
                    self.codec.is_v5(),
                    CommitTicket::ready(Ok(Vec::new())),
                    None,
                );
            }
            return Ok(());
        }
        let message = || {
            let payload = publish.payload.clone();
            stored_message(&topic_text, header, publish.retain, payload, props.as_ref())
        };
        let ticket = if duplicate_qos2 {
            None
        } else {
            shared.gate.admit(&topic_text, message)
        };
        if ticket.is_some() {
            shared.stats.publishes_gated.fetch_add(1, Ordering::Relaxed);
        }
        // Disk mode: a retained message is written to the keyed state, and
        // its PUBACK/PUBREC waits for that write as for the gate's append.
        let retained = match shared.retained.get() {
            Some(store)
                if !duplicate_qos2
                    && retained::changes(store, &topic_text, publish.retain, &publish.payload) =>
            {
                Some(retained::record(store, &message()))
            }
            _ => None,
        };
        // QoS 0 carries no promise; its append is best effort.
        if header.qos > 0 {
            let ticket = ticket.unwrap_or_else(|| CommitTicket::ready(Ok(Vec::new())));
            self.push_ack(header, false, ticket, retained);
        }
        if !duplicate_qos2 {
            let origin = Origin {
                qos: header.qos,
                retain: publish.retain,
                client_id: self.client_id.clone(),
            };
            let routed = Publish::new(topic, publish.payload, publish.retain);
            let props = origin.mark(props);
            self.link_tx
                .send(Packet::Publish(routed, Some(props)))
                .await?;
        }
        Ok(())
    }

    /// An MQTT 5 DISCONNECT may change the Session Expiry Interval, unless
    /// the session was clean (then the router keeps nothing to expire).
    fn update_session_expiry(&mut self, interval: Option<u32>) {
        if let (Some(interval), true) = (interval, self.router_keeps_state) {
            self.session_expiry = session_expiry(true, false, Some(interval));
        }
    }

    /// Applies and strips an MQTT 5 topic alias, so the gate and the router
    /// both see the full topic.
    fn resolve_topic(
        &mut self,
        topic: Bytes,
        props: Option<&mut PublishProperties>,
    ) -> Result<Bytes, ConnectionError> {
        let Some(alias) = props.and_then(|p| p.topic_alias.take()) else {
            return Ok(topic);
        };
        if topic.is_empty() {
            return self
                .topic_aliases
                .get(&alias)
                .cloned()
                .ok_or(ConnectionError::UnknownTopicAlias(alias));
        }
        self.topic_aliases.insert(alias, topic.clone());
        Ok(topic)
    }

    /// Queues the PUBACK/PUBREC of `header`, written in order once `ticket`
    /// (and the retained write, if any) resolves; `denied` makes it a "not
    /// authorized" one.
    fn push_ack(
        &mut self,
        header: PublishHeader,
        denied: bool,
        ticket: CommitTicket,
        retained: Option<RetainedWrite>,
    ) {
        if header.qos == 1 {
            self.inflight_qos1 += 1;
        }
        self.pending.push_back(PendingAck {
            header,
            kind: header.qos,
            denied,
            ticket,
            retained,
            retained_result: Ok(()),
        });
    }

    /// Checks a SUBSCRIBE against the limits and the authorization rules.
    /// Denied filters get a failure code in the SUBACK; each other one goes
    /// to the router in a SUBSCRIBE of its own, tagged with its options
    /// (see [`subscription_tag`]), and [`SubAckAssembly`] puts the
    /// client's SUBACK together.
    async fn handle_subscribe(
        &mut self,
        mut subscribe: Subscribe,
        props: Option<SubscribeProperties>,
        shared: &Shared,
    ) -> Result<(), ConnectionError> {
        for filter in &mut subscribe.filters {
            check_topic(&filter.path, true, &self.limits)?;
            // rumqttd 0.20's router thread panics ("group must exists") when
            // a persistent session alone in a shared group leaves with a
            // message in flight, taking every connection with it. Granting
            // such subscriptions QoS 0 (which SUBACK reports) keeps nothing
            // in flight for them.
            if self.persistent && filter.path.starts_with("$share/") {
                filter.qos = QoS::AtMostOnce;
            }
        }
        let client_id = props.as_ref().and_then(|p| p.id);
        let user_properties = props.map(|p| p.user_properties).unwrap_or_default();
        let mut slots = Vec::with_capacity(subscribe.filters.len());
        let mut granted = Vec::with_capacity(subscribe.filters.len());
        for filter in subscribe.filters {
            if self.grants.may_subscribe(&filter.path) {
                slots.push(None);
                granted.push(filter);
            } else {
                shared.stats.authorization_denied.inc(Action::Subscribe);
                debug!(filter = %filter.path, "subscription denied by the authorization rules");
                slots.push(Some(self.subscribe_failure()));
            }
        }
        if let Some(whole) = self.subacks.start(subscribe.pkid, slots) {
            self.codec
                .write(Packet::SubAck(whole, None), &mut self.outbuf)?;
        }
        for filter in granted {
            let tagged = SubscribeProperties {
                id: Some(SubscriptionTag::of(&filter, client_id).encode()),
                user_properties: user_properties.clone(),
            };
            let single = Subscribe {
                pkid: subscribe.pkid,
                filters: vec![filter],
            };
            self.link_tx
                .send(Packet::Subscribe(single, Some(tagged)))
                .await?;
        }
        Ok(())
    }

    /// The SUBACK code of a denied filter: 0x87 (MQTT 5) or 0x80 (3.1.1).
    fn subscribe_failure(&self) -> SubscribeReasonCode {
        if self.codec.is_v5() {
            SubscribeReasonCode::NotAuthorized
        } else {
            SubscribeReasonCode::Failure
        }
    }

    fn acknowledge(
        &mut self,
        header: PublishHeader,
        kind: u8,
        denied: bool,
        result: Result<Vec<u64>, StorageError>,
        shared: &Shared,
    ) -> Result<(), ConnectionError> {
        if kind == 1 {
            self.inflight_qos1 = self.inflight_qos1.saturating_sub(1);
        }
        let accepted = match result {
            Ok(_) if denied => false,
            Ok(_) => true,
            Err(err) => {
                shared
                    .stats
                    .publishes_refused
                    .fetch_add(1, Ordering::Relaxed);
                // A full queue or disk is temporary. MQTT 5 says so with
                // reason 0x97; an MQTT 3.1.1 client has no negative PUBACK,
                // so it is disconnected without one and sends the message
                // again after reconnecting. Any other failure closes the
                // connection the same way.
                let full = matches!(err, StorageError::QuotaExceeded { .. }) || err.is_disk_full();
                if !(full && self.codec.is_v5()) {
                    return Err(ConnectionError::Storage(err));
                }
                debug!(%err, pkid = header.pkid, "publish refused with Quota exceeded");
                false
            }
        };
        let packet = if kind == 2 {
            let reason = match (accepted, denied) {
                (true, _) => PubRecReason::Success,
                (false, true) => PubRecReason::NotAuthorized,
                (false, false) => PubRecReason::QuotaExceeded,
            };
            Packet::PubRec(
                PubRec {
                    pkid: header.pkid,
                    reason,
                },
                None,
            )
        } else {
            let reason = match (accepted, denied) {
                (true, _) => PubAckReason::Success,
                (false, true) => PubAckReason::NotAuthorized,
                (false, false) => PubAckReason::QuotaExceeded,
            };
            Packet::PubAck(
                PubAck {
                    pkid: header.pkid,
                    reason,
                },
                None,
            )
        };
        if !accepted && kind == 2 {
            // A refused QoS 2 message is not held: a resend is a new one.
            self.qos2_received.remove(&header.pkid);
        }
        self.codec.write(packet, &mut self.outbuf)?;
        Ok(())
    }

    /// Tells an MQTT 5 client why it is closed (if there is a reason code
    /// for it), then detaches from the router if `detach` (the client id's
    /// session is kept for a persistent session, as the router decides; a
    /// taken-over link is gone from the router already).
    async fn close(&mut self, reason: Option<DisconnectReasonCode>, detach: bool) {
        if let (Some(reason_code), true) = (reason, self.codec.is_v5()) {
            let disconnect = Disconnect { reason_code };
            if self
                .codec
                .write(Packet::Disconnect(disconnect, None), &mut self.outbuf)
                .is_ok()
            {
                let _ = self.flush().await;
            }
        }
        if detach {
            let disconnect = Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            };
            let _ = self
                .link_tx
                .send(Packet::Disconnect(disconnect, None))
                .await;
        }
        let _ = self.writer.shutdown().await;
    }
}

/// Reads until a whole CONNECT is there and returns it with its codec.
async fn read_connect(
    reader: &mut ReadHalf<Io>,
    inbuf: &mut BytesMut,
    max_size: usize,
) -> Result<(Codec, Packet), ConnectionError> {
    loop {
        if let Some(mut codec) = Codec::detect(inbuf)? {
            match codec.read(inbuf, max_size) {
                Ok(packet) => return Ok((codec, packet)),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        if reader.read_buf(inbuf).await? == 0 {
            return Err(ConnectionError::ClosedBeforeConnect);
        }
    }
}

/// A device's PUBLISH as data flows and the retained store keep it.
fn stored_message(
    topic: &str,
    header: PublishHeader,
    retain: bool,
    payload: Bytes,
    props: Option<&PublishProperties>,
) -> StoredMessage {
    StoredMessage {
        received_at_ms: now_ms(),
        qos: header.qos,
        retain,
        topic: topic.to_owned(),
        payload,
        content_type: props.and_then(|p| p.content_type.clone()),
        payload_format_indicator: props.and_then(|p| p.payload_format_indicator),
        message_expiry_interval: props.and_then(|p| p.message_expiry_interval),
        response_topic: props.and_then(|p| p.response_topic.clone()),
        correlation_data: props.and_then(|p| p.correlation_data.clone()),
        user_properties: props.map(|p| p.user_properties.clone()).unwrap_or_default(),
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A PUBACK (kind 1) or PUBREC (kind 2) waiting for its commit ticket
/// and, for a retained message in disk mode, its retained write; `denied`
/// ones answer "not authorized" (their ticket is ready at once).
struct PendingAck {
    header: PublishHeader,
    kind: u8,
    denied: bool,
    ticket: CommitTicket,
    retained: Option<RetainedWrite>,
    /// How the retained write ended, once it has.
    retained_result: Result<(), StorageError>,
}

impl Future for PendingAck {
    type Output = (PublishHeader, u8, bool, Result<Vec<u64>, StorageError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(write) = self.retained.as_mut() {
            let result = std::task::ready!(Pin::new(write).poll(cx));
            self.retained = None;
            self.retained_result = result;
        }
        let (header, kind, denied) = (self.header, self.kind, self.denied);
        let result = std::task::ready!(Pin::new(&mut self.ticket).poll(cx));
        let retained = std::mem::replace(&mut self.retained_result, Ok(()));
        Poll::Ready((
            header,
            kind,
            denied,
            result.and_then(|seqs| retained.map(|()| seqs)),
        ))
    }
}
