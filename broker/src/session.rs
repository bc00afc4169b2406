//! What happens to a client id's session between its connections: the
//! parts rumqttd's router does not do for local links.
//!
//! The router keeps a persistent session (subscriptions and a cursor into
//! its logs) forever and knows no Session Expiry Interval. This registry
//! ends a session when its interval passes (by attaching a clean-session
//! link under the client id, which makes the router drop the saved state),
//! publishes delayed wills, cancels both when the client id connects again,
//! and tells a connection that another one took its client id over.
//!
//! Every attach to the router under a device's client id, and every purge,
//! happens under [`Sessions::attach_lock`], so a purge can never take over a
//! connection that arrived while it ran.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::broker::{LinkRequest, Shared};
use crate::will::{self, Will};
use crate::ConnectionError;

/// How long a session outlives its connection; `None` for ever. MQTT 3.1.1
/// sessions are clean (end at once) or persistent (never expire); MQTT 5
/// says so with the Session Expiry Interval (absent = 0, 0xFFFFFFFF =
/// never).
pub(crate) fn session_expiry(v5: bool, clean: bool, interval: Option<u32>) -> Option<Duration> {
    if !v5 {
        return clean.then_some(Duration::ZERO);
    }
    match interval.unwrap_or(0) {
        u32::MAX => None,
        seconds => Some(Duration::from_secs(u64::from(seconds))),
    }
}

/// Attaches a client to the router under the session registry's attach
/// lock: registers the connection (cancelling a delayed will and a session
/// expiry, taking over an older connection), and for an MQTT 5 clean start
/// whose session outlives the connection first drops the old session, as
/// the router cannot be told "start clean, then keep". The connection's
/// generation and its link.
pub(crate) async fn attach(
    shared: &Shared,
    client_id: &str,
    clean_start: bool,
    router_keeps_state: bool,
    topic_alias_max: u16,
) -> Result<(u64, (LinkTx, LinkRx, rumqttd::Notification)), ConnectionError> {
    let _attach = shared.sessions.attach_lock().await;
    let generation = shared.sessions.connect(client_id);
    let attached = async {
        if clean_start && router_keeps_state {
            purge(shared, client_id).await?;
        }
        let request = LinkRequest {
            client_id: client_id.to_owned(),
            clean_session: !router_keeps_state,
            topic_alias_max,
        };
        let connector = shared.connector.clone();
        tokio::task::spawn_blocking(move || connector(request))
            .await
            .map_err(|_| ConnectionError::RouterGone)?
    }
    .await;
    match attached {
        Ok(link) => Ok((generation, link)),
        Err(err) => {
            shared.sessions.abandon(client_id, generation);
            Err(err)
        }
    }
}

/// The session registry.
#[derive(Default)]
pub(crate) struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
    attach: tokio::sync::Mutex<()>,
    next_generation: AtomicU64,
}

/// One client id that is connected, or has a will or an expiry pending.
#[derive(Default)]
struct Entry {
    /// The generation of the newest connection with this client id.
    latest: u64,
    /// Whether that connection is still open.
    connected: bool,
    will: Option<AbortHandle>,
    expiry: Option<AbortHandle>,
}

impl Entry {
    fn idle(&self) -> bool {
        !self.connected && self.will.is_none() && self.expiry.is_none()
    }
}

/// How a connection ended, for its will and its session.
pub(crate) struct Ending {
    pub(crate) client_id: String,
    pub(crate) generation: u64,
    /// The will still to publish (`None` after a normal DISCONNECT).
    pub(crate) will: Option<Will>,
    /// How long the session outlives the connection; `None` for ever.
    pub(crate) expiry: Option<Duration>,
    /// Whether the router keeps state for this session (else there is
    /// nothing to purge).
    pub(crate) router_keeps_state: bool,
}

impl Sessions {
    /// Held while attaching to the router under a device's client id.
    pub(crate) async fn attach_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.attach.lock().await
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection for `client_id` (call with the attach
    /// lock held): cancels its pending will and session expiry, and makes
    /// any older connection with this client id a taken-over one.
    pub(crate) fn connect(&self, client_id: &str) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut entries = self.entries();
        let entry = entries.entry(client_id.to_owned()).or_default();
        if let Some(will) = entry.will.take() {
            will.abort();
            debug!(
                client_id,
                "delayed will cancelled: the client id connected again"
            );
        }
        if let Some(expiry) = entry.expiry.take() {
            expiry.abort();
        }
        entry.latest = generation;
        entry.connected = true;
        generation
    }

    /// Whether connection `generation` still holds `client_id`.
    pub(crate) fn is_current(&self, client_id: &str, generation: u64) -> bool {
        self.entries()
            .get(client_id)
            .is_some_and(|e| e.latest == generation)
    }

    /// Forgets a client id whose connection attempt failed after
    /// [`Sessions::connect`].
    pub(crate) fn abandon(&self, client_id: &str, generation: u64) {
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(client_id) {
            if entry.latest == generation {
                entry.connected = false;
                if entry.idle() {
                    entries.remove(client_id);
                }
            }
        }
    }
}

/// After a connection closed: publishes or schedules its will, and ends or
/// schedules the end of its session.
pub(crate) async fn connection_ended(shared: &Arc<Shared>, ending: Ending) {
    let now_ms = crate::connection::now_ms();
    let (publish_now, purge_generation) = {
        let mut entries = shared.sessions.entries();
        let entry = entries.entry(ending.client_id.clone()).or_default();
        let current = entry.latest == ending.generation;
        if current {
            entry.connected = false;
        }
        let mut publish_now = None;
        if let Some(will) = ending.will {
            let delay = will_delay(&will, ending.expiry);
            if !current && !will.delay.is_zero() {
                // A new connection to the session came within the delay.
                debug!(client_id = %ending.client_id, "delayed will not published: the client id connected again");
            } else if delay.is_zero() {
                publish_now = Some(will);
            } else {
                let task = tokio::spawn(delayed_will(
                    shared.clone(),
                    ending.client_id.clone(),
                    will,
                    delay,
                    now_ms,
                ));
                entry.will = Some(task.abort_handle());
            }
        }
        let mut purge_now = false;
        if let (true, true, Some(expiry)) = (current, ending.router_keeps_state, ending.expiry) {
            if expiry.is_zero() {
                purge_now = true;
            } else {
                let task = tokio::spawn(expire_after(
                    shared.clone(),
                    ending.client_id.clone(),
                    ending.generation,
                    expiry,
                ));
                entry.expiry = Some(task.abort_handle());
            }
        }
        if entry.idle() {
            entries.remove(&ending.client_id);
        }
        (publish_now, purge_now.then_some(ending.generation))
    };
    if let Some(will) = publish_now {
        will::publish(shared, &ending.client_id, will, now_ms).await;
    }
    if let Some(generation) = purge_generation {
        end_session(shared, &ending.client_id, generation).await;
    }
}

/// When a will is due: after its delay, or when the session ends if that
/// comes first.
fn will_delay(will: &Will, session_expiry: Option<Duration>) -> Duration {
    match session_expiry {
        Some(expiry) => will.delay.min(expiry),
        None => will.delay,
    }
}

async fn delayed_will(
    shared: Arc<Shared>,
    client_id: String,
    will: Will,
    delay: Duration,
    received_at_ms: u64,
) {
    tokio::time::sleep(delay).await;
    {
        let mut entries = shared.sessions.entries();
        if let Some(entry) = entries.get_mut(&client_id) {
            entry.will = None;
            if entry.idle() {
                entries.remove(&client_id);
            }
        }
    }
    will::publish(&shared, &client_id, will, received_at_ms).await;
}

async fn expire_after(shared: Arc<Shared>, client_id: String, generation: u64, expiry: Duration) {
    tokio::time::sleep(expiry).await;
    end_session(&shared, &client_id, generation).await;
}

/// Drops the router's saved state for `client_id`, unless a connection
/// newer than `generation` has claimed the session meanwhile.
async fn end_session(shared: &Arc<Shared>, client_id: &str, generation: u64) {
    let _attach = shared.sessions.attach_lock().await;
    {
        let mut entries = shared.sessions.entries();
        // An entry is removed only when idle: none means no connection has
        // claimed the session since.
        if let Some(entry) = entries.get_mut(client_id) {
            if entry.latest != generation || entry.connected {
                return;
            }
            entry.expiry = None;
            if entry.idle() {
                entries.remove(client_id);
            }
        }
    }
    purge_logged(shared, client_id).await;
}

async fn purge_logged(shared: &Shared, client_id: &str) {
    match purge(shared, client_id).await {
        Ok(()) => info!(client_id, "session expired"),
        Err(err) => warn!(client_id, %err, "an expired session could not be removed"),
    }
}

/// Makes the router forget `client_id`'s saved session: a clean-session
/// attach discards it, and its disconnect saves nothing. Call with the
/// attach lock held.
pub(crate) async fn purge(shared: &Shared, client_id: &str) -> Result<(), ConnectionError> {
    let request = LinkRequest {
        client_id: client_id.to_owned(),
        clean_session: true,
        topic_alias_max: 0,
    };
    let connector = shared.connector.clone();
    let (mut link_tx, _link_rx, _ack) = tokio::task::spawn_blocking(move || connector(request))
        .await
        .map_err(|_| ConnectionError::RouterGone)??;
    let disconnect = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    };
    link_tx.send(Packet::Disconnect(disconnect, None)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumqttd::protocol::{LastWill, LastWillProperties, QoS};

    fn will(delay: u32) -> Will {
        let last_will = LastWill {
            topic: Bytes::from_static(b"t"),
            message: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
        };
        let properties = LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        };
        Will::from_connect(last_will, Some(properties)).unwrap()
    }

    #[test]
    fn a_will_is_due_after_its_delay_or_at_session_end_if_sooner() {
        let secs = Duration::from_secs;
        assert_eq!(will_delay(&will(10), None), secs(10));
        assert_eq!(will_delay(&will(10), Some(secs(3))), secs(3));
        assert_eq!(will_delay(&will(10), Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(will_delay(&will(2), Some(secs(60))), secs(2));
    }

    #[test]
    fn a_new_connection_takes_the_client_id_over() {
        let sessions = Sessions::default();
        let first = sessions.connect("dev");
        assert!(sessions.is_current("dev", first));
        let second = sessions.connect("dev");
        assert!(!sessions.is_current("dev", first));
        assert!(sessions.is_current("dev", second));
        sessions.abandon("dev", second);
        assert!(sessions.entries().is_empty(), "nothing pending: forgotten");
    }
}
