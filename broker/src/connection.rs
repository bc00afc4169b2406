//! One device connection: Backhaul's replacement for rumqttd's remote link.
//!
//! The task owns the socket. It decodes packets with rumqttd's codec and
//! attaches the client to rumqttd's router through a local link, so
//! subscriptions, wildcards and retained messages behave as in any broker.
//! PUBLISHes pass the [`DurableGate`] first: their PUBACK/PUBREC is written
//! here, in order, once the gate's commit ticket resolves; the router only
//! sees a QoS 0 copy for its subscribers and so never acknowledges for us.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backhaul_storage::{CommitTicket, StorageError};
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnAck, ConnectReturnCode, Disconnect, DisconnectReasonCode, Error as CodecError, Packet,
    PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish, PublishProperties,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn, Instrument};

use crate::broker::{LinkRequest, Shared};
use crate::codec::{peek_publish, Codec, PublishHeader};
use crate::message::StoredMessage;
use crate::ConnectionError;

/// Serves one accepted socket until it closes.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("connection", %peer, client_id = tracing::field::Empty);
    async move {
        shared
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        match Connection::open(stream, &shared).await {
            Ok(Some(mut connection)) => {
                let result = connection.run(&shared).await;
                connection.close().await;
                match result {
                    Ok(()) => debug!("connection closed"),
                    Err(err) => info!(%err, "connection closed"),
                }
            }
            Ok(None) => {}
            Err(err) => info!(%err, "connection refused"),
        }
        shared
            .stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
    .instrument(span)
    .await
}

struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
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
}

impl Connection {
    /// Reads CONNECT, attaches the client to the router and answers CONNACK.
    /// `None` when the client was refused with a CONNACK.
    async fn open(stream: TcpStream, shared: &Shared) -> Result<Option<Self>, ConnectionError> {
        let (mut reader, mut writer) = stream.into_split();
        let mut inbuf = BytesMut::with_capacity(8 * 1024);
        let read_connect = read_connect(&mut reader, &mut inbuf, shared.settings.max_packet_size);
        let (codec, packet) = tokio::time::timeout(shared.settings.connect_timeout, read_connect)
            .await
            .map_err(|_| ConnectionError::ConnectTimeout)??;
        let Packet::Connect(connect, props, will, will_props, _login) = packet else {
            return Err(ConnectionError::NotConnect);
        };
        let mut outbuf = BytesMut::with_capacity(8 * 1024);
        let mut client_id = connect.client_id.clone();
        let mut assigned = None;
        if client_id.is_empty() {
            if !connect.clean_session {
                let refuse = ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::ClientIdentifierNotValid,
                };
                codec.write(Packet::ConnAck(refuse, None), &mut outbuf)?;
                writer.write_all(&outbuf).await?;
                return Ok(None);
            }
            client_id = shared.assign_client_id();
            assigned = Some(client_id.clone());
        }
        tracing::Span::current().record("client_id", client_id.as_str());
        let request = LinkRequest {
            client_id,
            clean_session: connect.clean_session,
            last_will: will,
            last_will_properties: will_props,
            topic_alias_max: props.as_ref().and_then(|p| p.topic_alias_max).unwrap_or(0),
        };
        let connector = shared.connector.clone();
        let (link_tx, link_rx, notification) =
            tokio::task::spawn_blocking(move || connector(request))
                .await
                .map_err(|_| ConnectionError::RouterGone)??;
        if let Some(Packet::ConnAck(ack, ack_props)) = notification.into() {
            let ack_props = codec.is_v5().then(|| {
                let mut p = ack_props.unwrap_or_default();
                p.assigned_client_identifier = assigned;
                p
            });
            codec.write(Packet::ConnAck(ack, ack_props), &mut outbuf)?;
        }
        writer.write_all(&outbuf).await?;
        outbuf.clear();
        debug!(
            keep_alive = connect.keep_alive,
            v5 = codec.is_v5(),
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
        }))
    }

    async fn run(&mut self, shared: &Shared) -> Result<(), ConnectionError> {
        let far_future = Duration::from_secs(86400 * 365);
        let mut deadline = Instant::now() + self.keep_alive.unwrap_or(far_future);
        loop {
            tokio::select! {
                read = self.reader.read_buf(&mut self.inbuf) => {
                    if read? == 0 {
                        return Ok(());
                    }
                    deadline = Instant::now() + self.keep_alive.unwrap_or(far_future);
                    if self.handle_input(shared).await? {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                Some((header, kind, result)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.acknowledge(header, kind, result, shared)?;
                }
                notification = self.link_rx.next() => {
                    let Some(notification) = notification? else { continue };
                    match Option::<Packet>::from(notification) {
                        Some(packet) => { self.codec.write(packet, &mut self.outbuf)?; }
                        None => self.link_rx.wake().await?,
                    }
                }
                _ = sleep_until(deadline) => return Err(ConnectionError::KeepAliveTimeout),
            }
            self.flush().await?;
        }
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if !self.outbuf.is_empty() {
            self.writer.write_all(&self.outbuf).await?;
            self.outbuf.clear();
        }
        Ok(())
    }

    /// Handles every complete packet in the input buffer. `true` when the
    /// client sent DISCONNECT.
    async fn handle_input(&mut self, shared: &Shared) -> Result<bool, ConnectionError> {
        loop {
            let header = peek_publish(&self.inbuf);
            let packet = match self
                .codec
                .read(&mut self.inbuf, shared.settings.max_packet_size)
            {
                Ok(packet) => packet,
                Err(CodecError::InsufficientBytes(_)) => return Ok(false),
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
                Packet::Disconnect(..) => return Ok(true),
                Packet::Connect(..) => return Err(ConnectionError::SecondConnect),
                packet @ (Packet::Subscribe(..)
                | Packet::Unsubscribe(..)
                | Packet::PubAck(..)
                | Packet::PubRec(..)
                | Packet::PubComp(..)) => {
                    self.link_tx.send(packet).await?;
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
        let duplicate_qos2 = header.qos == 2 && !self.qos2_received.insert(header.pkid);
        let ticket = if duplicate_qos2 {
            None
        } else {
            shared.gate.admit(&topic_text, || StoredMessage {
                received_at_ms: now_ms(),
                qos: header.qos,
                retain: publish.retain,
                topic: topic_text.clone(),
                payload: publish.payload.clone(),
                content_type: props.as_ref().and_then(|p| p.content_type.clone()),
                payload_format_indicator: props.as_ref().and_then(|p| p.payload_format_indicator),
                message_expiry_interval: props.as_ref().and_then(|p| p.message_expiry_interval),
                response_topic: props.as_ref().and_then(|p| p.response_topic.clone()),
                correlation_data: props.as_ref().and_then(|p| p.correlation_data.clone()),
                user_properties: props
                    .as_ref()
                    .map(|p| p.user_properties.clone())
                    .unwrap_or_default(),
            })
        };
        if ticket.is_some() {
            shared.stats.publishes_gated.fetch_add(1, Ordering::Relaxed);
        }
        match (header.qos, ticket) {
            // QoS 0 carries no promise; its append is best effort.
            (0, _) => {}
            (kind, ticket) => self.pending.push_back(PendingAck {
                header,
                kind,
                ticket: ticket.unwrap_or_else(|| CommitTicket::ready(Ok(Vec::new()))),
            }),
        }
        if !duplicate_qos2 {
            let routed = Publish::new(topic, publish.payload, publish.retain);
            self.link_tx.send(Packet::Publish(routed, props)).await?;
        }
        Ok(())
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

    fn acknowledge(
        &mut self,
        header: PublishHeader,
        kind: u8,
        result: Result<Vec<u64>, StorageError>,
        shared: &Shared,
    ) -> Result<(), ConnectionError> {
        let accepted = match result {
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
            let reason = if accepted {
                PubRecReason::Success
            } else {
                PubRecReason::QuotaExceeded
            };
            Packet::PubRec(
                PubRec {
                    pkid: header.pkid,
                    reason,
                },
                None,
            )
        } else {
            let reason = if accepted {
                PubAckReason::Success
            } else {
                PubAckReason::QuotaExceeded
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

    /// Detaches from the router (the client id's session is kept for a
    /// persistent session, as the router decides).
    async fn close(&mut self) {
        let disconnect = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        let _ = self
            .link_tx
            .send(Packet::Disconnect(disconnect, None))
            .await;
        let _ = self.writer.shutdown().await;
    }
}

/// Reads until a whole CONNECT is there and returns it with its codec.
async fn read_connect(
    reader: &mut OwnedReadHalf,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A PUBACK (kind 1) or PUBREC (kind 2) waiting for its commit ticket.
struct PendingAck {
    header: PublishHeader,
    kind: u8,
    ticket: CommitTicket,
}

impl Future for PendingAck {
    type Output = (PublishHeader, u8, Result<Vec<u64>, StorageError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (header, kind) = (self.header, self.kind);
        Pin::new(&mut self.ticket)
            .poll(cx)
            .map(|result| (header, kind, result))
    }
}
