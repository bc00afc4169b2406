//! Prometheus metrics. Flow runners update their counters directly; queue,
//! store and broker figures are read from their owners at scrape time, so
//! they are never stale and the hot path does no metric work for them.
//!
//! Accounting per flow, which the tests check:
//! `received + recovered = delivered + filtered + queue_messages + dropped
//! (all reasons) + quarantined`, where `queue_messages` includes the batch in flight.

use std::sync::Arc;

use backhaul_broker::BrokerStats;
use backhaul_storage::{FlowQueue, QueueStore};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::Ordering;

/// Reasons a flow drops a message, created up front so they read as 0.
pub const DROP_REASONS: &[&str] = &[
    "undecodable",
    "unresolved_destination",
    "expired",
    "transform_error",
    "too_large",
];

/// The registry of one appliance.
pub struct Metrics {
    registry: Registry,
    delivered: IntCounterVec,
    filtered: IntCounterVec,
    dropped: IntCounterVec,
    send_errors: IntCounterVec,
    endpoint_up: IntGaugeVec,
    parked: IntGaugeVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl Metrics {
    pub fn new(queues: Vec<FlowQueue>, store: Arc<QueueStore>, broker: Arc<BrokerStats>) -> Self {
        let registry = Registry::new();
        let delivered = counter_vec(
            "backhaul_flow_delivered_total",
            "Messages the destination confirmed.",
            &["flow"],
        );
        let filtered = counter_vec(
            "backhaul_flow_filtered_total",
            "Messages a filter rule of the flow's transformation dropped.",
            &["flow"],
        );
        let dropped = counter_vec(
            "backhaul_flow_dropped_total",
            "Messages removed from the queue without delivery, by reason.",
            &["flow", "reason"],
        );
        let send_errors = counter_vec(
            "backhaul_flow_send_errors_total",
            "Failed sends of a batch, by error kind (transient, throttled, fatal).",
            &["flow", "kind"],
        );
        let endpoint_up = gauge_vec(
            "backhaul_endpoint_connected",
            "1 when the flow's last send succeeded, 0 after a failure.",
            &["flow", "endpoint"],
        );
        let parked = gauge_vec(
            "backhaul_flow_parked",
            "1 while the flow's endpoint refuses it for good (authorization, configuration); its data stays queued.",
            &["flow"],
        );
        let state = StateCollector::new(queues, store, broker);
        for collector in [
            Box::new(delivered.clone()) as Box<dyn Collector>,
            Box::new(filtered.clone()),
            Box::new(dropped.clone()),
            Box::new(send_errors.clone()),
            Box::new(endpoint_up.clone()),
            Box::new(parked.clone()),
            Box::new(state),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            delivered,
            filtered,
            dropped,
            send_errors,
            endpoint_up,
            parked,
        }
    }

    /// The counters of one flow.
    pub fn flow(&self, flow: &str, endpoint: &str) -> FlowMetrics {
        for reason in DROP_REASONS {
            self.dropped.with_label_values(&[flow, reason]);
        }
        let endpoint_up = self.endpoint_up.with_label_values(&[flow, endpoint]);
        endpoint_up.set(0);
        FlowMetrics {
            flow: flow.to_string(),
            delivered: self.delivered.with_label_values(&[flow]),
            filtered: self.filtered.with_label_values(&[flow]),
            parked: self.parked.with_label_values(&[flow]),
            endpoint_up,
            dropped: self.dropped.clone(),
            send_errors: self.send_errors.clone(),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What a flow runner updates.
#[derive(Clone)]
pub struct FlowMetrics {
    flow: String,
    pub delivered: IntCounter,
    pub filtered: IntCounter,
    pub endpoint_up: IntGauge,
    pub parked: IntGauge,
    dropped: IntCounterVec,
    send_errors: IntCounterVec,
}

impl FlowMetrics {
    pub fn dropped(&self, reason: &str) -> IntCounter {
        self.dropped.with_label_values(&[&self.flow, reason])
    }

    pub fn send_error(&self, kind: &str) -> IntCounter {
        self.send_errors.with_label_values(&[&self.flow, kind])
    }
}

/// Queue, store and broker figures, read at scrape time.
struct StateCollector {
    queues: Vec<FlowQueue>,
    store: Arc<QueueStore>,
    broker: Arc<BrokerStats>,
    descs: Vec<Desc>,
}

/// One scrape's worth of freshly built metrics.
struct Snapshot {
    queue_messages: IntGaugeVec,
    queue_bytes: IntGaugeVec,
    received: IntCounterVec,
    recovered: IntGaugeVec,
    quarantined: IntCounterVec,
    commits: IntCounter,
    committed_records: IntCounter,
    commit_seconds: Gauge,
    commit_failures: IntCounter,
    connections: IntGauge,
    publishes: IntCounter,
    publishes_refused: IntCounter,
}

impl Snapshot {
    fn new() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        Self {
            queue_messages: gauge_vec(
                "backhaul_queue_messages",
                "Messages waiting in the flow's queue.",
                &["flow"],
            ),
            queue_bytes: gauge_vec(
                "backhaul_queue_bytes",
                "Payload bytes waiting in the flow's queue.",
                &["flow"],
            ),
            received: counter_vec(
                "backhaul_flow_received_total",
                "Messages appended to the flow's queue since start.",
                &["flow"],
            ),
            recovered: gauge_vec(
                "backhaul_flow_recovered_messages",
                "Messages found in the flow's queue at start.",
                &["flow"],
            ),
            quarantined: counter_vec(
                "backhaul_queue_quarantined_total",
                "Corrupt queue records moved aside.",
                &["flow"],
            ),
            commits: counter(
                "backhaul_store_commits_total",
                "Group commits (one flush each in disk mode).",
            ),
            committed_records: counter(
                "backhaul_store_committed_records_total",
                "Records written by group commits.",
            ),
            commit_seconds: Gauge::new(
                "backhaul_store_commit_seconds_total",
                "Time spent writing and flushing group commits.",
            )
            .expect("valid metric"),
            commit_failures: counter(
                "backhaul_store_commit_failures_total",
                "Group commits that failed (publishers were refused).",
            ),
            connections: IntGauge::new("backhaul_broker_connections", "Open device connections.")
                .expect("valid metric"),
            publishes: counter(
                "backhaul_broker_publishes_received_total",
                "PUBLISH packets received from devices.",
            ),
            publishes_refused: counter(
                "backhaul_broker_publishes_refused_total",
                "Publishes not acknowledged because the durable append failed.",
            ),
        }
    }

    fn collectors(&self) -> Vec<&dyn Collector> {
        vec![
            &self.queue_messages,
            &self.queue_bytes,
            &self.received,
            &self.recovered,
            &self.quarantined,
            &self.commits,
            &self.committed_records,
            &self.commit_seconds,
            &self.commit_failures,
            &self.connections,
            &self.publishes,
            &self.publishes_refused,
        ]
    }
}

impl StateCollector {
    fn new(queues: Vec<FlowQueue>, store: Arc<QueueStore>, broker: Arc<BrokerStats>) -> Self {
        let descs = Snapshot::new()
            .collectors()
            .into_iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Self {
            queues,
            store,
            broker,
            descs,
        }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = Snapshot::new();
        for queue in &self.queues {
            let stats = queue.stats();
            let flow = [queue.name()];
            s.queue_messages
                .with_label_values(&flow)
                .set(stats.messages as i64);
            s.queue_bytes
                .with_label_values(&flow)
                .set(stats.bytes as i64);
            s.received
                .with_label_values(&flow)
                .inc_by(stats.appended_total);
            s.recovered
                .with_label_values(&flow)
                .set(stats.recovered as i64);
            s.quarantined
                .with_label_values(&flow)
                .inc_by(stats.quarantined_total);
        }
        let commit = self.store.commit_stats();
        s.commits.inc_by(commit.commits);
        s.committed_records.inc_by(commit.records);
        s.commit_seconds.set(commit.commit_seconds);
        s.commit_failures.inc_by(commit.failures);
        s.connections
            .set(self.broker.connections_active.load(Ordering::Relaxed) as i64);
        s.publishes
            .inc_by(self.broker.publishes_received.load(Ordering::Relaxed));
        s.publishes_refused
            .inc_by(self.broker.publishes_refused.load(Ordering::Relaxed));
        s.collectors()
            .into_iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}
