//! JSON Lines files on this machine.
//!
//! Each flow writes `<endpoint folder>/<dataDestination>/<flow>-<first
//! sequence>.jsonl`, one JSON object per message. A batch is written and
//! `fdatasync`ed before `send` returns, so the queue only drops what is on
//! disk. A file is closed and a new one started once it reaches the
//! endpoint's `maxFileBytes`. After a crash, messages in flight may be
//! written again; their `id` tells.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::{OutboundMessage, SendError, Sink};

pub struct LocalStorageSink {
    folder: PathBuf,
    flow: String,
    max_file_bytes: u64,
    current: Option<OpenFile>,
}

struct OpenFile {
    file: File,
    folder: String,
    size: u64,
}

impl LocalStorageSink {
    pub fn new(folder: PathBuf, flow: String, max_file_bytes: u64) -> Self {
        Self {
            folder,
            flow,
            max_file_bytes,
            current: None,
        }
    }
}

#[async_trait]
impl Sink for LocalStorageSink {
    async fn send(&mut self, batch: &[OutboundMessage]) -> Result<(), SendError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let lines = batch.iter().map(json_line).collect::<Vec<_>>().concat();
        let mut writer = BatchWriter {
            root: self.folder.clone(),
            flow: self.flow.clone(),
            max_file_bytes: self.max_file_bytes,
            current: self.current.take(),
        };
        let folder = first.destination.clone();
        let first_id = first.id.clone();
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let result = writer.write(&folder, &first_id, &lines);
            (writer, result)
        })
        .await
        .map_err(|err| SendError::transient(format!("writer task failed: {err}")))?;
        self.current = writer.current;
        result.map_err(|err| {
            SendError::transient(format!("writing under {}: {err}", self.folder.display()))
        })
    }

    async fn close(&mut self) {
        self.current = None;
    }
}

/// The blocking part: owns the open file while writing.
struct BatchWriter {
    root: PathBuf,
    flow: String,
    max_file_bytes: u64,
    current: Option<OpenFile>,
}

impl BatchWriter {
    fn write(&mut self, folder: &str, first_id: &str, lines: &[u8]) -> std::io::Result<()> {
        let full = self.current.as_ref().is_some_and(|open| {
            open.folder != folder || open.size + lines.len() as u64 > self.max_file_bytes
        });
        if full {
            self.current = None;
        }
        if self.current.is_none() {
            self.current = Some(self.open(folder, first_id)?);
        }
        let Some(open) = self.current.as_mut() else {
            return Ok(());
        };
        let written = open
            .file
            .write_all(lines)
            .and_then(|()| open.file.sync_data());
        if let Err(err) = written {
            // Start a fresh file next time rather than append after a
            // partial write.
            self.current = None;
            return Err(err);
        }
        open.size += lines.len() as u64;
        Ok(())
    }

    fn open(&self, folder: &str, first_id: &str) -> std::io::Result<OpenFile> {
        let dir = self.root.join(folder);
        std::fs::create_dir_all(&dir)?;
        let seq = first_id.rsplit('/').next().unwrap_or("0");
        let name = format!("{}-{:0>20}.jsonl", self.flow, seq);
        let path = dir.join(name);
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        if !existed {
            sync_dir(&dir)?;
        }
        Ok(OpenFile {
            file,
            folder: folder.to_string(),
            size,
        })
    }
}

/// Makes a new file's directory entry durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One message as a JSON line: the payload embedded as JSON when it is
/// JSON, as a string when it is UTF-8 text, else base64.
pub fn json_line(outbound: &OutboundMessage) -> Vec<u8> {
    let message = &outbound.message;
    let mut object = Map::new();
    object.insert("id".into(), json!(outbound.id));
    object.insert("topic".into(), json!(message.topic));
    object.insert("receivedAt".into(), json!(rfc3339(message.received_at_ms)));
    object.insert("qos".into(), json!(message.qos));
    if let Some(content_type) = &message.content_type {
        object.insert("contentType".into(), json!(content_type));
    }
    if !message.user_properties.is_empty() {
        let properties: Vec<Value> = message
            .user_properties
            .iter()
            .map(|(k, v)| json!([k, v]))
            .collect();
        object.insert("userProperties".into(), Value::Array(properties));
    }
    match std::str::from_utf8(&message.payload) {
        Ok(text) => match serde_json::from_str::<Value>(text) {
            Ok(value) => object.insert("payload".into(), value),
            Err(_) => object.insert("payload".into(), json!(text)),
        },
        Err(_) => object.insert(
            "payloadBase64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&message.payload)),
        ),
    };
    let mut line = serde_json::to_vec(&Value::Object(object)).unwrap_or_default();
    line.push(b'\n');
    line
}

fn rfc3339(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhaul_broker::StoredMessage;
    use bytes::Bytes;

    fn outbound(seq: u64, payload: &'static [u8]) -> OutboundMessage {
        OutboundMessage {
            id: format!("edge/f/{seq}"),
            destination: "factory".into(),
            message: StoredMessage {
                received_at_ms: 1_700_000_000_000,
                qos: 1,
                topic: "factory/l1/temp".into(),
                payload: Bytes::from_static(payload),
                ..StoredMessage::default()
            },
        }
    }

    #[test]
    fn payloads_are_embedded_by_kind() {
        let line = |p| serde_json::from_slice::<Value>(&json_line(&outbound(1, p))).unwrap();
        let json = line(b"{\"t\":21.5}");
        assert_eq!(json["payload"], json!({"t": 21.5}));
        assert_eq!(json["id"], "edge/f/1");
        assert_eq!(json["receivedAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(line(b"hello")["payload"], "hello");
        assert_eq!(line(b"\xff\x00")["payloadBase64"], "/wA=");
    }

    #[tokio::test]
    async fn batches_are_appended_and_files_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = LocalStorageSink::new(dir.path().to_path_buf(), "f".into(), 1024);
        for seq in 1..=40u64 {
            sink.send(&[outbound(seq, b"{\"value\":12345}")])
                .await
                .unwrap();
        }
        let folder = dir.path().join("factory");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() > 1, "rotated into several files: {files:?}");
        assert!(files[0].ends_with("f-00000000000000000001.jsonl"));
        let mut ids = Vec::new();
        for file in &files {
            assert!(std::fs::metadata(file).unwrap().len() <= 1024);
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let value: Value = serde_json::from_str(line).unwrap();
                ids.push(value["id"].as_str().unwrap().to_string());
            }
        }
        let expected: Vec<String> = (1..=40).map(|s| format!("edge/f/{s}")).collect();
        assert_eq!(ids, expected, "every message once, in order");
    }
}
