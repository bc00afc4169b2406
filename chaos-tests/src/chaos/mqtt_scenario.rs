//! One fault while a numbered stream flows through Backhaul to the remote
//! Mosquitto: the shape of the link-loss, endpoint-restart, silent-partition
//! and flapping scenarios. Only the fault differs.

use std::time::{Duration, Instant};

use testcontainers::clients::Cli;

use crate::chaos::backlog::BacklogProbe;
use crate::chaos::mqtt_rig::{MqttRig, RigOptions, FLOW, REMOTE_TOPIC};
use crate::chaos::params;
use crate::chaos::scenario::{judge_received, start_device_stream, wait_drained, Findings};

/// A fault of the rig, run on a blocking thread while traffic flows; it
/// returns when the fault is over.
pub type Fault<'a> = Box<dyn FnOnce(&MqttRig<'_>) -> anyhow::Result<()> + Send + 'a>;

/// Starts the rig, publishes `BACKHAUL_CHAOS_MESSAGES` (default: enough for
/// 5 s before the fault, its `fault_lasts`, and 5 s after) at
/// `BACKHAUL_CHAOS_RATE`, runs `fault` once an eighth is PUBACKed, waits for
/// the publisher and the drain, and checks the contract with at most
/// `max_resends` re-sends. Returns the findings for more checks.
pub async fn run(
    scenario: &'static str,
    slug: &str,
    fault_lasts: Duration,
    fault: Fault<'_>,
    max_resends: usize,
) -> Findings {
    let started = Instant::now();
    let lead = Duration::from_secs(5);
    let count = params::messages(lead + fault_lasts + lead);
    let cli = Cli::default();
    let rig = MqttRig::start(&cli, slug, RigOptions::default()).expect("rig");
    let collector = rig.counting_subscriber().await.expect("subscriber");

    let publisher = start_device_stream(rig.backhaul.mqtt_port, count).await;

    let probe = BacklogProbe::start(rig.backhaul.metrics_port, FLOW);
    tokio::task::block_in_place(|| fault(&rig)).expect("the fault");
    let peak = probe.peak();

    let (ended, acked) = publisher.finish().await;
    ended.expect("the device side never noticed the fault");
    assert_eq!(acked.len() as u64, count, "every publish was PUBACKed");

    let accounting = wait_drained(&rig.backhaul, FLOW, acked.len(), || collector.len())
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nremote:\n{}", rig.remote_log()));
    drop(probe);
    let received = collector.received();
    let findings = Findings {
        scenario,
        acked: acked.len(),
        verdict: judge_received(&acked, &received, &rig.id_prefix()),
        accounting,
        peak_backlog: peak,
        elapsed: started.elapsed(),
    };
    findings.assert_contract(max_resends);
    assert_eq!(
        findings.verdict.distinct as u64, count,
        "{scenario}: each message delivered"
    );
    assert_eq!(
        (accounting.received, accounting.delivered),
        (count as f64, count as f64),
        "{scenario}: received and delivered counters"
    );
    assert!(
        received.iter().all(|r| r.topic == REMOTE_TOPIC),
        "{scenario}: every message on its mapped topic"
    );
    findings
}
