//! Rooms' state in a cluster: each room's journal in JetStream
//! (`dormouse_cluster::journal`) is the record; a node's store is its copy
//! of the rooms it runs.
//!
//! - **Writing.** A batch the store committed comes here from the room's
//!   owner core (`FromCore::Journal`) and is appended to the room's
//!   journal, in order, one append in flight per room (each names the last
//!   entry, so an append from a node that lost the room is fenced off);
//!   then the core hears `Committed`, and a strict room's effects go out.
//!   Batches queued meanwhile go in one entry; one too large for a NATS
//!   message goes in pieces, whole only at its last.
//! - **Taking a room.** With the lease, before the room's first event
//!   here: its journal is read, a `Took` entry appended after the last one
//!   read (the fence: a previous owner still appending is refused from
//!   then on; if it appended since the read, the read is done again), and
//!   the room's store records replaced by what the journal says. A room
//!   whose journal is empty keeps what this store has of it.
//! - **A failed append** (fenced, or NATS not answering) costs the room its
//!   lease here: its batches are answered with the error (the room resets)
//!   and the room stops, as when a lease lapses.
//! - **Compaction.** After `CHECKPOINT_ENTRIES` entries, or more bytes than
//!   twice the last checkpoint (and `CHECKPOINT_MIN_BYTES`), the room's
//!   whole state as this store has it goes in as one more batch (clear,
//!   then every record), and once it is in, the entries before it are
//!   purged: a journal holds at most about that. The store's copy already
//!   holds every batch sent to the journal before (each is committed here
//!   first), and any it holds beyond those follows the checkpoint in the
//!   journal again: replaying a batch over its own effects changes nothing.
//!   A room taken with an empty journal but records in this store (a node
//!   that ran alone before) checkpoints at once, so they join its journal.

use super::{Placed, State};
use crate::core_msg::CoreMsg;
use crate::room_key::RoomKey;
use bytes::Bytes;
use dormouse_cluster::{Appended, Entries};
use dormouse_hibernate::Batch;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// How many times a room's journal is read again when another node
/// appended between the read and this node's `Took`.
const LOAD_ATTEMPTS: u32 = 3;

/// A room's journal is checkpointed after this many entries...
const CHECKPOINT_ENTRIES: u64 = 1024;
/// ...or once its entries since hold more than twice the last checkpoint's
/// bytes and at least these.
const CHECKPOINT_MIN_BYTES: u64 = 16 << 20;

/// One entry of a room's journal.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    /// The node took the room over; what it read before is the state.
    Took { node: String },
    /// Committed batches (`Batch::encode`), in order.
    Batches(Vec<Vec<u8>>),
    /// A piece of one batch too large for a message; the batch is the
    /// pieces up to the one marked `last`.
    Piece { bytes: Vec<u8>, last: bool },
}

fn encode(entry: &Entry) -> Bytes {
    postcard::to_stdvec(entry).expect("an entry always encodes").into()
}

/// A batch waiting for the journal, and whom to tell.
pub(super) struct Waiter {
    core: u16,
    room: Arc<RoomKey>,
    generation: u64,
    seq: u64,
}

/// A batch for the journal: a room's, with whom to tell, or a checkpoint.
struct Queued {
    waiter: Option<Waiter>,
    bytes: Bytes,
}

/// What an entry in flight holds: whom to tell, and what for.
pub(super) struct Appending {
    waiters: Vec<Waiter>,
    marks: Marks,
}

/// What an entry did to a checkpoint in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Marks {
    /// It holds the checkpoint's first byte.
    starts: bool,
    /// It holds its last.
    ends: bool,
}

/// A room's journal as this node writes it.
pub(super) struct Journal {
    /// Which taking of the room this is (answers for an earlier one only
    /// reach their waiters).
    epoch: u64,
    /// The stream sequence of the room's last entry.
    last: u64,
    /// An append is in flight.
    busy: bool,
    /// The lease is still held: once not, the entry goes when idle.
    held: bool,
    queue: VecDeque<Queued>,
    /// Bytes of the front batch already sent as pieces.
    sent: usize,
    /// Entries and bytes appended since the last checkpoint.
    entries_since: u64,
    bytes_since: u64,
    /// The last checkpoint's bytes.
    checkpoint_bytes: u64,
    /// A checkpoint is queued or being appended; where it started.
    checkpointing: bool,
    checkpoint_at: Option<u64>,
}

impl Journal {
    fn new(epoch: u64, last: u64) -> Journal {
        Journal {
            epoch,
            last,
            busy: false,
            held: true,
            queue: VecDeque::new(),
            sent: 0,
            entries_since: 0,
            bytes_since: 0,
            checkpoint_bytes: 0,
            checkpointing: false,
            checkpoint_at: None,
        }
    }

    fn due_checkpoint(&self) -> bool {
        !self.checkpointing
            && (self.entries_since >= CHECKPOINT_ENTRIES
                || self.bytes_since >= (2 * self.checkpoint_bytes).max(CHECKPOINT_MIN_BYTES))
    }
}

/// A room being taken: its journal read, then `Took`, then the store.
pub(super) struct Loading {
    attempts: u32,
    /// What the store gets once `Took` is in.
    restore: Option<Batch>,
    /// The journal's entries and bytes as read.
    read: (u64, u64),
}

/// The gateway's events about journals.
pub(super) enum JournalEvent {
    Loaded { room: Arc<RoomKey>, result: Result<Entries, String> },
    Took { room: Arc<RoomKey>, outcome: Appended },
    Applied { room: Arc<RoomKey>, error: Option<String> },
    Appended { room: Arc<RoomKey>, epoch: u64, appended: Appending, outcome: Appended },
    Compacted { room: Arc<RoomKey>, result: Result<u64, String> },
}

impl State {
    pub(super) fn on_journal_event(&mut self, event: JournalEvent) {
        match event {
            JournalEvent::Loaded { room, result } => self.on_loaded(room, result),
            JournalEvent::Took { room, outcome } => self.on_took(room, outcome),
            JournalEvent::Applied { room, error } => self.on_applied(room, error),
            JournalEvent::Appended { room, epoch, appended, outcome } => {
                self.on_appended(&room, epoch, appended, outcome);
            }
            JournalEvent::Compacted { room, result } => match result {
                Ok(purged) => tracing::debug!(party = %room.party, room = %room.id, purged, "journal compacted"),
                Err(error) => {
                    tracing::warn!(party = %room.party, room = %room.id, %error, "a journal compaction failed")
                }
            },
        }
    }

    // ---- taking a room ----

    /// The lease is ours: read the room's journal before it runs here.
    pub(super) fn load(&mut self, room: Arc<RoomKey>) {
        let attempts = self.loading.get(&room).map_or(0, |l| l.attempts) + 1;
        self.loading.insert(room.clone(), Loading { attempts, restore: None, read: (0, 0) });
        let events = self.events.clone();
        let key = room.clone();
        let sent = self.cluster.load(&room.party, &room.id, move |result| {
            let _ = events.send(super::Event::Journal(JournalEvent::Loaded { room: key, result }));
        });
        if sent.is_err() {
            self.unplace(&room, "the cluster's queue is full".into());
        }
    }

    fn on_loaded(&mut self, room: Arc<RoomKey>, result: Result<Entries, String>) {
        if !self.still_taking(&room) {
            return;
        }
        let entries = match result {
            Ok(entries) => entries,
            Err(error) => return self.unplace(&room, format!("its journal could not be read: {error}")),
        };
        let last = entries.last().map_or(0, |(seq, _)| *seq);
        self.cores.stats.entries_read.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let restore = match restore(&room, &entries) {
            Ok(restore) => restore,
            Err(error) => {
                tracing::error!(party = %room.party, room = %room.id, %error, "the room's journal does not read");
                return self.unplace(&room, format!("its journal does not read: {error}"));
            }
        };
        let bytes = entries.iter().map(|(_, payload)| payload.len() as u64).sum();
        let loading = self.loading.get_mut(&room).expect("taking");
        (loading.restore, loading.read) = (restore, (entries.len() as u64, bytes));
        let took = encode(&Entry::Took { node: self.me.to_string() });
        let events = self.events.clone();
        let key = room.clone();
        let sent = self.cluster.append(&room.party, &room.id, last, took, move |outcome| {
            let _ = events.send(super::Event::Journal(JournalEvent::Took { room: key, outcome }));
        });
        if sent.is_err() {
            self.unplace(&room, "the cluster's queue is full".into());
        }
    }

    fn on_took(&mut self, room: Arc<RoomKey>, outcome: Appended) {
        if !self.still_taking(&room) {
            return;
        }
        match outcome {
            Appended::At(seq) => {
                self.next_epoch += 1;
                let mut journal = Journal::new(self.next_epoch, seq);
                let loading = self.loading.get_mut(&room).expect("taking");
                let restore = loading.restore.take();
                // What the journal held counts towards its next checkpoint
                // (a room taken and let go again and again still gets one).
                (journal.entries_since, journal.bytes_since) = (loading.read.0 + 1, loading.read.1);
                if let Some(restore) = &restore {
                    journal.checkpoint_bytes = restore.payload_bytes() as u64;
                }
                if let Some(old) = self.journals.insert(room.clone(), journal) {
                    // Batches of an earlier run here, not appended: too late.
                    self.fail_waiting(old.queue.into_iter().filter_map(|q| q.waiter), "the room moved");
                }
                match restore {
                    Some(batch) => self.apply(room, batch),
                    None => {
                        // An empty journal: what this store has of the room
                        // (if anything) goes in as its first checkpoint.
                        if self.has_records(&room) {
                            self.checkpoint(&room);
                        }
                        self.on_applied(room, None);
                    }
                }
            }
            Appended::Fenced if self.loading.get(&room).is_some_and(|l| l.attempts < LOAD_ATTEMPTS) => self.load(room),
            Appended::Fenced => self.unplace(&room, "its journal kept changing while it was read".into()),
            Appended::Failed(error) => self.unplace(&room, format!("its journal could not be written: {error}")),
        }
    }

    /// Replaces the store's records of `room` with what its journal says.
    fn apply(&mut self, room: Arc<RoomKey>, batch: Batch) {
        let events = self.events.clone();
        let key = room.clone();
        let done = Box::new(move |result: Result<(), dormouse_hibernate::StoreError>| {
            let error = result.err().map(|e| e.to_string());
            let _ = events.send(super::Event::Journal(JournalEvent::Applied { room: key, error }));
        });
        // Never waits on the writer (whose reports may wait on this
        // thread's inbox): a full queue, and the room waits a round.
        if let Err((batch, done)) = self.cores.store.try_submit(batch, done) {
            self.to_store.push_back((batch, done));
        }
    }

    /// Hands the store what waited for room in its queue.
    pub(super) fn submit_to_store(&mut self) {
        while let Some((batch, done)) = self.to_store.pop_front() {
            if let Err((batch, done)) = self.cores.store.try_submit(batch, done) {
                self.to_store.push_front((batch, done));
                break;
            }
        }
    }

    fn on_applied(&mut self, room: Arc<RoomKey>, error: Option<String>) {
        if !self.still_taking(&room) {
            return;
        }
        if let Some(error) = error {
            return self.unplace(&room, format!("its state could not be stored here: {error}"));
        }
        self.loading.remove(&room);
        let key = dormouse_hibernate::RoomKey::new(&room.party, &room.id);
        let alarm_ms = self.cores.store.alarm(&key).unwrap_or_else(|error| {
            tracing::error!(party = %room.party, room = %room.id, %error, "cannot read the room's alarm");
            None
        });
        self.check_alarm(&room, alarm_ms);
        self.deliver_to_owner(&room, CoreMsg::Loaded { room: room.clone(), alarm_ms });
        self.placed(&room, Placed::Here);
    }

    /// Whether `room` is still being taken here (its lease not lost since).
    fn still_taking(&mut self, room: &Arc<RoomKey>) -> bool {
        if !self.loading.contains_key(room) {
            return false;
        }
        if !self.held.contains_key(room) {
            self.loading.remove(room);
            self.placed(room, Placed::Nowhere("its lease was lost while it was loaded".into()));
            return false;
        }
        true
    }

    /// The room cannot be taken now: its lease goes back, and what waited
    /// for it is answered "try again".
    fn unplace(&mut self, room: &Arc<RoomKey>, reason: String) {
        self.loading.remove(room);
        if let Some(lease) = self.held.remove(room) {
            let _ = self.release(room, lease.revision, None);
            self.tell_lease(room, None);
        }
        self.placed(room, Placed::Nowhere(reason));
    }

    // ---- writing ----

    /// A committed batch of `room` for its journal.
    pub(super) fn journal(
        &mut self,
        room: Arc<RoomKey>,
        core: u16,
        generation: u64,
        seq: u64,
        batch: Bytes,
        alarm: Option<Option<u64>>,
    ) {
        let waiter = Waiter { core, room: room.clone(), generation, seq };
        match self.journals.get_mut(&room) {
            Some(journal) => {
                journal.queue.push_back(Queued { waiter: Some(waiter), bytes: batch });
                if let Some(at_ms) = alarm {
                    // Into the index first: it reaches NATS before the
                    // batch's append, so an acknowledged alarm is indexed.
                    self.write_alarm(&room, at_ms);
                }
                self.pump(&room);
            }
            None => self.fail_waiting([waiter], "the room's lease is not held here"),
        }
    }

    /// Sends the room's next append, if none is in flight.
    fn pump(&mut self, room: &Arc<RoomKey>) {
        let budget = self.budget;
        let Some(journal) = self.journals.get_mut(room) else { return };
        if journal.busy {
            return;
        }
        if journal.queue.is_empty() {
            if !journal.held {
                self.journals.remove(room);
            }
            return;
        }
        if !self.cluster.has_room() {
            // The NATS thread is behind: the room's batches wait here (its
            // own bound, `max_pending_events_per_room`, holds its input)
            // and go at the next round.
            self.stalled.insert(room.clone(), ());
            return;
        }
        let (payload, appended) = next_entry(journal, budget);
        journal.busy = true;
        journal.bytes_since += payload.len() as u64;
        let (epoch, last) = (journal.epoch, journal.last);
        let events = self.events.clone();
        let key = room.clone();
        // What the entry holds is shared with the callback, so that an
        // append refused here (its callback dropped, never run) still
        // answers its waiters.
        let slot = Arc::new(std::sync::Mutex::new(Some(appended)));
        let theirs = slot.clone();
        let sent = self.cluster.append(&room.party, &room.id, last, payload, move |outcome| {
            let appended = theirs.lock().unwrap_or_else(|e| e.into_inner()).take().expect("taken once");
            let event = JournalEvent::Appended { room: key, epoch, appended, outcome };
            let _ = events.send(super::Event::Journal(event));
        });
        if sent.is_err() {
            // The NATS thread is that far behind: the room cannot keep up.
            let appended = slot.lock().unwrap_or_else(|e| e.into_inner()).take().expect("never sent");
            let outcome = Appended::Failed("the cluster's queue is full".into());
            self.on_appended(room, epoch, appended, outcome);
        }
    }

    fn on_appended(&mut self, room: &Arc<RoomKey>, epoch: u64, appended: Appending, outcome: Appended) {
        let current = self.journals.get(room).is_some_and(|j| j.epoch == epoch);
        let Appending { waiters, marks } = appended;
        match outcome {
            Appended::At(seq) => {
                // In the journal: done, whether or not the room is still ours.
                for waiter in waiters {
                    self.answer_waiter(waiter, None);
                }
                if current {
                    let journal = self.journals.get_mut(room).expect("current");
                    journal.last = seq;
                    journal.busy = false;
                    journal.entries_since += 1;
                    if marks.starts {
                        journal.checkpoint_at = Some(seq);
                    }
                    if marks.ends {
                        let at = journal.checkpoint_at.take().unwrap_or(seq);
                        self.cores.stats.checkpoints.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        (journal.checkpointing, journal.entries_since, journal.bytes_since) = (false, 0, 0);
                        self.compact(room, at);
                    } else if journal.due_checkpoint() {
                        self.checkpoint(room);
                    }
                    self.pump(room);
                }
            }
            Appended::Fenced | Appended::Failed(_) => {
                let reason = match &outcome {
                    Appended::Failed(error) => format!("the room's journal could not be written: {error}"),
                    _ => "another node took the room over".to_owned(),
                };
                tracing::warn!(party = %room.party, room = %room.id, %reason, "the room stops here");
                self.fail_waiting(waiters, &reason);
                if current {
                    let journal = self.journals.remove(room).expect("current");
                    self.fail_waiting(journal.queue.into_iter().filter_map(|q| q.waiter), &reason);
                    if self.held.contains_key(room) {
                        self.lost(room);
                    }
                }
            }
        }
    }

    // ---- compaction ----

    /// Whether this store has any record of `room`.
    fn has_records(&self, room: &RoomKey) -> bool {
        let key = dormouse_hibernate::RoomKey::new(&room.party, &room.id);
        let store = &self.cores.store;
        let one = dormouse_hibernate::ListOptions { limit: Some(1), ..Default::default() };
        let overlay = dormouse_hibernate::Overlay::new();
        store.list(&key, &one, &overlay).is_ok_and(|l| !l.is_empty())
            || store.snapshot(&key).is_ok_and(|s| s.is_some())
            || store.alarm(&key).is_ok_and(|a| a.is_some())
    }

    /// Queues the room's whole state, as this store has it, for its journal;
    /// the entries before it go once it is in.
    fn checkpoint(&mut self, room: &Arc<RoomKey>) {
        let key = dormouse_hibernate::RoomKey::new(&room.party, &room.id);
        let store = &self.cores.store;
        let everything = dormouse_hibernate::ListOptions::default();
        let read = (|| {
            let records = store.list(&key, &everything, &dormouse_hibernate::Overlay::new())?;
            Ok::<_, dormouse_hibernate::StoreError>((records, store.snapshot(&key)?, store.alarm(&key)?))
        })();
        let (records, snapshot, alarm) = match read {
            Ok(read) => read,
            Err(error) => {
                return tracing::error!(party = %room.party, room = %room.id, %error, "cannot read the room to checkpoint it");
            }
        };
        let mut batch = Batch::new();
        batch.delete_all(&key);
        batch.delete_snapshot(&key);
        batch.delete_alarm(&key);
        for (k, v) in &records {
            batch.put(&key, k, v);
        }
        if let Some(snapshot) = snapshot {
            batch.put_snapshot(&key, snapshot);
        }
        if let Some(at_ms) = alarm {
            batch.set_alarm(&key, at_ms);
        }
        let bytes = Bytes::from(batch.encode());
        let Some(journal) = self.journals.get_mut(room) else { return };
        journal.checkpoint_bytes = bytes.len() as u64;
        journal.checkpointing = true;
        journal.queue.push_back(Queued { waiter: None, bytes });
        self.pump(room);
    }

    fn compact(&mut self, room: &Arc<RoomKey>, before: u64) {
        let events = self.events.clone();
        let key = room.clone();
        let sent = self.cluster.compact(&room.party, &room.id, before, move |result| {
            let _ = events.send(super::Event::Journal(JournalEvent::Compacted { room: key, result }));
        });
        if sent.is_err() {
            // The next checkpoint compacts what this one left.
            tracing::warn!(party = %room.party, room = %room.id, "the cluster's queue is full; the journal is compacted later");
        }
    }

    /// Pumps the journals that waited for the NATS thread, while it takes.
    pub(super) fn pump_stalled(&mut self) {
        while self.cluster.has_room() {
            let Some(room) = self.stalled.keys().next().cloned() else { return };
            self.stalled.remove(&room);
            self.pump(&room);
        }
    }

    /// The lease on `room` went: its journal entry goes once idle.
    pub(super) fn journal_unheld(&mut self, room: &Arc<RoomKey>) {
        if let Some(journal) = self.journals.get_mut(room) {
            journal.held = false;
        }
        self.pump(room);
    }

    fn fail_waiting(&mut self, waiters: impl IntoIterator<Item = Waiter>, reason: &str) {
        for waiter in waiters {
            self.answer_waiter(waiter, Some(reason));
        }
    }

    fn answer_waiter(&mut self, waiter: Waiter, error: Option<&str>) {
        let Waiter { core, room, generation, seq } = waiter;
        let error = error.map(Into::into);
        self.deliver(usize::from(core), CoreMsg::Committed { room, generation, seq, error, journal: None });
    }
}

/// The next entry to append from `journal`'s queue: whole batches that
/// fit in `budget`, or the next piece of one that does not (its waiter
/// answered with the last).
fn next_entry(journal: &mut Journal, budget: usize) -> (Bytes, Appending) {
    let front = journal.queue.front().expect("something queued");
    let checkpoint = front.waiter.is_none();
    if front.bytes.len() > budget {
        let bytes = &front.bytes;
        let end = (journal.sent + budget).min(bytes.len());
        let piece = bytes[journal.sent..end].to_vec();
        let last = end == bytes.len();
        let marks = Marks { starts: checkpoint && journal.sent == 0, ends: checkpoint && last };
        let payload = encode(&Entry::Piece { bytes: piece, last });
        if !last {
            journal.sent = end;
            return (payload, Appending { waiters: Vec::new(), marks });
        }
        journal.sent = 0;
        let waiter = journal.queue.pop_front().expect("something queued").waiter;
        return (payload, Appending { waiters: waiter.into_iter().collect(), marks });
    }
    let (mut batches, mut waiters, mut size, mut marks) = (Vec::new(), Vec::new(), 0, Marks::default());
    while let Some(queued) = journal.queue.front() {
        if size + queued.bytes.len() > budget {
            break;
        }
        size += queued.bytes.len() + 8;
        let queued = journal.queue.pop_front().expect("present");
        if queued.waiter.is_none() {
            marks = Marks { starts: true, ends: true };
        }
        batches.push(queued.bytes.to_vec());
        waiters.extend(queued.waiter);
    }
    (encode(&Entry::Batches(batches)), Appending { waiters, marks })
}

/// The batch that makes the store's records of `room` what its journal
/// says (none for an empty journal: the store keeps what it has).
fn restore(room: &RoomKey, entries: &Entries) -> Result<Option<Batch>, String> {
    if entries.is_empty() {
        return Ok(None);
    }
    let key = dormouse_hibernate::RoomKey::new(&room.party, &room.id);
    let mut batch = Batch::new();
    batch.delete_all(&key);
    batch.delete_snapshot(&key);
    batch.delete_alarm(&key);
    let mut pieces: Vec<u8> = Vec::new();
    let decode = |bytes: &[u8]| Batch::decode(bytes).map_err(|e| e.to_string());
    for (seq, payload) in entries {
        let entry: Entry = postcard::from_bytes(payload).map_err(|e| format!("entry {seq}: {e}"))?;
        match entry {
            Entry::Took { .. } => pieces.clear(),
            Entry::Batches(batches) => {
                // A batch cut short by its node's end was never answered.
                pieces.clear();
                for bytes in batches {
                    batch.append(decode(&bytes)?);
                }
            }
            Entry::Piece { bytes, last } => {
                pieces.extend_from_slice(&bytes);
                if last {
                    batch.append(decode(&pieces)?);
                    pieces.clear();
                }
            }
        }
    }
    Ok(Some(batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[Entry]) -> Entries {
        list.iter().enumerate().map(|(i, e)| (i as u64 + 1, encode(e))).collect()
    }

    fn put(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut batch = Batch::new();
        batch.put(&dormouse_hibernate::RoomKey::new("p", "r"), key, value);
        batch.encode()
    }

    #[test]
    fn a_journal_restores_its_batches_in_order_and_drops_a_batch_cut_short() {
        let room = RoomKey::new("p", "r");
        assert!(restore(&room, &Vec::new()).unwrap().is_none());
        let whole = put(b"big", &[7; 100]);
        let (head, tail) = whole.split_at(40);
        let cut = put(b"cut", b"never answered");
        let list = [
            Entry::Took { node: "a".into() },
            Entry::Batches(vec![put(b"k", b"1"), put(b"k", b"2")]),
            Entry::Piece { bytes: head.to_vec(), last: false },
            Entry::Piece { bytes: tail.to_vec(), last: true },
            Entry::Piece { bytes: cut[..10].to_vec(), last: false },
            Entry::Took { node: "b".into() },
        ];
        let batch = restore(&room, &entries(&list)).unwrap().unwrap();
        // Three records cleared, then the three whole batches.
        assert_eq!(batch.len(), 3 + 3);
        let mut bad = entries(&list);
        bad.push((9, Bytes::from_static(b"\xff\xff")));
        assert!(restore(&room, &bad).unwrap_err().starts_with("entry 9"));
    }

    #[test]
    fn queued_batches_share_an_entry_and_a_large_one_goes_in_pieces() {
        let room = Arc::new(RoomKey::new("p", "r"));
        let waiter = |seq| Waiter { core: 0, room: room.clone(), generation: 1, seq };
        let mut journal = Journal::new(1, 0);
        let queued = |waiter, bytes: Vec<u8>| Queued { waiter, bytes: Bytes::from(bytes) };
        journal.queue.push_back(queued(Some(waiter(1)), vec![1; 30]));
        journal.queue.push_back(queued(Some(waiter(2)), vec![2; 30]));
        journal.queue.push_back(queued(Some(waiter(3)), vec![3; 250]));
        let (_, first) = next_entry(&mut journal, 100);
        assert_eq!(first.waiters.iter().map(|w| w.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(first.marks, Marks::default());
        let pieces: Vec<usize> = (0..3).map(|_| next_entry(&mut journal, 100).1.waiters.len()).collect();
        // 250 bytes in pieces of 100: answered with the third.
        assert_eq!(pieces, [0, 0, 1]);
        assert!(journal.queue.is_empty());
        // A checkpoint in pieces: its first piece starts it, its last ends it.
        journal.queue.push_back(queued(None, vec![4; 150]));
        let marks: Vec<Marks> = (0..2).map(|_| next_entry(&mut journal, 100).1.marks).collect();
        assert_eq!(marks, [Marks { starts: true, ends: false }, Marks { starts: false, ends: true }]);
        // One that fits, among batches: the entry holds all of it.
        journal.queue.push_back(queued(Some(waiter(5)), vec![5; 10]));
        journal.queue.push_back(queued(None, vec![6; 10]));
        let (_, entry) = next_entry(&mut journal, 100);
        assert_eq!((entry.waiters.len(), entry.marks), (1, Marks { starts: true, ends: true }));
    }
}
