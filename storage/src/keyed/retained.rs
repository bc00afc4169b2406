//! Retained messages that survive a restart: one value per topic, written
//! durably before the publisher is acknowledged.
//!
//! Storage does not look inside the values (the broker stores its encoded
//! message). Writes go to one thread in the order they were asked for, so
//! two retained publishes to one topic end with the later one; the thread
//! applies every write waiting at that moment and then flushes once (sled's
//! flush ends in fsync), and only then resolves their [`RetainedWrite`]s:
//! a retained message is on disk before its PUBACK, like a queued one.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::warn;

use crate::StorageError;

/// The sled tree of retained messages.
const TREE: &str = "retained";

/// The retained messages on disk, by topic.
pub struct RetainedStore {
    tree: sled::Tree,
    writes: mpsc::Sender<Write>,
}

enum Change {
    Set(Bytes),
    Clear,
}

struct Write {
    topic: String,
    change: Change,
    done: oneshot::Sender<Result<(), StorageError>>,
}

fn keyed_error(context: &str, err: sled::Error) -> StorageError {
    StorageError::Keyed {
        context: context.to_string(),
        message: err.to_string(),
    }
}

impl RetainedStore {
    /// Opens (or creates) the keyed state in `dir` and starts the writer
    /// thread.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = super::open_db(dir)?;
        let tree = db
            .open_tree(TREE)
            .map_err(|err| keyed_error("opening the retained messages", err))?;
        let (writes, queue) = mpsc::channel();
        let writer_tree = tree.clone();
        std::thread::Builder::new()
            .name("retained-writer".into())
            .spawn(move || write_loop(&db, &writer_tree, &queue))
            .map_err(|source| StorageError::Io {
                context: "starting the retained-message writer".into(),
                source,
            })?;
        Ok(Self { tree, writes })
    }

    /// Every stored retained message, by topic order. Unreadable entries
    /// are skipped with a warning: a bad one must not keep the broker from
    /// starting.
    pub fn load(&self) -> Vec<(String, Bytes)> {
        let mut messages = Vec::new();
        for entry in self.tree.iter() {
            match entry {
                Ok((key, value)) => match String::from_utf8(key.to_vec()) {
                    Ok(topic) => messages.push((topic, Bytes::copy_from_slice(&value))),
                    Err(_) => warn!("skipping a retained message whose topic is not UTF-8"),
                },
                Err(err) => warn!(%err, "skipping an unreadable retained message"),
            }
        }
        messages
    }

    /// Whether `topic` has a stored retained message (as far as the writes
    /// applied so far go).
    pub fn contains(&self, topic: &str) -> bool {
        self.tree.contains_key(topic.as_bytes()).unwrap_or(false)
    }

    /// Stores `value` as the retained message of `topic`; durable once the
    /// returned write resolves.
    pub fn set(&self, topic: &str, value: Bytes) -> RetainedWrite {
        self.submit(topic, Change::Set(value))
    }

    /// Removes the retained message of `topic` (a retained publish with an
    /// empty payload); durable once the returned write resolves.
    pub fn clear(&self, topic: &str) -> RetainedWrite {
        self.submit(topic, Change::Clear)
    }

    fn submit(&self, topic: &str, change: Change) -> RetainedWrite {
        let (done, receiver) = oneshot::channel();
        let write = Write {
            topic: topic.to_string(),
            change,
            done,
        };
        // A send fails only if the writer thread is gone; the receiver then
        // resolves to an error.
        let _ = self.writes.send(write);
        RetainedWrite { receiver }
    }
}

/// Applies writes in arrival order, each batch made durable by one flush.
fn write_loop(db: &sled::Db, tree: &sled::Tree, queue: &mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut results: Vec<Result<(), StorageError>> =
            batch.iter().map(|write| apply(tree, write)).collect();
        if let Err(err) = db.flush() {
            let err = keyed_error("flushing the retained messages", err);
            warn!(%err, "retained messages not made durable");
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(StorageError::CommitFailed(err.to_string()));
            }
        }
        for (write, result) in batch.into_iter().zip(results) {
            let _ = write.done.send(result);
        }
    }
}

fn apply(tree: &sled::Tree, write: &Write) -> Result<(), StorageError> {
    let result = match &write.change {
        Change::Set(value) => tree.insert(write.topic.as_bytes(), value.as_ref()),
        Change::Clear => tree.remove(write.topic.as_bytes()),
    };
    result
        .map(|_| ())
        .map_err(|err| keyed_error("writing a retained message", err))
}

/// Resolves once a retained write is on disk (or failed).
#[must_use = "a retained write is only durable once it resolves"]
pub struct RetainedWrite {
    receiver: oneshot::Receiver<Result<(), StorageError>>,
}

impl Future for RetainedWrite {
    type Output = Result<(), StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StorageError::CommitterStopped)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_survive_reopening_and_a_clear_removes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RetainedStore::open(dir.path()).unwrap();
            store.set("a/1", Bytes::from_static(b"one")).await.unwrap();
            store.set("a/2", Bytes::from_static(b"two")).await.unwrap();
            store.set("a/1", Bytes::from_static(b"uno")).await.unwrap();
            store.clear("a/2").await.unwrap();
            store.clear("never/set").await.unwrap();
        }
        // The writer thread holds the database until its queue closes.
        let mut attempts = 0;
        let reopened = loop {
            match RetainedStore::open(dir.path()) {
                Ok(store) => break store,
                Err(err) if attempts == 500 => panic!("cannot reopen: {err}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
            attempts += 1;
        };
        assert_eq!(
            reopened.load(),
            vec![("a/1".to_string(), Bytes::from_static(b"uno"))]
        );
    }
}
