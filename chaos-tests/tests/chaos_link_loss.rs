//! Chaos scenario 1, hard link loss: while devices publish a numbered QoS 1
//! stream, the remote broker's container is disconnected from the uplink
//! network (`docker network disconnect`) for `BACKHAUL_CHAOS_OUTAGE_SECS`
//! (30), then reconnected. Everything PUBACKed arrives once, in order; the
//! backlog rose and drained; the counters balance.

use backhaul_chaos_tests::chaos::mqtt_scenario::run;
use backhaul_chaos_tests::chaos::params;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_link_loss_loses_nothing_and_keeps_order() {
    let outage = params::secs("BACKHAUL_CHAOS_OUTAGE_SECS", 30);
    let fault = Box::new(
        move |rig: &backhaul_chaos_tests::chaos::mqtt_rig::MqttRig<'_>| {
            rig.cut()?;
            std::thread::sleep(outage);
            rig.restore()
        },
    );
    // One cut: at most the batch in flight is sent again.
    run("hard link loss", "link-loss", outage, fault, 1).await;
}
