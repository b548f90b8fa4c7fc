//! The one error type of the store, shared by reads, writes and the limit
//! checks, so that the server maps each kind to a response in one place.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a store operation failed.
///
/// The limit variants are the caller's (or its peer's) fault and name the
/// limit; `Lmdb` and `Io` are operating faults (disk full, I/O error) that
/// the server logs and retries; `Corrupt` means the data on disk is not what
/// this crate wrote. The type is `Clone` because one failed group commit is
/// reported to every batch in the group.
#[derive(thiserror::Error, Debug, Clone)]
pub enum StoreError {
    /// A storage key is longer than [`crate::StoreConfig::max_key_bytes`].
    #[error("storage key is {len} bytes, more than the limit of {max} bytes (max_key_bytes)")]
    KeyTooLarge {
        /// Length of the key that was refused.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A storage value is longer than [`crate::StoreConfig::max_value_bytes`].
    #[error("storage value is {len} bytes, more than the limit of {max} bytes (max_value_bytes)")]
    ValueTooLarge {
        /// Length of the value that was refused.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// One call names more keys than [`crate::StoreConfig::max_batch_keys`].
    #[error("{len} keys in one call, more than the limit of {max} keys (max_batch_keys)")]
    TooManyKeys {
        /// Number of keys in the call.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// An encoded room identity does not fit in an LMDB key (see
    /// [`crate::Store::max_room_key_bytes`]); the server must bound room ids.
    #[error("room key is {len} bytes, more than the limit of {max} bytes (LMDB key size)")]
    RoomKeyTooLarge {
        /// Length of the encoded room key.
        len: usize,
        /// The limit of this environment.
        max: usize,
    },
    /// A [`crate::StoreConfig`] field is out of range.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// heed opens a path at most once per process; close the other store first.
    #[error("the store at {0} is already open in this process")]
    AlreadyOpen(PathBuf),
    /// The environment was written by an incompatible version of this crate.
    #[error("store format version {found} is not supported (this build reads version {supported})")]
    UnsupportedFormat {
        /// Version found in the `meta` database.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// Stored bytes do not decode: the file was damaged or written by
    /// something else.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// LMDB failed (disk full, I/O error, reader table full, ...).
    #[error("LMDB: {0}")]
    Lmdb(#[source] Arc<heed::Error>),
    /// The file system failed before LMDB was involved.
    #[error("I/O: {0}")]
    Io(#[source] Arc<std::io::Error>),
    /// The store was closed, or its writer thread is gone.
    #[error("the store is closed")]
    Closed,
    /// The writer thread panicked; the store accepts no more writes.
    #[error("the store's writer thread panicked")]
    WriterPanicked,
}

impl From<heed::Error> for StoreError {
    fn from(error: heed::Error) -> Self {
        StoreError::Lmdb(Arc::new(error))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> Self {
        StoreError::Io(Arc::new(error))
    }
}

impl StoreError {
    /// Whether this is LMDB's "map full", which the writer answers by growing
    /// the map and retrying rather than by failing the batch.
    pub(crate) fn is_map_full(&self) -> bool {
        matches!(self, StoreError::Lmdb(error) if matches!(**error, heed::Error::Mdb(heed::MdbError::MapFull)))
    }
}
