//! A remote MQTT broker, over MQTT 5 with rumqttc.
//!
//! rumqttc forgets unacknowledged publishes silently when the broker does not
//! resume the session (see `rumqttd.md` §5), so this sink owns delivery
//! itself: every connection starts clean, a message counts as sent only once
//! its PUBACK and those of every message before it arrived, and after any
//! error the connection is dropped and the caller's whole unconfirmed window
//! is published again in order on a fresh one. Each message carries its
//! stable id in the user property [`MESSAGE_ID_PROPERTY`].
//!
//! The window ([`Sink::send_window`]) keeps the inflight limit full across
//! the flow's batches. Waiting for the last PUBACKs of each batch before
//! sending the next cost most of the throughput: with nothing more to send,
//! the destination's Nagle and our delayed ACK hold the tail for about 40 ms
//! (BENCHMARKS.md, issue 4).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing};
use tracing::debug;

use super::{ErrorKind, OutboundMessage, SendError, Sink};
use crate::config::{MqttEndpoint, RetainPolicy};

/// The MQTT 5 user property that carries a message's stable id.
pub const MESSAGE_ID_PROPERTY: &str = "backhaul-message-id";

/// Longest wait for any progress (CONNACK, a PUBACK) before the connection
/// is considered broken.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The client id: `clientIdPrefix` (default `backhaul-<appliance id>-`)
/// followed by the flow name, as Azure IoT Operations builds it.
pub fn client_id(settings: &MqttEndpoint, appliance_id: &str, flow: &str) -> String {
    match &settings.client_id_prefix {
        Some(prefix) => format!("{prefix}{flow}"),
        None => format!("backhaul-{appliance_id}-{flow}"),
    }
}

pub struct MqttSink {
    settings: MqttEndpoint,
    client_id: String,
    connection: Option<Connection>,
    /// When the connection last carried traffic. Between batches nobody
    /// polls it, so no PINGREQ keeps it alive: past the keep-alive the broker
    /// may have closed it, and the sink reconnects instead of failing first.
    last_used: Instant,
}

/// An open connection and what of the caller's window is on it.
struct Connection {
    client: AsyncClient,
    eventloop: EventLoop,
    /// Messages from the window's front handed to the client and not yet
    /// reported confirmed.
    submitted: usize,
    written: Written,
}

/// Packet ids written, oldest first, each with whether its PUBACK came.
/// Only an acknowledged prefix counts as confirmed, whatever order the
/// PUBACKs arrive in.
#[derive(Debug, Default)]
struct Written(VecDeque<(u16, bool)>);

impl Written {
    fn push(&mut self, pkid: u16, acknowledged: bool) {
        self.0.push_back((pkid, acknowledged));
    }

    /// Marks `pkid` acknowledged; `false` if no written message has it.
    fn acknowledge(&mut self, pkid: u16) -> bool {
        let entry = self.0.iter_mut().find(|(id, acked)| *id == pkid && !acked);
        entry.map(|(_, acked)| *acked = true).is_some()
    }

    /// Removes the acknowledged prefix; how many messages it held.
    fn take_confirmed(&mut self) -> usize {
        let mut confirmed = 0;
        while self.0.front().is_some_and(|(_, acked)| *acked) {
            self.0.pop_front();
            confirmed += 1;
        }
        confirmed
    }
}

impl Connection {
    /// Connects with a clean start and waits for the CONNACK.
    async fn open(
        options: MqttOptions,
        capacity: usize,
        endpoint: String,
    ) -> Result<Self, SendError> {
        let (client, mut eventloop) = AsyncClient::new(options, capacity);
        loop {
            let event = tokio::time::timeout(PROGRESS_TIMEOUT, eventloop.poll())
                .await
                .map_err(|_| SendError::transient(format!("no CONNACK from {endpoint}")))?
                .map_err(|err| SendError::transient(format!("connecting to {endpoint}: {err}")))?;
            if let Event::Incoming(Packet::ConnAck(ack)) = event {
                if ack.code != ConnectReturnCode::Success {
                    return Err(connack_error(ack.code, &endpoint));
                }
                debug!(%endpoint, "connected to the MQTT destination");
                return Ok(Self {
                    client,
                    eventloop,
                    submitted: 0,
                    written: Written::default(),
                });
            }
        }
    }
}

impl MqttSink {
    pub fn new(settings: MqttEndpoint, client_id: String) -> Self {
        Self {
            settings,
            client_id,
            connection: None,
            last_used: Instant::now(),
        }
    }

    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut options = MqttOptions::new(&self.client_id, &s.host, s.port);
        options
            .set_keep_alive(self.keep_alive())
            .set_clean_start(true)
            .set_max_packet_size(Some(16 * 1024 * 1024))
            .set_outgoing_inflight_upper_limit(s.max_inflight_messages)
            .set_connection_timeout(10);
        // Without TCP_NODELAY a PUBLISH written while earlier ones are
        // unacknowledged waits for the peer's delayed ACK (up to 40 ms).
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        options.set_network_options(network);
        options
    }

    fn keep_alive(&self) -> Duration {
        Duration::from_secs(u64::from(self.settings.keep_alive_seconds.max(5)))
    }

    fn qos(&self) -> QoS {
        if self.settings.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    async fn connect(&mut self) -> Result<&mut Connection, SendError> {
        if self.connection.is_none() {
            let capacity = usize::from(self.settings.max_inflight_messages).max(10);
            let endpoint = format!("{}:{}", self.settings.host, self.settings.port);
            self.connection = Some(Connection::open(self.options(), capacity, endpoint).await?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| SendError::transient("not connected"))
    }

    fn properties(outbound: &OutboundMessage) -> PublishProperties {
        let message = &outbound.message;
        let mut user_properties = message.user_properties.clone();
        user_properties.push((MESSAGE_ID_PROPERTY.to_string(), outbound.id.clone()));
        PublishProperties {
            payload_format_indicator: message.payload_format_indicator,
            message_expiry_interval: message.message_expiry_interval,
            topic_alias: None,
            response_topic: message.response_topic.clone(),
            correlation_data: message.correlation_data.clone(),
            user_properties,
            subscription_identifiers: Vec::new(),
            content_type: message.content_type.clone(),
        }
    }

    /// Publishes the window's messages not yet on the connection and drives
    /// it until at least `want` from the front are confirmed.
    async fn publish_window(
        &mut self,
        window: &[OutboundMessage],
        want: usize,
    ) -> Result<usize, SendError> {
        let qos = self.qos();
        let retain_kept = self.settings.retain == RetainPolicy::Keep;
        let connection = self.connect().await?;
        let mut confirmed = 0;
        loop {
            // Hand over as many as the request channel takes, then drive the
            // connection; rumqttc keeps the inflight limit.
            while connection.submitted < window.len() {
                let outbound = &window[connection.submitted];
                let sent = connection.client.try_publish_with_properties(
                    outbound.destination.clone(),
                    qos,
                    retain_kept && outbound.message.retain,
                    outbound.message.payload.clone(),
                    Self::properties(outbound),
                );
                if sent.is_err() {
                    break;
                }
                connection.submitted += 1;
            }
            confirmed += connection.written.take_confirmed();
            if confirmed >= want {
                connection.submitted -= confirmed;
                return Ok(confirmed);
            }
            let event = tokio::time::timeout(PROGRESS_TIMEOUT, connection.eventloop.poll())
                .await
                .map_err(|_| SendError::transient("no acknowledgement within 30 s"))?
                .map_err(|err| SendError::transient(format!("connection lost: {err}")))?;
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    connection.written.push(pkid, qos == QoS::AtMostOnce);
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    check_puback(ack.reason)?;
                    if !connection.written.acknowledge(ack.pkid) {
                        debug!(pkid = ack.pkid, "PUBACK for no message in flight");
                    }
                }
                Event::Incoming(Packet::Disconnect(disconnect)) => {
                    return Err(SendError::transient(format!(
                        "the broker disconnected: {:?}",
                        disconnect.reason_code
                    )));
                }
                _ => {}
            }
        }
    }
}

fn connack_error(code: ConnectReturnCode, endpoint: &str) -> SendError {
    let kind = match code {
        ConnectReturnCode::ServerBusy
        | ConnectReturnCode::QuotaExceeded
        | ConnectReturnCode::ConnectionRateExceeded => ErrorKind::Throttled,
        ConnectReturnCode::NotAuthorized
        | ConnectReturnCode::BadUserNamePassword
        | ConnectReturnCode::Banned
        | ConnectReturnCode::BadAuthenticationMethod
        | ConnectReturnCode::ClientIdentifierNotValid
        | ConnectReturnCode::UnsupportedProtocolVersion => ErrorKind::Fatal,
        _ => ErrorKind::Transient,
    };
    SendError::new(kind, format!("{endpoint} refused the connection: {code:?}"))
}

fn check_puback(reason: PubAckReason) -> Result<(), SendError> {
    let kind = match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return Ok(()),
        PubAckReason::QuotaExceeded => ErrorKind::Throttled,
        PubAckReason::NotAuthorized | PubAckReason::TopicNameInvalid => ErrorKind::Fatal,
        _ => ErrorKind::Transient,
    };
    Err(SendError::new(
        kind,
        format!("the broker refused a publish: {reason:?}"),
    ))
}

#[async_trait]
impl Sink for MqttSink {
    async fn send(&mut self, batch: &[OutboundMessage]) -> Result<(), SendError> {
        // A batch on its own: nothing of an earlier window may be confirmed
        // in its place.
        if self.connection.as_ref().is_some_and(|c| c.submitted > 0) {
            self.connection = None;
        }
        self.send_window(batch, batch.len()).await.map(|_| ())
    }

    async fn send_window(
        &mut self,
        window: &[OutboundMessage],
        want: usize,
    ) -> Result<usize, SendError> {
        if self.last_used.elapsed() >= self.keep_alive() {
            self.close().await;
        }
        let result = self.publish_window(window, want).await;
        self.last_used = Instant::now();
        if result.is_err() {
            // A fresh, clean connection resends the whole window in order.
            self.connection = None;
        }
        result
    }

    async fn close(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let _ = connection.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), connection.eventloop.poll()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Written;

    #[test]
    fn only_an_acknowledged_prefix_is_confirmed() {
        let mut written = Written::default();
        for pkid in [7, 8, 9] {
            written.push(pkid, false);
        }
        assert!(written.acknowledge(8));
        assert_eq!(written.take_confirmed(), 0, "7 is still unacknowledged");
        assert!(written.acknowledge(7));
        assert_eq!(written.take_confirmed(), 2);
        assert!(!written.acknowledge(7), "7 is no longer in flight");
        assert!(written.acknowledge(9));
        assert_eq!(written.take_confirmed(), 1);
        assert_eq!(written.take_confirmed(), 0);
    }

    #[test]
    fn a_reused_packet_id_acknowledges_the_oldest_unacknowledged_use() {
        let mut written = Written::default();
        written.push(1, true);
        written.push(1, false);
        assert!(written.acknowledge(1));
        assert_eq!(written.take_confirmed(), 2);
    }
}
