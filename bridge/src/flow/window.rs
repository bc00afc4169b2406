//! The messages a flow has read from its queue and not yet settled: the
//! sink keeps them in flight, and each queue batch is acknowledged once all
//! of its messages are confirmed (or dead-lettered), oldest batch first.
//!
//! Reading ahead by one batch lets the sink start the next batch while the
//! last acknowledgements of the previous one are on their way; the queue
//! still sees acknowledgements in order and only for settled batches.

use std::collections::VecDeque;

use backhaul_storage::Seq;

use crate::endpoint::OutboundMessage;

/// One batch read from the queue, in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingBatch {
    /// Its last queue sequence: what the acknowledgement passes.
    last: Seq,
    /// Records read (some may have been filtered or dropped on the way).
    records: usize,
    /// Its messages still in the window.
    unsettled: usize,
    /// Its messages the destination confirmed.
    delivered: usize,
}

/// A batch whose every message was settled: acknowledge it in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SettledBatch {
    pub last: Seq,
    pub records: usize,
    pub delivered: usize,
}

#[derive(Debug, Default)]
pub(super) struct Window {
    messages: VecDeque<OutboundMessage>,
    batches: VecDeque<PendingBatch>,
}

impl Window {
    /// Adds the messages prepared from a batch of `records` records that
    /// ends at `last`.
    pub fn push(&mut self, last: Seq, records: usize, messages: Vec<OutboundMessage>) {
        self.batches.push_back(PendingBatch {
            last,
            records,
            unsettled: messages.len(),
            delivered: 0,
        });
        self.messages.extend(messages);
    }

    /// Batches read and not yet acknowledged.
    pub fn batches(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The unsettled messages, oldest first.
    pub fn messages(&mut self) -> &[OutboundMessage] {
        self.messages.make_contiguous()
    }

    /// Unsettled messages of the oldest batch that has any: how many to
    /// wait for before acknowledging something.
    pub fn front_unsettled(&self) -> usize {
        self.batches
            .iter()
            .map(|b| b.unsettled)
            .find(|n| *n > 0)
            .unwrap_or(0)
    }

    /// The oldest unsettled message.
    pub fn front_message(&self) -> Option<&OutboundMessage> {
        self.messages.front()
    }

    /// Settles `count` messages from the front, as delivered or not.
    pub fn settle(&mut self, count: usize, delivered: bool) {
        let mut left = count.min(self.messages.len());
        self.messages.drain(..left);
        for batch in self.batches.iter_mut() {
            let taken = left.min(batch.unsettled);
            batch.unsettled -= taken;
            if delivered {
                batch.delivered += taken;
            }
            left -= taken;
            if left == 0 {
                break;
            }
        }
    }

    /// Removes the oldest batch if all its messages are settled.
    pub fn pop_settled(&mut self) -> Option<SettledBatch> {
        if self.batches.front()?.unsettled > 0 {
            return None;
        }
        let batch = self.batches.pop_front()?;
        Some(SettledBatch {
            last: batch.last,
            records: batch.records,
            delivered: batch.delivered,
        })
    }
}

#[cfg(test)]
mod tests {
    use backhaul_broker::StoredMessage;

    use super::*;

    fn messages(ids: &[u64]) -> Vec<OutboundMessage> {
        ids.iter()
            .map(|id| OutboundMessage {
                id: id.to_string(),
                destination: "t".into(),
                message: StoredMessage::default(),
            })
            .collect()
    }

    fn ids(window: &mut Window) -> Vec<String> {
        window.messages().iter().map(|m| m.id.clone()).collect()
    }

    #[test]
    fn a_batch_settles_only_when_all_its_messages_did() {
        let mut window = Window::default();
        window.push(3, 3, messages(&[1, 2, 3]));
        window.push(6, 3, messages(&[4, 5, 6]));
        assert_eq!(window.front_unsettled(), 3);
        window.settle(2, true);
        assert_eq!(window.pop_settled(), None);
        assert_eq!(ids(&mut window), ["3", "4", "5", "6"]);
        window.settle(2, true);
        let first = window.pop_settled();
        assert_eq!(
            first,
            Some(SettledBatch {
                last: 3,
                records: 3,
                delivered: 3
            })
        );
        assert_eq!(window.pop_settled(), None);
        assert_eq!(window.front_unsettled(), 2);
        assert_eq!(window.batches(), 1);
    }

    #[test]
    fn dead_lettered_messages_settle_without_counting_as_delivered() {
        let mut window = Window::default();
        window.push(2, 2, messages(&[1, 2]));
        window.settle(1, true);
        window.settle(1, false);
        let settled = window.pop_settled().map(|b| b.delivered);
        assert_eq!(settled, Some(1));
        assert!(window.is_empty());
    }

    #[test]
    fn a_batch_whose_messages_were_all_filtered_settles_at_once_in_order() {
        let mut window = Window::default();
        window.push(2, 2, messages(&[1, 2]));
        window.push(4, 2, Vec::new());
        assert_eq!(window.pop_settled(), None, "the older batch comes first");
        assert_eq!(window.front_unsettled(), 2);
        window.settle(2, true);
        assert_eq!(window.pop_settled().map(|b| b.last), Some(2));
        let filtered = window.pop_settled();
        assert_eq!(
            filtered.map(|b| (b.last, b.records, b.delivered)),
            Some((4, 2, 0))
        );
        assert!(window.is_empty());
    }

    #[test]
    fn settling_spans_batches() {
        let mut window = Window::default();
        window.push(1, 1, messages(&[1]));
        window.push(3, 2, messages(&[2, 3]));
        window.settle(3, true);
        assert_eq!(window.pop_settled().map(|b| b.delivered), Some(1));
        assert_eq!(window.pop_settled().map(|b| b.delivered), Some(2));
        assert!(window.messages().is_empty());
    }
}
