//! Durable room storage as a room sees it: [`Storage`], a sorted key-value
//! store per room, and the alarm.
//!
//! Writes made while a room handles one event go into one `Batch`, which the
//! reactor hands to the store's writer thread when the event is over; they
//! commit together or not at all. Until the commit, the room reads its own
//! writes through an `Overlay`, so a `get` after a `put` sees the new value
//! at once. Reads of committed data are short LMDB read transactions on the
//! owner core.

use dormouse_hibernate::{Batch, Overlay, RoomKey as StoreKey, Store};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

pub use dormouse_hibernate::{ListOptions, StoreError as StorageError};

/// Key-value pairs, in key order (or reverse).
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A room's link to the store: its key there, the writes of the event being
/// handled, and the writes submitted but not yet committed.
pub(crate) struct RoomStore {
    pub store: Arc<Store>,
    pub key: StoreKey,
    /// Storage writes not yet committed, for read-your-writes.
    pub overlay: RefCell<Overlay>,
    /// The writes of the event being handled.
    pub batch: RefCell<Batch>,
    /// The sequence number the batch being built will carry.
    pub seq: Cell<u64>,
}

impl std::fmt::Debug for RoomStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomStore").field("key", &self.key).field("seq", &self.seq.get()).finish()
    }
}

impl RoomStore {
    pub fn new(store: Arc<Store>, party: &str, room: &str) -> RoomStore {
        RoomStore {
            store,
            key: StoreKey::new(party, room),
            overlay: RefCell::default(),
            batch: RefCell::default(),
            seq: Cell::new(1),
        }
    }

    /// Takes the event's writes, if any, with the sequence number they carry.
    pub fn take_batch(&self) -> Option<(u64, Batch)> {
        let batch = std::mem::take(&mut *self.batch.borrow_mut());
        if batch.is_empty() {
            return None;
        }
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        Some((seq, batch))
    }

    /// The batch `seq` committed: its writes are now read from the store.
    pub fn committed(&self, seq: u64) {
        self.overlay.borrow_mut().committed(seq);
    }

    /// The event's writes so far, to go back to if a transaction fails.
    pub fn savepoint(&self, alarm_ms: Option<u64>) -> Savepoint {
        Savepoint { batch: self.batch.borrow().clone(), overlay: self.overlay.borrow().clone(), alarm_ms }
    }

    /// Forgets the writes made since `savepoint`; returns the alarm as it was.
    pub fn roll_back(&self, savepoint: Savepoint) -> Option<u64> {
        *self.batch.borrow_mut() = savepoint.batch;
        *self.overlay.borrow_mut() = savepoint.overlay;
        savepoint.alarm_ms
    }
}

/// A room's uncommitted writes (and its alarm) at one moment of an event.
/// Copies them: a transaction is rare next to a plain write, and an event's
/// writes are few.
#[derive(Debug)]
pub(crate) struct Savepoint {
    batch: dormouse_hibernate::Batch,
    overlay: Overlay,
    alarm_ms: Option<u64>,
}

/// A room's durable key-value store, sorted by key (bytewise). Keys are at
/// most `limits.max_storage_key_bytes` (2 KiB), values at most
/// `limits.max_storage_value_bytes` (128 KiB), and the `*_many` calls take at
/// most 128 keys. The writes of one event commit atomically; with
/// `durability = "strict"` the messages and responses of that event are
/// released only once they have.
#[derive(Debug, Clone, Copy)]
pub struct Storage<'r> {
    pub(crate) inner: &'r RoomStore,
}

impl Storage<'_> {
    fn check_key(&self, key: &[u8]) -> Result<(), StorageError> {
        dormouse_hibernate::check_key(self.inner.store.config(), key)
    }

    fn check_count(&self, n: usize) -> Result<(), StorageError> {
        dormouse_hibernate::check_batch_len(self.inner.store.config(), n)
    }

    /// The largest value `put` takes (`limits.max_storage_value_bytes`).
    pub fn max_value_bytes(&self) -> usize {
        self.inner.store.config().max_value_bytes
    }

    /// The value stored under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StorageError> {
        let key = key.as_ref();
        self.check_key(key)?;
        let s = self.inner;
        s.store.get(&s.key, key, &s.overlay.borrow())
    }

    /// The values stored under `keys`, in their order.
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.check_count(keys.len())?;
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StorageError> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check_key(key)?;
        dormouse_hibernate::check_value(self.inner.store.config(), value)?;
        let s = self.inner;
        s.batch.borrow_mut().put(&s.key, key, value);
        s.overlay.borrow_mut().put(s.seq.get(), key, value);
        Ok(())
    }

    /// Stores every entry; all or none of them (nothing is written when one
    /// is over a limit).
    pub fn put_many(&self, entries: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        self.check_count(entries.len())?;
        let config = self.inner.store.config();
        for (key, value) in entries {
            dormouse_hibernate::check_key(config, key)?;
            dormouse_hibernate::check_value(config, value)?;
        }
        entries.iter().try_for_each(|(key, value)| self.put(key, value))
    }

    /// Deletes `key`; says whether it was there.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, StorageError> {
        let key = key.as_ref();
        let existed = self.get(key)?.is_some();
        let s = self.inner;
        s.batch.borrow_mut().delete(&s.key, key);
        s.overlay.borrow_mut().delete(s.seq.get(), key);
        Ok(existed)
    }

    /// Deletes every key in `keys`; returns how many were there.
    pub fn delete_many(&self, keys: &[&[u8]]) -> Result<usize, StorageError> {
        self.check_count(keys.len())?;
        keys.iter().try_for_each(|key| self.check_key(key))?;
        keys.iter().try_fold(0, |n, key| Ok(n + usize::from(self.delete(key)?)))
    }

    /// The entries in key order (or reverse), filtered by prefix and range
    /// (`start` inclusive, `end` exclusive), at most `limit` of them.
    pub fn list(&self, options: &ListOptions) -> Result<Entries, StorageError> {
        let s = self.inner;
        s.store.list(&s.key, options, &s.overlay.borrow())
    }

    /// Deletes every key of the room.
    pub fn delete_all(&self) -> Result<(), StorageError> {
        let s = self.inner;
        s.batch.borrow_mut().delete_all(&s.key);
        s.overlay.borrow_mut().delete_all(s.seq.get());
        Ok(())
    }
}
