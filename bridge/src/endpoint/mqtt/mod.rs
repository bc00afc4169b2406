//! A remote MQTT broker, over MQTT 5 on the sink's own connection
//! ([`connection`]; rumqttc only encodes and decodes its packets).
//!
//! rumqttc's client forgets unacknowledged publishes silently when the
//! broker does not resume the session (see `rumqttd.md` §5), so this sink
//! owns delivery itself: every connection starts clean, a message counts as sent only once
//! its PUBACK and those of every message before it arrived, and after any
//! error the connection is dropped and the caller's whole unconfirmed window
//! is published again in order on a fresh one. Each message carries its
//! stable id in the user property [`MESSAGE_ID_PROPERTY`].
//!
//! The window ([`Sink::send_window`]) keeps the inflight limit full across
//! the flow's batches. Waiting for the last PUBACKs of each batch before
//! sending the next cost most of the throughput: with nothing more to send,
//! the destination's Nagle and our delayed ACK hold the tail for about 40 ms
//! (BENCHMARKS.md, issue 4). Each round writes every message the window and
//! the in-flight limit (`maxInflightMessages`, lowered to the broker's
//! Receive Maximum) allow in one write, and reads every PUBACK that came in
//! one read; a draining backlog is topped up by halves of the limit, which
//! keeps segments large on both sides (see [`connection`]). A message the broker can never take (over its Maximum Packet
//! Size) is reported with [`SendError::too_large`] once all before it are
//! confirmed, so the flow dead-letters it instead of retrying forever.

mod connection;
mod low_water;
mod publish;
mod written;

use std::time::{Duration, Instant};

use async_trait::async_trait;

use self::connection::{Connection, Target};
use super::{OutboundMessage, SendError, Sink};
use crate::config::{MqttEndpoint, RetainPolicy};

/// The MQTT 5 user property that carries a message's stable id.
pub const MESSAGE_ID_PROPERTY: &str = "backhaul-message-id";

/// The client id: `clientIdPrefix` (default `backhaul-<appliance id>-`)
/// followed by the flow name, as Azure IoT Operations builds it.
pub fn client_id(settings: &MqttEndpoint, appliance_id: &str, flow: &str) -> String {
    match &settings.client_id_prefix {
        Some(prefix) => format!("{prefix}{flow}"),
        None => format!("backhaul-{appliance_id}-{flow}"),
    }
}

pub struct MqttSink {
    target: Target,
    connection: Option<Connection>,
    /// When the connection last carried traffic. Between batches nobody
    /// reads it, so no PINGREQ keeps it alive: past the keep-alive the
    /// broker may have closed it, and the sink reconnects instead of failing
    /// first.
    last_used: Instant,
}

impl MqttSink {
    pub fn new(settings: MqttEndpoint, client_id: String) -> Self {
        let keep_alive = Duration::from_secs(u64::from(settings.keep_alive_seconds.max(5)));
        let target = Target {
            host: settings.host,
            port: settings.port,
            client_id,
            keep_alive,
            max_inflight: settings.max_inflight_messages,
            qos: settings.qos,
            retain_kept: settings.retain == RetainPolicy::Keep,
        };
        Self {
            target,
            connection: None,
            last_used: Instant::now(),
        }
    }

    async fn connect(&mut self) -> Result<&mut Connection, SendError> {
        if self.connection.is_none() {
            self.connection = Some(Connection::open(&self.target).await?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| SendError::transient("not connected"))
    }

    /// Publishes the window's messages not yet on the connection and drives
    /// it until at least `want` from the front are confirmed.
    async fn publish_window(
        &mut self,
        window: &[OutboundMessage],
        want: usize,
    ) -> Result<usize, SendError> {
        let connection = self.connect().await?;
        let mut confirmed = 0;
        loop {
            let refused = connection.submit(window);
            connection.flush().await?;
            confirmed += connection.take_confirmed();
            if confirmed >= want {
                connection.submitted -= confirmed;
                return Ok(confirmed);
            }
            if let Some(refused) = refused.filter(|r| r.index == confirmed) {
                // Everything before it is confirmed: the caller
                // dead-letters it and goes on.
                let id = &window[refused.index].id;
                return Err(SendError::too_large(refused.index, id, refused.error));
            }
            let awaited = connection.pubacks_awaited(want - confirmed, window.len());
            connection.receive(awaited).await?;
        }
    }
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
        if self.last_used.elapsed() >= self.target.keep_alive {
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
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use backhaul_broker::StoredMessage;
    use bytes::BytesMut;
    use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnAckProperties, ConnectReturnCode, Packet, PingResp, PubAck,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const RECEIVE_MAXIMUM: u16 = 3;

    fn window(count: u64) -> Vec<OutboundMessage> {
        (0..count)
            .map(|n| OutboundMessage {
                id: format!("edge/flow/{n}"),
                destination: "cloud/t".into(),
                message: StoredMessage {
                    qos: 1,
                    payload: n.to_string().into_bytes().into(),
                    ..StoredMessage::default()
                },
            })
            .collect()
    }

    /// A QoS 1 sink to 127.0.0.1:`port` with 20 messages in flight.
    fn sink_to(port: u16, flow: &str) -> MqttSink {
        let settings = MqttEndpoint {
            host: "127.0.0.1".into(),
            port,
            client_id_prefix: None,
            qos: 1,
            retain: RetainPolicy::Keep,
            keep_alive_seconds: 60,
            max_inflight_messages: 20,
        };
        MqttSink::new(settings, flow.into())
    }

    async fn write(stream: &mut TcpStream, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, None).unwrap();
        stream.write_all(&out).await.unwrap();
    }

    async fn next_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> Packet {
        loop {
            match Packet::read(buf, None) {
                Ok(packet) => return packet,
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                    assert!(stream.read_buf(buf).await.unwrap() > 0, "sink hung up");
                }
                Err(err) => panic!("the sink sent a malformed packet: {err}"),
            }
        }
    }

    /// Accepts the sink's connection and answers its CONNECT with these
    /// limits.
    async fn accept(
        listener: TcpListener,
        receive_max: Option<u16>,
        server_keep_alive: Option<u16>,
    ) -> (TcpStream, BytesMut) {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(
            next_packet(&mut stream, &mut buf).await,
            Packet::Connect(..)
        ));
        let properties = ConnAckProperties {
            session_expiry_interval: None,
            receive_max,
            max_qos: None,
            retain_available: None,
            max_packet_size: None,
            assigned_client_identifier: None,
            topic_alias_max: None,
            reason_string: None,
            user_properties: Vec::new(),
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        };
        let connack = ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
            properties: Some(properties),
        };
        write(&mut stream, Packet::ConnAck(connack)).await;
        (stream, buf)
    }

    /// A broker that announces a Receive Maximum of 3, acknowledges one
    /// PUBLISH whenever three are unacknowledged, and returns the payloads
    /// in arrival order with the most it ever had unacknowledged.
    async fn strict_broker(listener: TcpListener, expected: usize) -> (Vec<String>, usize) {
        let (mut stream, mut buf) = accept(listener, Some(RECEIVE_MAXIMUM), None).await;
        let (mut payloads, mut unacked, mut most) = (Vec::new(), Vec::new(), 0);
        while payloads.len() < expected || !unacked.is_empty() {
            if unacked.len() == usize::from(RECEIVE_MAXIMUM) || payloads.len() == expected {
                let pkid = unacked.remove(0);
                let ack = PubAck::new(pkid, None);
                write(&mut stream, Packet::PubAck(ack)).await;
                continue;
            }
            let Packet::Publish(publish) = next_packet(&mut stream, &mut buf).await else {
                panic!("expected a PUBLISH");
            };
            payloads.push(String::from_utf8(publish.payload.to_vec()).unwrap());
            unacked.push(publish.pkid);
            most = most.max(unacked.len());
        }
        (payloads, most)
    }

    #[tokio::test]
    async fn the_brokers_receive_maximum_caps_the_messages_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = tokio::spawn(strict_broker(listener, 50));
        let mut sink = sink_to(port, "receive-max");
        let window = window(50);
        let mut sent = 0;
        while sent < window.len() {
            sent += sink.send_window(&window[sent..], 1).await.unwrap();
        }
        let (payloads, most) = broker.await.unwrap();
        let expected: Vec<String> = (0..50).map(|n| n.to_string()).collect();
        assert_eq!(payloads, expected);
        assert_eq!(most, usize::from(RECEIVE_MAXIMUM));
    }

    /// A broker that keeps the connection alive for 1 s, takes `count`
    /// PUBLISHes and acknowledges them only after answering two PINGREQs;
    /// returns the packet ids it acknowledged.
    async fn broker_acking_after_a_ping(listener: TcpListener, count: usize) -> Vec<u16> {
        let (mut stream, mut buf) = accept(listener, None, Some(1)).await;
        let mut pkids = Vec::new();
        while pkids.len() < count {
            match next_packet(&mut stream, &mut buf).await {
                Packet::Publish(publish) => pkids.push(publish.pkid),
                other => panic!("expected a PUBLISH, got {other:?}"),
            }
        }
        // Two rounds: a sink that missed the first PINGRESP gives the
        // connection up instead of sending the second PINGREQ.
        for _ in 0..2 {
            let ping = next_packet(&mut stream, &mut buf).await;
            assert!(
                matches!(ping, Packet::PingReq(_)),
                "expected a PINGREQ, got {ping:?}"
            );
            write(&mut stream, Packet::PingResp(PingResp)).await;
        }
        for pkid in &pkids {
            write(&mut stream, Packet::PubAck(PubAck::new(*pkid, None))).await;
        }
        pkids
    }

    #[tokio::test]
    async fn waiting_for_pubacks_the_sink_still_hears_the_answer_to_its_ping() {
        // The sink sleeps until the bytes of the PUBACKs it awaits are
        // there; the 2-byte PINGRESP must wake it all the same, or the
        // keep-alive would give the connection up.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = tokio::spawn(broker_acking_after_a_ping(listener, 4));
        let mut sink = sink_to(port, "ping");
        let window = window(4);
        let confirmed = tokio::time::timeout(Duration::from_secs(20), sink.send_window(&window, 4))
            .await
            .expect("the window was not confirmed within 20 s");
        assert_eq!(confirmed.unwrap(), 4);
        assert_eq!(broker.await.unwrap(), vec![1, 2, 3, 4]);
    }
}
