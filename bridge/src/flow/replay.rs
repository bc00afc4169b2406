//! Replaying a flow's dead letters: the flow's own task sends them through
//! its sink, between batches, so the sink never has two users. Replayed
//! letters keep their original message ids (consumers de-duplicate on them)
//! and skip the transformation, which they passed before being kept.

use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::runner::{Delivery, FlowRunner};

/// An operator's request to replay a flow's dead letters.
#[derive(Debug)]
pub struct ReplayRequest {
    pub reply: oneshot::Sender<Result<ReplayReport, String>>,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    /// Letters the destination took this time.
    pub replayed: usize,
    /// Letters it refused again (still too large), kept as dead letters.
    pub dead_lettered_again: usize,
}

impl FlowRunner {
    /// Answers one replay request; `false` when shut down meanwhile (the
    /// letters stay kept and the next replay resumes with them).
    pub(super) async fn replay(
        &mut self,
        request: ReplayRequest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let letters = match self.dead_letters.begin_replay(&self.name) {
            Ok(letters) => letters,
            Err(err) => {
                warn!(%err, "dead letters not replayed");
                let _ = request.reply.send(Err(err.to_string()));
                return true;
            }
        };
        let Some(replayed) = self.deliver(&letters, Delivery::Replay, shutdown).await else {
            let _ = request.reply.send(Err("shutting down".into()));
            return false;
        };
        let report = ReplayReport {
            replayed,
            dead_lettered_again: letters.len() - replayed,
        };
        let result = match self.dead_letters.finish_replay(&self.name) {
            Ok(()) => {
                self.metrics.replayed.inc_by(replayed as u64);
                info!(?report, "dead letters replayed");
                Ok(report)
            }
            Err(err) => Err(format!(
                "replayed, but the replay file stays (the next replay sends its letters again): {err}"
            )),
        };
        let _ = request.reply.send(result);
        true
    }
}
