//! Hard link loss toward Event Hubs: the same fault as scenario 1, with the
//! in-tree Event Hubs peer (official SDK over AMQP) as the destination. The
//! peer's container is disconnected from the uplink network for
//! `BACKHAUL_CHAOS_OUTAGE_SECS` (30) while devices publish, then
//! reconnected. Every PUBACKed message arrives as an event with its id, in
//! order; a duplicate only for the batch in flight at the cut.

use std::time::{Duration, Instant};

use backhaul_chaos_tests::chaos::backlog::BacklogProbe;
use backhaul_chaos_tests::chaos::eventhubs_rig::{EventHubsRig, FLOW};
use backhaul_chaos_tests::chaos::params;
use backhaul_chaos_tests::chaos::scenario::{start_device_stream, wait_drained, Findings};
use backhaul_chaos_tests::chaos::verdict::judge;
use testcontainers::clients::Cli;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_hubs_link_loss_loses_nothing_and_keeps_order() {
    let started = Instant::now();
    let outage = params::secs("BACKHAUL_CHAOS_OUTAGE_SECS", 30);
    let lead = Duration::from_secs(5);
    let count = params::messages(lead + outage + lead);
    let cli = Cli::default();
    let rig = EventHubsRig::start(&cli, "eventhubs-link-loss", &[]).expect("rig");
    let backhaul = &rig.backhaul;

    let publisher = start_device_stream(backhaul.mqtt_port, count).await;
    let probe = BacklogProbe::start(backhaul.metrics_port, FLOW);
    rig.cut().expect("disconnect the peer");
    tokio::time::sleep(outage).await;
    let peak = probe.peak();
    rig.restore().expect("reconnect the peer");

    let (ended, acked) = publisher.finish().await;
    ended.expect("the device side never noticed the outage");
    assert_eq!(acked.len() as u64, count, "every publish was PUBACKed");

    let accounting = wait_drained(backhaul, FLOW, acked.len(), || rig.events().len())
        .await
        .expect("drained");
    drop(probe);
    let findings = Findings {
        scenario: "Event Hubs link loss",
        acked: acked.len(),
        verdict: judge(&acked, &rig.events(), &rig.id_prefix()),
        accounting,
        peak_backlog: peak,
        elapsed: started.elapsed(),
    };
    // One cut: at most the batch in flight is sent again.
    findings.assert_contract(1);
    assert_eq!(findings.verdict.distinct as u64, count, "each message once");
    assert_eq!(
        (accounting.received, accounting.delivered),
        (count as f64, count as f64)
    );
}
