//! The broker devices can trust: TLS listeners, passwords, client
//! certificates, topic authorization and limits, against real clients
//! (raw sockets, tokio-rustls, mosquitto_pub). Certificates are made here
//! with rcgen, an expired one and one from an unknown CA included.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backhaul_broker::authz::{DefaultDecision, Rule, RuleIdentity};
use backhaul_broker::passwd::{PasswordEntries, PasswordFile};
use backhaul_broker::stats::{Action, AuthFailure, Rejection};
use backhaul_broker::{Authentication, Authorization, BrokerSettings, Limits};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn password_file(dir: &std::path::Path, users: &[(&str, &str)]) -> Arc<PasswordFile> {
    let mut entries = PasswordEntries::default();
    for (user, password) in users {
        entries.set(user, password).unwrap();
    }
    let path = dir.join("passwd");
    entries.write(&path).unwrap();
    Arc::new(PasswordFile::open(&path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_gets_bad_username_or_password_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), &[("press-01", "right")]);
    let broker = TestBroker::start(BrokerSettings {
        listeners: vec![listener("pw", None, Authentication::Password(file))],
        ..BrokerSettings::default()
    })
    .await;
    let address = broker.addresses[0];
    let attempt = |v5: bool, id: &'static str, login: Option<(&'static str, &'static str)>| async move {
        let mut socket = TcpStream::connect(address).await.unwrap();
        connack_code(&mut socket, v5, id, login).await
    };
    assert_eq!(
        attempt(false, "a", Some(("press-01", "wrong"))).await,
        Some(0x04)
    );
    assert_eq!(
        attempt(true, "b", Some(("press-01", "wrong"))).await,
        Some(0x86)
    );
    assert_eq!(
        attempt(true, "c", Some(("nobody", "right"))).await,
        Some(0x86)
    );
    assert_eq!(attempt(false, "d", None).await, Some(0x04));
    assert_eq!(
        attempt(false, "e", Some(("press-01", "right"))).await,
        Some(0x00)
    );
    assert_eq!(
        attempt(true, "f", Some(("press-01", "right"))).await,
        Some(0x00)
    );
    let failures = &broker.stats.auth_failures;
    assert_eq!(failures.get(AuthFailure::BadCredentials), 3);
    assert_eq!(failures.get(AuthFailure::NoCredentials), 1);
}

/// A TLS listener that takes client certificates of the test CA; the
/// subject CN is the identity the authorization rules see.
async fn x509_broker(pki: &Pki) -> TestBroker {
    let rules = vec![Rule {
        identity: RuleIdentity::Anyone,
        publish: vec!["devices/%u/#".into()],
        subscribe: vec![],
        deny_publish: Vec::new(),
        deny_subscribe: Vec::new(),
    }];
    TestBroker::start(BrokerSettings {
        listeners: vec![listener(
            "mtls",
            Some(pki.server_files(true)),
            Authentication::X509,
        )],
        authorization: Arc::new(Authorization::new(rules, DefaultDecision::Deny)),
        ..BrokerSettings::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_of_the_ca_lets_its_cn_in() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.leaf("press", "press-01", vec![], false, false);
    let broker = x509_broker(&pki).await;
    let mut tls = tls_connect(&pki.connector(Some("press")), broker.addresses[0])
        .await
        .unwrap();
    assert_eq!(connack_code(&mut tls, true, "c1", None).await, Some(0));
    tls.write_all(&publish(true, "devices/press-01/temp", 1, 1, "21.5"))
        .await
        .unwrap();
    tls.write_all(&publish(true, "devices/press-02/temp", 1, 2, "spoofed"))
        .await
        .unwrap();
    let ok = read_packet(&mut tls).await.unwrap();
    let denied = read_packet(&mut tls).await.unwrap();
    assert_eq!(ack(&ok), (0x40, 1, 0), "PUBACK success for its own topic");
    assert_eq!(ack(&denied), (0x40, 2, 0x87), "PUBACK not authorized");
    assert_eq!(
        broker.queued().await,
        [("devices/press-01/temp".to_string(), "21.5".to_string())]
    );
}

/// Tries a TLS connection and a CONNECT over it; `true` if a CONNACK came.
async fn served_over_tls(pki: &Pki, client: Option<&str>, address: std::net::SocketAddr) -> bool {
    match tls_connect(&pki.connector(client), address).await {
        Err(_) => false,
        // TLS 1.3: the server checks the client certificate after the
        // client's side of the handshake is done; its alert arrives on read.
        Ok(mut tls) => connack_code(&mut tls, false, "x", None).await.is_some(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_missing_and_expired_client_certificates_fail_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.leaf("rogue", "press-01", vec![], false, true);
    pki.leaf("expired", "press-01", vec![], true, false);
    let broker = x509_broker(&pki).await;
    let address = broker.addresses[0];
    assert!(!served_over_tls(&pki, Some("rogue"), address).await);
    assert!(!served_over_tls(&pki, Some("expired"), address).await);
    assert!(!served_over_tls(&pki, None, address).await);
    let failures = &broker.stats.auth_failures;
    eventually("three handshake failures counted", || {
        failures.get(AuthFailure::UnknownCa)
            + failures.get(AuthFailure::ExpiredCertificate)
            + failures.get(AuthFailure::NoClientCertificate)
            == 3
    })
    .await;
    assert_eq!(failures.get(AuthFailure::UnknownCa), 1);
    assert_eq!(failures.get(AuthFailure::ExpiredCertificate), 1);
    assert_eq!(failures.get(AuthFailure::NoClientCertificate), 1);
    assert!(broker.queued().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mqtt_on_the_tls_port_and_tls_on_the_plain_port_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = TestBroker::start(BrokerSettings {
        listeners: vec![
            listener(
                "tls",
                Some(pki.server_files(false)),
                Authentication::Anonymous,
            ),
            listener("plain", None, Authentication::Anonymous),
        ],
        ..BrokerSettings::default()
    })
    .await;
    let (tls_port, plain_port) = (broker.addresses[0], broker.addresses[1]);

    let mut plain_on_tls = TcpStream::connect(tls_port).await.unwrap();
    plain_on_tls
        .write_all(&connect(false, "p", None))
        .await
        .unwrap();
    let answer = bytes_until_closed(&mut plain_on_tls).await;
    assert_ne!(
        answer.first(),
        Some(&0x20),
        "no CONNACK, at most a TLS alert"
    );
    eventually("the failed handshake is counted", || {
        broker.stats.auth_failures.get(AuthFailure::TlsHandshake) == 1
    })
    .await;

    let handshake = tls_connect(&pki.connector(None), plain_port).await;
    assert!(handshake.is_err(), "no TLS server on the plain port");
    eventually("the ClientHello is counted as malformed MQTT", || {
        broker.stats.packets_rejected.get(Rejection::Malformed) == 1
    })
    .await;

    // Both listeners still serve their own kind of client.
    assert!(served_over_tls(&pki, None, tls_port).await);
    let mut plain = TcpStream::connect(plain_port).await.unwrap();
    assert_eq!(connack_code(&mut plain, false, "q", None).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_neither_block_others_nor_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = TestBroker::start(BrokerSettings {
        listeners: vec![listener(
            "tls",
            Some(pki.server_files(false)),
            Authentication::Anonymous,
        )],
        limits: Limits {
            connect_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..BrokerSettings::default()
    })
    .await;
    let address = broker.addresses[0];
    // 1,000 sockets that never send a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..1000 {
        stalled.push(TcpStream::connect(address).await.unwrap());
    }
    assert!(
        served_over_tls(&pki, None, address).await,
        "a normal client is served while 1,000 handshakes stall"
    );
    for socket in stalled.iter_mut() {
        assert!(until_closed(socket).await.is_empty());
    }
    eventually("each stalled handshake counted once", || {
        broker.stats.packets_rejected.get(Rejection::ConnectTimeout) == 1000
    })
    .await;
}

fn rules() -> Authorization {
    Authorization::new(
        vec![Rule {
            identity: RuleIdentity::Anyone,
            publish: vec!["factory/#".into()],
            subscribe: vec!["commands/%c/#".into()],
            deny_publish: Vec::new(),
            deny_subscribe: Vec::new(),
        }],
        DefaultDecision::Deny,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_publish_never_reaches_the_flow_queue() {
    let broker = TestBroker::start(BrokerSettings {
        listeners: vec![listener("plain", None, Authentication::Anonymous)],
        authorization: Arc::new(rules()),
        ..BrokerSettings::default()
    })
    .await;
    let address = broker.addresses[0];
    // MQTT 5: the denial is in the PUBACK and the PUBREC.
    let mut v5 = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut v5, true, "dev5", None).await, Some(0));
    v5.write_all(&publish(true, "office/secret", 1, 7, "no"))
        .await
        .unwrap();
    v5.write_all(&publish(true, "office/secret", 2, 8, "no"))
        .await
        .unwrap();
    v5.write_all(&publish(true, "factory/a", 1, 9, "v5"))
        .await
        .unwrap();
    assert_eq!(ack(&read_packet(&mut v5).await.unwrap()), (0x40, 7, 0x87));
    assert_eq!(ack(&read_packet(&mut v5).await.unwrap()), (0x50, 8, 0x87));
    assert_eq!(ack(&read_packet(&mut v5).await.unwrap()), (0x40, 9, 0));
    // MQTT 3.1.1: no negative ack; the message is acknowledged and dropped.
    let mut v4 = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut v4, false, "dev4", None).await, Some(0));
    v4.write_all(&publish(false, "office/secret", 1, 3, "no"))
        .await
        .unwrap();
    v4.write_all(&publish(false, "office/secret", 0, 0, "no"))
        .await
        .unwrap();
    v4.write_all(&publish(false, "factory/b", 1, 4, "v4"))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut v4).await.unwrap(), [0x40, 2, 0, 3]);
    assert_eq!(read_packet(&mut v4).await.unwrap(), [0x40, 2, 0, 4]);
    assert_eq!(
        broker.queued().await,
        [
            ("factory/a".to_string(), "v5".to_string()),
            ("factory/b".to_string(), "v4".to_string())
        ],
        "only the allowed publishes were appended"
    );
    assert_eq!(broker.stats.authorization_denied.get(Action::Publish), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_subscription_gets_a_failure_code_in_its_place() {
    let broker = TestBroker::start(BrokerSettings {
        listeners: vec![listener("plain", None, Authentication::Anonymous)],
        authorization: Arc::new(rules()),
        ..BrokerSettings::default()
    })
    .await;
    let address = broker.addresses[0];
    let mut v5 = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut v5, true, "dev5", None).await, Some(0));
    v5.write_all(&subscribe(
        true,
        1,
        &["#", "commands/dev5/+", "commands/other/x"],
    ))
    .await
    .unwrap();
    assert_eq!(
        suback(&read_packet(&mut v5).await.unwrap(), 3),
        (1, vec![0x87, 1, 0x87])
    );
    let mut v4 = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut v4, false, "dev4", None).await, Some(0));
    v4.write_all(&subscribe(false, 2, &["factory/#"]))
        .await
        .unwrap();
    assert_eq!(
        suback(&read_packet(&mut v4).await.unwrap(), 1),
        (2, vec![0x80])
    );
    v4.write_all(&subscribe(false, 3, &["commands/dev4/#"]))
        .await
        .unwrap();
    assert_eq!(
        suback(&read_packet(&mut v4).await.unwrap(), 1),
        (3, vec![1])
    );
    assert_eq!(broker.stats.authorization_denied.get(Action::Subscribe), 3);
}

async fn limited(limits: Limits) -> TestBroker {
    TestBroker::start(BrokerSettings {
        listeners: vec![listener("plain", None, Authentication::Anonymous)],
        limits,
        ..BrokerSettings::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_packet_closes_the_connection_with_packet_too_large() {
    let broker = limited(Limits {
        max_packet_size: 1024,
        ..Limits::default()
    })
    .await;
    let mut v5 = TcpStream::connect(broker.addresses[0]).await.unwrap();
    assert_eq!(connack_code(&mut v5, true, "big", None).await, Some(0));
    v5.write_all(&publish(true, "factory/x", 0, 0, &"x".repeat(2000)))
        .await
        .unwrap();
    assert_eq!(disconnect_reasons(&until_closed(&mut v5).await), [0x95]);
    assert_eq!(
        broker.stats.packets_rejected.get(Rejection::PacketTooLarge),
        1
    );
    assert!(broker.queued().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_limits_close_the_connection_with_their_reason_codes() {
    let broker = limited(Limits {
        max_topic_length: 16,
        max_topic_levels: 3,
        ..Limits::default()
    })
    .await;
    let address = broker.addresses[0];
    let mut long = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut long, true, "long", None).await, Some(0));
    long.write_all(&publish(true, "factory/a-very-long-name", 1, 1, "x"))
        .await
        .unwrap();
    assert_eq!(disconnect_reasons(&until_closed(&mut long).await), [0x90]);

    let mut deep = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut deep, true, "deep", None).await, Some(0));
    deep.write_all(&subscribe(true, 1, &["a/b/c/d"]))
        .await
        .unwrap();
    assert_eq!(disconnect_reasons(&until_closed(&mut deep).await), [0x8f]);

    let mut v4 = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut v4, false, "v4", None).await, Some(0));
    v4.write_all(&publish(false, "a/b/c/d", 0, 0, "x"))
        .await
        .unwrap();
    assert!(
        until_closed(&mut v4).await.is_empty(),
        "3.1.1: closed, no DISCONNECT"
    );

    let rejected = &broker.stats.packets_rejected;
    assert_eq!(rejected.get(Rejection::TopicTooLong), 1);
    assert_eq!(rejected.get(Rejection::TooManyTopicLevels), 2);
    assert!(broker.queued().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_is_advertised_and_enforced() {
    let broker = limited(Limits {
        receive_maximum: 2,
        ..Limits::default()
    })
    .await;
    let mut v5 = TcpStream::connect(broker.addresses[0]).await.unwrap();
    v5.write_all(&connect(true, "greedy", None)).await.unwrap();
    let connack = read_packet(&mut v5).await.unwrap();
    let props = &connack[5..];
    let at = props
        .windows(3)
        .position(|w| w == [0x21, 0, 2])
        .expect("Receive Maximum 2 in CONNACK properties");
    assert!(at < props.len());
    // QoS 2 publishes stay in flight until PUBREL, which this client never
    // sends: the third one is over the limit.
    for pkid in 1..=2u16 {
        v5.write_all(&publish(true, "factory/q2", 2, pkid, "x"))
            .await
            .unwrap();
        assert_eq!(ack(&read_packet(&mut v5).await.unwrap()), (0x50, pkid, 0));
    }
    v5.write_all(&publish(true, "factory/q2", 2, 3, "x"))
        .await
        .unwrap();
    assert_eq!(disconnect_reasons(&until_closed(&mut v5).await), [0x93]);
    assert_eq!(
        broker
            .stats
            .packets_rejected
            .get(Rejection::ReceiveMaximumExceeded),
        1
    );
    assert_eq!(broker.queued().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_maximum_are_refused_with_a_connack() {
    let broker = limited(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let address = broker.addresses[0];
    let mut first = TcpStream::connect(address).await.unwrap();
    let mut second = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut first, false, "1", None).await, Some(0));
    assert_eq!(connack_code(&mut second, true, "2", None).await, Some(0));
    let mut third = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut third, false, "3", None).await, Some(0x03));
    let mut fourth = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut fourth, true, "4", None).await, Some(0x97));
    assert_eq!(
        broker.stats.packets_rejected.get(Rejection::MaxConnections),
        2
    );
    drop(first);
    broker
        .until_connections(1, "only the second connection is left open")
        .await;
    let mut fifth = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut fifth, false, "5", None).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_publishes_over_tls_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let file = password_file(dir.path(), &[("line-7", "s3cret!")]);
    let broker = TestBroker::start(BrokerSettings {
        listeners: vec![listener(
            "tls",
            Some(pki.server_files(false)),
            Authentication::Password(file),
        )],
        ..BrokerSettings::default()
    })
    .await;
    let port = broker.addresses[0].port().to_string();
    let ca = pki.path("ca.pem");
    let run = |password: &'static str, message: &'static str, version: &'static str| {
        let (ca, port) = (ca.clone(), port.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("mosquitto_pub")
                .args(["-h", "localhost", "-p", &port, "--cafile"])
                .arg(&ca)
                .args(["-u", "line-7", "-P", password, "-q", "1", "-V", version])
                .args([
                    "-i",
                    "mosquitto-test",
                    "-t",
                    "factory/line-7/temp",
                    "-m",
                    message,
                ])
                .output()
                .expect("mosquitto_pub is installed (scripts/test.sh installs mosquitto-clients)")
        })
    };
    let ok = run("s3cret!", "21.5", "mqttv311").await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok5 = run("s3cret!", "22.0", "mqttv5").await.unwrap();
    assert!(
        ok5.status.success(),
        "{}",
        String::from_utf8_lossy(&ok5.stderr)
    );
    let refused = run("guess", "nope", "mqttv311").await.unwrap();
    assert!(!refused.status.success());
    assert_eq!(
        broker.queued().await,
        [
            ("factory/line-7/temp".to_string(), "21.5".to_string()),
            ("factory/line-7/temp".to_string(), "22.0".to_string())
        ]
    );
    assert_eq!(
        broker.stats.auth_failures.get(AuthFailure::BadCredentials),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_sent_right_behind_connect_are_handled() {
    let broker = limited(Limits::default()).await;
    let mut v4 = TcpStream::connect(broker.addresses[0]).await.unwrap();
    let mut burst = connect(false, "eager", None);
    burst.extend(publish(false, "factory/eager", 1, 5, "first"));
    v4.write_all(&burst).await.unwrap();
    assert_eq!(read_packet(&mut v4).await.unwrap(), [0x20, 2, 0, 0]);
    assert_eq!(ack(&read_packet(&mut v4).await.unwrap()), (0x40, 5, 0));
    assert_eq!(
        broker.queued().await,
        [("factory/eager".to_string(), "first".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_only_a_server_sends_closes_the_connection_without_a_panic() {
    let broker = limited(Limits::default()).await;
    let address = broker.addresses[0];
    for (v5, first) in [(true, 0x20u8), (true, 0xb0), (false, 0x20), (false, 0xb0)] {
        let mut socket = TcpStream::connect(address).await.unwrap();
        assert_eq!(connack_code(&mut socket, v5, "odd", None).await, Some(0));
        socket.write_all(&[first, 2, 0, 1]).await.unwrap();
        let answer = until_closed(&mut socket).await;
        if v5 {
            assert_eq!(disconnect_reasons(&answer), [0x81], "malformed packet");
        } else {
            assert!(answer.is_empty());
        }
    }
    assert_eq!(broker.stats.packets_rejected.get(Rejection::Malformed), 4);
    broker
        .until_connections(0, "every connection task ended")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_3_client_can_unsubscribe_and_stay_connected() {
    let broker = limited(Limits::default()).await;
    let mut v4 = TcpStream::connect(broker.addresses[0]).await.unwrap();
    assert_eq!(connack_code(&mut v4, false, "unsub", None).await, Some(0));
    v4.write_all(&subscribe(false, 1, &["a/+"])).await.unwrap();
    assert_eq!(
        suback(&read_packet(&mut v4).await.unwrap(), 1),
        (1, vec![1])
    );
    // UNSUBSCRIBE a/+ (packet id 2), then PINGREQ.
    v4.write_all(&[0xa2, 7, 0, 2, 0, 3, b'a', b'/', b'+', 0xc0, 0])
        .await
        .unwrap();
    // The UNSUBACK comes from the router, the PINGRESP from the connection
    // task: either may be first.
    let mut answers = vec![
        read_packet(&mut v4).await.unwrap(),
        read_packet(&mut v4).await.unwrap(),
    ];
    answers.sort();
    assert_eq!(answers, [vec![0xb0, 2, 0, 2], vec![0xd0, 0]]);
}

/// rumqttd 0.20's router thread panics ("group must exists") when a
/// persistent session that is alone in a shared-subscription group leaves
/// with a message in flight, and with it every connection of the broker.
/// (Found by the connection fuzz target.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_leaving_a_shared_group_does_not_stop_the_broker() {
    let broker = limited(Limits::default()).await;
    let address = broker.addresses[0];
    let mut member = TcpStream::connect(address).await.unwrap();
    member
        .write_all(&connect_with(false, "member", None, false))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut member).await.unwrap(), [0x20, 2, 0, 0]);
    member
        .write_all(&subscribe(false, 1, &["$share/g/a/x"]))
        .await
        .unwrap();
    let (_, granted) = suback(&read_packet(&mut member).await.unwrap(), 1);
    assert_eq!(granted, [0], "granted at QoS 0 to a persistent session");
    let mut publisher = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        connack_code(&mut publisher, false, "pub", None).await,
        Some(0)
    );
    publisher
        .write_all(&publish(false, "a/x", 1, 1, "m"))
        .await
        .unwrap();
    assert_eq!(
        ack(&read_packet(&mut publisher).await.unwrap()),
        (0x40, 1, 0)
    );
    let delivery = read_packet(&mut member).await.unwrap();
    assert_eq!(delivery[0] >> 4, 3, "PUBLISH delivered");
    drop(member);
    // The broker still routes: a new subscriber gets what is published.
    let mut probe = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        connack_code(&mut probe, false, "probe", None).await,
        Some(0)
    );
    probe
        .write_all(&subscribe(false, 2, &["b/y"]))
        .await
        .unwrap();
    assert_eq!(
        suback(&read_packet(&mut probe).await.unwrap(), 1),
        (2, vec![1])
    );
    publisher
        .write_all(&publish(false, "b/y", 0, 0, "still here"))
        .await
        .unwrap();
    let routed = read_packet(&mut probe).await.unwrap();
    assert!(routed.ends_with(b"still here"), "{routed:?}");
}

/// Client takeover: a second connection with the same client id evicts
/// the first; whatever the first one still sends must not stop the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_connection_cannot_stop_the_broker() {
    let broker = limited(Limits::default()).await;
    let address = broker.addresses[0];
    let mut old = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut old, false, "dup", None).await, Some(0));
    old.write_all(&subscribe(false, 1, &["t/+"])).await.unwrap();
    assert_eq!(
        suback(&read_packet(&mut old).await.unwrap(), 1),
        (1, vec![1])
    );
    let mut new = TcpStream::connect(address).await.unwrap();
    assert_eq!(connack_code(&mut new, false, "dup", None).await, Some(0));
    // The old connection keeps talking.
    let _ = old.write_all(&publish(false, "t/a", 1, 2, "late")).await;
    let _ = old.write_all(&subscribe(false, 3, &["t/b"])).await;
    let _ = old.write_all(&[0xc0, 0]).await;
    let _ = bytes_until_closed(&mut old).await;
    // The broker still serves and routes.
    let mut probe = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        connack_code(&mut probe, false, "probe", None).await,
        Some(0)
    );
    probe
        .write_all(&subscribe(false, 4, &["u/v"]))
        .await
        .unwrap();
    assert_eq!(
        suback(&read_packet(&mut probe).await.unwrap(), 1),
        (4, vec![1])
    );
    new.write_all(&publish(false, "u/v", 0, 0, "routed"))
        .await
        .unwrap();
    assert!(read_packet(&mut probe).await.unwrap().ends_with(b"routed"));
}
