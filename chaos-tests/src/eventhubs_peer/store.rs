//! What the peer received: one [`ReceivedEvent`] per event (a batch
//! envelope contributes each event inside it), in arrival order.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use tokio::sync::{broadcast, watch};

/// One event as the peer stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// Arrival order at the peer, from 0, never reused.
    pub seq: u64,
    /// The event hub named by the link's target.
    pub hub: String,
    /// The partition named by the link's target (`…/Partitions/<id>`), if
    /// the sender pinned one.
    pub partition_id: Option<String>,
    /// The `x-opt-partition-key` message annotation.
    pub partition_key: Option<String>,
    /// `properties.message-id`, as text (numbers and UUIDs formatted).
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// `properties.content-type`.
    pub content_type: Option<String>,
    /// The application properties, in their order on the wire.
    pub properties: Vec<(String, PropertyValue)>,
    /// The data sections, concatenated (an amqp-value body is kept as its
    /// AMQP encoding).
    pub body: Vec<u8>,
    /// Whether it came inside a batch envelope.
    pub batched: bool,
    /// Which transfer carried it (counts every event transfer, from 0).
    pub transfer: u64,
    /// Which connection carried it (counts accepted connections, from 0).
    pub connection: u64,
}

impl ReceivedEvent {
    pub fn property(&self, name: &str) -> Option<&PropertyValue> {
        self.properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The partition it landed in as far as the peer knows: the pinned id,
    /// else the key, prefixed `key:`, else `-`.
    pub fn placement(&self) -> String {
        match (&self.partition_id, &self.partition_key) {
            (Some(id), _) => id.clone(),
            (None, Some(key)) => format!("key:{key}"),
            (None, None) => "-".to_string(),
        }
    }
}

/// An application property value, simplified from AMQP's simple types.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
    Binary(Vec<u8>),
    /// Anything else (timestamps, UUIDs, symbols, decimals), debug-formatted.
    Other(String),
}

impl PropertyValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PropertyValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Null => write!(f, "null"),
            PropertyValue::Bool(v) => write!(f, "{v}"),
            PropertyValue::Int(v) => write!(f, "{v}"),
            PropertyValue::Uint(v) => write!(f, "{v}"),
            PropertyValue::Double(v) => write!(f, "{v}"),
            PropertyValue::String(v) => write!(f, "{v:?}"),
            PropertyValue::Binary(v) => write!(f, "<{} bytes>", v.len()),
            PropertyValue::Other(v) => write!(f, "{v}"),
        }
    }
}

/// The events, shared with the feed: each is stored once, not copied per
/// subscriber (at 100k events/s the copies were a large part of the peer's
/// work, and the peer must not be what limits a benchmark).
pub(crate) struct EventStore {
    events: Mutex<Vec<Arc<ReceivedEvent>>>,
    next_seq: Mutex<u64>,
    /// Bumped on every change; waiters re-check the length.
    changed: watch::Sender<u64>,
    feed: broadcast::Sender<Arc<ReceivedEvent>>,
}

impl EventStore {
    pub(crate) fn new() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            next_seq: Mutex::new(0),
            changed: watch::channel(0).0,
            feed: broadcast::channel(4096).0,
        }
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ReceivedEvent>>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `events` (their `seq` is assigned here), atomically.
    pub(crate) fn push_all(&self, new: Vec<ReceivedEvent>) {
        if new.is_empty() {
            return;
        }
        let mut events = self.events();
        let mut next = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        for mut event in new {
            event.seq = *next;
            *next += 1;
            let event = Arc::new(event);
            let _ = self.feed.send(event.clone());
            events.push(event);
        }
        drop(next);
        drop(events);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn all(&self) -> Vec<ReceivedEvent> {
        self.events()
            .iter()
            .map(|e| ReceivedEvent::clone(e))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.events().len()
    }

    /// Events stored for a partition id (for `$management` partition reads).
    pub(crate) fn count_in_partition(&self, hub: &str, partition: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.hub == hub && e.partition_id.as_deref() == Some(partition))
            .count()
    }

    pub(crate) fn clear(&self) {
        self.events().clear();
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<ReceivedEvent>> {
        self.feed.subscribe()
    }

    pub(crate) async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedEvent>> {
        let mut changed = self.changed.subscribe();
        let wait = async {
            loop {
                changed.borrow_and_update();
                if self.len() >= count {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() || self.len() < count {
            bail!(
                "the Event Hubs peer got {} of {count} events within {timeout:?}",
                self.len()
            );
        }
        Ok(self.all())
    }
}
