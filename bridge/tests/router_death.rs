//! A dead MQTT router ends the process with a failure status, so systemd
//! (`Restart=on-failure`) restarts it. The router is made to panic through
//! a hook of debug builds (`BACKHAUL_TEST_ROUTER_DIES_ON`).

use std::time::Duration;

use backhaul_chaos_tests::config::write_disk_appliance;
use backhaul_chaos_tests::process::Backhaul;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_exits_with_a_failure_when_its_router_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data, appliance) = write_disk_appliance(dir.path());
    let hook = [("BACKHAUL_TEST_ROUTER_DIES_ON", "test/kill-router")];
    let mut edge = Backhaul::start_with_env(&config, &data, appliance.metrics_port, &hook).unwrap();

    let options = MqttOptions::new("killer", "127.0.0.1", appliance.mqtt_port);
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .subscribe("test/kill-router", QoS::AtMostOnce)
        .await
        .unwrap();
    // The subscription goes out; the broker then closes the connection.
    let poll = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => panic!("the router acknowledged"),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the connection ends");

    let status = edge.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(1), "{}", edge.log_text());
    let log = edge.log_text();
    assert!(log.contains("the MQTT router thread has stopped"), "{log}");
    assert!(
        log.contains("given max_segment_size 0 bytes"),
        "the panic is logged: {log}"
    );
}
