//! The writer thread: the only place that writes to LMDB.
//!
//! It takes the first queued message (blocking), then whatever else is
//! already queued up to a bound, and applies all those batches in one write
//! transaction: one commit, one `fsync`, shared by all of them (group
//! commit). Then it reports to each batch's `done`, in submission order.
//! LMDB's "map full" is answered by aborting, doubling the map and retrying;
//! any other failure of one batch is kept to that batch by committing the
//! group's batches one by one.

use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use heed::RwTxn;

use crate::batch::Op;
use crate::layout::{decode_bucket, encode_bucket, Layout};
use crate::store::{decode_u64, room_number, Done, Msg, Shared, MAP_ALIGN_BYTES, META_NEXT_ROOM};
use crate::{lmdb, Batch, RoomKey, StoreError};

/// Most batches in one group commit: bounds the time before the first of
/// them is acknowledged.
const GROUP_MAX_BATCHES: usize = 1024;
/// Most payload bytes in one group commit, for the same reason.
const GROUP_MAX_BYTES: usize = 8 << 20;
/// Most times one commit may double the map before giving up: 2^32 times
/// the initial size is more address space than any machine has.
const MAX_GROWTHS_PER_COMMIT: u32 = 32;

/// Why a commit failed.
enum Failure {
    /// Applying batch `.0` of the group failed.
    Batch(usize, StoreError),
    /// Opening or committing the transaction failed: every batch failed.
    Txn(StoreError),
}

impl Failure {
    fn error(&self) -> &StoreError {
        match self {
            Failure::Batch(_, error) | Failure::Txn(error) => error,
        }
    }

    fn into_error(self) -> StoreError {
        match self {
            Failure::Batch(_, error) | Failure::Txn(error) => error,
        }
    }
}

/// Runs until every `Store` handle to the queue is gone and the queue is
/// empty.
pub(crate) fn run(shared: Arc<Shared>, receiver: Receiver<Msg>) {
    let writer = Writer { shared };
    while let Ok(first) = receiver.recv() {
        let mut batches = Vec::new();
        let mut flushes = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Msg::Batch(batch, done) => {
                    bytes += batch.bytes;
                    batches.push((batch, done));
                }
                Msg::Flush(ack) => flushes.push(ack),
            }
            if batches.len() < GROUP_MAX_BATCHES && bytes < GROUP_MAX_BYTES {
                next = receiver.try_recv().ok();
            }
        }
        tracing::trace!(batches = batches.len(), bytes, "group commit");
        if !batches.is_empty() {
            writer.commit_group(batches);
        }
        for ack in flushes {
            // The flusher may have given up waiting; nothing to tell then.
            let _ = ack.send(());
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    /// Commits `group` in one transaction if possible, else batch by batch,
    /// and reports each outcome to its `done`, in order.
    fn commit_group(&self, group: Vec<(Batch, Done)>) {
        let (batches, dones): (Vec<Batch>, Vec<Done>) = group.into_iter().unzip();
        let results: Vec<Result<(), StoreError>> = match self.commit(&batches) {
            Ok(()) => vec![Ok(()); batches.len()],
            Err(Failure::Txn(error)) => {
                tracing::warn!(%error, batches = batches.len(), "store commit failed");
                vec![Err(error); batches.len()]
            }
            Err(Failure::Batch(_, error)) if batches.len() == 1 => vec![Err(error)],
            Err(Failure::Batch(index, error)) => {
                tracing::warn!(%error, index, batches = batches.len(), "a batch failed; committing the group one by one");
                batches
                    .iter()
                    .map(|batch| self.commit(std::slice::from_ref(batch)).map_err(Failure::into_error))
                    .collect()
            }
        };
        for (done, result) in dones.into_iter().zip(results) {
            if catch_unwind(AssertUnwindSafe(|| done(result))).is_err() {
                tracing::error!("a store completion callback panicked");
            }
        }
    }

    /// Commits `batches` in one transaction, growing the map as needed.
    fn commit(&self, batches: &[Batch]) -> Result<(), Failure> {
        let mut growths = 0;
        loop {
            match self.try_commit(batches) {
                Err(failure) if failure.error().is_map_full() && growths < MAX_GROWTHS_PER_COMMIT => {
                    growths += 1;
                    // `try_commit` has ended its transaction: none is open.
                    self.grow().map_err(Failure::Txn)?;
                }
                result => return result,
            }
        }
    }

    fn try_commit(&self, batches: &[Batch]) -> Result<(), Failure> {
        let mut wtxn = self.shared.env.write_txn().map_err(|error| Failure::Txn(error.into()))?;
        for (index, batch) in batches.iter().enumerate() {
            if let Err(error) = self.apply(&mut wtxn, batch) {
                wtxn.abort();
                return Err(Failure::Batch(index, error));
            }
        }
        // LMDB syncs on commit (the environment has no NOSYNC flag): once
        // this returns Ok, the batches survive a crash.
        wtxn.commit().map_err(|error| Failure::Txn(error.into()))
    }

    /// Doubles the memory map.
    fn grow(&self) -> Result<(), StoreError> {
        let current = self.shared.env.info().map_size;
        let new_size = current
            .checked_mul(2)
            .and_then(|size| size.checked_next_multiple_of(MAP_ALIGN_BYTES))
            .ok_or_else(|| StoreError::InvalidConfig(format!("cannot grow the LMDB map past {current} bytes")))?;
        lmdb::resize(&self.shared.env, &self.shared.gate, new_size)?;
        tracing::info!(from = current, to = new_size, "LMDB map full: grew the map");
        Ok(())
    }

    fn apply(&self, wtxn: &mut RwTxn<'_>, batch: &Batch) -> Result<(), StoreError> {
        let dbs = &self.shared.dbs;
        for op in &batch.ops {
            match op {
                Op::Put { room, key, value } => {
                    let number = self.assign_room_number(wtxn, &batch.rooms[*room])?;
                    self.storage_put(wtxn, number, key, value)?;
                }
                Op::Delete { room, key } => {
                    if let Some(number) = room_number(dbs, wtxn, &batch.rooms[*room])? {
                        self.storage_delete(wtxn, number, key)?;
                    }
                }
                Op::DeleteAll { room } => {
                    let room = &batch.rooms[*room];
                    if let Some(number) = room_number(dbs, wtxn, room)? {
                        let (start, end) = (Layout::room_start(number), Layout::room_end(number));
                        dbs.storage.delete_range(wtxn, &(Bound::Included(&start[..]), Bound::Excluded(&end[..])))?;
                        // The room gets a fresh number on its next put; an
                        // emptied room leaves nothing behind.
                        dbs.rooms.delete(wtxn, room.as_bytes())?;
                    }
                }
                Op::PutSnapshot { room, envelope } => {
                    dbs.snapshots.put(wtxn, batch.rooms[*room].as_bytes(), envelope)?
                }
                Op::DeleteSnapshot { room } => {
                    dbs.snapshots.delete(wtxn, batch.rooms[*room].as_bytes())?;
                }
                Op::SetAlarm { room, at_ms } => {
                    dbs.alarms.put(wtxn, batch.rooms[*room].as_bytes(), &at_ms.to_be_bytes())?
                }
                Op::DeleteAlarm { room } => {
                    dbs.alarms.delete(wtxn, batch.rooms[*room].as_bytes())?;
                }
                Op::Quarantine { room, at_ms, bytes } => {
                    let key = [batch.rooms[*room].as_bytes(), &at_ms.to_be_bytes()].concat();
                    dbs.quarantine.put(wtxn, &key, bytes)?;
                }
                #[cfg(test)]
                Op::Fail => return Err(StoreError::Corrupt("failure injected by a test".into())),
            }
        }
        Ok(())
    }

    /// `room`'s number, assigning the next free one on its first write.
    fn assign_room_number(&self, wtxn: &mut RwTxn<'_>, room: &RoomKey) -> Result<u64, StoreError> {
        let dbs = &self.shared.dbs;
        if let Some(number) = room_number(dbs, wtxn, room)? {
            return Ok(number);
        }
        let next = dbs
            .meta
            .get(wtxn, META_NEXT_ROOM)?
            .map(decode_u64)
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt("no next room number in meta".into()))?;
        let after =
            next.checked_add(1).filter(|after| *after < u64::MAX).expect("fewer than 2^64 rooms are ever created");
        dbs.meta.put(wtxn, META_NEXT_ROOM, &after.to_be_bytes())?;
        dbs.rooms.put(wtxn, room.as_bytes(), &next.to_be_bytes())?;
        Ok(next)
    }

    fn storage_put(&self, wtxn: &mut RwTxn<'_>, number: u64, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let (layout, storage) = (self.shared.layout, self.shared.dbs.storage);
        let slot = layout.slot(number, key);
        if !slot.in_bucket {
            storage.put(wtxn, &slot.lmdb_key, value)?;
            return Ok(());
        }
        let rest = &key[layout.inline_limit..];
        let stored = storage.get(wtxn, &slot.lmdb_key)?.map(<[u8]>::to_vec);
        let mut entries = match &stored {
            Some(bucket) => decode_bucket(bucket)?,
            None => Vec::new(),
        };
        match entries.binary_search_by(|(entry, _)| (*entry).cmp(rest)) {
            Ok(index) => entries[index].1 = value,
            Err(index) => entries.insert(index, (rest, value)),
        }
        storage.put(wtxn, &slot.lmdb_key, &encode_bucket(&entries))?;
        Ok(())
    }

    fn storage_delete(&self, wtxn: &mut RwTxn<'_>, number: u64, key: &[u8]) -> Result<(), StoreError> {
        let (layout, storage) = (self.shared.layout, self.shared.dbs.storage);
        let slot = layout.slot(number, key);
        if !slot.in_bucket {
            storage.delete(wtxn, &slot.lmdb_key)?;
            return Ok(());
        }
        let rest = &key[layout.inline_limit..];
        let Some(stored) = storage.get(wtxn, &slot.lmdb_key)?.map(<[u8]>::to_vec) else { return Ok(()) };
        let mut entries = decode_bucket(&stored)?;
        let Ok(index) = entries.binary_search_by(|(entry, _)| (*entry).cmp(rest)) else { return Ok(()) };
        entries.remove(index);
        if entries.is_empty() {
            storage.delete(wtxn, &slot.lmdb_key)?;
        } else {
            storage.put(wtxn, &slot.lmdb_key, &encode_bucket(&entries))?;
        }
        Ok(())
    }
}
