//! The broker's security and limit figures on `/metrics`, read from its
//! counters at scrape time. Every reason is listed from the start, at 0.
//! Labels are fixed reason names: no username, topic or other client input
//! (let alone a secret) ever becomes a label.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use backhaul_broker::BrokerStats;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts};

/// Collects the broker's connection, authentication, authorization and
/// limit counters.
pub struct BrokerCollector {
    stats: Arc<BrokerStats>,
    descs: Vec<Desc>,
}

struct Families {
    connections_total: IntCounter,
    auth_failures: IntCounterVec,
    denied: IntCounterVec,
    rejected: IntCounterVec,
}

impl Families {
    fn new() -> Self {
        let vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        Self {
            connections_total: IntCounter::new(
                "backhaul_broker_connections_total",
                "Device connections accepted (TCP) since start.",
            )
            .expect("valid metric"),
            auth_failures: vec(
                "backhaul_broker_auth_failures_total",
                "Clients not let in, by reason (bad_credentials, unknown_ca, expired_certificate, ...).",
                "reason",
            ),
            denied: vec(
                "backhaul_broker_authorization_denied_total",
                "Publishes and subscriptions the authorization rules refused, by action.",
                "action",
            ),
            rejected: vec(
                "backhaul_broker_packets_rejected_total",
                "Packets and connections a limit refused (the connection was closed), by reason.",
                "reason",
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 4] {
        [
            &self.connections_total,
            &self.auth_failures,
            &self.denied,
            &self.rejected,
        ]
    }
}

impl BrokerCollector {
    pub fn new(stats: Arc<BrokerStats>) -> Self {
        let descs = Families::new()
            .collectors()
            .into_iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Self { stats, descs }
    }
}

impl Collector for BrokerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        f.connections_total
            .inc_by(self.stats.connections_total.load(Ordering::Relaxed));
        for (reason, count) in self.stats.auth_failures.snapshot() {
            f.auth_failures.with_label_values(&[reason]).inc_by(count);
        }
        for (action, count) in self.stats.authorization_denied.snapshot() {
            f.denied.with_label_values(&[action]).inc_by(count);
        }
        for (reason, count) in self.stats.packets_rejected.snapshot() {
            f.rejected.with_label_values(&[reason]).inc_by(count);
        }
        f.collectors()
            .into_iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}
