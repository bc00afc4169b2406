//! MQTT conformance of what subscribers receive, with rumqttc clients
//! (3.1.1 and 5) against the broker: the delivered QoS is
//! min(publish QoS, subscription QoS) [MQTT-3.8.4-8], retained copies too;
//! the client's Maximum Packet Size is honoured [MQTT-3.1.2-25]; No Local,
//! Retain As Published and Retain Handling 2; a Subscription Identifier
//! comes back; an explicit denial refuses a subscription. Each downgraded
//! or dropped delivery must leave the router's in-flight window (100)
//! consistent, so several tests push well past it and check that later
//! messages still arrive, all of them, in order.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backhaul_broker::authz::{Authorization, DefaultDecision, Rule, RuleIdentity};
use backhaul_broker::{Authentication, BrokerSettings};
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet, Publish, PublishProperties, RetainForwardRule, SubscribeProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use support::*;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

async fn broker(authorization: Authorization) -> TestBroker {
    TestBroker::start(BrokerSettings {
        listeners: vec![listener("plain", None, Authentication::Anonymous)],
        authorization: std::sync::Arc::new(authorization),
        ..BrokerSettings::default()
    })
    .await
}

/// What a [`V5`] client received.
#[derive(Debug)]
enum Got {
    Publish(Publish),
    SubAck(Vec<SubscribeReasonCode>),
}

/// An MQTT 5 rumqttc client and what it receives.
struct V5 {
    client: AsyncClient,
    got: UnboundedReceiver<Got>,
}

impl V5 {
    async fn connect(address: SocketAddr, id: &str, max_packet_size: Option<u32>) -> Self {
        Self::connect_with(address, id, |options| {
            if max_packet_size.is_some() {
                options.set_max_packet_size(max_packet_size);
            }
        })
        .await
    }

    async fn connect_with(
        address: SocketAddr,
        id: &str,
        configure: impl FnOnce(&mut MqttOptions),
    ) -> Self {
        let mut options = MqttOptions::new(id, address.ip().to_string(), address.port());
        options.set_keep_alive(Duration::from_secs(30));
        configure(&mut options);
        let (client, mut events) = AsyncClient::new(options, 1000);
        let (tx, got) = unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            while let Ok(event) = events.poll().await {
                let sent = match event {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                        Ok(())
                    }
                    Event::Incoming(Packet::Publish(p)) => tx.send(Got::Publish(p)),
                    Event::Incoming(Packet::SubAck(a)) => tx.send(Got::SubAck(a.return_codes)),
                    _ => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), connected)
            .await
            .expect("CONNACK in time")
            .unwrap();
        Self { client, got }
    }

    async fn next(&mut self) -> Got {
        tokio::time::timeout(Duration::from_secs(20), self.got.recv())
            .await
            .expect("a packet in time")
            .expect("the client runs")
    }

    async fn publish_msg(&mut self) -> Publish {
        match self.next().await {
            Got::Publish(p) => p,
            other => panic!("a PUBLISH expected, got {other:?}"),
        }
    }

    /// Subscribes with these filters and optional identifier; the SUBACK.
    async fn subscribe(
        &mut self,
        filters: Vec<Filter>,
        id: Option<usize>,
    ) -> Vec<SubscribeReasonCode> {
        let props = SubscribeProperties {
            id,
            user_properties: Vec::new(),
        };
        self.client
            .subscribe_many_with_properties(filters, props)
            .await
            .unwrap();
        match self.next().await {
            Got::SubAck(codes) => codes,
            other => panic!("a SUBACK expected, got {other:?}"),
        }
    }

    async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }
}

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

fn payload(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

fn qos_of(p: &Publish) -> u8 {
    p.qos as u8
}

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_delivery_is_at_the_lower_of_publish_and_subscription_qos() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let mut at2 = V5::connect(address, "sub-qos2", None).await;
    let mut at1 = V5::connect(address, "sub-qos1", None).await;
    assert_eq!(
        at2.subscribe(vec![filter("q/#", QoS::ExactlyOnce)], None)
            .await,
        vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    at1.subscribe(vec![filter("q/#", QoS::AtLeastOnce)], None)
        .await;
    let publisher = V5::connect(address, "pub", None).await;
    for (i, qos) in QOS.into_iter().enumerate() {
        publisher
            .publish(&format!("q/{i}"), qos, false, &format!("{i}"))
            .await;
    }
    for i in 0..3u8 {
        let p = at2.publish_msg().await;
        assert_eq!(
            (payload(&p), qos_of(&p), p.retain),
            (i.to_string(), i, false)
        );
        let p = at1.publish_msg().await;
        assert_eq!((payload(&p), qos_of(&p)), (i.to_string(), i.min(1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_keep_their_qos_and_retain_flag() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let publisher = V5::connect(address, "pub", None).await;
    for (i, qos) in QOS.into_iter().enumerate() {
        publisher
            .publish(&format!("r/{i}"), qos, true, &format!("{i}"))
            .await;
    }
    // The router has them once a subscriber that came later sees the last.
    let mut probe = V5::connect(address, "probe", None).await;
    probe
        .subscribe(vec![filter("r/2", QoS::AtMostOnce)], None)
        .await;
    assert_eq!(payload(&probe.publish_msg().await), "2");

    let mut subscriber = V5::connect(address, "sub", None).await;
    subscriber
        .subscribe(vec![filter("r/+", QoS::ExactlyOnce)], None)
        .await;
    let mut got: Vec<(String, u8, bool)> = Vec::new();
    for _ in 0..3 {
        let p = subscriber.publish_msg().await;
        got.push((payload(&p), qos_of(&p), p.retain));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("0".into(), 0, true),
            ("1".into(), 1, true),
            ("2".into(), 2, true)
        ]
    );
}

/// Downgraded forwards are acknowledged to the router by the connection:
/// far more than the router's window of 100 still arrive, all in order,
/// mixed with ones the client acknowledges itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgraded_deliveries_do_not_stall_the_router_window() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let mut subscriber = V5::connect(address, "sub", None).await;
    subscriber
        .subscribe(vec![filter("w/#", QoS::ExactlyOnce)], None)
        .await;
    let publisher = V5::connect(address, "pub", None).await;
    let count = 450;
    for i in 0..count {
        publisher
            .publish("w/x", QOS[i % 3], false, &i.to_string())
            .await;
    }
    for i in 0..count {
        let p = subscriber.publish_msg().await;
        assert_eq!((payload(&p), qos_of(&p)), (i.to_string(), (i % 3) as u8));
    }
}

/// The next event of a 3.1.1 client: `None` for its SUBACK.
async fn next_v4(
    got: &mut UnboundedReceiver<Option<rumqttc::Publish>>,
) -> Option<rumqttc::Publish> {
    tokio::time::timeout(Duration::from_secs(20), got.recv())
        .await
        .expect("in time")
        .expect("running")
}

/// MQTT 3.1.1 subscribers get min(publish QoS, subscription QoS) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_delivery_is_at_the_lower_qos_too() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let options = rumqttc::MqttOptions::new("v4-sub", address.ip().to_string(), address.port());
    let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
    client
        .subscribe("v4/#", rumqttc::QoS::ExactlyOnce)
        .await
        .unwrap();
    let (tx, mut got) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            let sent = match event {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => tx.send(None),
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => tx.send(Some(p)),
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
    });
    assert!(next_v4(&mut got).await.is_none(), "SUBACK first");
    let publisher = V5::connect(address, "pub", None).await;
    let count = 300;
    for i in 0..count {
        publisher
            .publish("v4/x", QOS[i % 3], false, &i.to_string())
            .await;
    }
    for i in 0..count {
        let p = next_v4(&mut got).await.expect("a PUBLISH");
        assert_eq!(
            (
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos as u8
            ),
            (i.to_string(), (i % 3) as u8)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_over_the_client_maximum_packet_size_is_discarded_and_counted() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let mut subscriber = V5::connect(address, "small", Some(128)).await;
    subscriber
        .subscribe(vec![filter("m/#", QoS::ExactlyOnce)], None)
        .await;
    let publisher = V5::connect(address, "pub", None).await;
    let big = "x".repeat(200);
    // Past the router's window of 100, at each QoS: none may stall it.
    for i in 0..150 {
        publisher.publish("m/big", QOS[i % 3], false, &big).await;
        publisher
            .publish("m/small", QoS::AtLeastOnce, false, &i.to_string())
            .await;
    }
    for i in 0..150 {
        let p = subscriber.publish_msg().await;
        assert_eq!(
            (p.topic.as_ref(), payload(&p)),
            (&b"m/small"[..], i.to_string())
        );
    }
    assert_eq!(
        broker
            .stats
            .publishes_too_large_for_client
            .load(Ordering::Relaxed),
        150
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_subscriptions_do_not_get_the_client_s_own_publishes() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let mut me = V5::connect(address, "me", None).await;
    let no_local = Filter {
        nolocal: true,
        ..filter("nl/#", QoS::AtLeastOnce)
    };
    me.subscribe(vec![no_local], None).await;
    let other = V5::connect(address, "other", None).await;
    // Past the router's window: skipped forwards are acknowledged too.
    for i in 0..120 {
        me.publish("nl/x", QoS::AtLeastOnce, false, &format!("mine {i}"))
            .await;
    }
    other
        .publish("nl/x", QoS::AtLeastOnce, false, "theirs")
        .await;
    assert_eq!(payload(&me.publish_msg().await), "theirs");
}

/// The router sets a topic alias on the first message of a filter; when
/// that message is not sent (here: No Local), the next one must carry the
/// topic, or the client gets an alias it does not know (rumqttc closes the
/// connection with a protocol error then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_alias_whose_first_message_was_skipped_is_told_with_the_next() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let mut me = V5::connect_with(address, "me", |options| {
        options.set_topic_alias_max(Some(10));
    })
    .await;
    let no_local = Filter {
        nolocal: true,
        ..filter("al/x", QoS::AtLeastOnce)
    };
    me.subscribe(vec![no_local], None).await;
    me.publish("al/x", QoS::AtLeastOnce, false, "mine").await;
    let other = V5::connect(address, "other", None).await;
    other
        .publish("al/x", QoS::AtLeastOnce, false, "first")
        .await;
    other
        .publish("al/x", QoS::AtLeastOnce, false, "second")
        .await;
    // Without the topic, rumqttc would refuse the unknown alias.
    let first = me.publish_msg().await;
    assert_eq!(
        (first.topic.as_ref(), payload(&first)),
        (&b"al/x"[..], "first".into())
    );
    let alias = first.properties.and_then(|p| p.topic_alias);
    assert!(alias.is_some(), "the router set an alias");
    // The next one uses the alias, which the client now knows (rumqttc
    // reports the topic as it came: empty).
    let second = me.publish_msg().await;
    assert_eq!(payload(&second), "second");
    assert_eq!(second.properties.and_then(|p| p.topic_alias), alias);
    assert!(second.topic.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published_keeps_the_retain_flag_of_live_messages() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let mut plain = V5::connect(address, "plain", None).await;
    plain
        .subscribe(vec![filter("rap/x", QoS::AtLeastOnce)], None)
        .await;
    let mut rap = V5::connect(address, "rap", None).await;
    let as_published = Filter {
        preserve_retain: true,
        ..filter("rap/x", QoS::AtLeastOnce)
    };
    rap.subscribe(vec![as_published], None).await;
    let publisher = V5::connect(address, "pub", None).await;
    publisher
        .publish("rap/x", QoS::AtLeastOnce, false, "live")
        .await;
    publisher
        .publish("rap/x", QoS::AtLeastOnce, true, "retained")
        .await;
    let flags = |ps: [Publish; 2]| ps.map(|p| (payload(&p), p.retain));
    assert_eq!(
        flags([rap.publish_msg().await, rap.publish_msg().await]),
        [("live".into(), false), ("retained".into(), true)]
    );
    assert_eq!(
        flags([plain.publish_msg().await, plain.publish_msg().await]),
        [("live".into(), false), ("retained".into(), false)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_2_sends_no_retained_messages_at_subscribe_time() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let publisher = V5::connect(address, "pub", None).await;
    publisher
        .publish("rh/x", QoS::AtLeastOnce, true, "old")
        .await;
    let mut probe = V5::connect(address, "probe", None).await;
    probe
        .subscribe(vec![filter("rh/x", QoS::AtLeastOnce)], None)
        .await;
    let p = probe.publish_msg().await;
    assert_eq!((payload(&p), p.retain), ("old".into(), true));

    let mut subscriber = V5::connect(address, "sub", None).await;
    let never = Filter {
        retain_forward_rule: RetainForwardRule::Never,
        ..filter("rh/#", QoS::AtLeastOnce)
    };
    subscriber.subscribe(vec![never], None).await;
    publisher
        .publish("rh/y", QoS::AtLeastOnce, false, "new")
        .await;
    assert_eq!(payload(&subscriber.publish_msg().await), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_s_subscription_identifier_comes_back_alone() {
    let broker = broker(Authorization::allow_all()).await;
    let address = broker.addresses[0];
    let mut subscriber = V5::connect(address, "sub", None).await;
    subscriber
        .subscribe(vec![filter("id/+", QoS::AtLeastOnce)], Some(7))
        .await;
    let mut plain = V5::connect(address, "plain", None).await;
    plain
        .subscribe(vec![filter("id/+", QoS::AtLeastOnce)], None)
        .await;
    let publisher = V5::connect(address, "pub", None).await;
    publisher
        .publish("id/a", QoS::AtLeastOnce, false, "x")
        .await;
    let props = subscriber.publish_msg().await.properties.unwrap();
    assert_eq!(props.subscription_identifiers, vec![7]);
    assert!(
        props.user_properties.is_empty(),
        "no marker left: {props:?}"
    );
    let props = plain.publish_msg().await.properties;
    assert!(
        props
            .as_ref()
            .is_none_or(|p| *p == PublishProperties::default()),
        "{props:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_filter_fails_in_its_place_while_the_others_are_granted() {
    let authorization = Authorization::new(
        vec![Rule {
            identity: RuleIdentity::Anyone,
            publish: Vec::new(),
            subscribe: Vec::new(),
            deny_publish: Vec::new(),
            deny_subscribe: vec!["test/nosubscribe".into()],
        }],
        DefaultDecision::Allow,
    );
    let broker = broker(authorization).await;
    let mut client = V5::connect(broker.addresses[0], "c", None).await;
    let codes = client
        .subscribe(
            vec![
                filter("#", QoS::AtLeastOnce),
                filter("test/nosubscribe", QoS::ExactlyOnce),
                filter("+/+", QoS::ExactlyOnce),
            ],
            None,
        )
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::NotAuthorized,
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
        ]
    );
    assert_eq!(
        broker
            .stats
            .authorization_denied
            .get(backhaul_broker::stats::Action::Subscribe),
        1
    );
}
