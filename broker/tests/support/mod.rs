//! What the security tests share: a broker with one flow queue, test
//! certificates made with rcgen, raw MQTT packets and TLS clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backhaul_broker::tls::{server_config, TlsFiles};
use backhaul_broker::{
    Authentication, Broker, BrokerSettings, BrokerStats, DurableGate, FlowRoute, ListenerSettings,
    StoredMessage, TopicFilter,
};
use backhaul_storage::{QueueStore, StorageMode};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A running broker whose one flow takes `#`.
pub struct TestBroker {
    pub addresses: Vec<SocketAddr>,
    pub stats: Arc<BrokerStats>,
    pub store: Arc<QueueStore>,
}

impl TestBroker {
    pub async fn start(settings: BrokerSettings) -> Self {
        let store = Arc::new(QueueStore::open(&StorageMode::Memory, &["f".to_string()]).unwrap());
        let gate = DurableGate::new(
            store.clone(),
            vec![FlowRoute {
                flow: 0,
                filters: vec![TopicFilter::parse("#").unwrap()],
            }],
        );
        let broker = Broker::new(settings, gate);
        let stats = broker.stats();
        let mut addresses = Vec::new();
        for listener in broker.bind().await.unwrap() {
            addresses.push(listener.address());
            tokio::spawn(listener.serve());
        }
        Self {
            addresses,
            stats,
            store,
        }
    }

    /// The topics and payloads in the flow's queue, in order.
    /// The queue once a message on `topic` is in it: a publish reaches
    /// subscribers through the router while its append may still be on its
    /// way to the queue.
    pub async fn queued_through(&self, topic: &str) -> Vec<(String, String)> {
        for _ in 0..500 {
            let queued = self.queued().await;
            if queued.iter().any(|(t, _)| t == topic) {
                return queued;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{topic} never reached the queue");
    }

    /// Waits until exactly `n` connections are open (`what` names the wait
    /// in the panic).
    pub async fn until_connections(&self, n: u64, what: &str) {
        let active = || {
            self.stats
                .connections_active
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        eventually(what, || active() == n).await;
    }

    pub async fn queued(&self) -> Vec<(String, String)> {
        let queue = self.store.queue(0).unwrap();
        queue
            .read(1, 10_000, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                let m = StoredMessage::decode(r.data).unwrap();
                (m.topic, String::from_utf8(m.payload.to_vec()).unwrap())
            })
            .collect()
    }
}

/// A listener on a free loopback port.
pub fn listener(
    name: &str,
    tls: Option<TlsFiles>,
    authentication: Authentication,
) -> ListenerSettings {
    ListenerSettings {
        tls: tls.map(|files| server_config(&files).unwrap()),
        authentication,
        ..ListenerSettings::plain(name, "127.0.0.1:0".parse().unwrap())
    }
}

/// Waits (bounded) until `f` holds: counters are updated by connection
/// tasks a moment after the client sees the effect.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

// ---------------------------------------------------------------- certificates

/// A test PKI in a folder: a CA, a server certificate for localhost and
/// 127.0.0.1, client certificates, and a second, unknown CA.
pub struct Pki {
    pub dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    rogue: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let (ca, ca_pem) = new_ca("Backhaul Test CA");
        let (rogue, rogue_pem) = new_ca("Unknown CA");
        std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.join("rogue-ca.pem"), rogue_pem).unwrap();
        let pki = Self {
            dir: dir.to_path_buf(),
            ca,
            rogue,
        };
        pki.leaf(
            "server",
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            false,
            false,
        );
        pki
    }

    /// Writes `<name>.pem` and `<name>.key`: a certificate with subject
    /// CN `cn`, signed by the test CA (or the unknown one), expired if asked.
    pub fn leaf(&self, name: &str, cn: &str, sans: Vec<String>, expired: bool, rogue: bool) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let issuer = if rogue { &self.rogue } else { &self.ca };
        let cert = params.signed_by(&key, issuer).unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The server side: server certificate, and the CA for clients if asked.
    pub fn server_files(&self, client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            client_ca_file: client_ca.then(|| self.path("ca.pem")),
        }
    }

    /// A TLS client trusting the test CA, presenting `<client>.pem` if given.
    pub fn connector(&self, client: Option<&str>) -> TlsConnector {
        TlsConnector::from(self.client_config(client))
    }

    /// The client configuration of [`Pki::connector`], for clients that
    /// take one (rumqttc).
    pub fn client_config(&self, client: Option<&str>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let certs = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
        };
        Arc::new(config)
    }
}

/// Connects with TLS as `localhost`; the handshake's error, if any.
pub async fn tls_connect(
    connector: &TlsConnector,
    address: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

// ---------------------------------------------------------------- raw MQTT

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return out;
        }
    }
}

fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(remaining_length(body.len()));
    out.extend(body);
    out
}

/// CONNECT (3.1.1 or 5), clean session, keep-alive 30 s.
pub fn connect(v5: bool, client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    connect_with(v5, client_id, login, true)
}

/// CONNECT with a clean or a persistent session.
pub fn connect_with(
    v5: bool,
    client_id: &str,
    login: Option<(&str, &str)>,
    clean: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(if v5 { 5 } else { 4 });
    let mut flags = if clean { 0b0000_0010 } else { 0 };
    if login.is_some() {
        flags |= 0b1100_0000;
    }
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    if v5 {
        body.push(0);
    }
    string(&mut body, client_id);
    if let Some((user, password)) = login {
        string(&mut body, user);
        string(&mut body, password);
    }
    packet(0x10, body)
}

pub fn publish(v5: bool, topic: &str, qos: u8, pkid: u16, payload: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload.as_bytes());
    packet(0x30 | (qos << 1), body)
}

pub fn subscribe(v5: bool, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for filter in filters {
        string(&mut body, filter);
        body.push(1);
    }
    packet(0x82, body)
}

/// One whole packet from the peer, or `None` once it closed.
pub async fn read_packet<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let read = async {
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.ok()?;
        let mut out = first.to_vec();
        let mut len = 0usize;
        for shift in 0..4 {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.ok()?;
            out.push(b[0]);
            len |= ((b[0] & 0x7f) as usize) << (7 * shift);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        out.extend(body);
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the broker answers or closes in time")
}

/// Sends CONNECT and returns the CONNACK's return code (3.1.1) or reason
/// code (5), or `None` if the broker closed instead.
pub async fn connack_code<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    v5: bool,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> Option<u8> {
    stream
        .write_all(&connect(v5, client_id, login))
        .await
        .ok()?;
    let ack = read_packet(stream).await?;
    assert_eq!(ack[0], 0x20, "CONNACK expected, got {ack:?}");
    Some(ack[3])
}

/// Reads until the broker closes; the packets it sent before.
pub async fn until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    while let Some(p) = read_packet(stream).await {
        packets.push(p);
    }
    packets
}

/// (first byte, packet id, reason code) of a PUBACK/PUBREC; MQTT 5 omits
/// a success reason, read as 0.
pub fn ack(packet: &[u8]) -> (u8, u16, u8) {
    (
        packet[0],
        u16::from_be_bytes([packet[2], packet[3]]),
        packet.get(4).copied().unwrap_or(0),
    )
}

/// The reason codes of DISCONNECT packets.
pub fn disconnect_reasons(packets: &[Vec<u8>]) -> Vec<u8> {
    packets
        .iter()
        .map(|p| {
            assert_eq!(p[0], 0xe0, "DISCONNECT expected, got {p:?}");
            p.get(2).copied().unwrap_or(0)
        })
        .collect()
}

/// Packet id and the last `n` bytes (the return codes) of a SUBACK.
pub fn suback(packet: &[u8], n: usize) -> (u16, Vec<u8>) {
    assert_eq!(packet[0], 0x90, "SUBACK expected, got {packet:?}");
    (
        u16::from_be_bytes([packet[2], packet[3]]),
        packet[packet.len() - n..].to_vec(),
    )
}

/// Every byte until the peer closes.
pub async fn bytes_until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the broker closes in time");
    out
}

// ---------------------------------------------------------------- sessions and wills

/// A will for [`ConnectOptions`].
pub struct RawWill<'a> {
    pub topic: &'a str,
    pub payload: &'a str,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 Will Delay Interval, in seconds.
    pub delay: Option<u32>,
}

/// A CONNECT with the session and will options the protocol tests vary.
pub struct ConnectOptions<'a> {
    pub v5: bool,
    pub client_id: &'a str,
    pub clean: bool,
    pub keep_alive: u16,
    /// MQTT 5 Session Expiry Interval, in seconds.
    pub session_expiry: Option<u32>,
    pub will: Option<RawWill<'a>>,
}

impl<'a> ConnectOptions<'a> {
    pub fn new(v5: bool, client_id: &'a str) -> Self {
        Self {
            v5,
            client_id,
            clean: true,
            keep_alive: 30,
            session_expiry: None,
            will: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, "MQTT");
        body.push(if self.v5 { 5 } else { 4 });
        let mut flags = if self.clean { 0b0000_0010 } else { 0 };
        if let Some(will) = &self.will {
            flags |= 0b0000_0100 | (will.qos << 3);
            if will.retain {
                flags |= 0b0010_0000;
            }
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        if self.v5 {
            let mut props = Vec::new();
            if let Some(expiry) = self.session_expiry {
                props.push(0x11);
                props.extend_from_slice(&expiry.to_be_bytes());
            }
            body.extend(remaining_length(props.len()));
            body.extend(props);
        }
        string(&mut body, self.client_id);
        if let Some(will) = &self.will {
            if self.v5 {
                let mut props = Vec::new();
                if let Some(delay) = will.delay {
                    props.push(0x18);
                    props.extend_from_slice(&delay.to_be_bytes());
                }
                body.extend(remaining_length(props.len()));
                body.extend(props);
            }
            string(&mut body, will.topic);
            string(&mut body, will.payload);
        }
        packet(0x10, body)
    }
}

/// DISCONNECT; MQTT 5 with a reason code.
pub fn disconnect(v5_reason: Option<u8>) -> Vec<u8> {
    match v5_reason {
        Some(reason) => vec![0xe0, 1, reason],
        None => vec![0xe0, 0],
    }
}

pub const PINGREQ: [u8; 2] = [0xc0, 0];

/// Connects, sends `options`' CONNECT and returns the socket and the
/// CONNACK's (session present, return or reason code).
pub async fn connect_raw(
    address: SocketAddr,
    options: &ConnectOptions<'_>,
) -> (TcpStream, bool, u8) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(&options.encode()).await.unwrap();
    let ack = read_packet(&mut socket)
        .await
        .expect("the broker answers CONNECT");
    assert_eq!(ack[0], 0x20, "CONNACK expected, got {ack:?}");
    (socket, ack[2] & 1 == 1, ack[3])
}

/// A message a [`Subscriber`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// An MQTT 3.1.1 subscriber (rumqttc) that collects what it receives.
pub struct Subscriber {
    pub client: rumqttc::AsyncClient,
    messages: tokio::sync::mpsc::UnboundedReceiver<Received>,
}

impl Subscriber {
    /// Connects as `client_id` and subscribes to `filter` with QoS 1.
    pub async fn start(address: SocketAddr, client_id: &str, filter: &str) -> Self {
        let options =
            rumqttc::MqttOptions::new(client_id, address.ip().to_string(), address.port());
        let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            while let Ok(event) = events.poll().await {
                match event {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        });
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), subscribed)
            .await
            .expect("SUBACK in time")
            .unwrap();
        Self { client, messages }
    }

    /// The next message (within 20 s).
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(20), self.messages.recv())
            .await
            .expect("a message in time")
            .expect("the subscriber runs")
    }

    /// Publishes `payload` to `topic` from this client (QoS 1): a marker
    /// that proves nothing was received before it.
    pub async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
}

/// What a subscriber received, as (topic, payload).
pub fn message(topic: &str, payload: &str) -> Received {
    Received {
        topic: topic.into(),
        payload: payload.into(),
        retain: false,
    }
}
