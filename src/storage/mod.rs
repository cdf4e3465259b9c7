//! Where Raft state lives on disk: the segment log under `log/` and the stable
//! file. Knows files and bytes only.
//!
//! (Helper B: replace the stubs; keep the public API.)

pub mod error;

pub use error::{StorageError, StorageErrorKind};

use crate::raft::{Entry, HardState};
use std::path::Path;

#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Size each new segment file is preallocated to.
    pub segment_bytes: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// The open log and stable file of one data directory.
pub struct Storage {
    _private: (),
}

impl Storage {
    /// Opens (creating if missing) `data_dir`, recovers the log (cutting a torn
    /// tail with a warning) and reads the stable file. Corruption anywhere else
    /// is an error naming the file and offset; nothing is deleted.
    pub fn open(_data_dir: &Path, _options: StorageOptions) -> Result<Storage, StorageError> {
        todo!()
    }
    /// The term and vote on disk (default when there is no stable file yet).
    pub fn hard_state(&self) -> HardState {
        todo!()
    }
    /// Replaces the stable file atomically; durable when this returns.
    pub fn set_hard_state(&mut self, _hard_state: HardState) -> Result<(), StorageError> {
        todo!()
    }
    /// First index in the log; `last_index() + 1` when the log is empty.
    pub fn first_index(&self) -> u64 {
        todo!()
    }
    /// Last index in the log; `first_index() - 1` when empty.
    pub fn last_index(&self) -> u64 {
        todo!()
    }
    pub fn term(&self, _index: u64) -> Option<u64> {
        todo!()
    }
    /// Entries `lo..hi` (hi exclusive), all of which must be in the log.
    pub fn entries(&self, _lo: u64, _hi: u64) -> Result<Vec<Entry>, StorageError> {
        todo!()
    }
    /// Appends contiguous entries. If the first one's index is already in the
    /// log, that entry and everything after it are replaced. Not durable until `sync`.
    pub fn append(&mut self, _entries: &[Entry]) -> Result<(), StorageError> {
        todo!()
    }
    /// Makes everything appended so far durable (fdatasync of the dirty range).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        todo!()
    }
    /// Deletes whole segments all of whose records are below `index`.
    pub fn drop_before(&mut self, _index: u64) -> Result<(), StorageError> {
        todo!()
    }
    /// Empties the log; the next append starts at `next_index` (after installing a snapshot).
    pub fn reset(&mut self, _next_index: u64) -> Result<(), StorageError> {
        todo!()
    }
    /// Bytes the log's segment files take on disk.
    pub fn log_bytes(&self) -> u64 {
        todo!()
    }
}
