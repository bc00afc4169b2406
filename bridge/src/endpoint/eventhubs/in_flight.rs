//! The SDK batches of one sink that are on their way, oldest first, and the
//! rule for starting another.
//!
//! The SDK sends one batch at a time per link (its sender holds a lock until
//! the batch is settled), so a batch in flight needs a link of its own: each
//! hub has a few *lanes*, each its own `ProducerClient` (AMQP connection).
//! Batches start in window order and are confirmed in window order.
//!
//! Order: a batch that fails after a later one was accepted arrives after
//! it when sent again. Events with a partition key (or a fixed partition)
//! must keep their order, so at most one batch per hub and placement is in
//! flight: a later batch of the same key starts only once the earlier one
//! was accepted. Batches without a key go to whichever partition the
//! service picks, where no order across batches holds anyway; they share
//! the lanes freely.

use std::collections::VecDeque;

use super::Placement;
use crate::endpoint::OutboundMessage;

/// One SDK batch on its way: the window messages it carries and the task
/// that sends it.
#[derive(Debug)]
pub(super) struct InFlight<T> {
    /// Id of its first message: ties it to the caller's window.
    pub first_id: String,
    /// Messages it carries, from `first_id` on.
    pub count: usize,
    pub hub: String,
    pub placement: Placement,
    /// Index of the lane (client of `hub`) it uses.
    pub lane: usize,
    pub task: T,
}

/// The batches in flight, oldest first; they carry consecutive messages of
/// the window from its front.
#[derive(Debug)]
pub(super) struct InFlightQueue<T> {
    batches: VecDeque<InFlight<T>>,
}

impl<T> Default for InFlightQueue<T> {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
        }
    }
}

impl<T> InFlightQueue<T> {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Messages the batches in flight carry.
    pub fn submitted(&self) -> usize {
        self.batches.iter().map(|b| b.count).sum()
    }

    /// Whether the batches in flight carry the messages at `window[from..]`,
    /// in order: the caller passed the window that followed the last call.
    pub fn matches(&self, window: &[OutboundMessage], from: usize) -> bool {
        let mut at = from;
        for batch in &self.batches {
            if window.get(at).map(|m| m.id.as_str()) != Some(batch.first_id.as_str()) {
                return false;
            }
            at += batch.count;
        }
        at <= window.len()
    }

    /// Whether a batch for `hub` and `placement` may start now: fewer than
    /// `lanes` batches are in flight (over all hubs), a lane of that hub is
    /// free, and (with a key or a partition) no batch of the same hub and
    /// placement is in flight. The free lane.
    pub fn may_start(&self, hub: &str, placement: &Placement, lanes: usize) -> Option<usize> {
        let ordered = *placement != Placement::Any;
        let blocked = self.batches.len() >= lanes
            || ordered
                && self
                    .batches
                    .iter()
                    .any(|b| b.hub == hub && b.placement == *placement);
        if blocked {
            return None;
        }
        (0..lanes).find(|lane| !self.batches.iter().any(|b| b.hub == hub && b.lane == *lane))
    }

    pub fn push(&mut self, batch: InFlight<T>) {
        self.batches.push_back(batch);
    }

    pub fn front_mut(&mut self) -> Option<&mut InFlight<T>> {
        self.batches.front_mut()
    }

    pub fn pop_front(&mut self) -> Option<InFlight<T>> {
        self.batches.pop_front()
    }

    /// Removes every batch, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = InFlight<T>> + '_ {
        self.batches.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use backhaul_broker::StoredMessage;

    use super::*;

    fn batch(
        first: &str,
        count: usize,
        hub: &str,
        placement: Placement,
        lane: usize,
    ) -> InFlight<()> {
        InFlight {
            first_id: first.to_string(),
            count,
            hub: hub.to_string(),
            placement,
            lane,
            task: (),
        }
    }

    fn window(ids: &[&str]) -> Vec<OutboundMessage> {
        ids.iter()
            .map(|id| OutboundMessage {
                id: id.to_string(),
                destination: "hub".to_string(),
                message: StoredMessage::default(),
            })
            .collect()
    }

    #[test]
    fn batches_without_a_key_share_the_free_lanes() {
        let mut queue = InFlightQueue::default();
        assert_eq!(queue.may_start("hub", &Placement::Any, 2), Some(0));
        queue.push(batch("a", 2, "hub", Placement::Any, 0));
        assert_eq!(queue.may_start("hub", &Placement::Any, 2), Some(1));
        queue.push(batch("c", 2, "hub", Placement::Any, 1));
        assert_eq!(
            queue.may_start("hub", &Placement::Any, 2),
            None,
            "no lane left"
        );
        assert_eq!(
            queue.may_start("other", &Placement::Any, 2),
            None,
            "the limit holds over all hubs"
        );
        assert_eq!(
            queue.may_start("other", &Placement::Any, 3),
            Some(0),
            "another hub has its own lanes"
        );
        queue.pop_front();
        assert_eq!(queue.may_start("hub", &Placement::Any, 2), Some(0));
    }

    #[test]
    fn one_batch_per_key_or_partition_is_in_flight() {
        let mut queue = InFlightQueue::default();
        let key = |k: &str| Placement::Key(k.to_string());
        queue.push(batch("a", 1, "hub", key("k1"), 0));
        assert_eq!(queue.may_start("hub", &key("k1"), 3), None, "k1 waits");
        assert_eq!(queue.may_start("hub", &key("k2"), 3), Some(1));
        assert_eq!(queue.may_start("other", &key("k1"), 3), Some(0));
        assert_eq!(queue.may_start("hub", &Placement::Any, 3), Some(1));
        queue.push(batch("b", 1, "hub", Placement::Partition("2".into()), 1));
        let partition = Placement::Partition("2".to_string());
        assert_eq!(queue.may_start("hub", &partition, 3), None);
        queue.pop_front();
        assert_eq!(
            queue.may_start("hub", &key("k1"), 3),
            Some(0),
            "k1 was confirmed"
        );
    }

    #[test]
    fn the_queue_matches_only_the_window_it_was_started_from() {
        let mut queue = InFlightQueue::default();
        queue.push(batch("b", 2, "hub", Placement::Any, 0));
        queue.push(batch("d", 1, "hub", Placement::Any, 1));
        let w = window(&["a", "b", "c", "d", "e"]);
        assert!(queue.matches(&w, 1));
        assert_eq!(queue.submitted(), 3);
        assert!(!queue.matches(&w, 0), "shifted");
        assert!(!queue.matches(&window(&["b", "c", "x", "e"]), 0));
        assert!(
            !queue.matches(&window(&["b", "c"]), 0),
            "shorter than in flight"
        );
        assert!(InFlightQueue::<()>::default().matches(&w, 0));
    }
}
