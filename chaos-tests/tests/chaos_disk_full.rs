//! Chaos scenario 6, disk full: Backhaul's data volume is a small tmpfs
//! (`BACKHAUL_CHAOS_TMPFS`, 24m) and `minFreeBytes: 0`, so the filesystem
//! itself fills. With the uplink cut, an MQTT 5 device publishes numbered
//! messages (4 KiB each) until Backhaul answers PUBACK 0x97 *Quota
//! exceeded*. Backhaul must keep running, keep what it stored, refuse
//! every further publish the same way, and — once the uplink returns and
//! the backlog drains, freeing its segments — accept publishes again by
//! itself. Every message PUBACKed with success arrives once, in order.

use std::time::{Duration, Instant};

use backhaul_chaos_tests::chaos::appliance::APPLIANCE_UID;
use backhaul_chaos_tests::chaos::backlog::BacklogProbe;
use backhaul_chaos_tests::chaos::mqtt_rig::{unique, MqttRig, RigOptions, DEVICE_TOPIC, FLOW};
use backhaul_chaos_tests::chaos::params;
use backhaul_chaos_tests::chaos::scenario::{judge_received, wait_drained, Findings};
use backhaul_chaos_tests::docker::{self, TmpfsVolume};
use backhaul_chaos_tests::mqtt::publish_v5;
use backhaul_chaos_tests::process::http_get;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, EventLoop, MqttOptions};
use testcontainers::clients::Cli;

/// A numbered payload padded with leading zeros to `PAYLOAD_BYTES`: it
/// still parses as its number.
const PAYLOAD_BYTES: usize = 4096;

fn payload(n: u64) -> String {
    format!("{n:0>PAYLOAD_BYTES$}")
}

async fn device(port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new("device-v5", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(64 * 1024));
    AsyncClient::new(options, 10)
}

async fn publish(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    n: u64,
) -> Result<PubAckReason, String> {
    publish_v5(
        client,
        eventloop,
        DEVICE_TOPIC,
        &payload(n),
        PublishProperties::default(),
    )
    .await
}

fn still_running(container: &str) -> String {
    docker::docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.RestartCount}} {{.State.OOMKilled}}",
        container,
    ])
    .unwrap_or_default()
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_keeps_its_data_and_recovers_by_itself() {
    let started = Instant::now();
    let size = std::env::var("BACKHAUL_CHAOS_TMPFS").unwrap_or_else(|_| "24m".to_string());
    let after = params::env_u64("BACKHAUL_CHAOS_AFTER_FULL", 500);
    let volume = TmpfsVolume::create(
        &format!("{}-data", unique("disk-full")),
        &size,
        APPLIANCE_UID,
    )
    .expect("tmpfs volume");
    let cli = Cli::default();
    let options = RigOptions {
        storage_extra: ", minFreeBytes: 0".to_string(),
        data_volume: Some(volume.name.clone()),
        start_cut: true,
        ..RigOptions::default()
    };
    let rig = MqttRig::start(&cli, "disk-full", options).expect("rig");
    let backhaul = &rig.backhaul;
    let collector = rig.counting_subscriber().await.expect("subscriber");
    let probe = BacklogProbe::start(backhaul.metrics_port, FLOW);

    // Fill the disk with the uplink down.
    let (client, mut eventloop) = device(backhaul.mqtt_port).await;
    let mut acked = Vec::new();
    let mut n = 0u64;
    let first_refused = loop {
        match publish(&client, &mut eventloop, n).await.expect("publish") {
            PubAckReason::Success => acked.push(n),
            PubAckReason::QuotaExceeded => break n,
            other => panic!("publish {n}: PUBACK {other:?}"),
        }
        n += 1;
        assert!(
            n < 1_000_000,
            "a {size} tmpfs never filled:\n{}",
            backhaul.log_tail()
        );
    };
    // Full stays full: the next publishes are refused the same way.
    for k in 1..=20 {
        assert_eq!(
            publish(&client, &mut eventloop, first_refused + k)
                .await
                .expect("publish"),
            PubAckReason::QuotaExceeded,
            "publish {} on a full disk",
            first_refused + k
        );
    }
    assert_eq!(
        still_running(&backhaul.name),
        "true 0 false",
        "Backhaul kept running on a full disk:\n{}",
        backhaul.log_tail()
    );
    assert_eq!(
        http_get(backhaul.metrics_port, "/healthz")
            .expect("healthz")
            .0,
        200
    );
    let refused = backhaul
        .metric("backhaul_broker_publishes_refused_total")
        .expect("refused counter");
    assert_eq!(refused, 21.0, "every refused publish counted");
    let queued = backhaul
        .metric(&format!("backhaul_queue_messages{{flow=\"{FLOW}\"}}"))
        .expect("queue gauge");
    assert_eq!(
        queued,
        acked.len() as f64,
        "what was PUBACKed is queued, nothing more"
    );
    let peak = probe.peak();
    eprintln!(
        "disk full ({size}) after {} PUBACKed publishes of {PAYLOAD_BYTES} bytes",
        acked.len()
    );

    // The uplink returns; the backlog drains and frees its segments; new
    // publishes are accepted again without anyone touching Backhaul.
    rig.restore().expect("reconnect the remote");
    let mut next = first_refused + 21;
    let deadline = Instant::now() + params::drain_deadline();
    loop {
        match publish(&client, &mut eventloop, next)
            .await
            .expect("publish")
        {
            PubAckReason::Success => {
                acked.push(next);
                next += 1;
                break;
            }
            PubAckReason::QuotaExceeded => {
                assert!(
                    Instant::now() < deadline,
                    "publishes still refused after the backlog could drain:\n{}",
                    backhaul.log_tail()
                );
                next += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("publish {next}: PUBACK {other:?}"),
        }
    }
    for _ in 0..after {
        assert_eq!(
            publish(&client, &mut eventloop, next)
                .await
                .expect("publish"),
            PubAckReason::Success,
            "publish {next} after space returned"
        );
        acked.push(next);
        next += 1;
    }

    let accounting = wait_drained(backhaul, FLOW, acked.len(), || collector.len())
        .await
        .expect("drained");
    drop(probe);
    let received = collector.received();
    let findings = Findings {
        scenario: "disk full",
        acked: acked.len(),
        verdict: judge_received(&acked, &received, &rig.id_prefix()),
        accounting,
        peak_backlog: peak,
        elapsed: started.elapsed(),
    };
    // The refused publishes never entered the queue; nothing was in flight
    // while the disk was full (the uplink was down), and the remote stayed up.
    findings.assert_contract(0);
    assert_eq!(
        findings.verdict.distinct,
        acked.len(),
        "exactly the PUBACKed messages arrived, none of the refused ones"
    );
    assert_eq!(
        still_running(&backhaul.name),
        "true 0 false",
        "no restart at any point"
    );
}
