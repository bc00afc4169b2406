//! Counts what reached the destination: every (publisher, number) pair,
//! so losses, duplicates and order are counted, not assumed, and the
//! latency and arrival time of every message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::payload::{self, Stamp, LIVE_PUBLISHER, PROBE_PUBLISHER};

/// What one publisher's numbers looked like on arrival.
#[derive(Debug, Default, Clone)]
struct Stream {
    /// Arrivals per number (saturating).
    seen: Vec<u8>,
    /// The highest number seen so far.
    highest: Option<u64>,
    unique: u64,
    duplicates: u64,
    /// Arrivals of a number lower than one already seen (a duplicate that
    /// comes back later counts here only if it is new).
    reordered: u64,
}

impl Stream {
    fn record(&mut self, seq: u64) {
        let index = seq as usize;
        if self.seen.len() <= index {
            self.seen.resize((index + 1).max(self.seen.len() * 2), 0);
        }
        let slot = &mut self.seen[index];
        *slot = slot.saturating_add(1);
        if *slot > 1 {
            self.duplicates += 1;
            return;
        }
        self.unique += 1;
        match self.highest {
            Some(high) if seq < high => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
    }

    fn has(&self, seq: u64) -> bool {
        self.seen.get(seq as usize).is_some_and(|&n| n > 0)
    }
}

/// Arrival figures of one class of traffic (the bulk, or the live messages).
#[derive(Debug, Default, Clone)]
pub struct Arrivals {
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Publisher to destination, microseconds, one per unique arrival.
    pub latencies_us: Vec<u32>,
}

impl Arrivals {
    /// The `p`-quantile (0..=1) latency in milliseconds.
    pub fn latency_ms(&self, p: f64) -> Option<f64> {
        let mut sorted = self.latencies_us.clone();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        Some(f64::from(sorted[index]) / 1000.0)
    }
}

#[derive(Debug, Default)]
pub struct Collector {
    streams: HashMap<u32, Stream>,
    bulk: Arrivals,
    live: Arrivals,
    probes: u64,
    /// Messages that were not benchmark payloads.
    pub foreign: u64,
    /// Arrivals the Event Hubs feed skipped (counted again from the peer's
    /// store, see [`Collector::recounted`]).
    pub lagged: u64,
}

impl Collector {
    /// Records one arrival at `now_ns` ([`payload::now_ns`]).
    pub fn record(&mut self, body: &[u8], now_ns: u64) {
        let Some(Stamp {
            publisher,
            seq,
            sent_ns,
        }) = payload::read(body)
        else {
            self.foreign += 1;
            return;
        };
        if publisher == PROBE_PUBLISHER {
            self.probes += 1;
            return;
        }
        let stream = self.streams.entry(publisher).or_default();
        let (unique, duplicates, reordered) = (stream.unique, stream.duplicates, stream.reordered);
        stream.record(seq);
        let class = if publisher >= LIVE_PUBLISHER {
            &mut self.live
        } else {
            &mut self.bulk
        };
        class.duplicates += stream.duplicates - duplicates;
        class.reordered += stream.reordered - reordered;
        if stream.unique > unique {
            class.unique += 1;
            class.first_ns.get_or_insert(now_ns);
            class.last_ns = Some(now_ns);
            let latency = now_ns.saturating_sub(sent_ns) / 1000;
            class
                .latencies_us
                .push(latency.min(u64::from(u32::MAX)) as u32);
        }
    }

    pub fn bulk(&self) -> &Arrivals {
        &self.bulk
    }

    pub fn live(&self) -> &Arrivals {
        &self.live
    }

    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// A collector that saw `bodies` in this order (timing meaningless):
    /// exact counts when the live feed lagged.
    pub fn recounted(bodies: &[Vec<u8>]) -> Self {
        let mut collector = Self::default();
        for body in bodies {
            collector.record(body, 0);
        }
        collector
    }

    /// How many of `0..count` from `publisher` arrived at least once.
    pub fn delivered_of(&self, publisher: u32, count: u64) -> u64 {
        self.streams
            .get(&publisher)
            .map(|s| (0..count).filter(|&n| s.has(n)).count() as u64)
            .unwrap_or(0)
    }
}

/// A collector shared by the receiving task and the harness.
#[derive(Clone, Default)]
pub struct SharedCollector(Arc<Mutex<Collector>>);

impl SharedCollector {
    pub fn lock(&self) -> MutexGuard<'_, Collector> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts over (between trials).
    pub fn reset(&self) {
        *self.lock() = Collector::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::payload::{stamp, template};

    fn body(publisher: u32, seq: u64) -> Vec<u8> {
        let mut p = template(200);
        stamp(
            &mut p,
            Stamp {
                publisher,
                seq,
                sent_ns: 1_000,
            },
        );
        p
    }

    #[test]
    fn counts_losses_duplicates_and_order_per_publisher() {
        let mut c = Collector::default();
        for (publisher, seq) in [(0, 0), (0, 2), (0, 1), (0, 2), (1, 0), (LIVE_PUBLISHER, 0)] {
            c.record(&body(publisher, seq), 3_000_000);
        }
        c.record(&body(PROBE_PUBLISHER, 0), 3_000_000);
        c.record(b"hello", 3_000_000);
        assert_eq!(c.bulk().unique, 4);
        assert_eq!(c.bulk().duplicates, 1);
        assert_eq!(c.bulk().reordered, 1);
        assert_eq!(c.live().unique, 1);
        assert_eq!((c.probes(), c.foreign), (1, 1));
        assert_eq!(c.delivered_of(0, 4), 3);
        assert_eq!(c.bulk().latency_ms(0.5), Some(2.999));
    }
}
