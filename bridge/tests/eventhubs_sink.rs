//! The Event Hubs sink against the in-tree peer, over real AMQP with the
//! official SDK: what arrives (bodies, ids, properties, partitions) and,
//! for each fault the peer can play, that `send` fails within its time-out
//! with a classified error and that sending the same batch again once the
//! fault is gone delivers everything, in order, duplicates only with the
//! same message id.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use backhaul_bridge::endpoint::eventhubs::{
    EventHubsCredential, EventHubsEndpoint, EventHubsSink, PartitionStrategy, TOPIC_PROPERTY,
};
use backhaul_bridge::endpoint::{ErrorKind, OutboundMessage, SendError, Sink};
use backhaul_broker::StoredMessage;
use backhaul_chaos_tests::eventhubs_peer::{
    EventHubsPeer, PeerOptions, PropertyValue, ReceivedEvent,
};
use bytes::Bytes;

const HUB: &str = "telemetry";
/// The sink's time-out for each SDK call in these tests.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a failing `send` may take: a few SDK calls' time-outs.
const SEND_BOUND: Duration = Duration::from_secs(8);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

async fn peer() -> EventHubsPeer {
    EventHubsPeer::start_with(PeerOptions {
        hubs: Some(vec![HUB.to_string()]),
        ..Default::default()
    })
    .await
    .expect("peer starts")
}

fn settings(peer: &EventHubsPeer, strategy: PartitionStrategy) -> EventHubsEndpoint {
    let mut settings = EventHubsEndpoint::new(peer.namespace(), peer.connection_string(None));
    settings.custom_endpoint = Some(peer.endpoint());
    settings.partition_strategy = strategy;
    settings.operation_timeout = OP_TIMEOUT;
    settings
}

fn sink(peer: &EventHubsPeer, strategy: PartitionStrategy) -> EventHubsSink {
    EventHubsSink::new(settings(peer, strategy), "test-flow")
}

/// `n` messages, ids `app/flow/<from + i>`, on three topics and two devices.
/// The message's `device` user property, the partition key of the keyed tests.
fn device(m: &OutboundMessage) -> Option<String> {
    m.message
        .user_properties
        .iter()
        .find(|(k, _)| k == "device")
        .map(|(_, v)| v.clone())
}

fn messages(from: usize, n: usize) -> Vec<OutboundMessage> {
    (from..from + n)
        .map(|i| OutboundMessage {
            id: format!("app/flow/{i}"),
            destination: HUB.to_string(),
            message: StoredMessage {
                received_at_ms: 1_700_000_000_000 + i as u64,
                qos: 1,
                topic: format!("plant/line{}/temp", i % 3),
                payload: Bytes::from(format!("{{\"seq\":{i},\"t\":21.5}}")),
                content_type: Some("application/json".to_string()),
                user_properties: vec![("device".to_string(), format!("d{}", i % 2))],
                ..Default::default()
            },
        })
        .collect()
}

async fn send(sink: &mut EventHubsSink, batch: &[OutboundMessage]) -> Result<(), SendError> {
    tokio::time::timeout(SEND_BOUND, sink.send(batch))
        .await
        .expect("send returns within its bound")
}

/// A failing send: returns its error and how long it took.
async fn failing_send(
    sink: &mut EventHubsSink,
    batch: &[OutboundMessage],
) -> (SendError, Duration) {
    let started = Instant::now();
    let err = send(sink, batch).await.expect_err("the send must fail");
    (err, started.elapsed())
}

/// Waits until no transfer has reached `peer` for 300 ms (at most 5 s):
/// after a failed send, transfers of the batches it stopped may still be
/// on their way; lifting a rejection before they arrive would let the peer
/// store one the sink counts as failed, and the retry would store it again
/// (the at-least-once duplicate, which these tests count exactly).
async fn until_transfers_settle(peer: &EventHubsPeer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = peer.stats().transfers;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = peer.stats().transfers;
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Sends again until it succeeds (as the flow would, with a short back-off).
async fn send_until_delivered(sink: &mut EventHubsSink, batch: &[OutboundMessage]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failures = 0;
    loop {
        match send(sink, batch).await {
            Ok(()) => return failures,
            Err(err) => {
                failures += 1;
                assert!(Instant::now() < deadline, "still failing: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Every message of `batch` arrived, first arrivals in batch order, nothing
/// foreign, and every duplicate has the same id and body as the original.
fn assert_delivered_in_order(events: &[ReceivedEvent], batch: &[OutboundMessage]) {
    let expected: Vec<&str> = batch.iter().map(|m| m.id.as_str()).collect();
    let mut seen = HashSet::new();
    let mut first_arrivals = Vec::new();
    for event in events {
        let id = event
            .message_id
            .as_deref()
            .expect("every event has a message id");
        let original = batch
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("unexpected event {id}"));
        assert_eq!(
            event.body,
            original.message.payload.to_vec(),
            "body of {id}"
        );
        if seen.insert(id.to_string()) {
            first_arrivals.push(id);
        }
    }
    assert_eq!(first_arrivals, expected, "first arrivals in batch order");
}

/// Every message of `batch` arrived, duplicates with the same id and body,
/// and for each placement (partition key, or none) the first arrivals in
/// batch order: batches of different keys may be in flight at once.
fn assert_delivered_in_order_per_key(
    events: &[ReceivedEvent],
    batch: &[OutboundMessage],
    key_of: impl Fn(&OutboundMessage) -> Option<String>,
) {
    let mut keys: Vec<Option<String>> = batch.iter().map(&key_of).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let of_key: Vec<OutboundMessage> =
            batch.iter().filter(|m| key_of(m) == key).cloned().collect();
        let arrived: Vec<ReceivedEvent> = events
            .iter()
            .filter(|e| of_key.iter().any(|m| Some(&m.id) == e.message_id.as_ref()))
            .cloned()
            .collect();
        assert!(
            arrived.iter().all(|e| e.partition_key == key),
            "{key:?}: every event carries its key"
        );
        assert_delivered_in_order(&arrived, &of_key);
    }
    let all: HashSet<&str> = events
        .iter()
        .filter_map(|e| e.message_id.as_deref())
        .collect();
    assert_eq!(all.len(), batch.len(), "nothing lost, nothing foreign");
}

fn ids(events: &[ReceivedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.message_id.clone().unwrap_or_default())
        .collect()
}

// ---- contents -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_ids_bodies_and_mqtt_properties() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    let mut batch = messages(0, 5);
    let full = &mut batch[0].message;
    full.payload_format_indicator = Some(1);
    full.response_topic = Some("plant/replies".to_string());
    full.message_expiry_interval = Some(60);
    full.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
    full.user_properties
        .push(("unit".to_string(), "C".to_string()));
    send(&mut sink, &batch).await.expect("delivered");

    let events = peer
        .wait_for_events(5, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 5);
    assert_delivered_in_order(&events, &batch);
    assert_eq!(peer.stats().transfers, 1, "one SDK batch");
    let first = &events[0];
    assert_eq!(first.hub, HUB);
    assert!(first.batched);
    assert_eq!(
        (
            first.partition_id.as_deref(),
            first.partition_key.as_deref()
        ),
        (None, None)
    );
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    let text = |name: &str| {
        first
            .property(name)
            .and_then(PropertyValue::as_str)
            .map(str::to_string)
    };
    assert_eq!(text(TOPIC_PROPERTY).as_deref(), Some("plant/line0/temp"));
    assert_eq!(text("device").as_deref(), Some("d0"));
    assert_eq!(text("unit").as_deref(), Some("C"));
    assert_eq!(text("Response Topic").as_deref(), Some("plant/replies"));
    assert_eq!(text("Message Expiry Interval").as_deref(), Some("60"));
    assert_eq!(text("Payload Format Indicator").as_deref(), Some("1"));
    assert_eq!(
        first.property("Correlation Data"),
        Some(&PropertyValue::Binary(vec![1, 2]))
    );

    // Without copying, only the body and the id go.
    let mut plain = settings(&peer, PartitionStrategy::Default);
    plain.copy_mqtt_properties = false;
    let mut plain = EventHubsSink::new(plain, "plain");
    let batch = messages(100, 1);
    send(&mut plain, &batch).await.expect("delivered");
    let events = peer
        .wait_for_events(6, Duration::from_secs(5))
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.message_id.as_deref(), Some("app/flow/100"));
    assert!(last.properties.is_empty());
    assert_eq!(last.content_type, None);
    sink.close().await;
    plain.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_strategies_place_events_and_keep_order() {
    init_tracing();
    let peer = peer().await;
    let batch = messages(0, 12);

    let mut by_topic = sink(&peer, PartitionStrategy::Topic);
    send(&mut by_topic, &batch).await.expect("delivered");
    let events = peer
        .wait_for_events(12, Duration::from_secs(5))
        .await
        .unwrap();
    assert_delivered_in_order_per_key(&events, &batch, |m| Some(m.message.topic.clone()));
    assert!(events.iter().all(|e| e.partition_id.is_none()));
    // The topic changes with every message: one SDK batch each.
    assert_eq!(peer.stats().transfers, 12);
    peer.clear_events();

    let mut by_property = sink(&peer, PartitionStrategy::Property("device".to_string()));
    let mut keyed = messages(100, 6);
    // Consecutive messages with the same key share an SDK batch; a message
    // without the property goes unkeyed.
    for m in &mut keyed[..3] {
        m.message.user_properties = vec![("device".to_string(), "pump".to_string())];
    }
    keyed[5].message.user_properties.clear();
    send(&mut by_property, &keyed).await.expect("delivered");
    let events = peer
        .wait_for_events(6, Duration::from_secs(5))
        .await
        .unwrap();
    assert_delivered_in_order_per_key(&events, &keyed, device);
    let key_of = |id: &str| {
        let event = events.iter().find(|e| e.message_id.as_deref() == Some(id));
        event.and_then(|e| e.partition_key.clone())
    };
    let some = |s: &str| Some(s.to_string());
    let keys: Vec<_> = keyed.iter().map(|m| key_of(&m.id)).collect();
    assert_eq!(
        keys,
        [
            some("pump"),
            some("pump"),
            some("pump"),
            some("d1"),
            some("d0"),
            None
        ]
    );
    let transfer_of = |id: &str| {
        events
            .iter()
            .find(|e| e.message_id.as_deref() == Some(id))
            .map(|e| e.transfer)
    };
    assert_eq!(
        transfer_of(&keyed[0].id),
        transfer_of(&keyed[2].id),
        "same key, same SDK batch"
    );
    peer.clear_events();

    let mut pinned = sink(&peer, PartitionStrategy::Static("2".to_string()));
    let batch = messages(200, 7);
    send(&mut pinned, &batch).await.expect("delivered");
    let events = peer
        .wait_for_events(7, Duration::from_secs(5))
        .await
        .unwrap();
    assert_delivered_in_order(&events, &batch);
    assert!(events
        .iter()
        .all(|e| e.partition_id.as_deref() == Some("2")));
    assert!(
        events.iter().all(|e| e.transfer == events[0].transfer),
        "one SDK batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_by_count_and_size_in_order() {
    init_tracing();
    let peer = peer().await;
    let mut settings = settings(&peer, PartitionStrategy::Default);
    settings.batch_max_messages = 4;
    // One batch at a time: arrival order shows how the window was cut.
    settings.max_in_flight_batches = 1;
    let mut sink = EventHubsSink::new(settings.clone(), "count");
    let batch = messages(0, 10);
    send(&mut sink, &batch).await.expect("delivered");
    let events = peer
        .wait_for_events(10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_delivered_in_order(&events, &batch);
    let sizes: Vec<usize> = {
        let mut sizes = Vec::new();
        for e in &events {
            match sizes.last_mut() {
                Some((t, n)) if *t == e.transfer => *n += 1,
                _ => sizes.push((e.transfer, 1)),
            }
        }
        sizes.into_iter().map(|(_, n)| n).collect()
    };
    assert_eq!(sizes, [4, 4, 2]);
    peer.clear_events();

    // By size: 1 KiB bodies, 3 KiB batches.
    settings.batch_max_messages = 1000;
    settings.batch_max_bytes = Some(3 * 1024);
    let mut sink = EventHubsSink::new(settings.clone(), "size");
    let mut big = messages(100, 9);
    for m in &mut big {
        m.message.payload = Bytes::from(vec![b'x'; 1024]);
    }
    send(&mut sink, &big).await.expect("delivered");
    let events = peer
        .wait_for_events(9, Duration::from_secs(5))
        .await
        .unwrap();
    assert_delivered_in_order(&events, &big);
    let transfers: HashSet<u64> = events.iter().map(|e| e.transfer).collect();
    assert!(
        transfers.len() >= 3,
        "split by size: {} transfers",
        transfers.len()
    );

    // More than the link allows: the link's limit is used instead.
    settings.batch_max_bytes = Some(64 * 1024 * 1024);
    let mut sink = EventHubsSink::new(settings, "over");
    let batch = messages(200, 3);
    send(&mut sink, &batch)
        .await
        .expect("delivered with the link's limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_an_empty_batch_is_reported_after_the_ones_before_it() {
    init_tracing();
    let peer = EventHubsPeer::start_with(PeerOptions {
        max_message_size: 16 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sink = sink(&peer, PartitionStrategy::Default);
    let mut batch = messages(0, 4);
    batch[2].message.payload = Bytes::from(vec![b'x'; 32 * 1024]);
    let err = send(&mut sink, &batch).await.expect_err("too large");
    assert_eq!(err.too_large_index(), Some(2), "{err}");
    assert_eq!(err.kind, ErrorKind::Fatal);
    assert!(err.message.contains("app/flow/2"), "{err}");
    let events = peer
        .wait_for_events(2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ids(&events), ["app/flow/0", "app/flow/1"]);

    // The flow dead-letters it and sends the rest.
    send(&mut sink, &batch[3..])
        .await
        .expect("the rest is delivered");
    let events = peer
        .wait_for_events(3, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ids(&events), ["app/flow/0", "app/flow/1", "app/flow/3"]);
    assert_eq!(SendError::transient("x").too_large_index(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_goes_to_its_destination_hub_in_order() {
    init_tracing();
    let peer = EventHubsPeer::start().await.unwrap();
    let mut settings = settings(&peer, PartitionStrategy::Default);
    settings.max_in_flight_batches = 1;
    let mut sink = EventHubsSink::new(settings, "hubs");
    let mut batch = messages(0, 9);
    for (i, m) in batch.iter_mut().enumerate() {
        m.destination = if i % 3 == 2 { "alarms" } else { HUB }.to_string();
    }
    send(&mut sink, &batch).await.expect("delivered");
    let events = peer
        .wait_for_events(9, Duration::from_secs(5))
        .await
        .unwrap();
    assert_delivered_in_order(&events, &batch);
    for (event, message) in events.iter().zip(&batch) {
        assert_eq!(event.hub, message.destination, "{:?}", event.message_id);
    }
    // One client (connection) per hub and batch in flight, kept for the
    // next send.
    send(&mut sink, &messages(100, 2)).await.expect("delivered");
    assert_eq!(peer.stats().connections, 2);
}

// ---- faults ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_transient_and_the_batch_goes_later() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    peer.refuse_connections(true);
    let batch = messages(0, 20);
    let (err, took) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(took < OP_TIMEOUT, "a refusal fails fast: {took:?}");

    // Refused again after an established connection is cut.
    peer.refuse_connections(false);
    send(&mut sink, &messages(1000, 1)).await.expect("warm-up");
    peer.refuse_connections(true);
    peer.drop_connections();
    let (err, _) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");

    peer.refuse_connections(false);
    send_until_delivered(&mut sink, &batch).await;
    let events: Vec<_> = peer.events().into_iter().filter(|e| e.seq > 0).collect();
    assert_delivered_in_order(&events, &batch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_times_out_and_the_batch_goes_after() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    send(&mut sink, &messages(1000, 1)).await.expect("warm-up");
    peer.clear_events();

    // The open connection freezes.
    peer.stay_silent(true);
    let batch = messages(0, 20);
    let (err, took) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(took >= OP_TIMEOUT && took < OP_TIMEOUT * 3, "{took:?}");
    // A new connection gets no answer either.
    let (err, took) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(took < OP_TIMEOUT * 3, "{took:?}");

    peer.stay_silent(false);
    send_until_delivered(&mut sink, &batch).await;
    assert_delivered_in_order(&peer.events(), &batch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_busy_is_throttling_and_the_batch_goes_after() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Topic);
    peer.reject_transfers(Some("com.microsoft:server-busy"));
    let batch = messages(0, 20);
    let (err, took) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Throttled, "{err}");
    assert!(took < SEND_BOUND, "{took:?}");
    peer.reject_transfers(Some("amqp:resource-limit-exceeded"));
    let (err, _) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Throttled, "{err}");

    until_transfers_settle(&peer).await;
    peer.reject_transfers(None);
    send_until_delivered(&mut sink, &batch).await;
    assert_delivered_in_order_per_key(&peer.events(), &batch, |m| Some(m.message.topic.clone()));
    assert_eq!(peer.events().len(), 20, "rejected batches are not stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_and_missing_hubs_are_fatal() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    let batch = messages(0, 3);

    peer.reject_transfers(Some("amqp:unauthorized-access"));
    let (err, took) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert!(took < OP_TIMEOUT, "not retried: {took:?}");
    peer.reject_transfers(None);

    peer.reject_tokens(true);
    let (err, _) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    peer.reject_tokens(false);

    let mut elsewhere = batch.clone();
    for m in &mut elsewhere {
        m.destination = "no-such-hub".to_string();
    }
    let (err, _) = failing_send(&mut sink, &elsewhere).await;
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");

    let mut bad_partition = EventHubsSink::new(
        settings(&peer, PartitionStrategy::Static("9".to_string())),
        "bad-partition",
    );
    let (err, _) = failing_send(&mut bad_partition, &batch).await;
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");

    let mut bad_secret = settings(&peer, PartitionStrategy::Default);
    bad_secret.credential =
        EventHubsCredential::ConnectionString("SharedAccessKey=only-half-of-it".to_string());
    bad_secret.namespace = String::new();
    let (err, took) = failing_send(&mut EventHubsSink::new(bad_secret, "bad"), &batch).await;
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert!(
        !err.message.contains("only-half-of-it"),
        "the secret is not quoted"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Nothing was lost on the way: the batch still goes once allowed.
    send_until_delivered(&mut sink, &batch).await;
    assert_delivered_in_order(&peer.events(), &batch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_times_out_and_the_batch_goes_on_a_new_connection() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    send(&mut sink, &messages(1000, 1)).await.expect("warm-up");
    peer.clear_events();

    peer.blackhole(true);
    let batch = messages(0, 20);
    let (err, took) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(took >= OP_TIMEOUT && took < OP_TIMEOUT * 3, "{took:?}");
    assert!(peer.stats().blackholed >= 1);

    peer.blackhole(false);
    let connections = peer.stats().connections;
    send_until_delivered(&mut sink, &batch).await;
    assert!(peer.stats().connections > connections, "a new connection");
    assert_delivered_in_order(&peer.events(), &batch);
    assert_eq!(peer.events().len(), 20);

    // The abandoned client is closed, not leaked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer.open_connections() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer.open_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_drops_between_and_during_sends_lose_nothing() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    let first = messages(0, 10);
    send(&mut sink, &first).await.expect("before the drop");

    // Between sends: the next send fails at most once, then goes.
    peer.drop_connections();
    let second = messages(10, 10);
    let failures = send_until_delivered(&mut sink, &second).await;
    assert!(failures <= 1, "{failures} failures");

    // During a send: the transfer arrives, the connection is cut before it
    // is settled, the sender cannot know.
    peer.drop_on_transfer(true);
    let third = messages(20, 10);
    let (err, took) = failing_send(&mut sink, &third).await;
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(took < OP_TIMEOUT * 3, "{took:?}");
    peer.drop_on_transfer(false);
    send_until_delivered(&mut sink, &third).await;

    let all: Vec<_> = first.iter().chain(&second).chain(&third).cloned().collect();
    let events = peer.events();
    assert_delivered_in_order(&events, &all);
    let received = ids(&events);
    let duplicated: HashSet<_> = received
        .iter()
        .filter(|id| received.iter().filter(|other| other == id).count() > 1)
        .collect();
    assert!(
        duplicated
            .iter()
            .all(|id| third.iter().any(|m| &&m.id == id)),
        "only the batch in flight at the cut is duplicated: {duplicated:?}"
    );
    assert!(!duplicated.is_empty(), "the cut batch arrived twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_settlement_past_the_timeout_is_transient_and_duplicates_keep_their_ids() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    send(&mut sink, &messages(1000, 1)).await.expect("warm-up");
    peer.clear_events();

    // Slower than the time-out: the send gives up, the peer stores later.
    peer.settle_slowly(Some(OP_TIMEOUT + Duration::from_millis(500)));
    let batch = messages(0, 20);
    let (err, took) = failing_send(&mut sink, &batch).await;
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(took < OP_TIMEOUT * 3, "{took:?}");

    // Slow but within the time-out: delivered.
    peer.settle_slowly(Some(OP_TIMEOUT / 4));
    let started = Instant::now();
    send_until_delivered(&mut sink, &batch).await;
    assert!(started.elapsed() >= OP_TIMEOUT / 4);
    peer.settle_slowly(None);
    tokio::time::sleep(OP_TIMEOUT).await;

    let events = peer.events();
    assert_delivered_in_order(&events, &batch);
    assert!(events.len() <= 40, "at most the one batch twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_confirmed_in_part_resumes_where_it_stopped() {
    init_tracing();
    let peer = peer().await;
    let mut settings = settings(&peer, PartitionStrategy::Default);
    settings.batch_max_messages = 5;
    // One batch at a time: the rejection stops exactly the third.
    settings.max_in_flight_batches = 1;
    let mut sink = EventHubsSink::new(settings, "resume");
    let batch = messages(0, 20);
    // Reject from the third SDK batch on: two were accepted.
    let mut feed = peer.subscribe();
    let task = {
        let batch = batch.clone();
        tokio::spawn(async move {
            let result = sink.send(&batch).await;
            (sink, result)
        })
    };
    for _ in 0..10 {
        feed.recv().await.unwrap();
    }
    peer.reject_transfers(Some("com.microsoft:server-busy"));
    let (mut sink, result) = tokio::time::timeout(SEND_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    let delivered = peer.events().len();
    if result.is_err() {
        until_transfers_settle(&peer).await;
        peer.reject_transfers(None);
        send_until_delivered(&mut sink, &batch).await;
        let events = peer.events();
        assert_delivered_in_order(&events, &batch);
        assert_eq!(
            events.len(),
            20,
            "nothing confirmed was sent again ({delivered} before)"
        );
    } else {
        // The whole batch went before the switch: nothing to resume.
        peer.reject_transfers(None);
        assert_delivered_in_order(&peer.events(), &batch);
    }
}

/// The sink's operation time-out in the outage tests: far longer than any
/// of their sends may take, so a send that waits on a dead connection for
/// the time-out trips `SEND_BOUND` instead of passing slowly.
const OUTAGE_OP_TIMEOUT: Duration = Duration::from_secs(120);
/// Outages per test: a send stuck on a dead connection was a race (1 in 3
/// benchmark runs), so one outage proves little.
const OUTAGES: usize = 8;

/// A connection the destination closed while the sink was idle (a restart
/// between batches, or the service dropping an idle connection) is
/// replaced before the next batch: that batch goes at the first try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_idle_is_replaced_before_the_next_batch() {
    init_tracing();
    let peer = peer().await;
    let mut sink = sink(&peer, PartitionStrategy::Default);
    let first = messages(0, 10);
    send(&mut sink, &first).await.expect("before the cut");
    let connections = peer.stats().connections;
    peer.drop_connections();
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let second = messages(10, 10);
    send(&mut sink, &second)
        .await
        .expect("the first try goes, on a new connection");
    assert!(peer.stats().connections > connections, "a new connection");
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_delivered_in_order(&peer.events(), &all);
    assert_eq!(peer.events().len(), 20, "each once");
}

/// A sink that sends SDK batches of 25, keyed by the `device` property,
/// with an operation time-out of [`OUTAGE_OP_TIMEOUT`].
fn outage_sink(peer: &EventHubsPeer, name: &str) -> EventHubsSink {
    let mut settings = settings(peer, PartitionStrategy::Property("device".to_string()));
    settings.operation_timeout = OUTAGE_OP_TIMEOUT;
    settings.batch_max_messages = 25;
    EventHubsSink::new(settings, name)
}

/// [`messages`] in runs of 25 of one device (`d0`, `d1`, ...): batches of
/// two keys, so both lanes are in use, and each key keeps its order.
fn device_runs(from: usize, n: usize) -> Vec<OutboundMessage> {
    let mut runs = messages(from, n);
    for (i, m) in runs.iter_mut().enumerate() {
        m.message.user_properties = vec![("device".to_string(), format!("d{}", (i / 25) % 2))];
    }
    runs
}

/// What the flow does while the destination goes away under it: one
/// window, which must fail, and fail well within `SEND_BOUND`.
async fn send_while_down(sink: &mut EventHubsSink, backlog: &[OutboundMessage], outage: usize) {
    let tried = tokio::time::timeout(SEND_BOUND, sink.send_window(backlog, 50))
        .await
        .unwrap_or_else(|_| panic!("outage {outage}: a send waited on a dead connection"));
    let err = tried.expect_err("the destination is down");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

/// The benchmark's outage, several times over, at its worst moment: the
/// destination cuts the connections while batches are on them unsettled
/// (it stored them; the sender cannot know) and refuses new ones, then
/// returns. The fe2o3 stack never completes such a send; the sink must
/// notice the closed connection instead of waiting for the operation
/// time-out (two minutes here; each call is bounded by `SEND_BOUND`). Every
/// message arrives, in order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_backlog_goes_without_waiting_for_the_time_out() {
    init_tracing();
    let peer = peer().await;
    let mut sink = outage_sink(&peer, "outage");
    let mut sent = Vec::new();
    for outage in 0..OUTAGES {
        let before = device_runs(outage * 1000, 100);
        send_as_a_flow(&mut sink, &before, 50, |err| panic!("before: {err}")).await;
        peer.refuse_connections(true);
        peer.drop_on_transfer(true);
        let backlog = device_runs(outage * 1000 + 100, 200);
        send_while_down(&mut sink, &backlog, outage).await;
        peer.drop_on_transfer(false);
        peer.refuse_connections(false);
        send_as_a_flow(&mut sink, &backlog, 50, |err| {
            assert_eq!(err.kind, ErrorKind::Transient, "{err}")
        })
        .await;
        sent.extend(before);
        sent.extend(backlog);
    }
    assert!(peer.stats().dropped >= OUTAGES as u64);
    assert_delivered_in_order_per_key(&peer.events(), &sent, device);
}

/// The same with the destination stopped (listener and connections gone)
/// while batches wait for its settlement, and a new one started on the same
/// port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_destination_gets_the_backlog_without_waiting_for_the_time_out() {
    init_tracing();
    let mut peer = peer().await;
    let port = peer.port();
    let mut sink = outage_sink(&peer, "restart");
    let (mut sent, mut arrived) = (Vec::new(), Vec::new());
    for outage in 0..OUTAGES {
        let before = device_runs(outage * 1000, 100);
        send_as_a_flow(&mut sink, &before, 50, |err| panic!("before: {err}")).await;
        peer.settle_slowly(Some(OUTAGE_OP_TIMEOUT));
        let backlog = device_runs(outage * 1000 + 100, 200);
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            arrived.extend(peer.events());
            drop(peer);
        };
        tokio::join!(send_while_down(&mut sink, &backlog, outage), stopping);
        peer = EventHubsPeer::start_with(PeerOptions {
            port,
            hubs: Some(vec![HUB.to_string()]),
            ..Default::default()
        })
        .await
        .expect("the peer starts again on its port");
        send_as_a_flow(&mut sink, &backlog, 50, |err| {
            assert_eq!(err.kind, ErrorKind::Transient, "{err}")
        })
        .await;
        sent.extend(before);
        sent.extend(backlog);
    }
    arrived.extend(peer.events());
    assert_delivered_in_order_per_key(&arrived, &sent, device);
}

// ---- batches in flight ------------------------------------------------------

/// Sends `messages` as a data flow does: a window of up to two flow batches
/// of `step`, asking each call for the front batch, dropping what was
/// confirmed and topping the window up; after an error the same window
/// again, 100 ms later. `on_error` sees each error. Returns the number of
/// failed calls.
async fn send_as_a_flow(
    sink: &mut EventHubsSink,
    messages: &[OutboundMessage],
    step: usize,
    mut on_error: impl FnMut(&SendError),
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut window: Vec<OutboundMessage> = Vec::new();
    let mut next = 0;
    let mut failures = 0;
    loop {
        let fill = (2 * step).saturating_sub(window.len());
        let more = &messages[next..(next + fill).min(messages.len())];
        window.extend_from_slice(more);
        next += more.len();
        if window.is_empty() {
            return failures;
        }
        let want = step.min(window.len());
        let result = tokio::time::timeout(SEND_BOUND, sink.send_window(&window, want))
            .await
            .expect("send_window returns within its bound");
        match result {
            Ok(confirmed) => {
                assert!(
                    confirmed >= want && confirmed <= window.len(),
                    "{confirmed}"
                );
                window.drain(..confirmed);
            }
            Err(err) => {
                failures += 1;
                on_error(&err);
                assert!(Instant::now() < deadline, "still failing: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A sink with SDK batches of 10 (`in_flight` batches on their way) sends
/// a window of 30 while the peer takes 300 ms to settle
/// each batch, long enough for later batches to leave before the first is
/// confirmed. Returns the sink, the window and how many the call confirmed.
async fn first_of_slow_batches(
    peer: &EventHubsPeer,
    in_flight: usize,
    name: &str,
) -> (EventHubsSink, Vec<OutboundMessage>, usize) {
    let mut settings = settings(peer, PartitionStrategy::Default);
    settings.batch_max_messages = 10;
    settings.max_in_flight_batches = in_flight;
    let mut sink = EventHubsSink::new(settings, name);
    let window = messages(0, 30);
    peer.settle_slowly(Some(Duration::from_millis(300)));
    let confirmed = tokio::time::timeout(SEND_BOUND, sink.send_window(&window, 10))
        .await
        .unwrap()
        .expect("the first batch is confirmed");
    (sink, window, confirmed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_keeps_two_batches_in_flight_on_two_connections() {
    init_tracing();
    let peer = peer().await;
    let (mut sink, window, confirmed) = first_of_slow_batches(&peer, 2, "in-flight").await;
    assert!((10..=20).contains(&confirmed), "{confirmed}");
    assert!(
        peer.stats().transfers >= 2,
        "the second batch left before the first was confirmed"
    );
    peer.settle_slowly(None);
    let rest = &window[confirmed..];
    let confirmed = tokio::time::timeout(SEND_BOUND, sink.send_window(rest, rest.len()))
        .await
        .unwrap()
        .expect("the rest is confirmed");
    assert_eq!(confirmed, rest.len());

    let events = peer.events();
    assert_eq!(events.len(), 30, "each once");
    assert_eq!(ids(&events).into_iter().collect::<HashSet<_>>().len(), 30);
    assert_eq!(peer.stats().connections, 2, "one connection per lane");
    assert_eq!(peer.stats().transfers, 3);
}

/// Runs of two messages keyed `d0`, `d1`, `d1`, none, `d2`, none, `d0`,
/// `d2` (over and over), SDK batches of two, three batches in flight: runs
/// of different keys (and unkeyed ones) go at once, the second `d1` run
/// waits for the first. Meanwhile connections are cut at random moments
/// (a transfer stored, then its connection cut unsettled), so batches fail
/// next to accepted batches of other keys. Nothing is lost, and per key
/// the first arrivals keep the flow's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_keep_the_order_of_each_key_through_cuts() {
    init_tracing();
    let peer = std::sync::Arc::new(peer().await);
    let mut settings = settings(&peer, PartitionStrategy::Property("device".to_string()));
    settings.batch_max_messages = 2;
    settings.max_in_flight_batches = 3;
    let mut sink = EventHubsSink::new(settings, "keyed");
    const KEYS: [&str; 8] = ["d0", "d1", "d1", "-", "d2", "-", "d0", "d2"];
    let mut batch = messages(0, 800);
    for (i, m) in batch.iter_mut().enumerate() {
        m.message.user_properties = match KEYS[(i / 2) % KEYS.len()] {
            "-" => Vec::new(),
            key => vec![("device".to_string(), key.to_string())],
        };
    }

    // Cuts on and off every 20-50 ms for 2 s.
    let cutter = {
        let peer = peer.clone();
        tokio::spawn(async move {
            for round in 0..60u64 {
                peer.drop_on_transfer(round % 2 == 0);
                tokio::time::sleep(Duration::from_millis(20 + (round * 7) % 31)).await;
            }
            peer.drop_on_transfer(false);
        })
    };
    let failures = send_as_a_flow(&mut sink, &batch, 20, |err| {
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    })
    .await;
    cutter.await.unwrap();
    assert!(failures >= 1, "the cuts were seen");
    assert!(peer.stats().dropped >= 1);

    let events = peer.events();
    assert_delivered_in_order_per_key(&events, &batch, device);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_batches_in_flight_closes_every_connection() {
    init_tracing();
    let peer = peer().await;
    let (mut sink, _, confirmed) = first_of_slow_batches(&peer, 3, "closing").await;
    assert!(confirmed < 30, "batches are still in flight: {confirmed}");
    assert_eq!(peer.open_connections(), 3);
    sink.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peer.open_connections(), 0, "no connection left open");
}
