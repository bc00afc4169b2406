//! The durable gate: the one place where a device's PUBLISH becomes a data
//! flow's queued message.
//!
//! A PUBLISH whose topic matches the sources of one or more enabled data
//! flows is appended to each of those flows' queues in one atomic append;
//! the connection sends the PUBACK (or PUBREC) only when the append's
//! ticket resolves, which in disk mode means after the group commit's
//! flush. A PUBLISH no flow wants is acknowledged at once, as by any broker.

use std::sync::Arc;

use backhaul_storage::{AppendEntry, CommitTicket, FlowIndex, QueueStore};

use crate::message::StoredMessage;
use crate::topic::TopicFilter;

/// The sources of one data flow.
#[derive(Debug, Clone)]
pub struct FlowRoute {
    /// The flow's queue in the store.
    pub flow: FlowIndex,
    /// The flow's `dataSources`.
    pub filters: Vec<TopicFilter>,
}

/// Matches publishes to data flows and appends them to their queues.
pub struct DurableGate {
    store: Arc<QueueStore>,
    routes: Vec<FlowRoute>,
}

impl DurableGate {
    pub fn new(store: Arc<QueueStore>, routes: Vec<FlowRoute>) -> Self {
        Self { store, routes }
    }

    /// The flows whose sources match `topic`.
    pub fn matching_flows(&self, topic: &str) -> Vec<FlowIndex> {
        self.routes
            .iter()
            .filter(|route| route.filters.iter().any(|f| f.matches(topic)))
            .map(|route| route.flow)
            .collect()
    }

    /// Appends the message built by `message` to every flow that wants
    /// `topic`, or returns `None` (without building it) when none does.
    pub fn admit(
        &self,
        topic: &str,
        message: impl FnOnce() -> StoredMessage,
    ) -> Option<CommitTicket> {
        let flows = self.matching_flows(topic);
        if flows.is_empty() {
            return None;
        }
        let data = message().encode();
        let entries = flows
            .into_iter()
            .map(|flow| AppendEntry {
                flow,
                data: data.clone(),
            })
            .collect();
        Some(self.store.append(entries))
    }

    pub fn store(&self) -> &Arc<QueueStore> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhaul_storage::StorageMode;

    fn gate() -> DurableGate {
        let names = vec!["temps".to_string(), "all".to_string()];
        let store = Arc::new(QueueStore::open(&StorageMode::Memory, &names).unwrap());
        let route = |flow, filters: &[&str]| FlowRoute {
            flow,
            filters: filters
                .iter()
                .map(|f| TopicFilter::parse(f).unwrap())
                .collect(),
        };
        DurableGate::new(
            store,
            vec![route(0, &["factory/+/temp"]), route(1, &["factory/#"])],
        )
    }

    #[tokio::test]
    async fn appends_once_to_each_matching_flow() {
        let gate = gate();
        let message = |topic: &str| StoredMessage {
            topic: topic.into(),
            ..StoredMessage::default()
        };
        let seqs = gate
            .admit("factory/l1/temp", || message("factory/l1/temp"))
            .expect("two flows match")
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 1]);
        gate.admit("factory/l1/pressure", || message("factory/l1/pressure"))
            .expect("one flow matches")
            .await
            .unwrap();
        let built = std::cell::Cell::new(false);
        assert!(gate
            .admit("office/x", || {
                built.set(true);
                message("office/x")
            })
            .is_none());
        assert!(!built.get(), "no message is built when no flow wants it");
        let stats: Vec<u64> = gate
            .store()
            .queues()
            .iter()
            .map(|q| q.stats().messages)
            .collect();
        assert_eq!(stats, vec![1, 2]);
    }
}
