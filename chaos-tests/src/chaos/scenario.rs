//! The steps every scenario shares once its fault is over: wait for the
//! backlog to drain, then check the contract and print the figures.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::chaos::accounting::Accounting;
use crate::chaos::appliance::ApplianceContainer;
use crate::chaos::mqtt_rig::DEVICE_TOPIC;
use crate::chaos::params;
use crate::chaos::verdict::{judge, Delivery, Verdict};
use crate::mqtt::{BackgroundPublisher, NumberedStream, Received};

/// The first number of publisher phase `phase`: a publisher started after
/// a crash numbers above anything an earlier one could have sent.
pub fn phase_start(phase: u64) -> u64 {
    phase * 1_000_000
}

/// Waits until the flow's queue is empty and `delivered()` has reached
/// `at_least` and then stayed unchanged for 2 s (late re-sends arrive
/// too); returns the flow's counters at that point. Fails after
/// [`params::drain_deadline`].
pub async fn wait_drained(
    appliance: &ApplianceContainer<'_>,
    flow: &str,
    at_least: usize,
    delivered: impl Fn() -> usize,
) -> Result<Accounting> {
    let deadline = Instant::now() + params::drain_deadline();
    let mut stable_since: Option<(Instant, usize)> = None;
    loop {
        let accounting = appliance.accounting(flow);
        let count = delivered();
        if let Ok(accounting) = accounting {
            if accounting.queued == 0.0 && count >= at_least {
                match stable_since {
                    Some((since, seen)) if seen == count => {
                        if since.elapsed() >= Duration::from_secs(2) {
                            return Ok(accounting);
                        }
                    }
                    _ => stable_since = Some((Instant::now(), count)),
                }
            } else {
                stable_since = None;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the backlog did not drain within {:?}: {} delivered of at least {at_least}; \
                 counters {:?}; log:\n{}",
                params::drain_deadline(),
                count,
                appliance.accounting(flow).ok(),
                appliance.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The subscriber's messages as deliveries (payload number, id).
pub fn deliveries(received: &[Received]) -> Vec<Delivery> {
    received
        .iter()
        .map(|r| Delivery {
            number: r.number().unwrap_or(u64::MAX),
            id: r.id.clone().unwrap_or_default(),
        })
        .collect()
}

/// What a scenario found, printed as one line of figures.
pub struct Findings {
    pub scenario: &'static str,
    pub acked: usize,
    pub verdict: Verdict,
    pub accounting: Accounting,
    pub peak_backlog: u64,
    pub elapsed: Duration,
}

impl Findings {
    /// The durability contract, asserted:
    /// - every PUBACKed message delivered, in order, duplicates only as
    ///   re-sends of delivered messages with the same id (at most
    ///   `max_resends` of them: one per fault event that could cut a batch);
    /// - no queue sequence missing (nothing queued vanished);
    /// - received + recovered = delivered + queued + dropped, and the queue
    ///   is empty;
    /// - the backlog rose during the fault.
    pub fn assert_contract(&self, max_resends: usize) {
        eprintln!("{self}");
        let verdict = &self.verdict;
        assert!(
            verdict.intact(),
            "{}: durability broken: {verdict}",
            self.scenario
        );
        assert_eq!(
            verdict.lost_count, 0,
            "{}: PUBACKed messages lost",
            self.scenario
        );
        assert!(
            verdict.resends <= max_resends,
            "{}: {} re-sends, at most {max_resends} fault events could cause one: {verdict}",
            self.scenario,
            verdict.resends
        );
        assert_eq!(
            verdict.sequence_gaps, 0,
            "{}: queue sequences missing at the destination: {verdict}",
            self.scenario
        );
        assert!(
            self.accounting.balances(),
            "{}: accounting does not balance: {}",
            self.scenario,
            self.accounting
        );
        assert_eq!(
            self.accounting.queued, 0.0,
            "{}: backlog left",
            self.scenario
        );
        assert!(
            self.peak_backlog > 0,
            "{}: the backlog never rose during the fault",
            self.scenario
        );
        assert!(
            verdict.distinct >= self.acked,
            "{}: {} distinct deliveries for {} PUBACKs",
            self.scenario,
            verdict.distinct,
            self.acked
        );
    }
}

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chaos {}: {} PUBACKed; {}; backlog peak {}; {}; {:.1} s",
            self.scenario,
            self.acked,
            self.verdict,
            self.peak_backlog,
            self.accounting,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Judges the subscriber's messages for `acked` under `id_prefix`.
pub fn judge_received(acked: &[u64], received: &[Received], id_prefix: &str) -> Verdict {
    judge(acked, &deliveries(received), id_prefix)
}

/// Starts the numbered stream of `count` QoS 1 messages from `device-1` at
/// the chaos rate, and returns once an eighth of them is PUBACKed (the flow
/// is running before a fault is injected).
pub async fn start_device_stream(mqtt_port: u16, count: u64) -> BackgroundPublisher {
    let stream = NumberedStream {
        first: 0,
        count,
        per_second: Some(params::rate()),
    };
    let publisher = BackgroundPublisher::start_stream(mqtt_port, "device-1", DEVICE_TOPIC, stream);
    publisher.wait_acked((count / 8).max(1) as usize).await;
    publisher
}
