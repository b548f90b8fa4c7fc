//! A document's durable form in room storage: one merged state, and the
//! updates applied since, each appended before it is relayed.
//!
//! ```text
//! yjs/s/<part:08x>              the merged state (a Yjs v1 update), in parts
//! yjs/u/<seq:016x>/<part:08x>   each update since, in order, in parts
//! ```
//!
//! Values are cut into parts of `limits.max_storage_value_bytes`, so a
//! document of any size fits the store's limits. Past a bound (more updates
//! than `MAX_TAIL_UPDATES`, or one per 4 KiB of state in a larger document,
//! or more tail bytes than the state and at least `MIN_TAIL_BYTES`) and when
//! the room hibernates, the tail is merged into
//! the state (`encode_state_as_update_v1` of the document, which drops what
//! garbage collection removed) and deleted, in the same commit.

use crate::party::Room;
use crate::storage::{ListOptions, StorageError};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

const STATE: &[u8] = b"yjs/s/";
const TAIL: &[u8] = b"yjs/u/";
/// Updates in the tail past which it is merged into the state (at least).
const MAX_TAIL_UPDATES: usize = 512;
/// In a larger document, one more update allowed in the tail per this
/// many bytes of state: 2,560 for 10 MB.
const STATE_BYTES_PER_TAIL_UPDATE: usize = 4096;
/// Tail bytes past which it is merged, when the state is smaller: a large
/// document is rewritten only after as many bytes of updates as it holds.
const MIN_TAIL_BYTES: usize = 1 << 20;

/// What the room's storage holds of its document.
#[derive(Debug, Default)]
pub(super) struct Log {
    state_parts: u32,
    state_bytes: usize,
    /// The tail: each update's sequence number and number of parts.
    tail: Vec<(u64, u32)>,
    tail_bytes: usize,
    /// The sequence number of the next update.
    next: u64,
}

fn state_key(part: u32) -> Vec<u8> {
    format!("yjs/s/{part:08x}").into_bytes()
}

fn tail_key(seq: u64, part: u32) -> Vec<u8> {
    format!("yjs/u/{seq:016x}/{part:08x}").into_bytes()
}

/// The sequence number of a tail key.
fn tail_seq(key: &[u8]) -> Option<u64> {
    let hex = std::str::from_utf8(key.get(TAIL.len()..TAIL.len() + 16)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

fn list(room: &Room, prefix: &[u8]) -> Result<crate::storage::Entries, StorageError> {
    room.storage().list(&ListOptions { prefix: Some(prefix.to_vec()), ..Default::default() })
}

impl Log {
    /// Reads the document from storage into `doc`: the state, then the tail.
    pub fn load(room: &Room, doc: &Doc) -> Result<Log, String> {
        let state = list(room, STATE).map_err(|e| format!("cannot read the document: {e}"))?;
        let mut log = Log { state_parts: state.len() as u32, ..Log::default() };
        let mut bytes = Vec::with_capacity(state.iter().map(|(_, part)| part.len()).sum());
        for (_, part) in &state {
            bytes.extend_from_slice(part);
        }
        log.state_bytes = bytes.len();
        let mut txn = doc.transact_mut();
        if !bytes.is_empty() {
            let update = Update::decode_v1(&bytes).map_err(|e| format!("the stored document does not decode: {e}"))?;
            txn.apply_update(update).map_err(|e| format!("the stored document does not apply: {e}"))?;
        }
        let tail = list(room, TAIL).map_err(|e| format!("cannot read the document's updates: {e}"))?;
        let mut update = Vec::new();
        let mut current = None;
        for (key, part) in tail {
            let seq = tail_seq(&key).ok_or_else(|| format!("a stored update has a bad key {key:?}"))?;
            if current != Some(seq) {
                if let Some(done) = current {
                    log.apply_stored(&mut txn, done, &mut update)?;
                }
                current = Some(seq);
                log.tail.push((seq, 0));
            }
            log.tail.last_mut().expect("pushed above").1 += 1;
            update.extend_from_slice(&part);
        }
        if let Some(done) = current {
            log.apply_stored(&mut txn, done, &mut update)?;
        }
        Ok(log)
    }

    /// Applies stored update `seq` (its parts joined in `update`, emptied).
    fn apply_stored(
        &mut self,
        txn: &mut yrs::TransactionMut<'_>,
        seq: u64,
        update: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.tail_bytes += update.len();
        self.next = seq + 1;
        let decoded = Update::decode_v1(update).map_err(|e| format!("stored update {seq} does not decode: {e}"))?;
        update.clear();
        txn.apply_update(decoded).map_err(|e| format!("stored update {seq} does not apply: {e}"))
    }

    /// The document's size as stored: its state and the updates since.
    pub fn size(&self) -> usize {
        self.state_bytes + self.tail_bytes
    }

    /// Appends `update` (applied to the document already) to the tail.
    pub fn append(&mut self, room: &Room, update: &[u8]) -> Result<(), StorageError> {
        let storage = room.storage();
        let seq = self.next;
        let mut parts = 0;
        for part in update.chunks(storage.max_value_bytes().max(1)) {
            storage.put(tail_key(seq, parts), part)?;
            parts += 1;
        }
        self.tail.push((seq, parts));
        self.tail_bytes += update.len();
        self.next += 1;
        Ok(())
    }

    /// Whether the tail is past its bound and should be merged. A merge
    /// costs about as much as the state is large, so the bound on the
    /// number of updates grows with the state: one update in a large
    /// document is charged at most `STATE_BYTES_PER_TAIL_UPDATE` bytes of
    /// merging, and the tail a load replays stays short next to the state.
    pub fn wants_compaction(&self) -> bool {
        let updates = MAX_TAIL_UPDATES.max(self.state_bytes / STATE_BYTES_PER_TAIL_UPDATE);
        self.tail.len() >= updates || self.tail_bytes >= self.state_bytes.max(MIN_TAIL_BYTES)
    }

    /// Writes the document as one merged state and deletes the tail.
    pub fn compact(&mut self, room: &Room, doc: &Doc) -> Result<(), StorageError> {
        if self.tail.is_empty() {
            return Ok(());
        }
        let storage = room.storage();
        let state = doc.transact().encode_state_as_update_v1(&StateVector::default());
        let mut parts = 0;
        for part in state.chunks(storage.max_value_bytes().max(1)) {
            storage.put(state_key(parts), part)?;
            parts += 1;
        }
        for stale in parts..self.state_parts {
            storage.delete(state_key(stale))?;
        }
        for (seq, count) in std::mem::take(&mut self.tail) {
            for part in 0..count {
                storage.delete(tail_key(seq, part))?;
            }
        }
        self.state_parts = parts;
        self.state_bytes = state.len();
        self.tail_bytes = 0;
        Ok(())
    }
}
