//! A flow's counters from `/metrics` and the accounting identity of the
//! durability contract: every message that entered the queue is delivered,
//! still queued, or dropped and counted.

use std::fmt;

/// The flow's counters since the process started (a restarted appliance
/// starts again from zero, with what it found on disk in `recovered`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accounting {
    pub received: f64,
    pub recovered: f64,
    pub delivered: f64,
    pub filtered: f64,
    pub queued: f64,
    /// `backhaul_flow_dropped_total`, every reason.
    pub dropped: f64,
    pub quarantined: f64,
    pub overflow_dropped: f64,
    pub expired: f64,
    /// Publishes refused by a limit (never entered the queue).
    pub rejected: f64,
}

impl Accounting {
    /// Reads the flow's samples; `None` if the ones every flow exposes from
    /// the start (received, delivered, queue) are missing.
    pub fn parse(text: &str, flow: &str) -> Option<Self> {
        let label = format!("flow=\"{flow}\"");
        // Sum of every sample of `name` carrying the flow's label (other
        // labels, such as a drop reason, in any order).
        let sum = |name: &str| -> Option<f64> {
            let mut found = None;
            for line in text.lines() {
                let Some(rest) = line.strip_prefix(name) else {
                    continue;
                };
                let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once("} "))
                else {
                    continue;
                };
                if labels.split(',').any(|l| l == label) {
                    if let Ok(value) = value.trim().parse::<f64>() {
                        *found.get_or_insert(0.0) += value;
                    }
                }
            }
            found
        };
        Some(Self {
            received: sum("backhaul_flow_received_total")?,
            delivered: sum("backhaul_flow_delivered_total")?,
            queued: sum("backhaul_queue_messages")?,
            recovered: sum("backhaul_flow_recovered_messages").unwrap_or(0.0),
            filtered: sum("backhaul_flow_filtered_total").unwrap_or(0.0),
            dropped: sum("backhaul_flow_dropped_total").unwrap_or(0.0),
            quarantined: sum("backhaul_queue_quarantined_total").unwrap_or(0.0),
            overflow_dropped: sum("backhaul_queue_overflow_dropped_total").unwrap_or(0.0),
            expired: sum("backhaul_queue_expired_total").unwrap_or(0.0),
            rejected: sum("backhaul_queue_rejected_total").unwrap_or(0.0),
        })
    }

    /// What came in: received since start plus recovered at start.
    pub fn entered(&self) -> f64 {
        self.received + self.recovered
    }

    /// Where it went: delivered, queued, or dropped for a counted reason.
    pub fn accounted(&self) -> f64 {
        self.delivered
            + self.filtered
            + self.queued
            + self.dropped
            + self.quarantined
            + self.overflow_dropped
            + self.expired
    }

    /// Every drop, whatever the reason.
    pub fn all_dropped(&self) -> f64 {
        self.filtered + self.dropped + self.quarantined + self.overflow_dropped + self.expired
    }

    /// received + recovered = delivered + queued + dropped (by reason).
    pub fn balances(&self) -> bool {
        self.entered() == self.accounted()
    }
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {} + recovered {} vs delivered {} + queued {} + filtered {} + dropped {} \
             + quarantined {} + overflow {} + expired {} (rejected publishes {})",
            self.received,
            self.recovered,
            self.delivered,
            self.queued,
            self.filtered,
            self.dropped,
            self.quarantined,
            self.overflow_dropped,
            self.expired,
            self.rejected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_reason_of_the_flow_only() {
        let text = "backhaul_flow_received_total{flow=\"a\"} 10\n\
                    backhaul_flow_received_total{flow=\"b\"} 99\n\
                    backhaul_flow_delivered_total{flow=\"a\"} 6\n\
                    backhaul_queue_messages{flow=\"a\"} 2\n\
                    backhaul_flow_dropped_total{flow=\"a\",reason=\"expired\"} 1\n\
                    backhaul_flow_dropped_total{reason=\"too_large\",flow=\"a\"} 1\n\
                    backhaul_flow_dropped_total{flow=\"b\",reason=\"expired\"} 7\n";
        let a = Accounting::parse(text, "a").unwrap();
        assert_eq!(
            (a.received, a.delivered, a.queued, a.dropped),
            (10.0, 6.0, 2.0, 2.0)
        );
        assert!(a.balances(), "{a}");
        assert_eq!(Accounting::parse(text, "c"), None);
    }
}
