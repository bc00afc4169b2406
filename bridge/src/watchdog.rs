//! The systemd watchdog: `WATCHDOG=1` only while the appliance can still do
//! its job. The ping comes from a task on the async runtime (so a runtime
//! whose workers are all stuck sends nothing) and only after the queue
//! committer answered an empty append (so a commit thread hung on a dead
//! disk sends nothing either). systemd then kills and restarts the service
//! (`WatchdogSec=` with `Restart=on-failure`), and devices reconnect to a
//! fresh process that recovers the queues from disk.
//!
//! Each ping also carries a `STATUS=` line with the backlog, which
//! `systemctl status backhaul` shows.

use std::sync::Arc;
use std::time::Duration;

use backhaul_storage::QueueStore;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::health::FlowHealth;
use crate::sd_notify::{self, Notifier};

/// Says `READY=1` with the status line, and starts the watchdog task when
/// systemd asked for one (`$WATCHDOG_USEC`); the caller aborts it last.
pub fn ready(
    notifier: &Arc<Notifier>,
    store: &Arc<QueueStore>,
    health: &Arc<FlowHealth>,
) -> Option<JoinHandle<()>> {
    notifier.notify(&format!("READY=1\nSTATUS={}", status_line(store, health)));
    let interval = sd_notify::watchdog_interval()?;
    let watchdog = Watchdog {
        notifier: notifier.clone(),
        interval,
        store: store.clone(),
        health: health.clone(),
    };
    Some(tokio::spawn(watchdog.run()))
}

/// What the watchdog looks at.
pub struct Watchdog {
    pub notifier: Arc<Notifier>,
    /// Half of `WATCHDOG_USEC`.
    pub interval: Duration,
    pub store: Arc<QueueStore>,
    pub health: Arc<FlowHealth>,
}

impl Watchdog {
    /// Pings every `interval` until the task is aborted, which `app::run`
    /// does last: the pings go on while the flows finish during shutdown.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match tokio::time::timeout(self.interval, self.store.ping()).await {
                Ok(Ok(_)) => self
                    .notifier
                    .notify(&format!("WATCHDOG=1\nSTATUS={}", self.status())),
                Ok(Err(err)) => {
                    warn!(%err, "the queue committer is gone; no watchdog ping")
                }
                Err(_) => warn!(
                    waited = ?self.interval,
                    "the queue committer does not answer; no watchdog ping"
                ),
            }
        }
    }

    /// `ready: 2 flow(s), 130 message(s) queued, 1 parked (site-hub)`.
    pub fn status(&self) -> String {
        status_line(&self.store, &self.health)
    }
}

/// The one-line summary systemd shows as the unit's status.
pub fn status_line(store: &QueueStore, health: &FlowHealth) -> String {
    let queues = store.queues();
    let queued: u64 = queues.iter().map(|q| q.stats().messages).sum();
    let parked = health.parked();
    let mut line = format!(
        "ready: {} flow(s), {queued} message(s) queued",
        queues.len()
    );
    if !parked.is_empty() {
        let names: Vec<&str> = parked.iter().map(|(flow, _)| flow.as_str()).collect();
        line.push_str(&format!(", {} parked ({})", parked.len(), names.join(", ")));
    }
    line
}
