//! Small keyed state, kept in sled under the data directory (`state/`):
//! the things looked up by a key rather than read in order, which a B-tree
//! suits and the queues' segment log does not.
//!
//! - [`retained`]: the broker's retained messages, by topic.

pub mod retained;

pub use retained::{RetainedStore, RetainedWrite};

/// The sled database of the keyed state, in `dir`.
fn open_db(dir: &std::path::Path) -> Result<sled::Db, crate::StorageError> {
    sled::Config::new()
        .path(dir)
        // The state is small; sled's default page cache is 1 GiB.
        .cache_capacity(8 * 1024 * 1024)
        .open()
        .map_err(|err| crate::StorageError::Keyed {
            context: format!("opening {}", dir.display()),
            message: err.to_string(),
        })
}
