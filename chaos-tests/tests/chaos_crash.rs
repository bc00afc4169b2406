//! Chaos scenario 2, crash: the Backhaul container is killed with SIGKILL
//! (`docker kill -s KILL`) halfway through an outage of the uplink
//! (`BACKHAUL_CHAOS_OUTAGE_SECS`, 30), restarted on the same volume, and
//! killed again while it replays the backlog once the link is back. Devices
//! publish throughout (each crash breaks their connection; a new publisher
//! numbers above the old one). Every PUBACKed message arrives, in order;
//! duplicates only for the batch in flight at the second kill.

use std::time::{Duration, Instant};

use backhaul_chaos_tests::chaos::backlog::BacklogProbe;
use backhaul_chaos_tests::chaos::mqtt_rig::{MqttRig, RigOptions, DEVICE_TOPIC, FLOW};
use backhaul_chaos_tests::chaos::params;
use backhaul_chaos_tests::chaos::scenario::{judge_received, phase_start, wait_drained, Findings};
use backhaul_chaos_tests::docker;
use backhaul_chaos_tests::mqtt::{BackgroundPublisher, NumberedStream};
use testcontainers::clients::Cli;

fn publisher(port: u16, phase: u64, count: u64) -> BackgroundPublisher {
    let stream = NumberedStream {
        first: phase_start(phase),
        count,
        per_second: Some(params::rate()),
    };
    BackgroundPublisher::start_stream(port, &format!("device-{phase}"), DEVICE_TOPIC, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_outage_and_replay_loses_nothing() {
    let started = Instant::now();
    let outage = params::secs("BACKHAUL_CHAOS_OUTAGE_SECS", 30);
    // Each phase could publish for longer than the outage; a crash cuts it.
    let per_phase = params::messages(outage + Duration::from_secs(10));
    let cli = Cli::default();
    let rig = MqttRig::start(&cli, "crash", RigOptions::default()).expect("rig");
    let backhaul = &rig.backhaul;
    let collector = rig.counting_subscriber().await.expect("subscriber");
    let probe = BacklogProbe::start(backhaul.metrics_port, FLOW);
    let mut acked = Vec::new();

    // Phase 0: the link goes down while devices publish; kill -9 mid-outage.
    let phase0 = publisher(backhaul.mqtt_port, 0, per_phase);
    phase0.wait_acked((per_phase / 10).max(1) as usize).await;
    rig.cut().expect("disconnect the remote");
    let cut_at = Instant::now();
    tokio::time::sleep(outage / 2).await;
    backhaul.kill9().expect("kill -9 during the outage");
    let (ended, phase_acked) = phase0.finish().await;
    assert!(ended.is_err(), "the publisher lost its broker mid-stream");
    acked.extend(phase_acked);
    backhaul.restart().expect("restart on the same volume");
    let recovered = backhaul
        .metric(&format!(
            "backhaul_flow_recovered_messages{{flow=\"{FLOW}\"}}"
        ))
        .expect("recovered gauge");
    // What was PUBACKed is either at the remote already (sent before the
    // cut) or was found on disk.
    let delivered_before: std::collections::HashSet<Option<String>> =
        collector.received().into_iter().map(|r| r.id).collect();
    assert!(
        recovered + delivered_before.len() as f64 >= acked.len() as f64,
        "recovered {recovered} queued messages after the first kill and {} were \
         delivered before the cut, but {} were PUBACKed",
        delivered_before.len(),
        acked.len()
    );

    // Phase 1: publishing resumes; the link returns; kill -9 mid-replay.
    let phase1 = publisher(backhaul.mqtt_port, 1, per_phase);
    tokio::time::sleep(outage.saturating_sub(cut_at.elapsed())).await;
    phase1.wait_acked(1).await;
    let peak = probe.peak();
    rig.restore().expect("reconnect the remote");
    // The replay has begun once the flow's first send is confirmed; the
    // kill goes straight to the process so that it lands inside it.
    let pid = docker::host_pid(&backhaul.name).expect("backhaul's pid");
    let delivered = format!("backhaul_flow_delivered_total{{flow=\"{FLOW}\"}}");
    while backhaul.metric(&delivered).unwrap_or(0.0) == 0.0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    docker::kill9_pid(pid).expect("kill -9 during the replay");
    let (ended, phase_acked) = phase1.finish().await;
    assert!(ended.is_err(), "the publisher lost its broker mid-stream");
    acked.extend(phase_acked);
    backhaul.restart().expect("restart on the same volume");
    let recovered_in_replay = backhaul
        .metric(&format!(
            "backhaul_flow_recovered_messages{{flow=\"{FLOW}\"}}"
        ))
        .expect("recovered gauge");
    assert!(
        recovered_in_replay > 0.0,
        "the second kill came before the replay finished"
    );
    eprintln!(
        "crash: {recovered} queued messages recovered after the kill in the outage, \
         {recovered_in_replay} after the kill in the replay"
    );

    // Phase 2: a last stretch of traffic after the second restart.
    let phase2 = publisher(backhaul.mqtt_port, 2, per_phase / 4 + 1);
    let (ended, phase_acked) = phase2.finish().await;
    ended.expect("the last phase publishes without a fault");
    acked.extend(phase_acked);

    let accounting = wait_drained(backhaul, FLOW, acked.len(), || collector.len())
        .await
        .expect("drained");
    drop(probe);
    let received = collector.received();
    let findings = Findings {
        scenario: "crash",
        acked: acked.len(),
        verdict: judge_received(&acked, &received, &rig.id_prefix()),
        accounting,
        peak_backlog: peak,
        elapsed: started.elapsed(),
    };
    // The cut and the kill inside the replay can each leave a batch in
    // flight; the kill in the outage cannot (nothing reached the remote).
    findings.assert_contract(2);
}
