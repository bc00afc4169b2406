use std::path::PathBuf;

use crate::limits::QuotaLimit;

/// Errors of the queue store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the queue store at {path}: {source}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("queue store I/O failed while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The filesystem is full: the append is refused, nothing stored is
    /// damaged, and appends succeed again once space is freed.
    #[error(
        "the disk is full while {context}; appends are refused until space is freed: {source}"
    )]
    DiskFull {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a record of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("group commit failed: {0}")]
    CommitFailed(String),
    #[error("the queue store's commit thread has stopped")]
    CommitterStopped,
    #[error("flow index {0} is not part of this store")]
    UnknownFlow(usize),
    #[error("record is corrupt: {0}")]
    Corrupt(String),
    /// The keyed state (sled) failed.
    #[error("keyed state failed while {context}: {message}")]
    Keyed { context: String, message: String },
    /// A limit refused the append (the flow's `RejectNew` limit, or a store
    /// limit, which applies to every flow); nothing of it was stored, also
    /// not in the other flows it named. Transient: appends are accepted
    /// again once the queue drains or space returns. MQTT 5: PUBACK 0x97.
    #[error("the queue of flow {flow:?} is full ({limit} is reached); the append is refused")]
    QuotaExceeded { flow: String, limit: QuotaLimit },
}

impl StorageError {
    /// A copy for every publisher waiting on one failed group commit. A full
    /// disk stays recognisable, since callers treat it as "refuse now, retry
    /// later" rather than as a fault.
    pub(crate) fn shared(&self) -> StorageError {
        match self {
            StorageError::DiskFull { context, source } => StorageError::DiskFull {
                context: context.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            StorageError::QuotaExceeded { flow, limit } => StorageError::QuotaExceeded {
                flow: flow.clone(),
                limit: *limit,
            },
            _ => StorageError::CommitFailed(self.to_string()),
        }
    }

    /// Whether the error means the disk is full (transient: appends resume
    /// by themselves once space is freed).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }

    /// Whether a limit refused the append ([`StorageError::QuotaExceeded`]).
    pub fn is_quota_exceeded(&self) -> bool {
        matches!(self, StorageError::QuotaExceeded { .. })
    }
}
