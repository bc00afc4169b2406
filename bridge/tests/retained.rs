//! Retained messages survive restarts of the appliance in disk mode: a
//! graceful stop and kill -9 right after the PUBACK, with the same data
//! directory. rumqttc publishes and subscribes against the real binary.

use std::path::Path;
use std::time::Duration;

use backhaul_chaos_tests::config::{write_disk_appliance, TestAppliance};
use backhaul_chaos_tests::process::Backhaul;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

/// Polls until `want` says stop; fails on a connection error.
async fn until(events: &mut EventLoop, mut want: impl FnMut(&Packet) -> bool) {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) if want(&packet) => return,
                Ok(_) => {}
                Err(err) => panic!("connection failed: {err}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the broker answers in time");
}

async fn client(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let options = MqttOptions::new(id, "127.0.0.1", port);
    let (client, mut events) = AsyncClient::new(options, 10);
    until(&mut events, |p| matches!(p, Packet::ConnAck(_))).await;
    (client, events)
}

/// Publishes retained QoS 1 messages and returns once each got its PUBACK.
async fn retain(port: u16, messages: &[(&str, &str)]) {
    let (client, mut events) = client(port, "publisher").await;
    for (topic, payload) in messages {
        client
            .publish(*topic, QoS::AtLeastOnce, true, payload.to_string())
            .await
            .unwrap();
    }
    let mut acked = 0;
    until(&mut events, |p| {
        acked += usize::from(matches!(p, Packet::PubAck(_)));
        acked == messages.len()
    })
    .await;
}

/// What a new subscriber to `plant/#` gets before a live marker message:
/// (topic, payload, retain flag), in arrival order.
async fn retained_on_subscribe(port: u16) -> Vec<(String, String, bool)> {
    let (subscriber, mut events) = client(port, "subscriber").await;
    subscriber
        .subscribe("plant/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    until(&mut events, |p| matches!(p, Packet::SubAck(_))).await;
    let (marker, mut marker_events) = client(port, "marker").await;
    marker
        .publish("plant/marker", QoS::AtLeastOnce, false, "live")
        .await
        .unwrap();
    until(&mut marker_events, |p| matches!(p, Packet::PubAck(_))).await;
    let mut received = Vec::new();
    until(&mut events, |p| {
        let Packet::Publish(publish) = p else {
            return false;
        };
        if publish.topic == "plant/marker" {
            return true;
        }
        let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
        received.push((publish.topic.clone(), payload, publish.retain));
        false
    })
    .await;
    received.sort();
    received
}

fn retained(topic: &str, payload: &str) -> (String, String, bool) {
    (topic.to_string(), payload.to_string(), true)
}

fn start(config: &Path, data: &Path, appliance: &TestAppliance) -> Backhaul {
    Backhaul::start(config, data, appliance.metrics_port).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_and_their_deletion_survive_restarts_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data, appliance) = write_disk_appliance(dir.path());
    let port = appliance.mqtt_port;

    let edge = start(&config, &data, &appliance);
    retain(
        port,
        &[
            ("plant/line-1/state", "running"),
            ("plant/line-2/state", "stopped"),
        ],
    )
    .await;
    assert!(edge.stop().unwrap().success());

    let edge = start(&config, &data, &appliance);
    assert_eq!(
        retained_on_subscribe(port).await,
        [
            retained("plant/line-1/state", "running"),
            retained("plant/line-2/state", "stopped"),
        ],
        "after a graceful restart"
    );
    // An empty retained payload deletes; a new value replaces. Killed
    // right after the PUBACKs: both were on disk before them.
    retain(
        port,
        &[("plant/line-2/state", ""), ("plant/line-1/state", "paused")],
    )
    .await;
    edge.kill9().unwrap();

    let edge = start(&config, &data, &appliance);
    assert_eq!(
        retained_on_subscribe(port).await,
        [retained("plant/line-1/state", "paused")],
        "after kill -9: the deletion and the new value were kept"
    );
    // An empty payload without the retain flag deletes too, as rumqttd's
    // router does; the stored copy follows it.
    let (client, mut events) = client(port, "clearer").await;
    client
        .publish("plant/line-1/state", QoS::AtLeastOnce, false, "")
        .await
        .unwrap();
    until(&mut events, |p| matches!(p, Packet::PubAck(_))).await;
    assert!(edge.stop().unwrap().success());
    let _edge = start(&config, &data, &appliance);
    assert_eq!(retained_on_subscribe(port).await, []);
}
