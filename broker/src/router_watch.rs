//! Noticing that rumqttd's router thread has ended.
//!
//! The router is one thread that owns every subscription, session and
//! retained message. If it panics (rumqttd 0.20 has panics reachable from
//! client traffic, see the fuzzing notes in the README), connections can
//! no longer be attached nor routed: the process looks alive and does
//! nothing. rumqttd hides the thread's join handle, but the thread owns the
//! receiving end of the router's channel, so its end disconnects every
//! sender: [`RouterWatch::stopped`] watches a sender for that. The appliance
//! then exits with an error and systemd restarts it.

use std::sync::Arc;
use std::time::Duration;

/// Whether the router thread still runs.
#[derive(Clone)]
pub struct RouterWatch {
    alive: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// How often [`RouterWatch::stopped`] looks.
const POLL: Duration = Duration::from_millis(200);

impl RouterWatch {
    /// Watches the router through `alive`, which asks one of its channel's
    /// senders whether the receiving end is still there.
    pub(crate) fn new(alive: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            alive: Arc::new(alive),
        }
    }

    pub fn is_alive(&self) -> bool {
        (self.alive)()
    }

    /// Resolves once the router thread has ended.
    pub async fn stopped(&self) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.is_alive() {
            ticks.tick().await;
        }
    }
}

impl std::fmt::Debug for RouterWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterWatch")
            .field("alive", &self.is_alive())
            .finish()
    }
}
