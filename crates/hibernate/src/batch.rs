//! The unit of writing: a list of operations the writer thread applies in one
//! LMDB transaction, so that a room's storage, snapshot and alarm change
//! together or not at all.

use crate::{check_key, check_value, RoomKey, StoreConfig, StoreError};

/// One write, naming its room by index into [`Batch::rooms`].
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put {
        room: usize,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        room: usize,
        key: Vec<u8>,
    },
    DeleteAll {
        room: usize,
    },
    PutSnapshot {
        room: usize,
        envelope: Vec<u8>,
    },
    DeleteSnapshot {
        room: usize,
    },
    SetAlarm {
        room: usize,
        at_ms: u64,
    },
    DeleteAlarm {
        room: usize,
    },
    Quarantine {
        room: usize,
        at_ms: u64,
        bytes: Vec<u8>,
    },
    /// Fails when applied, to test how the writer isolates a failing batch.
    #[cfg(test)]
    Fail,
}

/// An atomic group of writes: everything in one `Batch` commits in one LMDB
/// transaction, or nothing does. Operations apply in the order they were
/// added, so a `put` after a `delete_all` survives it.
///
/// A batch may touch several rooms; the server usually builds one per room
/// event (the event's storage writes, plus its snapshot or alarm).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) rooms: Vec<RoomKey>,
    pub(crate) ops: Vec<Op>,
    /// Approximate payload size, to bound how much one group commit holds.
    pub(crate) bytes: usize,
}

/// Bookkeeping cost counted per operation on top of its payload.
const OP_OVERHEAD_BYTES: usize = 32;

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Whether the batch holds no operation (it still commits, in order, as a
    /// barrier).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Sets a storage key of `room`.
    pub fn put(&mut self, room: &RoomKey, key: &[u8], value: &[u8]) {
        let room = self.room(room);
        self.push(key.len() + value.len(), Op::Put { room, key: key.to_vec(), value: value.to_vec() });
    }

    /// Removes a storage key of `room` (nothing if it is absent).
    pub fn delete(&mut self, room: &RoomKey, key: &[u8]) {
        let room = self.room(room);
        self.push(key.len(), Op::Delete { room, key: key.to_vec() });
    }

    /// Removes every storage key of `room`; its snapshot and alarm stay.
    pub fn delete_all(&mut self, room: &RoomKey) {
        let room = self.room(room);
        self.push(0, Op::DeleteAll { room });
    }

    /// Stores `room`'s hibernation snapshot (an [`crate::envelope`]),
    /// replacing the previous one.
    pub fn put_snapshot(&mut self, room: &RoomKey, envelope: Vec<u8>) {
        let room = self.room(room);
        self.push(envelope.len(), Op::PutSnapshot { room, envelope });
    }

    /// Removes `room`'s snapshot, once the room is awake or gone.
    pub fn delete_snapshot(&mut self, room: &RoomKey) {
        let room = self.room(room);
        self.push(0, Op::DeleteSnapshot { room });
    }

    /// Sets `room`'s one alarm, replacing any previous one.
    pub fn set_alarm(&mut self, room: &RoomKey, at_ms: u64) {
        let room = self.room(room);
        self.push(0, Op::SetAlarm { room, at_ms });
    }

    /// Removes `room`'s alarm (nothing if it has none).
    pub fn delete_alarm(&mut self, room: &RoomKey) {
        let room = self.room(room);
        self.push(0, Op::DeleteAlarm { room });
    }

    /// Keeps a snapshot that failed to decode aside, under `(room, at_ms)`,
    /// for an operator to inspect, rather than losing it.
    pub fn quarantine(&mut self, room: &RoomKey, at_ms: u64, bytes: Vec<u8>) {
        let room = self.room(room);
        self.push(bytes.len(), Op::Quarantine { room, at_ms, bytes });
    }

    #[cfg(test)]
    pub(crate) fn fail_for_test(&mut self) {
        self.push(0, Op::Fail);
    }

    /// Refuses a batch that could not be applied: oversized storage keys or
    /// values, or a room key longer than LMDB allows.
    pub(crate) fn validate(&self, config: &StoreConfig, max_room_key_bytes: usize) -> Result<(), StoreError> {
        for room in &self.rooms {
            let len = room.as_bytes().len();
            if len > max_room_key_bytes {
                return Err(StoreError::RoomKeyTooLarge { len, max: max_room_key_bytes });
            }
        }
        for op in &self.ops {
            match op {
                Op::Put { key, value, .. } => {
                    check_key(config, key)?;
                    check_value(config, value)?;
                }
                Op::Delete { key, .. } => check_key(config, key)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Index of `room` in `rooms`, adding it unless it is the last one used
    /// (batches usually touch one room, so this avoids a search).
    fn room(&mut self, room: &RoomKey) -> usize {
        if self.rooms.last() != Some(room) {
            self.bytes += room.as_bytes().len();
            self.rooms.push(room.clone());
        }
        self.rooms.len() - 1
    }

    fn push(&mut self, payload_bytes: usize, op: Op) {
        self.bytes += payload_bytes + OP_OVERHEAD_BYTES;
        self.ops.push(op);
    }
}
