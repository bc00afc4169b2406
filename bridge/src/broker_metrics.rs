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
    wills_published: IntCounter,
    too_large_for_client: IntCounter,
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
            wills_published: IntCounter::new(
                "backhaul_broker_wills_published_total",
                "Will messages published (a client ended without DISCONNECT, or with reason 0x04), after any will delay.",
            )
            .expect("valid metric"),
            too_large_for_client: IntCounter::new(
                "backhaul_broker_publishes_too_large_for_client_total",
                "Messages not sent to a subscriber because they exceed the Maximum Packet Size it set in CONNECT (discarded as if delivered).",
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

    fn collectors(&self) -> [&dyn Collector; 6] {
        [
            &self.connections_total,
            &self.wills_published,
            &self.too_large_for_client,
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
        f.wills_published
            .inc_by(self.stats.wills_published.load(Ordering::Relaxed));
        f.too_large_for_client.inc_by(
            self.stats
                .publishes_too_large_for_client
                .load(Ordering::Relaxed),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the family `name` (no labels) as collected.
    fn value(collector: &BrokerCollector, name: &str) -> Option<f64> {
        collector
            .collect()
            .into_iter()
            .find(|family| family.name() == name)
            .map(|family| family.get_metric()[0].get_counter().get_value())
    }

    #[test]
    fn wills_and_oversized_deliveries_are_exported() {
        let stats = Arc::new(BrokerStats::default());
        let collector = BrokerCollector::new(stats.clone());
        let wills = "backhaul_broker_wills_published_total";
        let too_large = "backhaul_broker_publishes_too_large_for_client_total";
        assert_eq!(value(&collector, wills), Some(0.0), "listed from the start");
        assert_eq!(value(&collector, too_large), Some(0.0));
        stats.wills_published.fetch_add(3, Ordering::Relaxed);
        stats
            .publishes_too_large_for_client
            .fetch_add(2, Ordering::Relaxed);
        assert_eq!(value(&collector, wills), Some(3.0));
        assert_eq!(value(&collector, too_large), Some(2.0));
    }
}
