//! The owner core's side of rooms that outlive memory: creating a room from
//! its snapshot, waking a hibernated one, evicting idle ones (after
//! `idle_evict_ms`, or the least recently used past the core's share of
//! `max_resident_rooms`), handing each event's storage writes to the store's
//! writer, holding an event's effects until its writes commit (strict
//! durability), and running alarms.

use super::State;
use crate::cluster::FromCore;
use crate::config::Durability;
use crate::core_msg::{CoreMsg, ForJournal};
use crate::http::Response;
use crate::party::Effect;
use crate::room::{Held, Origin, RoomFailed, RoomHost};
use crate::room_key::RoomKey;
use bytes::Bytes;
use dormouse_hibernate::Batch;
use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A batch and what to do once it commits, waiting for room in the writer's queue.
pub(super) type Submission = (Batch, Box<dyn FnOnce(Result<(), dormouse_hibernate::StoreError>) + Send>);

/// First retry of a failed alarm; doubles per failure.
const ALARM_RETRY_FIRST_MS: u64 = 1_000;
/// Longest wait between alarm retries.
const ALARM_RETRY_MAX_MS: u64 = 60_000;
/// Failed runs after which an alarm is given up (logged).
const ALARM_MAX_RETRIES: u32 = 6;

/// The milliseconds since the Unix epoch (alarms are wall-clock times, so
/// they mean the same after a restart).
pub(super) fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl State {
    /// The room's host, woken if it hibernates, or created (from its
    /// snapshot, if it has one) when it is not on this core yet.
    pub(super) fn host(&mut self, room: &Arc<RoomKey>) -> Result<&mut RoomHost, RoomFailed> {
        if !self.hosts.contains_key(room) {
            let host = self.create_host(room)?;
            self.hosts.insert(room.clone(), Box::new(host));
        } else if !self.hosts[room].is_awake() {
            let origin = self.hosts.get_mut(room).expect("checked above").wake()?;
            if let Some(origin) = origin {
                self.after_wake(room, origin);
            }
        }
        Ok(self.hosts.get_mut(room).expect("inserted above"))
    }

    /// A hibernated room with members gets an event meant for its members
    /// only if it is still here; wakes it.
    pub(super) fn existing_host(&mut self, room: &Arc<RoomKey>) -> Option<Result<&mut RoomHost, RoomFailed>> {
        if !self.hosts.contains_key(room) {
            return None;
        }
        Some(self.host(room))
    }

    fn create_host(&mut self, room: &Arc<RoomKey>) -> Result<RoomHost, RoomFailed> {
        let shared = self.shared.clone();
        let kind = shared.kinds.get(&*room.party).expect("rooms are only addressed for registered parties").clone();
        let config = shared.party_config(&room.party);
        let hibernates = config.hibernate;
        let alarm = self.alarms.get(room).copied();
        let mut new_room = crate::party::Room::new(
            room.id.to_string(),
            room.party.to_string(),
            shared.cores,
            config.max_state_bytes.unwrap_or(shared.limits.max_state_bytes),
            config,
            shared.store.clone(),
            alarm,
        );
        new_room.max_fetches = u32::try_from(shared.limits.max_fetches_per_room).unwrap_or(u32::MAX);
        let snapshot = if hibernates {
            shared.store.snapshot(&new_room.store.key).unwrap_or_else(|error| {
                tracing::error!(party = %room.party, room = %room.id, %error, "cannot read a snapshot; starting fresh");
                None
            })
        } else {
            None
        };
        let (mut host, origin) = RoomHost::new(new_room, kind, snapshot, self.now_ms)?;
        self.host_generations += 1;
        host.generation = self.host_generations;
        self.counters.rooms_created += 1;
        self.stats().rooms_resident.fetch_add(1, Ordering::Relaxed);
        self.note_origin(room, &mut host, origin);
        Ok(host)
    }

    fn after_wake(&mut self, room: &Arc<RoomKey>, origin: Origin) {
        self.stats().rooms_resident.fetch_add(1, Ordering::Relaxed);
        let mut host = self.hosts.remove(room).expect("the woken room is here");
        self.note_origin(room, &mut host, origin);
        self.hosts.insert(room.clone(), host);
    }

    /// Counts a wake-up; a corrupt snapshot is logged and kept aside.
    fn note_origin(&mut self, room: &Arc<RoomKey>, host: &mut RoomHost, origin: Origin) {
        match origin {
            Origin::Fresh => {}
            Origin::Restored => self.counters.rooms_woken += 1,
            Origin::Corrupt { error, bytes } => {
                self.counters.snapshots_corrupt += 1;
                tracing::error!(
                    party = %room.party, room = %room.id, %error,
                    "the room's snapshot does not restore; the room starts fresh and the snapshot is kept aside"
                );
                if !bytes.is_empty() {
                    let store = &host.room.store;
                    let mut batch = store.batch.borrow_mut();
                    batch.quarantine(&store.key, super::rooms::wall_ms(), bytes);
                    batch.delete_snapshot(&store.key);
                }
            }
        }
    }

    /// After every event of `room`: its storage writes go to the writer, and
    /// its effects and `reply` go out, or wait for the commit under strict
    /// durability.
    pub(super) fn after_event(&mut self, room: &Arc<RoomKey>, reply: Option<CoreMsg>) {
        let now_ms = self.now_ms;
        let Some(host) = self.hosts.get_mut(room) else {
            if let Some(reply) = reply {
                self.send_reply(reply);
            }
            return;
        };
        host.last_event_ms = now_ms;
        host.events_this_second = host.events_this_second.saturating_add(1);
        let strict = host.room.config.durability == Durability::Strict;
        let batch = host.room.store.take_batch();
        let alarm = host.room.alarm_ms.get();
        let alarm_changed = std::mem::replace(&mut host.scheduled_alarm, alarm) != alarm;
        let timer = host.room.timer_ms.get();
        let timer_changed = std::mem::replace(&mut host.scheduled_timer, timer) != timer;
        let mut effects = std::mem::take(&mut self.effects);
        host.drain_effects(&mut effects);
        if let Some((seq, batch)) = batch {
            host.uncommitted = Some(seq);
            self.submit_for(room, seq, batch);
        }
        let host = self.hosts.get_mut(room).expect("the room is still here");
        if let (true, Some(seq)) = (strict, host.uncommitted) {
            host.held.push_back(Held { seq, effects: std::mem::take(&mut effects), reply });
        } else {
            if let Some(reply) = reply {
                self.send_reply(reply);
            }
            self.dispatch(room, &mut effects);
        }
        self.effects = effects;
        if alarm_changed {
            self.sync_alarm(room, alarm);
        }
        if let (true, Some(at_ms)) = (timer_changed, timer) {
            self.schedule_timer(room, at_ms);
        }
        self.queue_resident(room);
    }

    /// Whether `room` is over its bound of events waiting for storage; its
    /// new messages and requests are then refused (close 1013, 503).
    pub(super) fn storage_behind(&self, room: &Arc<RoomKey>) -> bool {
        self.hosts
            .get(room)
            .is_some_and(|host| host.pending_storage() >= self.shared.limits.max_pending_events_per_room)
    }

    pub(super) fn send_reply(&mut self, reply: CoreMsg) {
        let core = match &reply {
            CoreMsg::Accepted { conn, .. } | CoreMsg::Refused { conn, .. } | CoreMsg::Respond { conn, .. } => {
                usize::from(conn.core)
            }
            CoreMsg::RoomResponse { room, .. } => {
                let room = room.clone();
                return self.send_to_owner(room, |_| reply);
            }
            _ => unreachable!("only replies to a socket's core or a room's owner are held"),
        };
        self.send_to(core, reply);
    }

    /// Hands a room's batch `seq` to the writer; the owner core hears when
    /// it has committed.
    fn submit_for(&mut self, room: &Arc<RoomKey>, seq: u64, batch: Batch) {
        // Not the whole `Shared`: the store's writer may run this after the
        // server is gone, and must not end up owning (and dropping) the store.
        let inbox = self.shared.commit_senders[usize::from(self.index)].clone();
        let wake = self.wake_self.clone();
        let room = room.clone();
        let generation = self.hosts.get(&room).map_or(0, |host| host.generation);
        // In a cluster the batch goes on to the room's journal once here.
        let journal = self.routes.is_some().then(|| {
            let alarm = batch.alarm_change(&dormouse_hibernate::RoomKey::new(&room.party, &room.id));
            Box::new(ForJournal { bytes: Bytes::from(batch.encode()), alarm })
        });
        let done = Box::new(move |result: Result<(), dormouse_hibernate::StoreError>| {
            let error = result.err().map(|e| e.to_string().into_boxed_str());
            let msg = CoreMsg::Committed { room, generation, seq, error, journal };
            // Unbounded: never blocks, whichever thread calls this (the
            // writer, or this core when the store refuses the batch at once).
            // The core is gone only after a stop, when nobody waits for this.
            if inbox.send(msg).is_ok() {
                // A failed write means the counter is saturated: a wake-up is pending anyway.
                let _ = std::io::Write::write(&mut &*wake, &1u64.to_ne_bytes());
            }
        });
        self.submissions.push_back((batch, done));
        self.submit_pending();
    }

    /// Passes waiting batches to the writer, in order, until its queue is full.
    pub(super) fn submit_pending(&mut self) {
        while let Some((batch, done)) = self.submissions.pop_front() {
            if let Err((batch, done)) = self.shared.store.try_submit(batch, done) {
                self.submissions.push_front((batch, done));
                break;
            }
        }
    }

    /// In a cluster: batch `seq` of `room` is in the store; its commit
    /// counts once the room's journal holds it too (the gateway answers
    /// with `Committed` again). A failed one fails at once.
    pub(super) fn journal(
        &mut self,
        room: Arc<RoomKey>,
        generation: u64,
        seq: u64,
        error: Option<Box<str>>,
        batch: ForJournal,
    ) {
        if error.is_some() {
            return self.on_committed(&room, generation, seq, error);
        }
        self.journal_pending += 1;
        let ForJournal { bytes, alarm } = batch;
        let msg = FromCore::Journal { room, core: self.index, generation, seq, batch: bytes, alarm };
        self.gateway_out.push_back(msg);
    }

    /// Batch `seq` of `room` committed (or failed).
    pub(super) fn on_committed(&mut self, room: &Arc<RoomKey>, generation: u64, seq: u64, error: Option<Box<str>>) {
        let Some(host) = self.hosts.get_mut(room).filter(|host| host.generation == generation) else {
            if let Some(error) = error {
                tracing::error!(party = %room.party, room = %room.id, %error, "a storage write of a reset room failed");
            }
            return;
        };
        host.room.store.committed(seq);
        host.committed_seq = host.committed_seq.max(seq);
        if host.uncommitted == Some(seq) {
            host.uncommitted = None;
        }
        if host.unsaved.as_ref().is_some_and(|(s, _)| *s == seq) {
            host.unsaved = None;
        }
        if let Some(error) = error {
            tracing::error!(party = %room.party, room = %room.id, %error, "a storage write failed; the room is reset");
            // What the event produced may not be shown: replies turn into
            // errors, the rest is dropped with the room.
            let held: Vec<Held> = host.held.drain(..).collect();
            for reply in held.into_iter().filter_map(|h| h.reply) {
                self.send_reply(match reply {
                    CoreMsg::Accepted { conn, .. } => CoreMsg::Refused { conn, reason: "storage write failed".into() },
                    CoreMsg::Respond { conn, .. } => {
                        CoreMsg::Respond { conn, response: Box::new(Response::text(500, "storage write failed")) }
                    }
                    other => other,
                });
            }
            self.fail_room(room, &RoomFailed::storage());
            return;
        }
        let mut effects = std::mem::take(&mut self.effects);
        loop {
            let host = self.hosts.get_mut(room).expect("the room is here");
            if host.held.front().is_none_or(|h| h.seq > seq) {
                break;
            }
            let held = host.held.pop_front().expect("checked");
            if let Some(reply) = held.reply {
                self.send_reply(reply);
            }
            effects.extend(held.effects);
            self.dispatch(room, &mut effects);
        }
        self.effects = effects;
        self.forget_if_on_disk(room);
    }

    /// A hibernated room with no members, nothing held and its snapshot
    /// committed needs no memory at all: the next event finds it on disk.
    /// One with members keeps its `Room`, without the buffers its last
    /// events left behind (a sleeping room may sleep for days).
    pub(super) fn forget_if_on_disk(&mut self, room: &Arc<RoomKey>) {
        let Some(host) = self.hosts.get_mut(room) else { return };
        if !host.is_awake() && host.held.is_empty() {
            host.held = std::collections::VecDeque::new();
            let effects = host.room.effects.get_mut();
            if effects.is_empty() {
                *effects = Vec::new();
            }
        }
        if !host.is_awake()
            && host.room.connection_count() == 0
            && host.unsaved.is_none()
            && host.uncommitted.is_none()
            && host.held.is_empty()
        {
            self.forget_host(room);
        }
    }

    /// Removes the room's host, giving back the table a peak of resident
    /// rooms left behind.
    pub(super) fn forget_host(&mut self, room: &Arc<RoomKey>) {
        self.hosts.remove(room);
        if !self.alarms.contains_key(room) {
            self.hand_back(room);
        }
        if self.hosts.capacity() > 1024 && self.hosts.len() * 4 < self.hosts.capacity() {
            self.hosts.shrink_to(self.hosts.len() * 2);
        }
    }

    /// Snapshots the room object and drops it; false when its party keeps
    /// objects in memory (no `snapshot`).
    pub(super) fn evict(&mut self, room: &Arc<RoomKey>) -> bool {
        let Some(host) = self.hosts.get_mut(room) else { return false };
        let seq = host.room.store.seq.get();
        let Some(envelope) = host.evict(seq) else { return false };
        // The snapshot rides in the room's next batch (with any writes not
        // taken yet), so it commits in order with the room's storage.
        host.room.store.batch.borrow_mut().put_snapshot(&host.room.store.key, envelope);
        let (seq, batch) = host.room.store.take_batch().expect("the batch holds the snapshot");
        host.uncommitted = Some(seq);
        // What `on_hibernate` sent goes out once its writes are on disk.
        let mut effects = std::mem::take(&mut self.effects);
        host.drain_effects(&mut effects);
        if !effects.is_empty() {
            host.held.push_back(Held { seq, effects: std::mem::take(&mut effects), reply: None });
        }
        self.effects = effects;
        self.submit_for(room, seq, batch);
        self.counters.rooms_evicted += 1;
        self.stats().rooms_resident.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Keeps the core's alarm schedule in step with the room's alarm.
    pub(super) fn sync_alarm(&mut self, room: &Arc<RoomKey>, alarm: Option<u64>) {
        match alarm {
            Some(at_ms) => {
                if self.alarms.insert(room.clone(), at_ms) != Some(at_ms) {
                    self.alarm_heap.push(Reverse((at_ms, room.clone())));
                }
                // Moved alarms leave stale entries behind: a room that keeps
                // moving its alarm must not grow the heap without bound.
                if self.alarm_heap.len() > 2 * self.alarms.len() + 1024 {
                    self.alarm_heap = self.alarms.iter().map(|(room, &at)| Reverse((at, room.clone()))).collect();
                }
            }
            None => {
                self.alarms.remove(room);
            }
        }
    }

    /// The alarms of the rooms this core owns, from the store.
    pub(super) fn load_alarms(&mut self) {
        let alarms = match self.shared.store.alarms() {
            Ok(alarms) => alarms,
            Err(error) => {
                tracing::error!(%error, "cannot read the alarms; none are scheduled");
                return;
            }
        };
        for (key, at_ms) in alarms {
            let room = Arc::new(RoomKey::new(key.party(), key.room()));
            if self.owns(&room) && self.shared.kinds.contains_key(key.party()) {
                self.load_alarm(room, at_ms);
            }
        }
    }

    /// Schedules an alarm found in the store at start-up.
    pub(super) fn load_alarm(&mut self, room: Arc<RoomKey>, at_ms: u64) {
        self.alarms.insert(room.clone(), at_ms);
        self.alarm_heap.push(Reverse((at_ms, room)));
    }

    /// The next alarm time, for the wait.
    pub(super) fn next_alarm_ms(&self) -> Option<u64> {
        self.alarm_heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs every alarm that is due.
    pub(super) fn run_due_alarms(&mut self) {
        let now = wall_ms();
        while let Some(Reverse((at_ms, room))) = self.alarm_heap.peek().cloned() {
            if at_ms > now {
                break;
            }
            self.alarm_heap.pop();
            if self.alarms.get(&room) != Some(&at_ms) {
                continue; // moved or deleted since
            }
            self.alarms.remove(&room);
            if !self.may_run(&room) {
                // In a cluster, without the room's lease: it stays due
                // here while the gateway places the room.
                self.load_alarm(room, now + ALARM_RETRY_FIRST_MS);
                continue;
            }
            if !self.admits_room(&room) {
                // No room for it now: it stays due (in the store too) and
                // runs again shortly.
                self.load_alarm(room, now + ALARM_RETRY_FIRST_MS);
                continue;
            }
            self.counters.room_events += 1;
            self.counters.alarms_run += 1;
            let outcome = self.host(&room).and_then(|host| host.alarm());
            let failure = match outcome {
                Ok(Ok(())) => {
                    self.alarm_retries.remove(&room);
                    None
                }
                Ok(Err(error)) => Some(error),
                Err(failed) => {
                    self.fail_room(&room, &failed);
                    Some(failed.reason().into_owned())
                }
            };
            if let Some(error) = failure {
                self.retry_alarm(&room, &error);
            }
            self.after_event(&room, None);
        }
    }

    /// Puts a room's new timer on the core's schedule. Entries are checked
    /// against the room's own timer when due (a moved, cancelled or evicted
    /// timer leaves a stale one), and the schedule is rebuilt from the rooms
    /// when stale entries would make it grow without bound.
    fn schedule_timer(&mut self, room: &Arc<RoomKey>, at_ms: u64) {
        self.timer_heap.push(Reverse((at_ms, room.clone())));
        if self.timer_heap.len() > 2 * self.hosts.len() + 1024 {
            self.timer_heap = self
                .hosts
                .iter()
                .filter_map(|(room, host)| host.scheduled_timer.map(|at| Reverse((at, room.clone()))))
                .collect();
        }
    }

    /// The next timer, for the wait.
    pub(super) fn next_timer_ms(&self) -> Option<u64> {
        self.timer_heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs every room timer that is due.
    pub(super) fn run_due_timers(&mut self) {
        let now = wall_ms();
        while let Some(Reverse((at_ms, room))) = self.timer_heap.peek().cloned() {
            if at_ms > now {
                break;
            }
            self.timer_heap.pop();
            let Some(host) = self.hosts.get_mut(&room) else { continue };
            if !host.is_awake() || host.scheduled_timer != Some(at_ms) {
                continue; // moved, cancelled, or its object is gone
            }
            self.counters.room_events += 1;
            if let Err(failed) = host.timer() {
                self.fail_room(&room, &failed);
            }
            self.after_event(&room, None);
        }
    }

    /// A failed alarm runs again after a back-off, durably.
    fn retry_alarm(&mut self, room: &Arc<RoomKey>, error: &str) {
        let retries = self.alarm_retries.entry(room.clone()).or_insert(0);
        *retries += 1;
        if *retries > ALARM_MAX_RETRIES {
            self.alarm_retries.remove(room);
            tracing::error!(party = %room.party, room = %room.id, %error, "an alarm failed {ALARM_MAX_RETRIES} retries; giving up");
            return;
        }
        let delay = (ALARM_RETRY_FIRST_MS << (*retries - 1)).min(ALARM_RETRY_MAX_MS);
        tracing::warn!(party = %room.party, room = %room.id, %error, retry_in_ms = delay, "an alarm failed; retrying");
        if let Ok(host) = self.host(room) {
            if host.room.alarm().is_none() {
                host.room.set_alarm(wall_ms() + delay);
            }
        }
    }

    /// Shutdown: every resident room of a hibernating party is snapshotted.
    pub(super) fn evict_all(&mut self) {
        let rooms: Vec<Arc<RoomKey>> = self
            .hosts
            .iter()
            .filter(|(_, host)| host.is_awake() && host.room.config.hibernate)
            .map(|(room, _)| room.clone())
            .collect();
        for room in rooms {
            self.evict(&room);
        }
    }

    /// Whether any batch of this core has not committed yet.
    pub(super) fn writes_pending(&self) -> bool {
        !self.submissions.is_empty() || self.journal_pending > 0 || self.hosts.values().any(|h| h.uncommitted.is_some())
    }

    /// Carries out effects of `room`, draining `effects`.
    fn dispatch(&mut self, room: &Arc<RoomKey>, effects: &mut Vec<Effect>) {
        self.dispatch_effects(room, effects);
    }
}
