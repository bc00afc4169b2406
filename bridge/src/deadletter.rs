//! Dead letters: messages a destination can never take (an event larger
//! than Event Hubs accepts even alone). They leave the flow's queue so the
//! flow goes on, but are kept, not thrown away: one JSON line each in
//! `<data dir>/dead-letters/<flow>.jsonl`, fsynced before the queue moves
//! past them, with the stored message in full (`record`, base64) so an
//! operator can inspect and later replay them.
//! `GET /api/v1/deadletters/<flow>` lists them;
//! `POST /api/v1/deadletters/<flow>/replay` sends them again (see
//! [`crate::flow::ReplayRequest`]).
//!
//! Replay moves `<flow>.jsonl` aside to `<flow>.replaying.jsonl` first, so
//! letters written meanwhile start a new file; the moved file is deleted only
//! once every letter in it was delivered or kept again. A crash in between
//! leaves the moved file, and the next replay resumes with it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use base64::Engine;
use serde_json::{json, Value};

use backhaul_broker::StoredMessage;

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

    fn replaying_file(&self, flow: &str) -> PathBuf {
        self.dir.join(format!("{flow}.replaying.jsonl"))
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
        line["destination"] = json!(outbound.destination);
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

    /// The dead letters of `flow` to send again, oldest first: those of an
    /// interrupted replay if one was left, else the current ones, moved
    /// aside. Call [`DeadLetters::finish_replay`] once all are settled.
    pub fn begin_replay(&self, flow: &str) -> Result<Vec<OutboundMessage>, ReplayError> {
        let replaying = self.replaying_file(flow);
        if !replaying.exists() {
            match std::fs::rename(self.file(flow), &replaying) {
                Ok(()) => std::fs::File::open(&self.dir)?.sync_all()?,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(err) => return Err(err.into()),
            }
        }
        let text = std::fs::read_to_string(&replaying)?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| letter(line).map_err(|why| ReplayError::Letter(n + 1, why)))
            .collect()
    }

    /// Forgets the letters [`DeadLetters::begin_replay`] returned.
    pub fn finish_replay(&self, flow: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.replaying_file(flow)) {
            Ok(()) => std::fs::File::open(&self.dir)?.sync_all(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// Why dead letters cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the dead letters: {0}")]
    Io(#[from] std::io::Error),
    #[error("dead letter on line {0} of the replay file: {1}")]
    Letter(usize, String),
}

/// The message one dead-letter line keeps.
fn letter(line: &str) -> Result<OutboundMessage, String> {
    let value: Value = serde_json::from_str(line).map_err(|err| err.to_string())?;
    let field = |name: &str| {
        value[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no '{name}' text"))
    };
    let record = base64::engine::general_purpose::STANDARD
        .decode(field("record")?)
        .map_err(|err| format!("'record' is not base64: {err}"))?;
    let message = StoredMessage::decode(record.into())
        .map_err(|err| format!("'record' does not decode: {err}"))?;
    Ok(OutboundMessage {
        id: field("id")?,
        destination: field("destination")?,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn outbound(id: &str) -> OutboundMessage {
        OutboundMessage {
            id: id.into(),
            destination: "hub".into(),
            message: StoredMessage {
                topic: "t".into(),
                payload: bytes::Bytes::from(id.to_string()),
                ..StoredMessage::default()
            },
        }
    }

    #[tokio::test]
    async fn a_replay_takes_the_letters_and_new_ones_wait_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::new(dir.path());
        assert!(letters.begin_replay("f").unwrap().is_empty());
        for id in ["e/f/1", "e/f/2"] {
            letters.keep("f", &outbound(id), "too_large").await.unwrap();
        }
        let replay = letters.begin_replay("f").unwrap();
        assert_eq!(replay, vec![outbound("e/f/1"), outbound("e/f/2")]);
        assert!(letters.list("f").unwrap().is_empty(), "moved aside");
        letters
            .keep("f", &outbound("e/f/3"), "too_large")
            .await
            .unwrap();
        // Interrupted (no finish): the next replay resumes with the same letters.
        assert_eq!(letters.begin_replay("f").unwrap(), replay);
        letters.finish_replay("f").unwrap();
        assert_eq!(letters.begin_replay("f").unwrap(), vec![outbound("e/f/3")]);
    }

    #[test]
    fn a_damaged_replay_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::new(dir.path());
        std::fs::create_dir_all(dir.path().join("dead-letters")).unwrap();
        std::fs::write(
            dir.path().join("dead-letters/f.jsonl"),
            "{\"id\":\"e/f/1\",\"destination\":\"hub\",\"record\":\"%%\"}\n",
        )
        .unwrap();
        let err = letters.begin_replay("f").unwrap_err().to_string();
        assert!(
            err.starts_with("dead letter on line 1 of the replay file: 'record' is not base64: "),
            "{err}"
        );
    }
}
