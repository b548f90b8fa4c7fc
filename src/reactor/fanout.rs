//! Broadcasts to this core's members of a room: `LocalRoom` (the members
//! indexed by tag), one pre-framed `Bytes` queued on each recipient, and
//! broadcasts to more than `limits.fanout_slice` written in slices over
//! turns, with what arrives for the room meanwhile held back in order.

use super::conn::{mark_dirty, ConnRecord, Phase};
use super::links::LINK_BIT;
use super::State;
use crate::core_msg::{Broadcast, CoreMsg};
use crate::party::ConnRef;
use crate::room_key::RoomKey;
use dormouse_tags::TagIndex;
use std::collections::VecDeque;
use std::sync::Arc;

/// Recipients a core queues frames for in one turn, in slices (config
/// `limits.fanout_slice`), before it stops taking broadcasts from its inbox
/// and serves its sockets.
pub(super) const FANOUT_SLICES_PER_TURN: usize = 4;

/// The members of one room that live on this core, indexed by tag.
pub(super) struct LocalRoom {
    pub(super) key: Arc<RoomKey>,
    pub(super) index: TagIndex,
    /// A broadcast being written in slices (`limits.fanout_slice`).
    pub(super) job: Option<Box<FanoutJob>>,
    /// Messages for the room and its members that arrived during `job`, held
    /// back in arrival order so each member still sees them in order.
    pub(super) backlog: VecDeque<CoreMsg>,
}

/// A broadcast too big for one turn: the recipients at its arrival, and how
/// far it has got. Members that leave meanwhile are skipped; none can join,
/// since their admission waits in the room's backlog.
pub(super) struct FanoutJob {
    pub(super) broadcast: Arc<Broadcast>,
    pub(super) slots: Vec<u32>,
    pub(super) next: usize,
    pub(super) delivered: u64,
}

/// The borrows a fan-out needs, apart from the room it reads recipients from.
pub(super) struct FanOut<'a> {
    pub(super) conns: &'a mut slab::Slab<ConnRecord>,
    pub(super) dirty: &'a mut Vec<u32>,
    pub(super) slow: &'a mut Vec<u32>,
    /// Recipients that are links (`links.rs`), left for `reach_links`.
    pub(super) links: &'a mut Vec<u32>,
}

impl FanOut<'_> {
    /// Queues the broadcast's frame (the same `Bytes`, no copy) on every
    /// recipient still open in local room `lr`; those over their backlog go to
    /// `slow`. Returns how many got the frame.
    #[inline]
    fn write(
        &mut self,
        recipients: impl Iterator<Item = u32>,
        lr: u32,
        broadcast: &Broadcast,
        core: u16,
        max_backlog: usize,
    ) -> u64 {
        let plain = &broadcast.frame;
        let deflated = broadcast.deflated.as_ref().unwrap_or(plain);
        let mut delivered = 0;
        for slot in recipients {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                if slot & LINK_BIT != 0 {
                    self.links.push(slot);
                }
                continue;
            };
            if conn.phase != Phase::Open || !conn.joined || conn.local_room != lr {
                continue;
            }
            if !broadcast.without.is_empty() && broadcast.without.contains(&ConnRef { core, slot, gen: conn.gen }) {
                continue;
            }
            let frame = if conn.deflate { deflated } else { plain };
            if !conn.out.try_push(frame, max_backlog) {
                self.slow.push(slot);
                continue;
            }
            mark_dirty(conn, slot, self.dirty);
            delivered += 1;
        }
        delivered
    }
}

impl State {
    /// The local room a message must wait for, if it concerns a room (or a
    /// member of a room) whose sliced broadcast is still going out.
    pub(super) fn busy_room_of(&self, msg: &CoreMsg) -> Option<u32> {
        let lr = match msg {
            CoreMsg::Broadcast(broadcast) => *self.local_room_ids.get(&broadcast.room)?,
            CoreMsg::Accepted { room, .. } => *self.local_room_ids.get(room)?,
            CoreMsg::Send { conn, .. } | CoreMsg::Close { conn, .. } if super::links::is_link(*conn) => {
                self.link_local_room(*conn)?
            }
            CoreMsg::Send { conn, .. } | CoreMsg::Close { conn, .. } => {
                self.conns.get(conn.slot as usize).filter(|c| c.gen == conn.gen && c.joined)?.local_room
            }
            _ => return None,
        };
        self.local_rooms[lr as usize].job.is_some().then_some(lr)
    }

    /// Writes one pre-framed broadcast to the matching local members of its
    /// room: at once when they are few, else in slices (`limits.fanout_slice`).
    pub(super) fn on_broadcast(&mut self, broadcast: Arc<Broadcast>) {
        self.counters.broadcasts += 1;
        let Some(&lr) = self.local_room_ids.get(&broadcast.room) else { return self.reply_published(&broadcast, 0) };
        let tag = match &broadcast.tag {
            None => None,
            Some(name) => match self.tag_names.lookup(name) {
                Some(tag) => Some(tag),
                None => return self.reply_published(&broadcast, 0),
            },
        };
        let room = &mut self.local_rooms[lr as usize];
        let recipients = room.index.slots(tag);
        if recipients.len() > self.shared.limits.fanout_slice {
            let slots = recipients.collect();
            room.job = Some(Box::new(FanoutJob { broadcast, slots, next: 0, delivered: 0 }));
            self.busy_rooms.push_back(lr);
            return;
        }
        self.fanout_this_turn += recipients.len();
        let mut out =
            FanOut { conns: &mut self.conns, dirty: &mut self.dirty, slow: &mut self.slow, links: &mut self.link_hits };
        let delivered = out.write(recipients, lr, &broadcast, self.index, self.shared.limits.max_write_backlog_bytes);
        let delivered = delivered + self.reach_links(lr, &broadcast);
        self.after_fan_out(delivered);
        self.reply_published(&broadcast, delivered);
    }

    /// Advances sliced broadcasts, one slice per busy room in turn, within
    /// what is left of this turn's budget (and at least one slice).
    pub(super) fn run_fanout_jobs(&mut self) {
        let slice = self.shared.limits.fanout_slice;
        let mut budget = self.fanout_turn_budget().saturating_sub(self.fanout_this_turn).max(slice);
        while budget > 0 {
            let Some(lr) = self.busy_rooms.pop_front() else { break };
            let job = self.local_rooms[lr as usize].job.as_mut().expect("a busy room has a job");
            let end = job.slots.len().min(job.next + budget.min(slice));
            let mut out = FanOut {
                conns: &mut self.conns,
                dirty: &mut self.dirty,
                slow: &mut self.slow,
                links: &mut self.link_hits,
            };
            let slice = job.slots[job.next..end].iter().copied();
            let mut delivered =
                out.write(slice, lr, &job.broadcast, self.index, self.shared.limits.max_write_backlog_bytes);
            if !self.link_hits.is_empty() {
                let broadcast = job.broadcast.clone();
                delivered += self.reach_links(lr, &broadcast);
            }
            let job = self.local_rooms[lr as usize].job.as_mut().expect("a busy room has a job");
            budget -= end - job.next;
            self.fanout_this_turn += end - job.next;
            job.next = end;
            job.delivered += delivered;
            let done = end == job.slots.len();
            self.after_fan_out(delivered);
            if done {
                let job = self.local_rooms[lr as usize].job.take().expect("a busy room has a job");
                self.reply_published(&job.broadcast, job.delivered);
                self.drain_backlog(lr);
            } else {
                self.busy_rooms.push_back(lr);
            }
        }
    }

    pub(super) fn fanout_turn_budget(&self) -> usize {
        self.shared.limits.fanout_slice.saturating_mul(FANOUT_SLICES_PER_TURN)
    }

    /// Handles what a room held back during its sliced broadcast, until the
    /// backlog is empty or another sliced broadcast starts.
    pub(super) fn drain_backlog(&mut self, lr: u32) {
        while self.local_rooms[lr as usize].job.is_none() {
            let Some(msg) = self.local_rooms[lr as usize].backlog.pop_front() else { break };
            self.backlogged -= 1;
            self.on_core_msg(msg);
        }
        self.forget_room_if_unused(lr);
    }

    /// This core's local room for `room`, made if it has none.
    pub(super) fn local_room_for(&mut self, room: Arc<RoomKey>) -> u32 {
        if let Some(&id) = self.local_room_ids.get(&room) {
            return id;
        }
        let lr = LocalRoom { key: room.clone(), index: TagIndex::new(), job: None, backlog: VecDeque::new() };
        let id = self.local_rooms.insert(lr) as u32;
        self.local_room_ids.insert(room, id);
        id
    }

    /// Drops a local room with no members and nothing in progress.
    pub(super) fn forget_room_if_unused(&mut self, lr: u32) {
        let room = &self.local_rooms[lr as usize];
        if room.index.is_empty() && room.job.is_none() && room.backlog.is_empty() {
            self.local_room_ids.remove(&room.key);
            self.local_rooms.remove(lr as usize);
        }
    }

    /// Counts a fan-out's frames and applies the slow-consumer policy to the
    /// members it found over their backlog.
    pub(super) fn after_fan_out(&mut self, delivered: u64) {
        self.counters.frames_out += delivered;
        let mut slow = std::mem::take(&mut self.slow);
        for slot in slow.drain(..) {
            self.slow_consumer(slot);
        }
        self.slow = slow;
    }
}
