//! A document's durable form in room storage: one merged state, and the
//! updates applied since, each appended before it is relayed.
//!
//! ```text
//! yjs/s/<part:08x>              the merged state (a Yjs v1 update), in parts
//! yjs/v/<part:08x>              its snapshot (delete set, state vector), in parts
//! yjs/u/<seq:016x>/<part:08x>   each update since, in order, in parts
//! ```
//!
//! Values are cut into parts of `limits.max_storage_value_bytes`, so a
//! document of any size fits the store's limits. Past a bound (more updates
//! than `MAX_TAIL_UPDATES`, or one per 4 KiB of state in a larger document,
//! or more tail bytes than the state and at least `MIN_TAIL_BYTES`) and when
//! the room hibernates, the tail is merged into
//! the state (`encode_state_as_update_v1` of the document, which drops what
//! garbage collection removed) and deleted, in the same commit; the state's
//! snapshot is written with it, so a room woken with no updates since can
//! serve readers without decoding the document ([`super::document`]).

use crate::party::Room;
use crate::storage::{ListOptions, StorageError};
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact};

const STATE: &[u8] = b"yjs/s/";
const SNAPSHOT: &[u8] = b"yjs/v/";
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
    /// Parts of the state's snapshot (none in a document stored before
    /// snapshots were, until its next compaction).
    snapshot_parts: u32,
    /// The tail: each update's sequence number and number of parts.
    tail: Vec<(u64, u32)>,
    tail_bytes: usize,
    /// The sequence number of the next update.
    next: u64,
}

/// The document as storage holds it, read at a load.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// The merged state, a Yjs v1 update (empty for a new document).
    pub state: Vec<u8>,
    /// The state's snapshot, v1-encoded, if stored.
    pub snapshot: Option<Vec<u8>>,
    /// The updates since, in order.
    pub tail: Vec<Vec<u8>>,
}

fn part_key(prefix: &[u8], part: u32) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{part:08x}").as_bytes());
    key
}

fn tail_key(seq: u64, part: u32) -> Vec<u8> {
    format!("yjs/u/{seq:016x}/{part:08x}").into_bytes()
}

/// Writes `bytes` in parts under `prefix`, deleting the parts past them of
/// the `old` ones; returns the number written.
fn write_parts(room: &Room, prefix: &[u8], bytes: &[u8], old: u32) -> Result<u32, StorageError> {
    let storage = room.storage();
    let mut parts = 0;
    for part in bytes.chunks(storage.max_value_bytes().max(1)) {
        storage.put(part_key(prefix, parts), part)?;
        parts += 1;
    }
    for stale in parts..old {
        storage.delete(part_key(prefix, stale))?;
    }
    Ok(parts)
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
    /// Reads the document from storage: the state, its snapshot, the tail.
    pub fn load(room: &Room) -> Result<(Log, Stored), String> {
        let joined = |prefix: &[u8], what: &str| -> Result<(u32, Vec<u8>), String> {
            let parts = list(room, prefix).map_err(|e| format!("cannot read the document's {what}: {e}"))?;
            let mut bytes = Vec::with_capacity(parts.iter().map(|(_, part)| part.len()).sum());
            for (_, part) in &parts {
                bytes.extend_from_slice(part);
            }
            Ok((parts.len() as u32, bytes))
        };
        let (state_parts, state) = joined(STATE, "state")?;
        let (snapshot_parts, snapshot) = joined(SNAPSHOT, "snapshot")?;
        let mut log = Log { state_parts, state_bytes: state.len(), snapshot_parts, ..Log::default() };
        let mut stored = Stored { state, snapshot: (snapshot_parts > 0).then_some(snapshot), tail: Vec::new() };
        let tail = list(room, TAIL).map_err(|e| format!("cannot read the document's updates: {e}"))?;
        for (key, part) in tail {
            let seq = tail_seq(&key).ok_or_else(|| format!("a stored update has a bad key {key:?}"))?;
            if log.tail.last().map(|&(last, _)| last) != Some(seq) {
                log.tail.push((seq, 0));
                log.next = seq + 1;
                stored.tail.push(Vec::new());
            }
            log.tail.last_mut().expect("pushed above").1 += 1;
            log.tail_bytes += part.len();
            stored.tail.last_mut().expect("pushed above").extend_from_slice(&part);
        }
        Ok((log, stored))
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

    /// Whether a compaction would change what is stored: there is a tail,
    /// or a state without its snapshot.
    pub fn compactable(&self) -> bool {
        !self.tail.is_empty() || (self.state_parts > 0 && self.snapshot_parts == 0)
    }

    /// Writes the document as one merged state with its snapshot and
    /// deletes the tail.
    pub fn compact(&mut self, room: &Room, doc: &Doc) -> Result<(), StorageError> {
        if !self.compactable() {
            return Ok(());
        }
        let txn = doc.transact();
        let state = txn.encode_state_as_update_v1(&StateVector::default());
        let snapshot = txn.snapshot().encode_v1();
        drop(txn);
        self.state_parts = write_parts(room, STATE, &state, self.state_parts)?;
        self.snapshot_parts = write_parts(room, SNAPSHOT, &snapshot, self.snapshot_parts)?;
        let storage = room.storage();
        for (seq, count) in std::mem::take(&mut self.tail) {
            for part in 0..count {
                storage.delete(tail_key(seq, part))?;
            }
        }
        self.state_bytes = state.len();
        self.tail_bytes = 0;
        Ok(())
    }
}
