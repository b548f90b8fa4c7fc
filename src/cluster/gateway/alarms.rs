//! The cluster's alarm index: every room's alarm time in the KV bucket
//! `dm_alarms`, so that a room whose node died with an alarm set is woken
//! on another node when the alarm is due, not at its next event.
//!
//! - **Written** by the node running the room, for a committed batch that
//!   changed the alarm, just before the batch's journal append (one NATS
//!   connection, in order: an alarm whose batch was acknowledged is in the
//!   index), and again whenever a node takes the room and finds in its
//!   journal an alarm other than the index's (which mends an index ahead of
//!   a journal append that failed, or a late write of a node that lost the
//!   room).
//! - **Watched** by every node, which keeps what it heard (at most
//!   `MAX_WATCHED`) with a schedule. When one is due and this node is the
//!   room's preferred owner among the live nodes and does not hold the
//!   room, it asks for the room as a core with an alarm due does (take the
//!   lease if nobody holds it); the journal's load then gives the owner
//!   core the alarm, which runs it. A room another live node holds is left
//!   to it (its core has the alarm) and looked at again a third of a lease
//!   later, in case that node dies before the alarm is gone.

use super::State;
use crate::cluster::FromCore;
use crate::room_key::{RoomKey, RoomMap};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Rooms' alarms a node keeps from the index, at most; past it, new ones
/// are not watched here (their own nodes still run them) and it is logged.
const MAX_WATCHED: usize = 1 << 20;

/// What this node heard of the index, and when to look at each alarm.
#[derive(Default)]
pub(super) struct Alarms {
    at: RoomMap<u64>,
    /// (when to look, room), wall-clock ms; an entry whose room's alarm
    /// moved or went is skipped.
    schedule: BinaryHeap<Reverse<(u64, Arc<RoomKey>)>>,
    /// Whether "too many" was logged.
    warned: bool,
}

impl Alarms {
    fn schedule(&mut self, look_ms: u64, room: Arc<RoomKey>) {
        self.schedule.push(Reverse((look_ms, room)));
        // Moved alarms leave stale entries: rebuilt before they pile up.
        if self.schedule.len() > 2 * self.at.len() + 1024 {
            self.schedule = self.at.iter().map(|(room, &at)| Reverse((at, room.clone()))).collect();
        }
    }

    /// The rooms whose alarm is due to be looked at, by `now_ms`.
    fn due(&mut self, now_ms: u64) -> Vec<Arc<RoomKey>> {
        let mut due = Vec::new();
        while let Some(Reverse((look_ms, _))) = self.schedule.peek() {
            if *look_ms > now_ms {
                break;
            }
            let Reverse((look_ms, room)) = self.schedule.pop().expect("peeked");
            // Stale when the alarm moved later (its own entry comes then).
            if self.at.get(&room).is_some_and(|&at| at <= look_ms) {
                due.push(room);
            }
        }
        due
    }
}

/// Wall-clock milliseconds (alarms are wall-clock times).
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl State {
    /// The index says `room`'s alarm is `at_ms` (none: it has none).
    pub(super) fn on_alarm(&mut self, room: Arc<RoomKey>, at_ms: Option<u64>) {
        let alarms = &mut self.alarms;
        match at_ms {
            None => {
                alarms.at.remove(&room);
            }
            Some(at_ms) => {
                if alarms.at.len() >= MAX_WATCHED && !alarms.at.contains_key(&room) {
                    if !std::mem::replace(&mut alarms.warned, true) {
                        tracing::warn!(
                            max = MAX_WATCHED,
                            "too many rooms' alarms to watch; those past the bound run only on their own nodes"
                        );
                    }
                    return;
                }
                if alarms.at.insert(room.clone(), at_ms) != Some(at_ms) {
                    alarms.schedule(at_ms, room);
                }
            }
        }
    }

    /// Writes `room`'s alarm into the index (after its journal has it).
    pub(super) fn write_alarm(&mut self, room: &Arc<RoomKey>, at_ms: Option<u64>) {
        if self.cluster.set_alarm(&room.party, &room.id, at_ms).is_err() {
            // The next node to take the room writes it from the journal.
            tracing::warn!(party = %room.party, room = %room.id, "the cluster's queue is full; the room's alarm is not indexed");
        }
    }

    /// A node took `room` and its journal says its alarm is `at_ms`: the
    /// index is mended if it says otherwise.
    pub(super) fn check_alarm(&mut self, room: &Arc<RoomKey>, at_ms: Option<u64>) {
        if self.alarms.at.get(room).copied() != at_ms {
            self.write_alarm(room, at_ms);
        }
    }

    /// Asks for the rooms whose alarm is due that this node should wake.
    pub(super) fn look_at_alarms(&mut self) {
        let now_ms = wall_ms();
        let again_ms = now_ms + self.renew_every.as_millis() as u64;
        for room in self.alarms.due(now_ms) {
            // Looked at again until the alarm has gone from the index.
            self.alarms.schedule(again_ms, room.clone());
            if self.held.contains_key(&room) || self.placing.contains_key(&room) || !self.preferred_here(&room) {
                continue;
            }
            let core = self.cores.placement.owner(&room) as u16;
            self.on_core(FromCore::Resolve { room, core, take: true });
        }
    }

    /// Whether this node is `room`'s preferred owner among the live nodes.
    fn preferred_here(&self, room: &RoomKey) -> bool {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let key = dormouse_cluster::room_key(&room.party, &room.id);
        dormouse_cluster::rendezvous(&view, &key) == Some(&*self.me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_alarms_come_in_time_order_and_moved_ones_at_their_new_time() {
        let mut alarms = Alarms::default();
        let room = |id: &str| Arc::new(RoomKey::new("p", id));
        let (a, b, c) = (room("a"), room("b"), room("c"));
        for (r, at) in [(&a, 10), (&b, 20), (&c, 30)] {
            alarms.at.insert(r.clone(), at);
            alarms.schedule(at, r.clone());
        }
        // b moves later, c goes.
        alarms.at.insert(b.clone(), 40);
        alarms.schedule(40, b.clone());
        alarms.at.remove(&c);
        assert_eq!(alarms.due(5), Vec::<Arc<RoomKey>>::new());
        assert_eq!(alarms.due(35), vec![a.clone()]);
        assert_eq!(alarms.due(100), vec![b.clone()]);
        assert!(alarms.schedule.is_empty());
    }
}
