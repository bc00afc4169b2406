//! Chaos scenario 3, endpoint restart: the remote broker's container is
//! stopped (SIGTERM: Mosquitto saves its sessions and closes every
//! connection) for `BACKHAUL_CHAOS_RESTART_SECS` (5) while devices publish,
//! then started again. Everything PUBACKed arrives once, in order.

use backhaul_chaos_tests::chaos::mqtt_scenario::run;
use backhaul_chaos_tests::chaos::params;
use backhaul_chaos_tests::docker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_restart_loses_nothing_and_keeps_order() {
    let down = params::secs("BACKHAUL_CHAOS_RESTART_SECS", 5);
    let fault = Box::new(
        move |rig: &backhaul_chaos_tests::chaos::mqtt_rig::MqttRig<'_>| {
            docker::stop(&rig.remote_name, 10)?;
            std::thread::sleep(down);
            docker::start(&rig.remote_name)
        },
    );
    // Backhaul's connection and the counting subscriber's both break: a
    // re-send on each.
    run("endpoint restart", "endpoint-restart", down, fault, 2).await;
}
