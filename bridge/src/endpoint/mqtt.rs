//! A remote MQTT broker, over MQTT 5 with rumqttc.
//!
//! rumqttc forgets unacknowledged publishes silently when the broker does not
//! resume the session (see `rumqttd.md` §5), so this sink owns delivery
//! itself: every connection starts clean, a batch counts as sent only when
//! every PUBACK arrived, and after any error the connection is dropped and
//! the whole batch is published again in order on a fresh one. Each message
//! carries its stable id in the user property [`MESSAGE_ID_PROPERTY`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
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
    connection: Option<(AsyncClient, EventLoop)>,
    /// When the connection last carried traffic. Between batches nobody
    /// polls it, so no PINGREQ keeps it alive: past the keep-alive the broker
    /// may have closed it, and the sink reconnects instead of failing first.
    last_used: Instant,
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
            .set_keep_alive(Duration::from_secs(u64::from(s.keep_alive_seconds.max(5))))
            .set_clean_start(true)
            .set_max_packet_size(Some(16 * 1024 * 1024))
            .set_outgoing_inflight_upper_limit(s.max_inflight_messages)
            .set_connection_timeout(10);
        options
    }

    async fn connect(&mut self) -> Result<(), SendError> {
        if self.connection.is_some() {
            return Ok(());
        }
        let capacity = usize::from(self.settings.max_inflight_messages).max(10);
        let (client, mut eventloop) = AsyncClient::new(self.options(), capacity);
        let endpoint = format!("{}:{}", self.settings.host, self.settings.port);
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
                self.connection = Some((client, eventloop));
                return Ok(());
            }
        }
    }

    fn properties(&self, outbound: &OutboundMessage) -> PublishProperties {
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

    /// Publishes the batch on the open connection and waits for every
    /// acknowledgement.
    async fn publish_all(&mut self, batch: &[OutboundMessage]) -> Result<(), SendError> {
        let qos = if self.settings.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let properties: Vec<_> = batch.iter().map(|m| self.properties(m)).collect();
        let retain_kept = self.settings.retain == RetainPolicy::Keep;
        let Some((client, eventloop)) = self.connection.as_mut() else {
            return Err(SendError::transient("not connected"));
        };
        let mut queued = 0;
        let mut confirmed = 0;
        let mut awaiting: HashSet<u16> = HashSet::new();
        while confirmed < batch.len() {
            // Hand over as many as the request channel takes, then drive the
            // connection; rumqttc keeps its inflight window.
            while queued < batch.len() {
                let outbound = &batch[queued];
                let retain = retain_kept && outbound.message.retain;
                let sent = client.try_publish_with_properties(
                    outbound.destination.clone(),
                    qos,
                    retain,
                    outbound.message.payload.clone(),
                    properties[queued].clone(),
                );
                if sent.is_err() {
                    break;
                }
                queued += 1;
            }
            let event = tokio::time::timeout(PROGRESS_TIMEOUT, eventloop.poll())
                .await
                .map_err(|_| SendError::transient("no acknowledgement within 30 s"))?
                .map_err(|err| SendError::transient(format!("connection lost: {err}")))?;
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    if qos == QoS::AtMostOnce {
                        confirmed += 1;
                    } else {
                        awaiting.insert(pkid);
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    check_puback(ack.reason)?;
                    if awaiting.remove(&ack.pkid) {
                        confirmed += 1;
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
        Ok(())
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
        let keep_alive = Duration::from_secs(u64::from(self.settings.keep_alive_seconds.max(5)));
        if self.last_used.elapsed() >= keep_alive {
            self.close().await;
        }
        self.connect().await?;
        let result = self.publish_all(batch).await;
        self.last_used = Instant::now();
        if result.is_err() {
            // A fresh, clean connection resends the whole batch in order.
            self.connection = None;
        }
        result
    }

    async fn close(&mut self) {
        if let Some((client, mut eventloop)) = self.connection.take() {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
        }
    }
}
