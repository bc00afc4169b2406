//! Chaos scenario 4, silent partition: the remote broker's container is
//! frozen (`docker pause`: its sockets stay open, nothing answers, no FIN,
//! no RST) for `BACKHAUL_CHAOS_PAUSE_SECS` (20, four times the flow's 5 s
//! keep-alive) while devices publish, then thawed. Everything PUBACKed
//! arrives once, in order.

use backhaul_chaos_tests::chaos::mqtt_scenario::run;
use backhaul_chaos_tests::chaos::params;
use backhaul_chaos_tests::docker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_partition_loses_nothing_and_keeps_order() {
    let frozen = params::secs("BACKHAUL_CHAOS_PAUSE_SECS", 20);
    let fault = Box::new(
        move |rig: &backhaul_chaos_tests::chaos::mqtt_rig::MqttRig<'_>| {
            docker::pause(&rig.remote_name)?;
            std::thread::sleep(frozen);
            docker::unpause(&rig.remote_name)
        },
    );
    // Backhaul's connection and the counting subscriber's both time out.
    run("silent partition", "silent-partition", frozen, fault, 2).await;
}
