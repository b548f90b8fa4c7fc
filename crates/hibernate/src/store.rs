//! The store: one LMDB environment, read from any thread with short read
//! transactions, written by one writer thread through a bounded queue.

use std::convert::Infallible;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use heed::types::Bytes;
use heed::{CommitOrAbort, Env, RoTxn, WithoutTls};

use crate::layout::{decode_bucket, Decoded, Layout, LAYOUT_OVERHEAD_BYTES, ROOM_NUMBER_BYTES};
use crate::overlay::Lookup;
use crate::{check_key, lmdb, writer, Batch, ListOptions, Overlay, RoomKey, StoreConfig, StoreError};

/// Called once by the writer thread with the outcome of a submitted batch:
/// `Ok` once it is committed and durable.
///
/// It runs on the writer thread, in submission order, so it must be quick
/// (typically a send on a channel to the room's core), and must not call
/// [`Store::flush`] or a blocking [`Store::submit`], which would wait for the
/// writer it is running on. A panic in it is caught and logged.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send + 'static>;

/// The store format this build reads and writes (kept in `meta`).
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const META_FORMAT_VERSION: &[u8] = b"format_version";
pub(crate) const META_NEXT_ROOM: &[u8] = b"next_room";
pub(crate) const META_INLINE_KEY_BYTES: &[u8] = b"inline_key_bytes";
/// The map size is kept a multiple of this, which is a multiple of every
/// page size LMDB runs with, as resizing requires.
pub(crate) const MAP_ALIGN_BYTES: usize = 1 << 20;
/// Bytes appended to a room key in the quarantine database (the time).
const QUARANTINE_SUFFIX_BYTES: usize = 8;

pub(crate) type Db = heed::Database<'static, Bytes, Bytes>;

/// The named databases of the environment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Databases {
    /// Room number ++ laid-out user key -> value (see `layout.rs`).
    pub(crate) storage: Db,
    /// Room key -> snapshot envelope.
    pub(crate) snapshots: Db,
    /// Room key -> alarm time, `u64` big-endian milliseconds.
    pub(crate) alarms: Db,
    /// Room key -> room number, `u64` big-endian.
    pub(crate) rooms: Db,
    /// Format version, inline key limit, next room number.
    pub(crate) meta: Db,
    /// Room key ++ time (`u64` big-endian) -> a snapshot that did not decode.
    pub(crate) quarantine: Db,
}

/// What the store and its writer thread share.
pub(crate) struct Shared {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) dbs: Databases,
    /// Read guard: held for the life of every read transaction. Write guard:
    /// held to resize the map. See `lmdb::resize`.
    pub(crate) gate: RwLock<()>,
    pub(crate) layout: Layout,
}

/// What the store sends to its writer thread.
pub(crate) enum Msg {
    Batch(Batch, Done),
    /// Answer once every earlier message is committed.
    Flush(Sender<()>),
}

/// What one room takes in the store ([`Store::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes of its storage's keys and values as stored (several short
    /// keys past the inline limit share one entry).
    pub storage_bytes: u64,
    /// Whether every entry was counted (else `storage_bytes` is a floor).
    pub complete: bool,
    /// Bytes of its hibernation snapshot, 0 without one.
    pub snapshot_bytes: u64,
}

/// Snapshots, room storage, alarms and quarantined snapshots, in one LMDB
/// environment.
///
/// `Send + Sync`: share it between core threads in an `Arc`. Reads run on
/// the calling thread in a read transaction that ends before they return;
/// they never wait for the writer, except for the instant the writer grows
/// the memory map. Writes are [`Batch`]es handed to one writer thread, which
/// commits whatever has queued up in one durable transaction.
///
/// One environment per directory per process: heed refuses to open a path
/// that is already open ([`StoreError::AlreadyOpen`]); [`Store::close`]
/// releases it. The files must not be modified except through LMDB while a
/// store has them open. LMDB's reader table bounds the reads in flight at
/// once to 126 (each read holds a slot only while it runs).
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    config: StoreConfig,
    max_room_key_bytes: usize,
    sender: Option<Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and starts its writer
    /// thread.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        Store::open_with_layout(dir, config, None)
    }

    /// Opens the store; a new store gets `inline_limit` (tests use a tiny
    /// one to exercise buckets) or the largest the environment allows.
    pub(crate) fn open_with_layout(
        dir: &Path,
        config: StoreConfig,
        inline_limit: Option<usize>,
    ) -> Result<Store, StoreError> {
        config.validate()?;
        std::fs::create_dir_all(dir)?;
        let map_size = config.map_size_bytes.div_ceil(MAP_ALIGN_BYTES) * MAP_ALIGN_BYTES;
        let env = lmdb::open_env(dir, map_size).map_err(|error| match error {
            heed::Error::EnvAlreadyOpened => StoreError::AlreadyOpen(dir.to_path_buf()),
            error => error.into(),
        })?;
        let dbs = create_databases(&env)?;
        let max_key_bytes = env.max_key_size();
        let layout =
            init_meta(&env, &dbs, inline_limit.unwrap_or(max_key_bytes.saturating_sub(LAYOUT_OVERHEAD_BYTES)))?;
        let max_room_key_bytes = max_key_bytes - QUARANTINE_SUFFIX_BYTES;
        tracing::debug!(dir = %dir.display(), map_size, max_key_bytes, inline_limit = layout.inline_limit, "store opened");

        let shared = Arc::new(Shared { env, dbs, gate: RwLock::new(()), layout });
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("dormouse-store-writer".into())
            .spawn(move || writer::run(writer_shared, receiver))?;
        Ok(Store { shared, config, max_room_key_bytes, sender: Some(sender), writer: Some(writer) })
    }

    /// The limits this store was opened with, for the server's checks.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Longest encoded [`RoomKey`] this environment can store (LMDB's key
    /// limit less the 8 bytes a quarantine key adds); the server must refuse
    /// longer room ids before they reach the store.
    pub fn max_room_key_bytes(&self) -> usize {
        self.max_room_key_bytes
    }

    /// Current size of the memory map, which grows as the data does.
    pub fn map_size_bytes(&self) -> usize {
        // `Env::info` reads the map, which a concurrent resize replaces.
        let _gate = self.shared.gate.read().unwrap_or_else(PoisonError::into_inner);
        self.shared.env.info().map_size
    }

    /// The value of `key` in `room`'s storage, as the room sees it: its
    /// pending writes in `overlay` first, then committed data.
    pub fn get(&self, room: &RoomKey, key: &[u8], overlay: &Overlay) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(&self.config, key)?;
        self.check_room(room)?;
        match overlay.lookup(key) {
            Lookup::Value(value) => return Ok(Some(value.to_vec())),
            Lookup::Deleted => return Ok(None),
            Lookup::Committed => {}
        }
        let shared = &*self.shared;
        self.read(|txn| {
            let Some(number) = room_number(&shared.dbs, txn, room)? else { return Ok(None) };
            let slot = shared.layout.slot(number, key);
            let Some(stored) = shared.dbs.storage.get(txn, &slot.lmdb_key)? else { return Ok(None) };
            if !slot.in_bucket {
                return Ok(Some(stored.to_vec()));
            }
            let rest = &key[shared.layout.inline_limit..];
            let entries = decode_bucket(stored)?;
            Ok(entries.binary_search_by(|(entry, _)| (*entry).cmp(rest)).ok().map(|index| entries[index].1.to_vec()))
        })
    }

    /// The entries of `room`'s storage selected by `options`, as the room
    /// sees them: committed data merged with its pending writes in `overlay`.
    #[allow(clippy::type_complexity)]
    pub fn list(
        &self,
        room: &RoomKey,
        options: &ListOptions,
        overlay: &Overlay,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.check_room(room)?;
        let limit = options.limit.unwrap_or(usize::MAX);
        let (lower, upper) = bounds(options);
        if limit == 0 || lower.as_ref().zip(upper.as_ref()).is_some_and(|(lo, hi)| lo >= hi) {
            return Ok(Vec::new());
        }
        let mut pending: Vec<(&[u8], Option<&[u8]>)> = overlay.range(lower.as_deref(), upper.as_deref()).collect();
        if options.reverse {
            pending.reverse();
        }
        if overlay.hides_committed() {
            return Ok(pending
                .into_iter()
                .filter_map(|(key, value)| Some((key.to_vec(), value?.to_vec())))
                .take(limit)
                .collect());
        }
        let shared = &*self.shared;
        self.read(|txn| {
            let committed = match room_number(&shared.dbs, txn, room)? {
                Some(number) => {
                    Some(Committed::new(shared, txn, number, lower.clone(), upper.clone(), options.reverse)?)
                }
                None => None,
            };
            merge(committed, pending, options.reverse, limit)
        })
    }

    /// `room`'s hibernation snapshot: the envelope bytes as written.
    pub fn snapshot(&self, room: &RoomKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_room(room)?;
        self.read(|txn| Ok(self.shared.dbs.snapshots.get(txn, room.as_bytes())?.map(<[u8]>::to_vec)))
    }

    /// How much of the store `room` takes, from committed data: its
    /// storage (LMDB keys and values, at most `max_entries` of them read,
    /// so a big room costs a bounded read) and its snapshot.
    pub fn usage(&self, room: &RoomKey, max_entries: usize) -> Result<Usage, StoreError> {
        self.check_room(room)?;
        let shared = &*self.shared;
        self.read(|txn| {
            let snapshot_bytes = shared.dbs.snapshots.get(txn, room.as_bytes())?.map_or(0, |s| s.len() as u64);
            let mut usage = Usage { storage_bytes: 0, complete: true, snapshot_bytes };
            let Some(number) = room_number(&shared.dbs, txn, room)? else { return Ok(usage) };
            let (start, end) = (Layout::room_start(number), Layout::room_end(number));
            let range = shared.dbs.storage.range(txn, &(Bound::Included(&start[..]), Bound::Excluded(&end[..])))?;
            for (read, entry) in range.enumerate() {
                if read == max_entries {
                    usage.complete = false;
                    break;
                }
                let (key, value) = entry?;
                // Less the room number every key of the room starts with.
                usage.storage_bytes += (key.len() - start.len() + value.len()) as u64;
            }
            Ok(usage)
        })
    }

    /// `room`'s alarm time, in milliseconds.
    pub fn alarm(&self, room: &RoomKey) -> Result<Option<u64>, StoreError> {
        self.check_room(room)?;
        self.read(|txn| self.shared.dbs.alarms.get(txn, room.as_bytes())?.map(decode_u64).transpose())
    }

    /// Every room's alarm, for scheduling them at start-up.
    pub fn alarms(&self) -> Result<Vec<(RoomKey, u64)>, StoreError> {
        self.read(|txn| {
            let mut alarms = Vec::new();
            for entry in self.shared.dbs.alarms.iter(txn)? {
                let (room, at_ms) = entry?;
                alarms.push((decode_room(room)?, decode_u64(at_ms)?));
            }
            Ok(alarms)
        })
    }

    /// Number of hibernated rooms with a snapshot.
    pub fn snapshot_count(&self) -> Result<u64, StoreError> {
        self.read(|txn| Ok(self.shared.dbs.snapshots.len(txn)?))
    }

    /// Every quarantined snapshot, with its room and the time it was set
    /// aside.
    pub fn quarantined(&self) -> Result<Vec<(RoomKey, u64, Vec<u8>)>, StoreError> {
        self.read(|txn| {
            let mut out = Vec::new();
            for entry in self.shared.dbs.quarantine.iter(txn)? {
                let (key, bytes) = entry?;
                let split = key
                    .len()
                    .checked_sub(QUARANTINE_SUFFIX_BYTES)
                    .ok_or_else(|| StoreError::Corrupt("quarantine key too short".into()))?;
                let (room, at_ms) = key.split_at(split);
                out.push((decode_room(room)?, decode_u64(at_ms)?, bytes.to_vec()));
            }
            Ok(out)
        })
    }

    /// Queues `batch` for the writer, blocking only while the queue is full.
    ///
    /// On `Ok`, `done` will be called exactly once, on the writer thread,
    /// after the batches submitted before this one. On `Err` (an invalid
    /// batch, or [`StoreError::Closed`]) nothing was queued and `done` is
    /// dropped uncalled.
    pub fn submit(&self, batch: Batch, done: Done) -> Result<(), StoreError> {
        batch.validate(&self.config, self.max_room_key_bytes)?;
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        sender.send(Msg::Batch(batch, done)).map_err(|_| StoreError::Closed)
    }

    /// Queues `batch` for the writer without ever blocking, for core threads.
    ///
    /// When the queue is full, hands `batch` and `done` back so the caller
    /// can retry later. Otherwise `done` is called exactly once: on the
    /// writer thread with the outcome, or right away, on this thread, with
    /// the error if the batch is invalid or the store is closed.
    pub fn try_submit(&self, batch: Batch, done: Done) -> Result<(), (Batch, Done)> {
        if let Err(error) = batch.validate(&self.config, self.max_room_key_bytes) {
            done(Err(error));
            return Ok(());
        }
        let Some(sender) = self.sender.as_ref() else {
            done(Err(StoreError::Closed));
            return Ok(());
        };
        match sender.try_send(Msg::Batch(batch, done)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Msg::Batch(batch, done))) => Err((batch, done)),
            Err(TrySendError::Disconnected(Msg::Batch(_, done))) => {
                done(Err(StoreError::Closed));
                Ok(())
            }
            Err(TrySendError::Full(Msg::Flush(_)) | TrySendError::Disconnected(Msg::Flush(_))) => {
                unreachable!("try_submit sends a batch")
            }
        }
    }

    /// Returns once every batch submitted before the call is committed and
    /// durable (or has failed, and said so to its `done`). Not to be called
    /// from a [`Done`] callback.
    pub fn flush(&self) -> Result<(), StoreError> {
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        let (ack, acked) = crossbeam_channel::bounded(1);
        sender.send(Msg::Flush(ack)).map_err(|_| StoreError::Closed)?;
        acked.recv().map_err(|_| StoreError::Closed)
    }

    /// Commits everything queued, stops the writer thread, and closes the
    /// environment, so that the same directory can be opened again in this
    /// process.
    pub fn close(mut self) -> Result<(), StoreError> {
        let result = self.shutdown();
        let closing = self.shared.env.clone().prepare_for_closing();
        drop(self);
        closing.wait();
        result
    }

    /// Stops the writer once it has committed everything queued. Idempotent.
    fn shutdown(&mut self) -> Result<(), StoreError> {
        // The writer drains the queue, then sees the channel disconnected.
        drop(self.sender.take());
        match self.writer.take() {
            Some(writer) => writer.join().map_err(|_| StoreError::WriterPanicked),
            None => Ok(()),
        }
    }

    /// Runs `f` in a read transaction that ends before this returns, under
    /// the read guard that keeps the map from being resized meanwhile.
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&RoTxn<'_, WithoutTls>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _gate = self.shared.gate.read().unwrap_or_else(PoisonError::into_inner);
        let txn = self.shared.env.read_txn()?;
        let result = f(&txn);
        drop(txn);
        result
    }

    fn check_room(&self, room: &RoomKey) -> Result<(), StoreError> {
        let len = room.as_bytes().len();
        if len > self.max_room_key_bytes {
            return Err(StoreError::RoomKeyTooLarge { len, max: self.max_room_key_bytes });
        }
        Ok(())
    }

    /// The inline limit of this store's key layout.
    #[cfg(test)]
    pub(crate) fn inline_limit(&self) -> usize {
        self.shared.layout.inline_limit
    }
}

// The server shares one store between its core threads.
const _: fn() = || {
    fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<Store>();
};

impl Drop for Store {
    /// Commits everything queued and stops the writer, like [`Store::close`];
    /// the environment closes when the last handle to it goes.
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "store writer did not stop cleanly");
        }
    }
}

/// Creates the named databases, or opens them if they exist.
fn create_databases(env: &Env<WithoutTls>) -> Result<Databases, StoreError> {
    let wtxn = env.write_txn()?;
    let created = env.create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
        let storage = opener.create_database::<Bytes, Bytes>(wtxn, Some("storage"))?;
        let snapshots = opener.create_database::<Bytes, Bytes>(wtxn, Some("snapshots"))?;
        let alarms = opener.create_database::<Bytes, Bytes>(wtxn, Some("alarms"))?;
        let rooms = opener.create_database::<Bytes, Bytes>(wtxn, Some("rooms"))?;
        let meta = opener.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?;
        let quarantine = opener.create_database::<Bytes, Bytes>(wtxn, Some("quarantine"))?;
        Ok(CommitOrAbort::<_, Infallible>::Commit((storage, snapshots, alarms, rooms, meta, quarantine)))
    })?;
    let (storage, snapshots, alarms, rooms, meta, quarantine) = match created {
        CommitOrAbort::Commit(dbs) => dbs,
        CommitOrAbort::Abort(never) => match never {},
    };
    Ok(Databases { storage, snapshots, alarms, rooms, meta, quarantine })
}

/// Checks the format of an existing store, or records it in a new one, and
/// returns the key layout in force.
fn init_meta(env: &Env<WithoutTls>, dbs: &Databases, new_inline_limit: usize) -> Result<Layout, StoreError> {
    let max_key_bytes = env.max_key_size();
    let mut wtxn = env.write_txn()?;
    let layout = match dbs.meta.get(&wtxn, META_FORMAT_VERSION)? {
        None => {
            if !dbs.storage.is_empty(&wtxn)? || !dbs.rooms.is_empty(&wtxn)? {
                return Err(StoreError::Corrupt("storage present but no format version in meta".into()));
            }
            assert!(
                new_inline_limit >= 1 && new_inline_limit + LAYOUT_OVERHEAD_BYTES <= max_key_bytes,
                "the inline limit {new_inline_limit} fits LMDB's key size {max_key_bytes}"
            );
            let inline = u32::try_from(new_inline_limit).expect("LMDB key sizes fit in u32");
            dbs.meta.put(&mut wtxn, META_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes())?;
            dbs.meta.put(&mut wtxn, META_INLINE_KEY_BYTES, &inline.to_be_bytes())?;
            dbs.meta.put(&mut wtxn, META_NEXT_ROOM, &1u64.to_be_bytes())?;
            Layout { inline_limit: new_inline_limit }
        }
        Some(version) => {
            let found = u32::from_be_bytes(
                version.try_into().map_err(|_| StoreError::Corrupt("format version is not 4 bytes".into()))?,
            );
            if found != FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat { found, supported: FORMAT_VERSION });
            }
            let inline = dbs
                .meta
                .get(&wtxn, META_INLINE_KEY_BYTES)?
                .and_then(|bytes| bytes.try_into().ok().map(u32::from_be_bytes))
                .ok_or_else(|| StoreError::Corrupt("missing inline key limit in meta".into()))?;
            let inline_limit = inline as usize;
            if inline_limit == 0 || inline_limit + LAYOUT_OVERHEAD_BYTES > max_key_bytes {
                return Err(StoreError::InvalidConfig(format!(
                    "the store lays out keys of up to {} bytes but this LMDB takes at most {max_key_bytes} \
                     (was it created on a machine with a larger page size?)",
                    inline_limit + LAYOUT_OVERHEAD_BYTES
                )));
            }
            Layout { inline_limit }
        }
    };
    wtxn.commit()?;
    Ok(layout)
}

/// `room`'s number in the storage database, if it has one.
pub(crate) fn room_number(dbs: &Databases, txn: &RoTxn, room: &RoomKey) -> Result<Option<u64>, StoreError> {
    dbs.rooms.get(txn, room.as_bytes())?.map(decode_u64).transpose()
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] =
        bytes.try_into().map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_room(bytes: &[u8]) -> Result<RoomKey, StoreError> {
    RoomKey::from_bytes(bytes).ok_or_else(|| StoreError::Corrupt("room key does not decode".into()))
}

/// The user-key range `[lower, upper)` that `options` select: the
/// intersection of `[start, end)` with the keys starting with `prefix`.
fn bounds(options: &ListOptions) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut lower = options.start.clone();
    let mut upper = options.end.clone();
    if let Some(prefix) = &options.prefix {
        if lower.as_ref().is_none_or(|lower| lower < prefix) {
            lower = Some(prefix.clone());
        }
        // Keys starting with `prefix` are exactly those in
        // `[prefix, successor)`; with no successor (all 0xff), exactly
        // those at least `prefix`.
        if let Some(successor) = prefix_successor(prefix) {
            if upper.as_ref().is_none_or(|upper| &successor < upper) {
                upper = Some(successor);
            }
        }
    }
    (lower, upper)
}

/// The least key greater than every key starting with `prefix`.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut successor = prefix.to_vec();
    while let Some(last) = successor.pop() {
        if last != u8::MAX {
            successor.push(last + 1);
            return Some(successor);
        }
    }
    None
}

/// LMDB entries of the storage database, borrowed from a transaction.
type RawEntries<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;
/// A user key and its committed value, borrowed from a transaction.
type CommittedEntry<'t> = (Vec<u8>, &'t [u8]);
/// Listed entries: user keys and values.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Committed entries of one room within `[lower, upper)`, in list order,
/// with buckets expanded.
struct Committed<'t> {
    entries: RawEntries<'t>,
    /// The rest of the bucket being walked, in list order.
    bucket: std::vec::IntoIter<(Vec<u8>, &'t [u8])>,
    layout: Layout,
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
    reverse: bool,
    finished: bool,
}

impl<'t> Committed<'t> {
    fn new(
        shared: &Shared,
        txn: &'t RoTxn<'_, WithoutTls>,
        number: u64,
        lower: Option<Vec<u8>>,
        upper: Option<Vec<u8>>,
        reverse: bool,
    ) -> Result<Committed<'t>, StoreError> {
        let storage = shared.dbs.storage;
        let layout = shared.layout;
        let room_start = Layout::room_start(number);
        let room_end = Layout::room_end(number);
        // Every user key k in [lower, upper) has lmdb(lower) <= lmdb(k) <= lmdb(upper) (see layout.rs); the
        // slots at the ends may hold keys outside the range, which `next` filters out.
        let entries: RawEntries<'t> = if reverse {
            let end = upper.as_ref().map(|upper| layout.slot(number, upper).lmdb_key);
            let end_bound = match &end {
                Some(end) => Bound::Included(end.as_slice()),
                None => Bound::Excluded(&room_end[..]),
            };
            Box::new(storage.rev_range(txn, &(Bound::Included(&room_start[..]), end_bound))?)
        } else {
            let start = lower.as_ref().map(|lower| layout.slot(number, lower).lmdb_key);
            let start_bound = match &start {
                Some(start) => Bound::Included(start.as_slice()),
                None => Bound::Included(&room_start[..]),
            };
            Box::new(storage.range(txn, &(start_bound, Bound::Excluded(&room_end[..])))?)
        };
        Ok(Committed { entries, bucket: Vec::new().into_iter(), layout, lower, upper, reverse, finished: false })
    }

    fn next(&mut self) -> Result<Option<CommittedEntry<'t>>, StoreError> {
        while !self.finished {
            let (key, value) = match self.bucket.next() {
                Some(entry) => entry,
                None => {
                    let Some(entry) = self.entries.next() else {
                        self.finished = true;
                        break;
                    };
                    let (lmdb_key, value) = entry?;
                    debug_assert!(lmdb_key.len() >= ROOM_NUMBER_BYTES);
                    match self.layout.decode(lmdb_key)? {
                        Decoded::Key(key) => (key.to_vec(), value),
                        Decoded::Bucket(prefix) => {
                            let mut entries: Vec<_> = decode_bucket(value)?
                                .into_iter()
                                .map(|(rest, value)| ([prefix, rest].concat(), value))
                                .collect();
                            if self.reverse {
                                entries.reverse();
                            }
                            self.bucket = entries.into_iter();
                            continue;
                        }
                    }
                }
            };
            let below = self.lower.as_deref().is_some_and(|lower| key.as_slice() < lower);
            let above = self.upper.as_deref().is_some_and(|upper| key.as_slice() >= upper);
            // Before the range: skip. Past it: every later key is too.
            let (skip, past) = if self.reverse { (above, below) } else { (below, above) };
            if past {
                self.finished = true;
            } else if !skip {
                return Ok(Some((key, value)));
            }
        }
        Ok(None)
    }
}

/// Merges committed entries with pending writes (both in list order; a
/// pending write wins over a committed entry with the same key, and a pending
/// delete hides it), stopping after `limit` entries.
fn merge<'t>(
    mut committed: Option<Committed<'t>>,
    pending: Vec<(&[u8], Option<&[u8]>)>,
    reverse: bool,
    limit: usize,
) -> Result<Entries, StoreError> {
    fn next_committed<'t>(committed: &mut Option<Committed<'t>>) -> Result<Option<CommittedEntry<'t>>, StoreError> {
        match committed {
            Some(committed) => committed.next(),
            None => Ok(None),
        }
    }
    let mut out = Vec::new();
    let mut head = next_committed(&mut committed)?;
    let mut pending = pending.into_iter().peekable();
    while out.len() < limit {
        let take_pending = match (&head, pending.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((committed_key, _)), Some((pending_key, _))) => {
                let order = committed_key.as_slice().cmp(pending_key);
                match if reverse { order.reverse() } else { order } {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Equal => {
                        head = next_committed(&mut committed)?;
                        true
                    }
                }
            }
        };
        if take_pending {
            let (key, value) = pending.next().expect("a pending entry was peeked");
            if let Some(value) = value {
                out.push((key.to_vec(), value.to_vec()));
            }
        } else {
            let (key, value) = head.take().expect("a committed entry is at the head");
            out.push((key, value.to_vec()));
            head = next_committed(&mut committed)?;
        }
    }
    Ok(out)
}
