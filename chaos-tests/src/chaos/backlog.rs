//! Watches a flow's backlog gauge while a fault is on, to prove it rose
//! (the queue absorbed the outage) and, later, that it returned to zero.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::process::scrape;

/// Samples `backhaul_queue_messages{flow=...}` every 100 ms on a thread of
/// its own (scrapes are blocking HTTP) until dropped. Failed scrapes (the
/// appliance is down) are skipped.
pub struct BacklogProbe {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl BacklogProbe {
    pub fn start(metrics_port: u16, flow: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let sample = queue_sample(flow);
        let thread = std::thread::spawn({
            let (stop, peak, samples) = (stop.clone(), peak.clone(), samples.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(value) = scrape(metrics_port, &sample) {
                        peak.fetch_max(value as u64, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Self {
            stop,
            peak,
            samples,
            thread: Some(thread),
        }
    }

    /// The highest backlog seen so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// How many scrapes succeeded.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }
}

impl Drop for BacklogProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `backhaul_queue_messages{flow="<flow>"}`.
pub fn queue_sample(flow: &str) -> String {
    format!("backhaul_queue_messages{{flow=\"{flow}\"}}")
}
