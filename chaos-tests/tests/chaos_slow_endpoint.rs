//! Chaos scenario 7, slow endpoint: the in-tree Event Hubs peer, in its own
//! container, settles every transfer only after
//! `BACKHAUL_CHAOS_SETTLE_MS` (1000) for `BACKHAUL_CHAOS_SLOW_SECS` (20)
//! while devices publish at `BACKHAUL_CHAOS_RATE`: slower than ingress.
//! Ingress does not wait for the endpoint (every publish is PUBACKed while
//! the backlog still holds messages), the backlog absorbs the difference
//! and drains once the peer is fast again; every PUBACKed message arrives
//! once, in order, with its id.

use std::time::{Duration, Instant};

use backhaul_chaos_tests::chaos::backlog::{queue_sample, BacklogProbe};
use backhaul_chaos_tests::chaos::eventhubs_rig::{EventHubsRig, FLOW};
use backhaul_chaos_tests::chaos::params;
use backhaul_chaos_tests::chaos::scenario::{start_device_stream, wait_drained, Findings};
use backhaul_chaos_tests::chaos::verdict::judge;
use testcontainers::clients::Cli;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_never_slows_ingress_and_the_backlog_absorbs_it() {
    let started = Instant::now();
    let slow = params::secs("BACKHAUL_CHAOS_SLOW_SECS", 20);
    let settle_ms = params::env_u64("BACKHAUL_CHAOS_SETTLE_MS", 1000);
    let lead = Duration::from_secs(3);
    let count = params::messages(lead + slow);
    let cli = Cli::default();
    let rig = EventHubsRig::start(&cli, "slow-endpoint", &[]).expect("rig");
    let backhaul = &rig.backhaul;

    let publisher = start_device_stream(backhaul.mqtt_port, count).await;
    let probe = BacklogProbe::start(backhaul.metrics_port, FLOW);
    rig.control(&format!("slow {settle_ms}"))
        .expect("slow settlement on");

    let (ended, acked) = publisher.finish().await;
    ended.expect("the device side never noticed the slow endpoint");
    assert_eq!(acked.len() as u64, count, "every publish was PUBACKed");
    // Ingress ran ahead of the endpoint: when the last PUBACK came, the
    // queue still held messages the peer had not settled.
    let backlog_at_end = backhaul.metric(&queue_sample(FLOW)).expect("backlog");
    let delivered_at_end = rig.events().len();
    assert!(
        backlog_at_end > 0.0 && delivered_at_end < acked.len(),
        "ingress waited for the slow endpoint: backlog {backlog_at_end}, \
         {delivered_at_end} of {} delivered when publishing ended",
        acked.len()
    );
    let peak = probe.peak();
    rig.control("slow off").expect("slow settlement off");

    let accounting = wait_drained(backhaul, FLOW, acked.len(), || rig.events().len())
        .await
        .expect("drained");
    drop(probe);
    let events = rig.events();
    let findings = Findings {
        scenario: "slow endpoint",
        acked: acked.len(),
        verdict: judge(&acked, &events, &rig.id_prefix()),
        accounting,
        peak_backlog: peak,
        elapsed: started.elapsed(),
    };
    // Slow is not broken: nothing is sent twice.
    findings.assert_contract(0);
    assert_eq!(findings.verdict.distinct as u64, count);
    assert_eq!(findings.verdict.duplicates, 0);
    assert_eq!(
        (accounting.received, accounting.delivered),
        (count as f64, count as f64)
    );
    eprintln!(
        "slow endpoint: backlog {backlog_at_end} and {delivered_at_end}/{count} delivered \
         when the last publish was PUBACKed; settle {settle_ms} ms"
    );
}
