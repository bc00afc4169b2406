//! Dead letters: messages a destination can never take (an event larger
//! than Event Hubs accepts even alone). They leave the flow's queue so the
//! flow goes on, but are kept, not thrown away: one JSON line each in
//! `<data dir>/dead-letters/<flow>.jsonl`, fsynced before the queue moves
//! past them, with the stored message in full (`record`, base64) so an
//! operator can inspect and later replay them.
//! `GET /api/v1/deadletters/<flow>` lists them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use base64::Engine;
use serde_json::{json, Value};

use crate::endpoint::local_storage::json_line;
use crate::endpoint::OutboundMessage;

#[derive(Debug, Clone)]
pub struct DeadLetters {
    dir: PathBuf,
}

impl DeadLetters {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            dir: data_dir.join("dead-letters"),
        }
    }

    fn file(&self, flow: &str) -> PathBuf {
        self.dir.join(format!("{flow}.jsonl"))
    }

    /// Appends one dead letter durably.
    pub async fn keep(
        &self,
        flow: &str,
        outbound: &OutboundMessage,
        reason: &str,
    ) -> std::io::Result<()> {
        let mut line: Value = serde_json::from_slice(&json_line(outbound)).unwrap_or_default();
        line["reason"] = json!(reason);
        line["flow"] = json!(flow);
        line["record"] =
            json!(base64::engine::general_purpose::STANDARD.encode(outbound.message.encode()));
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let dir = self.dir.clone();
        let path = self.file(flow);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Every dead letter of `flow`, oldest first.
    pub fn list(&self, flow: &str) -> std::io::Result<Vec<Value>> {
        let text = match std::fs::read_to_string(self.file(flow)) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhaul_broker::StoredMessage;

    #[tokio::test]
    async fn dead_letters_are_kept_whole_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::new(dir.path());
        let outbound = OutboundMessage {
            id: "edge/f/7".into(),
            destination: "hub".into(),
            message: StoredMessage {
                topic: "t".into(),
                payload: bytes::Bytes::from_static(b"{\"big\":1}"),
                ..StoredMessage::default()
            },
        };
        letters.keep("f", &outbound, "too_large").await.unwrap();
        let listed = letters.list("f").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], "edge/f/7");
        assert_eq!(listed[0]["reason"], "too_large");
        let record = base64::engine::general_purpose::STANDARD
            .decode(listed[0]["record"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            StoredMessage::decode(record.into()).unwrap(),
            outbound.message
        );
        assert!(letters.list("other").unwrap().is_empty());
    }
}
