//! LMDB snapshots, per-room durable storage and alarms for dormouse.
//!
//! A hibernating room is serialised by the server, wrapped in a checksummed,
//! compressed [`envelope`], and kept in the same LMDB environment as the
//! rooms' sorted key-value storage, their alarms, and the snapshots found
//! corrupt (kept aside in quarantine rather than thrown away). One [`Store`]
//! owns that environment: reads are short read transactions on the caller's
//! thread, and every write goes, as an atomic [`Batch`], through a bounded
//! queue to one writer thread that commits many batches in one durable
//! transaction (group commit), so the cost of `fsync` is shared. A room reads
//! its own submitted-but-uncommitted writes through its [`Overlay`].
//!
//! The crate does no socket I/O and reads no clock: alarm times and
//! quarantine times are passed in as milliseconds. It is tested on its own,
//! against a `BTreeMap` model.
//!
//! Invariants kept here:
//! - one writer thread per [`Store`]; batches commit in submission order, and
//!   each batch's completion callback runs exactly once, in that order;
//! - no read transaction outlives the call that opened it, and every read
//!   transaction is opened under the store's resize gate, which is what makes
//!   growing the memory map sound (the only `unsafe` code is in `lmdb.rs`);
//! - a room's storage keys sort in LMDB exactly as the user keys sort, even
//!   for keys longer than LMDB's key limit (see `layout.rs`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod config;
pub mod envelope;
mod error;
mod layout;
mod lmdb;
mod overlay;
mod room_key;
mod store;
mod writer;

#[cfg(test)]
mod tests;

pub use batch::Batch;
pub use config::{check_batch_len, check_key, check_value, ListOptions, StoreConfig};
pub use error::StoreError;
pub use overlay::Overlay;
pub use room_key::RoomKey;
pub use store::{Done, Store, Usage};
