//! What the destination received, checked against what devices were
//! PUBACKed: nothing lost, order kept, duplicates only as re-sends of
//! messages already delivered, each with the same id.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// One message as the destination saw it, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The publisher's number (the payload).
    pub number: u64,
    /// Backhaul's message id, `<appliance>/<flow>/<sequence>`.
    pub id: String,
}

/// The outcome of [`judge`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Messages received, redeliveries included.
    pub received: usize,
    /// Distinct message ids.
    pub distinct: usize,
    /// `received - distinct`.
    pub duplicates: usize,
    /// Times the stream went back to an id already delivered: each is one
    /// re-send of what was in flight at a cut, crash or reconnect.
    pub resends: usize,
    /// PUBACKed numbers that never arrived (at most the first 20).
    pub lost: Vec<u64>,
    /// How many PUBACKed numbers never arrived.
    pub lost_count: usize,
    /// Queue sequences missing between the first and the last delivered.
    pub sequence_gaps: u64,
    /// Order broken, an id not of this flow, or an id carrying two
    /// different messages (at most the first 20).
    pub violations: Vec<String>,
}

impl Verdict {
    /// Nothing lost, nothing out of order, every duplicate a faithful
    /// re-send.
    pub fn intact(&self) -> bool {
        self.lost_count == 0 && self.violations.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} received, {} distinct, {} duplicates in {} re-sends, {} PUBACKed lost {:?}, \
             {} sequence gaps, violations {:?}",
            self.received,
            self.distinct,
            self.duplicates,
            self.resends,
            self.lost_count,
            self.lost,
            self.sequence_gaps,
            self.violations
        )
    }
}

const LIST_LIMIT: usize = 20;

/// Judges `deliveries` (arrival order) of the flow whose ids start with
/// `id_prefix` (`<appliance>/<flow>/`) against the `acked` numbers.
///
/// Order: the first arrival of each id comes in increasing queue sequence
/// and increasing number. A message may arrive again only as part of a
/// re-send: the stream steps back to an id already delivered (counted in
/// `resends`), and every repeated id carries the number it carried first.
pub fn judge(acked: &[u64], deliveries: &[Delivery], id_prefix: &str) -> Verdict {
    let mut verdict = Verdict {
        received: deliveries.len(),
        ..Verdict::default()
    };
    let mut by_sequence: HashMap<u64, u64> = HashMap::new();
    let mut by_number: HashMap<u64, u64> = HashMap::new();
    let mut highest: Option<(u64, u64)> = None;
    let mut previous_sequence: Option<u64> = None;
    let violation = |verdict: &mut Verdict, text: String| {
        if verdict.violations.len() < LIST_LIMIT {
            verdict.violations.push(text);
        }
    };
    for delivery in deliveries {
        let Some(sequence) = delivery
            .id
            .strip_prefix(id_prefix)
            .and_then(|s| s.parse::<u64>().ok())
        else {
            violation(
                &mut verdict,
                format!("id {:?} is not {id_prefix}<sequence>", delivery.id),
            );
            continue;
        };
        if previous_sequence.is_some_and(|p| sequence <= p) {
            verdict.resends += 1;
        }
        previous_sequence = Some(sequence);
        if let Some(&number) = by_sequence.get(&sequence) {
            verdict.duplicates += 1;
            if number != delivery.number {
                violation(
                    &mut verdict,
                    format!(
                        "id {} carried {number} first and {} again",
                        delivery.id, delivery.number
                    ),
                );
            }
            continue;
        }
        if let Some(&first) = by_number.get(&delivery.number) {
            violation(
                &mut verdict,
                format!(
                    "number {} arrived as sequence {first} and again as {sequence}",
                    delivery.number
                ),
            );
            continue;
        }
        if let Some((top_sequence, top_number)) = highest {
            if sequence < top_sequence || delivery.number < top_number {
                violation(
                    &mut verdict,
                    format!(
                        "out of order: {} (number {}) first arrived after sequence \
                         {top_sequence} (number {top_number})",
                        delivery.id, delivery.number
                    ),
                );
            }
        }
        by_sequence.insert(sequence, delivery.number);
        by_number.insert(delivery.number, sequence);
        highest = Some(highest.map_or((sequence, delivery.number), |(s, n)| {
            (s.max(sequence), n.max(delivery.number))
        }));
    }
    verdict.distinct = by_sequence.len();
    if let (Some(first), Some(last)) = (by_sequence.keys().min(), by_sequence.keys().max()) {
        verdict.sequence_gaps = (last - first + 1) - by_sequence.len() as u64;
    }
    let delivered: BTreeSet<u64> = by_number.keys().copied().collect();
    let mut lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !delivered.contains(n))
        .collect();
    lost.sort_unstable();
    lost.dedup();
    verdict.lost_count = lost.len();
    lost.truncate(LIST_LIMIT);
    verdict.lost = lost;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(number: u64, sequence: u64) -> Delivery {
        Delivery {
            number,
            id: format!("e/f/{sequence}"),
        }
    }

    #[test]
    fn a_resend_of_delivered_messages_is_counted_not_a_violation() {
        let got = [d(10, 1), d(11, 2), d(12, 3), d(11, 2), d(12, 3), d(13, 4)];
        let verdict = judge(&[10, 11, 12, 13], &got, "e/f/");
        assert!(verdict.intact(), "{verdict}");
        assert_eq!(
            (verdict.distinct, verdict.duplicates, verdict.resends),
            (4, 2, 1)
        );
        assert_eq!(verdict.sequence_gaps, 0);
    }

    #[test]
    fn loss_reorder_and_a_changed_duplicate_are_reported() {
        let got = [d(10, 1), d(12, 3), d(11, 2), d(99, 3)];
        let verdict = judge(&[10, 11, 12, 13], &got, "e/f/");
        assert_eq!(verdict.lost, vec![13]);
        assert_eq!(
            verdict.violations,
            vec![
                "out of order: e/f/2 (number 11) first arrived after sequence 3 (number 12)"
                    .to_string(),
                "id e/f/3 carried 12 first and 99 again".to_string(),
            ]
        );
    }

    #[test]
    fn a_missing_sequence_is_a_gap() {
        let verdict = judge(&[1, 3], &[d(1, 1), d(3, 3)], "e/f/");
        assert!(verdict.intact());
        assert_eq!(verdict.sequence_gaps, 1);
    }
}
