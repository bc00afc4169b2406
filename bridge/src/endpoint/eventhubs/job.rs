//! One SDK batch, filled and sent in a task of its own, so that the sink
//! can fill the next one (on another lane) while this one waits for its
//! settlement.
//!
//! The SDK's batch borrows its client, so creating, filling and sending
//! all happen inside the task. How many events fit is known only once the
//! batch is full; the task reports that ([`Filled`]) before it sends, and
//! the sink starts the next batch from there, unless the size bound said
//! every candidate fits ([`super::size_bound`]): then the sink starts the
//! next batch at once and this one is filled meanwhile, on another core.
//!
//! While the batch waits for its settlement, the task watches the
//! connection's socket: the SDK never completes a send whose connection
//! died after the transfer was written (see [`super::socket`]).

use std::sync::Arc;
use std::time::Duration;

use azure_messaging_eventhubs::error::ErrorKind as SdkErrorKind;
use azure_messaging_eventhubs::models::AmqpMessage;
use azure_messaging_eventhubs::{EventDataBatchOptions, ProducerClient};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::socket::ClientSocket;
use super::{sdk_error, Placement};
use crate::endpoint::SendError;

/// What one task is to send.
pub(super) struct BatchJob {
    pub client: Arc<ProducerClient>,
    /// The socket of `client`'s connection.
    pub socket: ClientSocket,
    pub hub: String,
    pub placement: Placement,
    /// The candidates, in order; the batch takes as many as fit.
    pub events: Vec<AmqpMessage>,
    /// Size limit asked of the SDK; `None` is the link's.
    pub max_bytes: Option<u64>,
    /// Set when the sink started the next batch without waiting for this
    /// one's filling, sure that all `events` fit: if they do not, nothing is
    /// sent and the task fails.
    pub all_fit: bool,
    /// Ask the SDK for the link's largest message first.
    pub learn_link_max: bool,
    /// Resolves (or fails) once the batch started before this one was
    /// handed to the SDK: batches filled at once still leave in window
    /// order.
    pub after: Option<oneshot::Receiver<()>>,
    /// Told when this batch is handed to the SDK.
    pub handed: oneshot::Sender<()>,
    pub timeout: Duration,
}

/// How a batch was filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Filled {
    /// Events it took from the front of the candidates (0: the first alone
    /// is too large).
    pub count: usize,
    /// The requested `max_bytes` was over the link's limit and dropped.
    pub dropped_max_bytes: bool,
    /// The link's largest message, when asked for.
    pub link_max: Option<u64>,
}

impl BatchJob {
    /// Creates and fills the batch, reports that on `filled`, then sends it
    /// and waits for its settlement. An error before the batch was filled
    /// goes to `filled` as well.
    pub async fn run(
        mut self,
        filled: oneshot::Sender<Result<Filled, SendError>>,
    ) -> Result<(), SendError> {
        let (hub, timeout) = (self.hub.clone(), self.timeout);
        let placement = self.placement.clone();
        let client = self.client.clone();
        let socket = self.socket.clone();
        let expected = self.events.len();
        let all_fit = self.all_fit;
        let after = self.after.take();
        let handed = std::mem::replace(&mut self.handed, oneshot::channel().0);
        let (batch, fill) = match self.fill(&client).await {
            Ok(done) => done,
            Err(err) => {
                let _ = filled.send(Err(err.clone()));
                return Err(err);
            }
        };
        let count = fill.count;
        let _ = filled.send(Ok(fill));
        if count == 0 {
            return Ok(());
        }
        if all_fit && count < expected {
            return Err(SendError::transient(format!(
                "a batch for {hub} took {count} of {expected} events, sure to fit; not sent"
            )));
        }
        if let Some(after) = after {
            // A batch before this one that failed or was stopped frees it too.
            let _ = after.await;
        }
        let _ = handed.send(());
        let sent = tokio::select! {
            sent = tokio::time::timeout(timeout, client.send_batch(batch, None)) => sent,
            () = socket.closed() => {
                return Err(SendError::transient(format!(
                    "the connection to event hub {hub} closed before a batch of {count} was confirmed"
                )));
            }
        };
        sent.map_err(|_| {
            SendError::transient(format!(
                "event hub {hub} did not confirm a batch of {count} within {timeout:?}"
            ))
        })?
        .map_err(|err| sdk_error(&format!("sending {count} events to {hub}"), &err))?;
        debug!(hub, count, ?placement, "batch accepted");
        Ok(())
    }

    async fn fill<'c>(
        self,
        client: &'c ProducerClient,
    ) -> Result<(azure_messaging_eventhubs::EventDataBatch<'c>, Filled), SendError> {
        let hub = &self.hub;
        let mut max_bytes = self.max_bytes;
        let link_max = if self.learn_link_max {
            self.link_max(client).await?
        } else {
            None
        };
        let batch = loop {
            let options = batch_options(&self.placement, max_bytes);
            let created = tokio::time::timeout(self.timeout, client.create_batch(Some(options)))
                .await
                .map_err(|_| {
                    SendError::transient(format!(
                        "creating a batch for {hub} took over {:?}",
                        self.timeout
                    ))
                })?;
            match created {
                Ok(batch) => break batch,
                Err(err)
                    if max_bytes.is_some()
                        && matches!(err.kind, SdkErrorKind::InvalidBatchSize { .. }) =>
                {
                    warn!(hub, %err, "batch_max_bytes is over the link's limit; using the link's");
                    max_bytes = None;
                }
                Err(err) => return Err(sdk_error(&format!("creating a batch for {hub}"), &err)),
            }
        };
        let mut count = 0;
        for event in self.events {
            let added = batch
                .try_add_amqp_message(event, None)
                .map_err(|err| sdk_error("adding an event to a batch", &err))?;
            if !added {
                break;
            }
            count += 1;
        }
        let dropped_max_bytes = self.max_bytes.is_some() && max_bytes.is_none();
        Ok((
            batch,
            Filled {
                count,
                dropped_max_bytes,
                link_max,
            },
        ))
    }

    /// The link's largest message: the SDK names it when asked for a batch
    /// larger than it.
    async fn link_max(&self, client: &ProducerClient) -> Result<Option<u64>, SendError> {
        let options = batch_options(&self.placement, Some(u64::MAX));
        let created = tokio::time::timeout(self.timeout, client.create_batch(Some(options)))
            .await
            .map_err(|_| {
                SendError::transient(format!(
                    "creating a batch for {} took over {:?}",
                    self.hub, self.timeout
                ))
            })?;
        Ok(match created {
            Err(err) => match err.kind {
                SdkErrorKind::InvalidBatchSize { max_allowed, .. } => Some(max_allowed),
                _ => {
                    return Err(sdk_error(
                        &format!("creating a batch for {}", self.hub),
                        &err,
                    ))
                }
            },
            Ok(_) => None,
        })
    }
}

fn batch_options(placement: &Placement, max_size_in_bytes: Option<u64>) -> EventDataBatchOptions {
    let mut options = EventDataBatchOptions {
        max_size_in_bytes,
        ..Default::default()
    };
    match placement {
        Placement::Any => {}
        Placement::Key(key) => options.partition_key = Some(key.clone()),
        Placement::Partition(id) => options.partition_id = Some(id.clone()),
    }
    options
}
