//! Which room objects stay in memory on their owner core.
//!
//! Every room object in memory is in its party's queue, oldest touch first
//! (second chance: a room touched since it was queued goes to the back when
//! it reaches the front). A party's rooms share one idle time, so each queue
//! is in due order and only its front is ever looked at:
//!
//! - a room of a party that snapshots (`hibernate = true` and a `snapshot`)
//!   idle for `idle_evict_ms` is evicted to disk, its sockets kept open;
//! - a room whose object lives only in memory (no hibernation, or a party
//!   without snapshots) is dropped once it has had no connections and no
//!   events for its idle time (`idle_drop_ms`; `idle_evict_ms` for a
//!   hibernating party without snapshots): its storage and alarm stay, and
//!   its next event creates a fresh object. One with connections is kept,
//!   and queued again by its next event (the last member's close, at least).
//!
//! Past the core's share of `max_resident_rooms`, the least recently touched
//! room that can go (evicted, or dropped when it has no connections) goes at
//! once; a new room that finds none gets 503 with `Retry-After`. So any
//! number of room ids cost at most `max_resident_rooms` objects, and ids
//! nobody uses any more cost nothing after their idle time.

use super::State;
use crate::room_key::RoomKey;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The rooms of one party in memory, oldest touch first.
pub(super) struct EvictQueue {
    party: Box<str>,
    /// How long a room of the party stays without events.
    idle_ms: u64,
    /// A room, the host generation it was queued for (an entry outlived by a
    /// dropped or failed host is skipped), and its touch time when queued.
    rooms: VecDeque<(Arc<RoomKey>, u64, u64)>,
}

/// What became of a room asked to leave memory.
enum Retire {
    /// Evicted to its snapshot, or dropped.
    Gone,
    /// Its object lives only in memory and it has connections: kept.
    InUse,
    /// Its storage writes are not committed yet: asked again later.
    Pending,
}

impl State {
    /// Queues the room (after its event) unless it is queued already.
    pub(super) fn queue_resident(&mut self, room: &Arc<RoomKey>) {
        let now_ms = self.now_ms;
        let Some(host) = self.hosts.get_mut(room) else { return };
        if host.queued || !host.is_awake() {
            return;
        }
        host.queued = true;
        let generation = host.generation;
        let queue = match self.evict_queues.iter().position(|q| q.party == room.party) {
            Some(queue) => queue,
            None => {
                let config = &host.room.config;
                let idle_ms = if config.hibernate { config.idle_evict_ms } else { config.idle_drop_ms };
                self.evict_queues.push(EvictQueue { party: room.party.clone(), idle_ms, rooms: VecDeque::new() });
                self.evict_queues.len() - 1
            }
        };
        self.evict_queues[queue].rooms.push_back((room.clone(), generation, now_ms));
    }

    /// Evicts or drops the rooms idle for their party's time, then, past the
    /// core's share of `max_resident_rooms`, the least recently touched.
    pub(super) fn evict_idle(&mut self) {
        for queue in 0..self.evict_queues.len() {
            let idle_ms = self.evict_queues[queue].idle_ms;
            let mut budget = self.evict_queues[queue].rooms.len();
            while budget > 0 {
                budget -= 1;
                let Some((room, generation, queued_ms)) = self.evict_queues[queue].rooms.front().cloned() else {
                    break;
                };
                let Some(host) = self.hosts.get_mut(&room).filter(|h| h.generation == generation && h.is_awake())
                else {
                    self.unqueue_front(queue, &room, generation);
                    continue;
                };
                if host.last_event_ms > queued_ms {
                    // Touched since it was queued: it goes to the back.
                    let touched_ms = host.last_event_ms;
                    let entry = self.evict_queues[queue].rooms.pop_front().expect("checked");
                    self.evict_queues[queue].rooms.push_back((entry.0, entry.1, touched_ms));
                    continue;
                }
                if self.now_ms.saturating_sub(queued_ms) < idle_ms {
                    break;
                }
                self.retire_front(queue);
            }
        }
        while self.over_resident_limit(0) && self.retire_least_recent() {}
        for queue in &mut self.evict_queues {
            if queue.rooms.capacity() > 1024 && queue.rooms.len() * 4 < queue.rooms.capacity() {
                queue.rooms.shrink_to(queue.rooms.len() * 2);
            }
        }
    }

    /// Whether a new room may be created for an event of `room`: it exists
    /// already, the core is under its share of `max_resident_rooms`, or the
    /// least recently touched room could make way.
    pub(super) fn admits_room(&mut self, room: &Arc<RoomKey>) -> bool {
        self.hosts.contains_key(room) || !self.over_resident_limit(1) || self.retire_least_recent()
    }

    /// Whether `extra` more room objects would take the core past its share.
    fn over_resident_limit(&self, extra: usize) -> bool {
        self.stats().rooms_resident.load(Ordering::Relaxed) as usize + extra > self.shared.max_resident_per_core
    }

    /// When the front room of some queue may have been idle long enough.
    pub(super) fn next_evict_ms(&self) -> Option<u64> {
        self.evict_queues.iter().filter_map(|q| q.rooms.front().map(|&(_, _, queued_ms)| queued_ms + q.idle_ms)).min()
    }

    /// Asks the least recently touched room of any queue to leave memory,
    /// passing over rooms that cannot; returns whether one left.
    fn retire_least_recent(&mut self) -> bool {
        let mut budget: usize = self.evict_queues.iter().map(|q| q.rooms.len()).sum();
        while budget > 0 {
            budget -= 1;
            let oldest = (0..self.evict_queues.len())
                .filter_map(|q| self.evict_queues[q].rooms.front().map(|&(_, _, queued_ms)| (queued_ms, q)))
                .min();
            let Some((_, queue)) = oldest else { return false };
            if self.retire_front(queue) {
                return true;
            }
        }
        false
    }

    /// Takes the front room of `queue` out of memory if it can go; returns
    /// whether it went. One in use leaves the queue (its next event queues
    /// it again); one with uncommitted writes goes to the back.
    fn retire_front(&mut self, queue: usize) -> bool {
        let (room, generation, _) = self.evict_queues[queue].rooms.pop_front().expect("the queue has a front");
        let Some(host) = self.hosts.get_mut(&room).filter(|h| h.generation == generation && h.is_awake()) else {
            return false;
        };
        host.queued = false;
        match self.retire(&room) {
            Retire::Gone => true,
            Retire::InUse => false,
            Retire::Pending => {
                let host = self.hosts.get_mut(&room).expect("a pending room stays");
                host.queued = true;
                self.evict_queues[queue].rooms.push_back((room, generation, self.now_ms));
                false
            }
        }
    }

    /// Pops a front entry whose host is gone, asleep or newer.
    fn unqueue_front(&mut self, queue: usize, room: &Arc<RoomKey>, generation: u64) {
        self.evict_queues[queue].rooms.pop_front();
        if let Some(host) = self.hosts.get_mut(room).filter(|h| h.generation == generation) {
            host.queued = false;
        }
    }

    /// Evicts the room to its snapshot, or drops an object that has none
    /// when the room has no connections and nothing waiting for the disk.
    fn retire(&mut self, room: &Arc<RoomKey>) -> Retire {
        // Waiting for another room, or owing an answer: its object stays.
        if self.hosts[room].is_waiting() {
            return Retire::InUse;
        }
        if self.hosts[room].room.config.hibernate && self.evict(room) {
            return Retire::Gone;
        }
        let host = &self.hosts[room];
        if host.room.connection_count() > 0 {
            return Retire::InUse;
        }
        if host.uncommitted.is_some() || !host.held.is_empty() || host.unsaved.is_some() {
            return Retire::Pending;
        }
        self.forget_host(room);
        self.counters.rooms_dropped += 1;
        self.stats().rooms_resident.fetch_sub(1, Ordering::Relaxed);
        Retire::Gone
    }
}
