//! Chaos scenario 5, flapping link: the remote broker is disconnected from
//! the uplink and reconnected every `BACKHAUL_CHAOS_FLAP_PERIOD_MS` (2000)
//! for `BACKHAUL_CHAOS_FLAP_SECS` (60) while devices publish. Everything
//! PUBACKed arrives once, in order; at most one re-send per cut.

use std::time::{Duration, Instant};

use backhaul_chaos_tests::chaos::mqtt_scenario::run;
use backhaul_chaos_tests::chaos::params;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_loses_nothing_and_keeps_order() {
    let flapping = params::secs("BACKHAUL_CHAOS_FLAP_SECS", 60);
    let period = Duration::from_millis(params::env_u64("BACKHAUL_CHAOS_FLAP_PERIOD_MS", 2000));
    let cuts = (flapping.as_millis() / (2 * period.as_millis()).max(1)).max(1) as usize;
    let fault = Box::new(
        move |rig: &backhaul_chaos_tests::chaos::mqtt_rig::MqttRig<'_>| {
            let started = Instant::now();
            for _ in 0..cuts {
                rig.cut()?;
                std::thread::sleep(period);
                rig.restore()?;
                std::thread::sleep(period);
            }
            eprintln!("{cuts} cuts in {:?}", started.elapsed());
            Ok(())
        },
    );
    run("flapping link", "flapping", flapping, fault, cuts).await;
}
