//! Prometheus metrics. Flow runners update their counters directly; queue,
//! store and broker figures are read from their owners at scrape time, so
//! they are never stale and the hot path does no metric work for them.
//!
//! Accounting per flow, which the tests check:
//! `received + recovered = delivered + filtered + queue_messages + dropped
//! (all reasons) + quarantined`, where `queue_messages` includes the batch in flight.

use std::sync::Arc;

use backhaul_broker::BrokerStats;
use backhaul_storage::{FlowQueue, QueueStore, COMMIT_LATENCY_BOUNDS, GROUP_SIZE_BOUNDS};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::atomic::Ordering;

use crate::endpoint::ErrorKind;

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
    replayed: IntCounterVec,
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
        let replayed = counter_vec(
            "backhaul_flow_dead_letters_replayed_total",
            "Dead letters an operator's replay delivered (they were counted as dropped before).",
            &["flow"],
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
        let broker_collector = crate::broker_metrics::BrokerCollector::new(broker.clone());
        let state = StateCollector::new(queues, store, broker);
        for collector in [
            Box::new(delivered.clone()) as Box<dyn Collector>,
            Box::new(filtered.clone()),
            Box::new(dropped.clone()),
            Box::new(replayed.clone()),
            Box::new(send_errors.clone()),
            Box::new(endpoint_up.clone()),
            Box::new(parked.clone()),
            Box::new(state),
            Box::new(broker_collector),
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
            replayed,
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
        // Every kind reads 0 from the start, so that a dashboard's rate()
        // shows 0 rather than no data before the first failure.
        for kind in [ErrorKind::Transient, ErrorKind::Throttled, ErrorKind::Fatal] {
            self.send_errors.with_label_values(&[flow, kind.as_str()]);
        }
        let endpoint_up = self.endpoint_up.with_label_values(&[flow, endpoint]);
        endpoint_up.set(0);
        FlowMetrics {
            flow: flow.to_string(),
            delivered: self.delivered.with_label_values(&[flow]),
            filtered: self.filtered.with_label_values(&[flow]),
            replayed: self.replayed.with_label_values(&[flow]),
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
    pub replayed: IntCounter,
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
    overflow_dropped: IntCounterVec,
    expired: IntCounterVec,
    rejected: IntCounterVec,
    oldest_age: GaugeVec,
    commits: IntCounter,
    committed_records: IntCounter,
    commit_seconds: Gauge,
    commit_failures: IntCounter,
    connections: IntGauge,
    publishes: IntCounter,
    publishes_refused: IntCounter,
    fsyncs: IntCounter,
    bytes_written: IntCounter,
    disk_bytes: IntGauge,
    free_bytes: IntGauge,
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
            overflow_dropped: counter_vec(
                "backhaul_queue_overflow_dropped_total",
                "Oldest records dropped by the DropOldest overflow policy.",
                &["flow"],
            ),
            expired: counter_vec(
                "backhaul_queue_expired_total",
                "Records skipped because their queue TTL passed.",
                &["flow"],
            ),
            rejected: counter_vec(
                "backhaul_queue_rejected_total",
                "Publishes refused by a queue or store limit (RejectNew, budget, free space).",
                &["flow"],
            ),
            oldest_age: GaugeVec::new(
                Opts::new(
                    "backhaul_queue_oldest_age_seconds",
                    "Age of the oldest queued record.",
                ),
                &["flow"],
            )
            .expect("valid metric"),
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
                "Publishes refused because the durable append failed or a limit was reached.",
            ),
            fsyncs: counter(
                "backhaul_store_fsyncs_total",
                "fdatasync calls of the disk queues.",
            ),
            bytes_written: counter(
                "backhaul_store_bytes_written_total",
                "Bytes written to the disk queues (flash wear).",
            ),
            disk_bytes: IntGauge::new(
                "backhaul_store_disk_bytes",
                "Bytes of the disk queues' segment files.",
            )
            .expect("valid metric"),
            free_bytes: IntGauge::new(
                "backhaul_store_free_bytes",
                "Free bytes on the data directory's filesystem.",
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<&dyn Collector> {
        vec![
            &self.queue_messages,
            &self.queue_bytes,
            &self.received,
            &self.recovered,
            &self.quarantined,
            &self.overflow_dropped,
            &self.expired,
            &self.rejected,
            &self.oldest_age,
            &self.commits,
            &self.committed_records,
            &self.commit_seconds,
            &self.commit_failures,
            &self.connections,
            &self.publishes,
            &self.publishes_refused,
            &self.fsyncs,
            &self.bytes_written,
            &self.disk_bytes,
            &self.free_bytes,
        ]
    }
}

/// A Prometheus histogram from cumulative bucket counts kept elsewhere.
fn histogram_family(
    name: &str,
    help: &str,
    bounds: &[f64],
    cumulative: &[u64],
    count: u64,
    sum: f64,
) -> MetricFamily {
    let mut histogram = prometheus::proto::Histogram::default();
    histogram.set_sample_count(count);
    histogram.set_sample_sum(sum);
    let buckets = bounds
        .iter()
        .zip(cumulative)
        .map(|(bound, count)| {
            let mut bucket = prometheus::proto::Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(*count);
            bucket
        })
        .collect();
    histogram.set_bucket(buckets);
    let mut metric = prometheus::proto::Metric::default();
    metric.set_histogram(histogram);
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(prometheus::proto::MetricType::HISTOGRAM);
    family.mut_metric().push(metric);
    family
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
            s.overflow_dropped
                .with_label_values(&flow)
                .inc_by(stats.dropped_overflow_total);
            s.expired
                .with_label_values(&flow)
                .inc_by(stats.expired_total);
            s.rejected
                .with_label_values(&flow)
                .inc_by(stats.rejected_total);
            let age = stats.oldest_age.map_or(0.0, |a| a.as_secs_f64());
            s.oldest_age.with_label_values(&flow).set(age);
        }
        let commit = self.store.commit_stats();
        s.commits.inc_by(commit.commits);
        s.committed_records.inc_by(commit.records);
        s.commit_seconds.set(commit.commit_seconds);
        s.commit_failures.inc_by(commit.failures);
        if let Some(io) = self.store.io_stats() {
            s.fsyncs.inc_by(io.fsyncs);
            s.bytes_written.inc_by(io.bytes_written);
        }
        s.disk_bytes
            .set(self.store.disk_bytes().unwrap_or(0) as i64);
        s.free_bytes
            .set(self.store.free_bytes().unwrap_or(0) as i64);
        s.connections
            .set(self.broker.connections_active.load(Ordering::Relaxed) as i64);
        s.publishes
            .inc_by(self.broker.publishes_received.load(Ordering::Relaxed));
        s.publishes_refused
            .inc_by(self.broker.publishes_refused.load(Ordering::Relaxed));
        let mut families: Vec<MetricFamily> = s
            .collectors()
            .into_iter()
            .flat_map(|c| c.collect())
            .collect();
        families.push(histogram_family(
            "backhaul_store_commit_latency_seconds",
            "Time from a publish's append to its durable commit.",
            &COMMIT_LATENCY_BOUNDS,
            &commit.commit_latency.le,
            commit.commit_latency.count,
            commit.commit_latency.sum,
        ));
        families.push(histogram_family(
            "backhaul_store_group_size_records",
            "Records per group commit.",
            &GROUP_SIZE_BOUNDS,
            &commit.group_size.le,
            commit.group_size.count,
            commit.group_size.sum,
        ));
        families
    }
}
