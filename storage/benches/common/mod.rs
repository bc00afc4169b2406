//! What the storage benchmarks share.

use std::collections::VecDeque;

use backhaul_storage::{AppendEntry, QueueStore};
use bytes::Bytes;

/// Appends `batches` appends of 1000 `record`-byte records to flow 0,
/// keeping 8 appends in flight, and waits until all are durable.
pub async fn fill(store: &QueueStore, batches: u64, record: usize) {
    let data = Bytes::from(vec![0x5au8; record]);
    let mut tickets = VecDeque::new();
    for _ in 0..batches {
        let entries = (0..1000)
            .map(|_| AppendEntry {
                flow: 0,
                data: data.clone(),
            })
            .collect();
        tickets.push_back(store.append(entries));
        if tickets.len() > 8 {
            if let Some(ticket) = tickets.pop_front() {
                ticket.await.expect("fill");
            }
        }
    }
    for ticket in tickets {
        ticket.await.expect("fill");
    }
}

/// An environment variable as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median and the values in their order.
pub fn median(mut values: Vec<f64>) -> (f64, Vec<f64>) {
    let runs = values.clone();
    values.sort_by(|a, b| a.total_cmp(b));
    (values[values.len() / 2], runs)
}
