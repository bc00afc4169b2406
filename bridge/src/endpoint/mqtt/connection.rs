//! One MQTT 5 connection of the sink, on its own socket.
//!
//! Why not rumqttc's event loop: it writes and flushes every PUBLISH on its
//! own (one `write` syscall, and with `TCP_NODELAY` one TCP segment, per
//! message) and hands each PUBLISH and PUBACK through a channel and an
//! event. Profiles of the forwarding benchmark (BENCHMARKS.md, issue 4)
//! showed that per-message machinery as a large part of the edge's CPU,
//! and the destination paid for the many small segments too. Here every
//! message the window and the broker's Receive Maximum allow is encoded
//! into one buffer and written at once, and every PUBACK that has arrived
//! is parsed from one read. rumqttc's packet types still encode the
//! CONNECT and decode what the broker sends.
//!
//! While a backlog is draining, the window is topped up only once half of
//! the in-flight limit is free, not after every PUBACK. Refilling at once
//! made a ping-pong of tiny segments (about two messages per segment each
//! way, measured with `ss -ti`): each of our writes acknowledges the
//! destination's last PUBACK segment, which lets its Nagle algorithm send
//! the next one at once, so a Mosquitto destination spent a write, a TCP
//! transmit and a wake-up of our task per one or two PUBACKs. Refilling by
//! halves sends about 60 messages per segment and lets the destination
//! gather about 9 PUBACKs per segment (the Mosquitto bridge: about 200 and
//! 11), which cut the destination's and the edge's CPU per message. If the
//! PUBACKs that would free the other half do not come within
//! [`HOLD_BACK_PATIENCE`] (the destination's Nagle waiting for our delayed
//! ACK), whatever is free is sent anyway, and that write carries the ACK.
//!
//! Between writes the task sleeps until the PUBACKs it waits for can have
//! arrived: the socket's receive low-water mark is set to their smallest
//! size ([`low_water`](super::low_water) says why), and back to one byte
//! for a PINGREQ's answer.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Packet, PubAckReason,
};
use rumqttc::v5::mqttbytes::Error as PacketError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::debug;

use super::low_water::{LowWater, PUBACK_MIN_LEN};
use super::publish::{self, EncodeError, PublishSettings};
use super::written::Written;
use crate::endpoint::{ErrorKind, OutboundMessage, SendError};

/// Longest wait for any progress (CONNACK, a PUBACK, a write) before the
/// connection is considered broken.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest packet we accept from the broker (announced in CONNECT).
const MAX_INCOMING_PACKET: u32 = 16 * 1024 * 1024;

/// Bytes encoded before they are written even if the window allows more,
/// so a large window of large messages does not build one huge buffer.
const MAX_WRITE_CHUNK: usize = 1024 * 1024;

/// How long a held-back refill waits for more PUBACKs before it sends what
/// is free (see the module documentation).
const HOLD_BACK_PATIENCE: Duration = Duration::from_millis(2);

/// Messages written and not yet confirmed, at most: below the 65,535
/// packet ids, so an id is never reused while its first use is unconfirmed.
const MAX_UNCONFIRMED: usize = u16::MAX as usize - 1;

/// What the sink asks of a connection.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    /// `maxInflightMessages`; the broker's Receive Maximum may lower it.
    pub max_inflight: u16,
    pub qos: u8,
    pub retain_kept: bool,
}

impl Target {
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A message of the window that can never be published.
#[derive(Debug)]
pub(super) struct Refused {
    /// Its index in the window.
    pub index: usize,
    pub error: EncodeError,
}

pub(super) struct Connection {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    written: Written,
    /// Messages from the window's front written and not yet reported
    /// confirmed to the caller.
    pub submitted: usize,
    next_pkid: u16,
    /// `maxInflightMessages` or the broker's Receive Maximum, the lower.
    max_in_flight: usize,
    /// Free in-flight slots needed before a backlogged window is topped up.
    refill_at: usize,
    /// The last [`Connection::submit`] held messages back to refill later.
    held_back: bool,
    /// A held-back refill waited [`HOLD_BACK_PATIENCE`] in vain: the next
    /// submit sends whatever is free.
    impatient: bool,
    publish: PublishSettings,
    keep_alive: Duration,
    last_write: Instant,
    /// When a PINGREQ went out that nothing has answered yet.
    ping_sent: Option<Instant>,
    low_water: LowWater,
}

impl Connection {
    /// Connects with a clean start and waits for the CONNACK.
    pub async fn open(target: &Target) -> Result<Self, SendError> {
        let endpoint = target.endpoint();
        let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(&endpoint))
            .await
            .map_err(|_| SendError::transient(format!("connecting to {endpoint}: timed out")))?
            .map_err(|err| SendError::transient(format!("connecting to {endpoint}: {err}")))?;
        // Without TCP_NODELAY a window written while earlier messages are
        // unacknowledged waits for the peer's delayed ACK (up to 40 ms).
        stream
            .set_nodelay(true)
            .map_err(|err| SendError::transient(format!("connecting to {endpoint}: {err}")))?;
        let mut connection = Self {
            stream,
            read_buf: BytesMut::with_capacity(4096),
            write_buf: BytesMut::with_capacity(64 * 1024),
            written: Written::default(),
            submitted: 0,
            next_pkid: 1,
            max_in_flight: usize::from(target.max_inflight.max(1)),
            refill_at: 1,
            held_back: false,
            impatient: false,
            publish: PublishSettings {
                qos: target.qos.min(1),
                retain_kept: target.retain_kept,
                max_packet_size: usize::MAX,
            },
            keep_alive: target.keep_alive,
            last_write: Instant::now(),
            ping_sent: None,
            low_water: LowWater::default(),
        };
        let connack = timeout(PROGRESS_TIMEOUT, connection.handshake(target))
            .await
            .map_err(|_| SendError::transient(format!("no CONNACK from {endpoint}")))??;
        if connack.code != ConnectReturnCode::Success {
            return Err(connack_error(connack.code, &endpoint));
        }
        connection.apply(&connack);
        connection.refill_at = (connection.max_in_flight / 2).max(1);
        debug!(%endpoint, max_in_flight = connection.max_in_flight, "connected to the MQTT destination");
        Ok(connection)
    }

    async fn handshake(&mut self, target: &Target) -> Result<ConnAck, SendError> {
        let mut properties = ConnectProperties::new();
        properties.max_packet_size = Some(MAX_INCOMING_PACKET);
        let connect = Connect {
            keep_alive: u16::try_from(target.keep_alive.as_secs()).unwrap_or(u16::MAX),
            client_id: target.client_id.clone(),
            clean_start: true,
            properties: Some(properties),
        };
        Packet::Connect(connect, None, None)
            .write(&mut self.write_buf, None)
            .map_err(|err| SendError::transient(format!("encoding CONNECT: {err}")))?;
        self.flush().await?;
        loop {
            if let Some(packet) = self.next_packet()? {
                return match packet {
                    Packet::ConnAck(connack) => Ok(connack),
                    other => Err(SendError::transient(format!(
                        "expected CONNACK, the broker sent {other:?}"
                    ))),
                };
            }
            self.read().await?;
        }
    }

    /// Takes the broker's limits from its CONNACK.
    fn apply(&mut self, connack: &ConnAck) {
        let Some(properties) = &connack.properties else {
            return;
        };
        if let Some(receive_max) = properties.receive_max {
            self.max_in_flight = self.max_in_flight.min(usize::from(receive_max.max(1)));
        }
        if let Some(max) = properties.max_packet_size {
            self.publish.max_packet_size = max as usize;
        }
        if let Some(seconds) = properties.server_keep_alive.filter(|s| *s > 0) {
            self.keep_alive = Duration::from_secs(u64::from(seconds));
        }
    }

    /// Encodes the window's messages not yet written, as many as the
    /// in-flight limit allows, into the write buffer. Stops at a message
    /// that can never be published and returns it.
    pub fn submit(&mut self, window: &[OutboundMessage]) -> Option<Refused> {
        self.held_back = self.should_hold_back(window.len());
        if self.held_back {
            return None;
        }
        self.impatient = false;
        while self.submitted < window.len() && self.has_room() {
            let pkid = self.next_pkid;
            let outbound = &window[self.submitted];
            if let Err(error) = publish::encode(&mut self.write_buf, outbound, pkid, self.publish) {
                let index = self.submitted;
                return Some(Refused { index, error });
            }
            let at_most_once = self.publish.qos == 0;
            self.written.push(pkid, at_most_once);
            self.submitted += 1;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        }
        None
    }

    /// Whether to wait for more PUBACKs before topping the window up: only
    /// with messages in flight, fewer than half the limit free, and more
    /// waiting than would fit (so the tail of a window and light traffic
    /// go out at once).
    fn should_hold_back(&self, window_len: usize) -> bool {
        if self.publish.qos == 0 || self.impatient {
            return false;
        }
        self.slots().hold_back(window_len - self.submitted)
    }

    fn slots(&self) -> Slots {
        Slots {
            in_flight: self.written.in_flight(),
            limit: self.max_in_flight,
            refill_at: self.refill_at,
        }
    }

    /// The fewest PUBACKs that must arrive before the caller can go on:
    /// confirm the `want_left` messages at the window's front, or top up a
    /// window of `window_len` (see [`Connection::receive`]).
    pub fn pubacks_awaited(&self, want_left: usize, window_len: usize) -> usize {
        if self.publish.qos == 0 {
            return 1;
        }
        let acknowledged = self.written.len() - self.written.in_flight();
        Awaiting {
            to_confirm: want_left.saturating_sub(acknowledged),
            waiting: window_len.saturating_sub(self.submitted),
            held_back: self.held_back,
            slots: self.slots(),
        }
        .pubacks()
    }

    fn has_room(&self) -> bool {
        let in_flight_ok = self.publish.qos == 0 || self.written.in_flight() < self.max_in_flight;
        in_flight_ok
            && self.written.len() < MAX_UNCONFIRMED
            && self.write_buf.len() < MAX_WRITE_CHUNK
    }

    /// Writes whatever is buffered, in one write when the socket takes it.
    pub async fn flush(&mut self) -> Result<(), SendError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        timeout(PROGRESS_TIMEOUT, self.stream.write_all(&self.write_buf))
            .await
            .map_err(|_| SendError::transient("the broker took nothing for 30 s"))?
            .map_err(|err| SendError::transient(format!("connection lost: {err}")))?;
        self.write_buf.clear();
        self.last_write = Instant::now();
        Ok(())
    }

    /// The acknowledged prefix written since the last call.
    pub fn take_confirmed(&mut self) -> usize {
        self.written.take_confirmed()
    }

    /// Waits until at least `pubacks` PUBACKs can have arrived (see
    /// [`Connection::pubacks_awaited`]; any packet sooner if they are
    /// larger) and handles every complete packet read. Keeps the connection
    /// alive with PINGREQs meanwhile; fails when nothing at all arrives for
    /// 30 s, or a PINGREQ stays unanswered for a keep-alive interval.
    pub async fn receive(&mut self, pubacks: usize) -> Result<(), SendError> {
        let awaited_bytes = pubacks
            .saturating_mul(PUBACK_MIN_LEN)
            .saturating_sub(self.read_buf.len());
        self.low_water.set(&self.stream, awaited_bytes);
        let give_up = Instant::now() + PROGRESS_TIMEOUT;
        let patience = self.held_back.then(|| Instant::now() + HOLD_BACK_PATIENCE);
        loop {
            let wake = self.ping_due().min(give_up);
            let wake = patience.map_or(wake, |p| wake.min(p));
            match timeout_at(wake, self.stream.read_buf(&mut self.read_buf)).await {
                Ok(Ok(0)) => return Err(SendError::transient("the broker closed the connection")),
                Ok(Ok(_)) => {
                    self.ping_sent = None;
                    return self.handle_packets();
                }
                Ok(Err(err)) => {
                    return Err(SendError::transient(format!("connection lost: {err}")))
                }
                Err(_) if patience.is_some_and(|p| Instant::now() >= p) => {
                    self.impatient = true;
                    return Ok(());
                }
                Err(_) if Instant::now() >= give_up => {
                    return Err(SendError::transient("no acknowledgement within 30 s"))
                }
                Err(_) => self.ping().await?,
            }
        }
    }

    /// When the next PINGREQ is due, or the unanswered one times out.
    fn ping_due(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.keep_alive,
            None => self.last_write + self.keep_alive,
        }
    }

    async fn ping(&mut self) -> Result<(), SendError> {
        if self.ping_sent.is_some() {
            let secs = self.keep_alive.as_secs();
            return Err(SendError::transient(format!(
                "no answer to PINGREQ within {secs} s"
            )));
        }
        // The PINGRESP is 2 bytes: wake for it.
        self.low_water.set(&self.stream, 1);
        self.write_buf.extend_from_slice(&[0xC0, 0x00]);
        self.flush().await?;
        self.ping_sent = Some(Instant::now());
        Ok(())
    }

    async fn read(&mut self) -> Result<(), SendError> {
        match self.stream.read_buf(&mut self.read_buf).await {
            Ok(0) => Err(SendError::transient("the broker closed the connection")),
            Ok(_) => Ok(()),
            Err(err) => Err(SendError::transient(format!("connection lost: {err}"))),
        }
    }

    /// Handles every complete packet read so far.
    fn handle_packets(&mut self) -> Result<(), SendError> {
        while let Some(pkid) = self.next_puback()? {
            if !self.written.acknowledge(pkid) {
                debug!(pkid, "PUBACK for no message in flight");
            }
        }
        Ok(())
    }

    /// The packet id of the next PUBACK; other packets (PINGRESP) are
    /// skipped, a DISCONNECT or a refused publish is an error.
    fn next_puback(&mut self) -> Result<Option<u16>, SendError> {
        loop {
            // The common case, a successful PUBACK without properties,
            // without building a packet.
            if let [0x40, 0x02, high, low, ..] = self.read_buf[..] {
                self.read_buf.advance(4);
                return Ok(Some(u16::from_be_bytes([high, low])));
            }
            match self.next_packet()? {
                Some(Packet::PubAck(ack)) => {
                    check_puback(ack.reason)?;
                    return Ok(Some(ack.pkid));
                }
                Some(Packet::Disconnect(disconnect)) => {
                    return Err(SendError::transient(format!(
                        "the broker disconnected: {:?}",
                        disconnect.reason_code
                    )))
                }
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// The next complete packet in the read buffer, if there is one.
    fn next_packet(&mut self) -> Result<Option<Packet>, SendError> {
        if let [0xE0, 0x00, ..] = self.read_buf[..] {
            // A DISCONNECT with no reason code, which rumqttc does not read.
            return Err(SendError::transient(
                "the broker disconnected: NormalDisconnection",
            ));
        }
        match Packet::read(&mut self.read_buf, Some(MAX_INCOMING_PACKET)) {
            Ok(packet) => Ok(Some(packet)),
            Err(PacketError::InsufficientBytes(_)) => Ok(None),
            Err(err) => Err(SendError::transient(format!(
                "unreadable packet from the broker: {err}"
            ))),
        }
    }

    /// Sends DISCONNECT and closes, waiting at most a second.
    pub async fn close(mut self) {
        self.write_buf.extend_from_slice(&[0xE0, 0x00]);
        let goodbye = async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        };
        let _ = timeout(Duration::from_secs(1), goodbye).await;
    }
}

/// The in-flight slots of a QoS 1 connection.
#[derive(Debug, Clone, Copy)]
struct Slots {
    in_flight: usize,
    limit: usize,
    refill_at: usize,
}

impl Slots {
    fn free(self) -> usize {
        self.limit.saturating_sub(self.in_flight)
    }

    /// Whether `waiting` unsent messages should wait for more PUBACKs.
    fn hold_back(self, waiting: usize) -> bool {
        let free = self.free();
        self.in_flight > 0 && free < self.refill_at && waiting > free
    }

    /// PUBACKs still needed before a held-back refill goes out.
    fn until_refill(self) -> usize {
        self.refill_at.saturating_sub(self.free())
    }
}

/// What a QoS 1 connection waits for between writes.
#[derive(Debug, Clone, Copy)]
struct Awaiting {
    /// PUBACKs still missing for the messages the caller wants confirmed
    /// (a lower bound when some came out of order).
    to_confirm: usize,
    /// Messages of the window not written yet.
    waiting: usize,
    /// The last submit held them back for more free slots.
    held_back: bool,
    slots: Slots,
}

impl Awaiting {
    /// The fewest PUBACKs after which the caller can confirm what it wants
    /// or write more: at least one.
    fn pubacks(self) -> usize {
        let to_write = match (self.waiting, self.held_back) {
            (0, _) => usize::MAX,
            (_, true) => self.slots.until_refill(),
            (_, false) => 1,
        };
        self.to_confirm.min(to_write).max(1)
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

#[cfg(test)]
mod tests {
    use super::{Awaiting, Slots};

    fn slots(in_flight: usize) -> Slots {
        Slots {
            in_flight,
            limit: 100,
            refill_at: 50,
        }
    }

    #[test]
    fn a_backlog_is_topped_up_only_once_half_the_slots_are_free() {
        assert!(slots(100).hold_back(500));
        assert!(slots(51).hold_back(500), "49 free of 100");
        assert!(!slots(50).hold_back(500), "50 free");
        assert!(!slots(0).hold_back(500), "nothing in flight: send");
    }

    #[test]
    fn the_tail_of_a_window_and_light_traffic_go_out_at_once() {
        assert!(!slots(99).hold_back(1), "one message, one free slot");
        assert!(!slots(90).hold_back(10), "all ten fit");
        assert!(slots(90).hold_back(11), "eleven do not");
    }

    fn awaiting(to_confirm: usize, waiting: usize, in_flight: usize) -> Awaiting {
        let slots = slots(in_flight);
        Awaiting {
            to_confirm,
            waiting,
            held_back: slots.hold_back(waiting),
            slots,
        }
    }

    #[test]
    fn with_everything_written_the_task_waits_for_the_front_it_wants() {
        assert_eq!(awaiting(500, 0, 100).pubacks(), 500);
        assert_eq!(awaiting(3, 0, 100).pubacks(), 3);
        assert_eq!(awaiting(0, 0, 100).pubacks(), 1, "never less than one");
    }

    #[test]
    fn a_held_back_refill_waits_only_for_the_slots_it_needs() {
        assert_eq!(
            awaiting(500, 400, 100).pubacks(),
            50,
            "nothing free, 50 to go"
        );
        assert_eq!(awaiting(500, 400, 60).pubacks(), 10, "40 free, 10 to go");
        assert_eq!(awaiting(5, 400, 100).pubacks(), 5, "the front comes first");
    }

    #[test]
    fn messages_that_were_not_held_back_wait_for_any_pubacks() {
        let impatient = Awaiting {
            held_back: false,
            ..awaiting(500, 400, 100)
        };
        assert_eq!(impatient.pubacks(), 1);
    }
}
