use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backhaul_broker::StoredMessage;
use backhaul_storage::{FlowQueue, QueuedRecord, Seq};
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn, Instrument};

use super::window::Window;
use super::{ReplayRequest, TopicTemplate};
use crate::datasets::DatasetStore;
use crate::deadletter::DeadLetters;
use crate::endpoint::{ErrorKind, OutboundMessage, SendError, Sink};
use crate::health::FlowHealth;
use crate::mapping::{Datasets, Json, Message, Outcome, Transform};
use crate::metrics::FlowMetrics;

/// Batch sizes and retry timing of a flow.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Retry interval of a flow parked by a fatal endpoint error.
    pub parked_retry: Duration,
    /// How long to wait for more messages when a read did not fill a batch
    /// (the endpoint's `batching.latencyMs`); zero sends at once.
    pub linger: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            max_batch_messages: 500,
            max_batch_bytes: 4 * 1024 * 1024,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            parked_retry: Duration::from_secs(60),
            linger: Duration::ZERO,
        }
    }
}

/// Why a queued message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drop {
    /// The stored bytes do not decode (a bug or a format change).
    Undecodable,
    /// `dataDestination` names a topic level the source topic lacks.
    UnresolvedDestination,
    /// Its MQTT message expiry passed while it was queued.
    Expired,
    /// The transformation failed on it (a rule's error, or a payload that
    /// is not JSON).
    TransformError,
    /// A filter rule matched it: dropped on purpose, counted apart.
    Filtered,
}

impl Drop {
    fn reason(self) -> &'static str {
        match self {
            Drop::Undecodable => "undecodable",
            Drop::UnresolvedDestination => "unresolved_destination",
            Drop::Expired => "expired",
            Drop::TransformError => "transform_error",
            Drop::Filtered => "filtered",
        }
    }
}

/// Where a batch comes from: the queue, or the flow's dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    Live,
    /// Letters refused again stay dead letters without being counted as
    /// dropped a second time.
    Replay,
}

/// The task of one data flow.
pub struct FlowRunner {
    pub name: String,
    pub appliance_id: String,
    pub queue: FlowQueue,
    pub destination: TopicTemplate,
    pub sink: Box<dyn Sink>,
    pub metrics: FlowMetrics,
    pub settings: RunnerSettings,
    /// The flow's compiled BuiltInTransformation.
    pub transform: Option<Transform>,
    pub datasets: Arc<DatasetStore>,
    pub dead_letters: DeadLetters,
    pub health: Arc<FlowHealth>,
    /// Whether a topic written by the transformation (`$metadata.topic`)
    /// becomes the destination topic (MQTT destinations).
    pub topic_sets_destination: bool,
    /// Operators' requests to replay the dead letters.
    pub replays: mpsc::Receiver<ReplayRequest>,
}

impl FlowRunner {
    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let span = tracing::info_span!("flow", name = %self.name);
        async move {
            let mut window = Window::default();
            let mut next: Seq = 1;
            // A replay waits until the window is empty: the sink never has
            // two users.
            let mut replay: Option<ReplayRequest> = None;
            while !*shutdown.borrow() {
                if replay.is_none() {
                    replay = self.replays.try_recv().ok();
                }
                if window.is_empty() {
                    if let Some(request) = replay.take() {
                        if !self.replay(request, &mut shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
                // Read ahead before sending, so that the next batch is on
                // its way while the oldest one is being confirmed.
                let mut read_failed = false;
                let read_ahead = self.sink.window_batches().max(1);
                while replay.is_none() && window.batches() < read_ahead {
                    match self.fill(&mut window, next, &mut shutdown).await {
                        Ok(Some(last)) => next = last + 1,
                        Ok(None) => break,
                        Err(err) => {
                            warn!(%err, "reading the queue failed; retrying");
                            sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                            read_failed = true;
                            break;
                        }
                    }
                }
                if window.is_empty() {
                    let wait = replay.is_none() && !read_failed;
                    if wait && !self.idle(&mut replay, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
                if self.settle(&mut window, &mut shutdown).await.is_none() {
                    break;
                }
            }
            self.sink.close().await;
            info!("flow stopped");
        }
        .instrument(span)
        .await
    }

    /// Reads the next batch into the window (lingering only when the window
    /// is empty, so nothing in flight waits for it); the batch's last
    /// sequence, or `None` if nothing was queued.
    async fn fill(
        &mut self,
        window: &mut Window,
        next: Seq,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Seq>, backhaul_storage::StorageError> {
        let records = if window.is_empty() {
            self.read_batch(next, shutdown).await?
        } else {
            let (max, bytes) = (
                self.settings.max_batch_messages,
                self.settings.max_batch_bytes,
            );
            self.queue.read(next, max, bytes).await?
        };
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(None);
        };
        let count = records.len();
        window.push(last, count, self.prepare(records));
        Ok(Some(last))
    }

    /// Waits for new records, a replay request or shutdown; `false` on
    /// shutdown.
    async fn idle(
        &mut self,
        replay: &mut Option<ReplayRequest>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        tokio::select! {
            _ = self.queue.appended() => {}
            Some(request) = self.replays.recv() => *replay = Some(request),
            _ = shutdown.changed() => {}
        }
        !*shutdown.borrow()
    }

    /// Sends until the oldest batch with messages is confirmed, then
    /// acknowledges every settled batch in the queue; `None` on shutdown.
    async fn settle(
        &mut self,
        window: &mut Window,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        if window.front_unsettled() > 0 {
            self.deliver_window(window, shutdown).await?;
        }
        while let Some(batch) = window.pop_settled() {
            let acked = acknowledge(&self.queue, batch.last, shutdown).await;
            // Records the DropOldest policy removed while they were in
            // flight are counted as dropped by the queue, not twice.
            let overflowed = batch.records.saturating_sub(acked as usize);
            self.metrics
                .delivered
                .inc_by(batch.delivered.saturating_sub(overflowed) as u64);
        }
        Some(())
    }

    /// One round of sending the window: settles at least the oldest
    /// batch's messages, or the messages before one the destination can
    /// never take and that one (dead-lettered). Retries with backoff;
    /// `None` on shutdown.
    async fn deliver_window(
        &mut self,
        window: &mut Window,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let mut backoff = self.backoff();
        loop {
            let want = window.front_unsettled();
            let result = tokio::select! {
                result = self.sink.send_window(window.messages(), want) => result,
                _ = shutdown.changed() => return None,
            };
            let err = match result {
                Ok(confirmed) => {
                    self.healthy();
                    window.settle(confirmed, true);
                    return Some(());
                }
                Err(err) => err,
            };
            if let Some(index) = err.too_large.filter(|i| *i < window.messages().len()) {
                window.settle(index, true);
                let letter = window.front_message()?.clone();
                self.dead_letter(&letter, &err.message, Delivery::Live, shutdown)
                    .await?;
                window.settle(1, false);
                return Some(());
            }
            let delay = self.failed(&err, &mut backoff, window.messages().len());
            if !sleep_or_shutdown(delay, shutdown).await {
                return None;
            }
        }
    }

    /// Reads a batch from `next`; when it is not full and the endpoint
    /// batches with a latency, waits that long once for more.
    async fn read_batch(
        &mut self,
        next: Seq,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Vec<QueuedRecord>, backhaul_storage::StorageError> {
        let (max, bytes) = (
            self.settings.max_batch_messages,
            self.settings.max_batch_bytes,
        );
        let mut records = self.queue.read(next, max, bytes).await?;
        let linger = self.settings.linger;
        if records.is_empty() || records.len() >= max || linger.is_zero() {
            return Ok(records);
        }
        sleep_or_shutdown(linger, shutdown).await;
        let after = records.last().map_or(next, |r| r.seq + 1);
        let used: usize = records.iter().map(|r| r.data.len()).sum();
        if used < bytes {
            let more = self
                .queue
                .read(after, max - records.len(), bytes - used)
                .await?;
            records.extend(more);
        }
        Ok(records)
    }

    /// Decodes, transforms and addresses records; drops (and counts) what
    /// cannot be delivered.
    fn prepare(&mut self, records: Vec<QueuedRecord>) -> Vec<OutboundMessage> {
        let now_ms = now_ms();
        let datasets = self.datasets.clone();
        let datasets = datasets.read();
        let mut batch = Vec::with_capacity(records.len());
        for record in records {
            let seq = record.seq;
            match self.outbound(record, now_ms, &datasets) {
                Ok(outbound) => batch.push(outbound),
                Err(Drop::Filtered) => self.metrics.filtered.inc(),
                Err(drop) => {
                    warn!(seq, reason = drop.reason(), "message dropped");
                    self.metrics.dropped(drop.reason()).inc();
                }
            }
        }
        batch
    }

    fn outbound(
        &mut self,
        record: QueuedRecord,
        now_ms: u64,
        datasets: &Datasets,
    ) -> Result<OutboundMessage, Drop> {
        let seq = record.seq;
        let mut message = StoredMessage::decode(record.data).map_err(|_| Drop::Undecodable)?;
        if let Some(expiry) = message.message_expiry_interval {
            let queued_secs = now_ms.saturating_sub(message.received_at_ms) / 1000;
            let remaining = u64::from(expiry)
                .checked_sub(queued_secs)
                .filter(|r| *r > 0);
            let remaining = remaining.ok_or(Drop::Expired)?;
            message.message_expiry_interval = Some(remaining as u32);
        }
        let input_topic = message.topic.clone();
        if let Some(transform) = self.transform.as_mut() {
            transform_message(transform, &mut message, datasets, seq)?;
        }
        let destination = if self.topic_sets_destination && message.topic != input_topic {
            message.topic.clone()
        } else {
            self.destination
                .render(&input_topic)
                .ok_or(Drop::UnresolvedDestination)?
        };
        Ok(OutboundMessage {
            id: format!("{}/{}/{}", self.appliance_id, self.name, seq),
            destination,
            message,
        })
    }

    /// Sends until the endpoint confirmed every message except those it
    /// can never take, which are dead-lettered. Returns how many were
    /// delivered, or `None` if shut down first.
    pub(super) async fn deliver(
        &mut self,
        batch: &[OutboundMessage],
        delivery: Delivery,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<usize> {
        if batch.is_empty() {
            return Some(0);
        }
        let mut backoff = self.backoff();
        let mut rest = batch;
        let mut delivered = 0;
        while !rest.is_empty() {
            let result = tokio::select! {
                result = self.sink.send(rest) => result,
                _ = shutdown.changed() => return None,
            };
            let err = match result {
                Ok(()) => {
                    self.healthy();
                    return Some(delivered + rest.len());
                }
                Err(err) => err,
            };
            if let Some(index) = err.too_large.filter(|i| *i < rest.len()) {
                self.dead_letter(&rest[index], &err.message, delivery, shutdown)
                    .await?;
                delivered += index;
                rest = &rest[index + 1..];
                backoff = self.backoff();
                continue;
            }
            let delay = self.failed(&err, &mut backoff, rest.len());
            if !sleep_or_shutdown(delay, shutdown).await {
                return None;
            }
        }
        self.healthy();
        Some(delivered)
    }

    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            initial_interval: self.settings.initial_backoff,
            max_interval: self.settings.max_backoff,
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        }
    }

    fn healthy(&self) {
        self.metrics.endpoint_up.set(1);
        self.metrics.parked.set(0);
        self.health.unpark(&self.name);
    }

    /// Records a failed send; returns how long to wait before the retry.
    fn failed(
        &self,
        err: &SendError,
        backoff: &mut ExponentialBackoff,
        messages: usize,
    ) -> Duration {
        self.metrics.endpoint_up.set(0);
        self.metrics.send_error(err.kind.as_str()).inc();
        let delay = match err.kind {
            ErrorKind::Fatal => {
                self.metrics.parked.set(1);
                self.health.park(&self.name, &err.message);
                self.settings.parked_retry
            }
            ErrorKind::Throttled => capped_backoff(backoff, self.settings.max_backoff)
                .max(self.settings.max_backoff / 4),
            ErrorKind::Transient => capped_backoff(backoff, self.settings.max_backoff),
        };
        warn!(err = %err, kind = err.kind.as_str(), retry_in = ?delay, messages, "send failed; the batch stays queued");
        delay
    }

    /// Keeps a message the destination can never take; retries until the
    /// dead letter is on disk, so nothing is dropped unrecorded.
    async fn dead_letter(
        &mut self,
        outbound: &OutboundMessage,
        why: &str,
        delivery: Delivery,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        loop {
            match self
                .dead_letters
                .keep(&self.name, outbound, "too_large")
                .await
            {
                Ok(()) => {
                    warn!(id = %outbound.id, %why, "message dead-lettered");
                    if delivery == Delivery::Live {
                        self.metrics.dropped("too_large").inc();
                    }
                    return Some(());
                }
                Err(err) => {
                    warn!(id = %outbound.id, %err, "cannot write the dead letter; retrying");
                    if !sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// Runs the flow's transformation on one message, in place.
fn transform_message(
    transform: &mut Transform,
    message: &mut StoredMessage,
    datasets: &Datasets,
    seq: Seq,
) -> Result<(), Drop> {
    let payload = Json::from_slice(&message.payload).map_err(|err| {
        warn!(seq, %err, "payload is not JSON; the transformation needs JSON");
        Drop::TransformError
    })?;
    let input = Message {
        topic: std::mem::take(&mut message.topic),
        payload,
        user_properties: std::mem::take(&mut message.user_properties),
        content_type: message.content_type.take(),
    };
    let output = match transform.apply(input, datasets) {
        Ok(Outcome::Emit(output)) => output,
        Ok(Outcome::Filtered) => return Err(Drop::Filtered),
        Err(err) => {
            warn!(seq, rule = %err.rule, error = %err.message, "transformation failed");
            return Err(Drop::TransformError);
        }
    };
    message.topic = output.topic;
    message.user_properties = output.user_properties;
    message.content_type = output.content_type;
    // The output is usually about the size of the input.
    let mut payload = Vec::with_capacity(message.payload.len() + message.payload.len() / 2);
    output.payload.write_to(&mut payload);
    message.payload = payload.into();
    Ok(())
}

/// Acknowledges up to `last`, retrying until it is recorded; returns how
/// many records it removed.
async fn acknowledge(queue: &FlowQueue, last: Seq, shutdown: &mut watch::Receiver<bool>) -> u64 {
    loop {
        match queue.ack(last).await {
            Ok(removed) => return removed,
            Err(err) => {
                warn!(%err, "acknowledging in the queue failed; retrying");
                if !sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
                    return 0;
                }
            }
        }
    }
}

/// The wait before a retry: the backoff's next interval, never over `max`
/// (`maxBackoffSeconds`). Its jitter (±50 %) would stretch a wait at the
/// cap to 1.5 × `max`, and the cap is the longest a returned destination
/// waits for the replay (issue 4: ≤ 1 s in the benchmark, which sets 1 s).
fn capped_backoff(backoff: &mut ExponentialBackoff, max: Duration) -> Duration {
    backoff.next_backoff().unwrap_or(max).min(max)
}

/// Sleeps; `false` if shutdown was requested meanwhile.
async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => !*shutdown.borrow(),
        _ = shutdown.changed() => false,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_wait_never_passes_the_cap_jitter_included() {
        let max = Duration::from_secs(1);
        let mut backoff = ExponentialBackoff {
            initial_interval: Duration::from_millis(200),
            max_interval: max,
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        let waits: Vec<Duration> = (0..200)
            .map(|_| capped_backoff(&mut backoff, max))
            .collect();
        assert!(waits.iter().all(|w| *w <= max), "{waits:?}");
        assert!(waits.contains(&max), "the cap is reached");
    }
}
