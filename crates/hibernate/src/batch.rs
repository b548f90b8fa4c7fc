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

/// The first byte of [`Batch::encode`]'s output.
const ENCODING_VERSION: u8 = 1;

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).expect("batch parts are under 4 GiB").to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Reads what `put_len`/`put_bytes` wrote; `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn len(&mut self) -> Option<usize> {
        let len: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(len) as usize)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.len()?;
        self.take(len)
    }
}

impl Op {
    /// The same operation on room index `at(room)`.
    fn renamed(self, mut at: impl FnMut(usize) -> usize) -> Op {
        match self {
            Op::Put { room, key, value } => Op::Put { room: at(room), key, value },
            Op::Delete { room, key } => Op::Delete { room: at(room), key },
            Op::DeleteAll { room } => Op::DeleteAll { room: at(room) },
            Op::PutSnapshot { room, envelope } => Op::PutSnapshot { room: at(room), envelope },
            Op::DeleteSnapshot { room } => Op::DeleteSnapshot { room: at(room) },
            Op::SetAlarm { room, at_ms } => Op::SetAlarm { room: at(room), at_ms },
            Op::DeleteAlarm { room } => Op::DeleteAlarm { room: at(room) },
            Op::Quarantine { room, at_ms, bytes } => Op::Quarantine { room: at(room), at_ms, bytes },
            #[cfg(test)]
            Op::Fail => Op::Fail,
        }
    }
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

    /// About how many bytes the batch carries.
    pub fn payload_bytes(&self) -> usize {
        self.bytes
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

    /// Appends `other`'s operations after this batch's, so that both apply
    /// as one (in order).
    pub fn append(&mut self, other: Batch) {
        let Batch { rooms, ops, bytes } = other;
        let at: Vec<usize> = rooms.iter().map(|room| self.room(room)).collect();
        for op in ops {
            self.ops.push(op.renamed(|room| at[room]));
        }
        self.bytes += bytes;
    }

    /// Whether any operation of the batch is on `room`.
    pub fn touches(&self, room: &RoomKey) -> bool {
        self.rooms.contains(room)
    }

    /// What the batch does to `room`'s alarm, if anything: its last
    /// `set_alarm` (`Some(Some(at_ms))`) or `delete_alarm` (`Some(None)`).
    pub fn alarm_change(&self, room: &RoomKey) -> Option<Option<u64>> {
        self.ops.iter().rev().find_map(|op| match *op {
            Op::SetAlarm { room: at, at_ms } if self.rooms[at] == *room => Some(Some(at_ms)),
            Op::DeleteAlarm { room: at } if self.rooms[at] == *room => Some(None),
            _ => None,
        })
    }

    /// The batch as bytes ([`Batch::decode`] reads them back), for a copy
    /// kept elsewhere (a cluster's journal). Quarantined snapshots are left
    /// out: they are this store's own record of what it could not read.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes + 16);
        out.push(ENCODING_VERSION);
        put_len(&mut out, self.rooms.len());
        for room in &self.rooms {
            put_bytes(&mut out, room.as_bytes());
        }
        let ops: Vec<&Op> = self.ops.iter().filter(|op| !matches!(op, Op::Quarantine { .. })).collect();
        put_len(&mut out, ops.len());
        for op in ops {
            match op {
                Op::Put { room, key, value } => {
                    out.push(0);
                    put_len(&mut out, *room);
                    put_bytes(&mut out, key);
                    put_bytes(&mut out, value);
                }
                Op::Delete { room, key } => {
                    out.push(1);
                    put_len(&mut out, *room);
                    put_bytes(&mut out, key);
                }
                Op::DeleteAll { room } => {
                    out.push(2);
                    put_len(&mut out, *room);
                }
                Op::PutSnapshot { room, envelope } => {
                    out.push(3);
                    put_len(&mut out, *room);
                    put_bytes(&mut out, envelope);
                }
                Op::DeleteSnapshot { room } => {
                    out.push(4);
                    put_len(&mut out, *room);
                }
                Op::SetAlarm { room, at_ms } => {
                    out.push(5);
                    put_len(&mut out, *room);
                    out.extend_from_slice(&at_ms.to_le_bytes());
                }
                Op::DeleteAlarm { room } => {
                    out.push(6);
                    put_len(&mut out, *room);
                }
                Op::Quarantine { .. } => unreachable!("left out above"),
                #[cfg(test)]
                Op::Fail => out.push(255),
            }
        }
        out
    }

    /// Reads a batch made by [`Batch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Batch, StoreError> {
        let corrupt = || StoreError::Corrupt("an encoded batch is cut short or malformed".into());
        let mut input = Reader { bytes };
        if input.byte().ok_or_else(corrupt)? != ENCODING_VERSION {
            return Err(StoreError::Corrupt("an encoded batch of an unknown version".into()));
        }
        let mut batch = Batch::new();
        let rooms = input.len().ok_or_else(corrupt)?;
        let mut names = Vec::new();
        for _ in 0..rooms {
            let room = RoomKey::from_bytes(input.bytes().ok_or_else(corrupt)?).ok_or_else(corrupt)?;
            names.push(room);
        }
        let ops = input.len().ok_or_else(corrupt)?;
        for _ in 0..ops {
            let tag = input.byte().ok_or_else(corrupt)?;
            let room = names.get(input.len().ok_or_else(corrupt)?).ok_or_else(corrupt)?;
            match tag {
                0 => {
                    let key = input.bytes().ok_or_else(corrupt)?;
                    let value = input.bytes().ok_or_else(corrupt)?;
                    batch.put(room, key, value);
                }
                1 => batch.delete(room, input.bytes().ok_or_else(corrupt)?),
                2 => batch.delete_all(room),
                3 => batch.put_snapshot(room, input.bytes().ok_or_else(corrupt)?.to_vec()),
                4 => batch.delete_snapshot(room),
                5 => {
                    let at: [u8; 8] = input.take(8).ok_or_else(corrupt)?.try_into().expect("eight bytes");
                    batch.set_alarm(room, u64::from_le_bytes(at));
                }
                6 => batch.delete_alarm(room),
                _ => return Err(corrupt()),
            }
        }
        if !input.bytes.is_empty() {
            return Err(corrupt());
        }
        Ok(batch)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        let (a, b) = (RoomKey::new("main", "a"), RoomKey::new("main", "b"));
        let mut batch = Batch::new();
        batch.delete_all(&a);
        batch.put(&a, b"k", b"v");
        batch.put(&b, b"", &[0, 255]);
        batch.delete(&a, b"gone");
        batch.put_snapshot(&b, vec![1, 2, 3]);
        batch.delete_snapshot(&a);
        batch.set_alarm(&a, u64::MAX - 1);
        batch.delete_alarm(&b);
        batch.quarantine(&a, 5, vec![9]);
        batch
    }

    #[test]
    fn a_batch_reads_back_as_written_without_its_quarantine() {
        let batch = sample();
        let back = Batch::decode(&batch.encode()).unwrap();
        let mut kept = described(&batch);
        kept.retain(|op| !op.contains("Quarantine"));
        assert_eq!(described(&back), kept);
    }

    /// Each operation, with its room's key in place of its index.
    fn described(batch: &Batch) -> Vec<String> {
        batch
            .ops
            .iter()
            .map(|op| {
                let room = |at: usize| format!("{:?}", batch.rooms[at]);
                let op = op.clone();
                let mut room_of = None;
                let renamed = op.renamed(|at| {
                    room_of = Some(room(at));
                    0
                });
                format!("{room_of:?} {renamed:?}")
            })
            .collect()
    }

    #[test]
    fn a_batchs_alarm_change_is_its_last_for_that_room() {
        let (a, b, c) = (RoomKey::new("main", "a"), RoomKey::new("main", "b"), RoomKey::new("main", "c"));
        let batch = sample();
        assert_eq!(batch.alarm_change(&a), Some(Some(u64::MAX - 1)));
        assert_eq!(batch.alarm_change(&b), Some(None));
        assert_eq!(batch.alarm_change(&c), None);
        let mut later = Batch::new();
        later.delete_alarm(&a);
        later.set_alarm(&b, 7);
        let mut both = sample();
        both.append(later);
        assert_eq!(both.alarm_change(&a), Some(None));
        assert_eq!(both.alarm_change(&b), Some(Some(7)));
    }

    #[test]
    fn a_cut_or_padded_encoding_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Batch::decode(&padded).is_err());
    }

    #[test]
    fn appended_batches_apply_in_order_naming_their_own_rooms() {
        let (a, b) = (RoomKey::new("p", "a"), RoomKey::new("p", "b"));
        let mut first = Batch::new();
        first.put(&a, b"1", b"x");
        let mut second = Batch::new();
        second.put(&b, b"2", b"y");
        second.delete(&a, b"1");
        first.append(second);
        let ops: Vec<String> = first.ops.iter().map(|op| format!("{op:?}")).collect();
        assert_eq!(first.rooms, vec![a.clone(), b.clone(), a.clone()]);
        assert!(ops[1].contains("room: 1") && ops[2].contains("room: 2"), "{ops:?}");
        assert!(first.touches(&b) && !Batch::new().touches(&a));
        assert_eq!(first.alarm_change(&a), None);
    }
}
