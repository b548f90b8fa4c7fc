//! The inspector's view of a core (see `src/inspector`): once a second,
//! this core's summary of its rooms; on core 0, the merged snapshot sent to
//! the inspector pages' feed room as a broadcast, which wakes no room.

use super::{rooms, State};
use crate::core_msg::{Broadcast, CoreMsg};
use crate::inspector::{self, CoreSummary, RoomSummary};
use crate::party::Message;
use crate::room_key::RoomKey;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::sync::Arc;

/// How often the inspector's figures are taken.
pub(super) const INSPECT_EVERY_MS: u64 = 1000;

impl State {
    /// When the next summary is due, if the inspector is on.
    pub(super) fn next_inspect_ms(&self) -> Option<u64> {
        self.shared.inspector.as_ref().map(|_| self.next_inspect_ms)
    }

    pub(super) fn inspect(&mut self) {
        let Some(inspector) = self.shared.inspector.clone() else { return };
        if self.now_ms < self.next_inspect_ms {
            return;
        }
        self.next_inspect_ms = self.now_ms + INSPECT_EVERY_MS;
        let mut summary = CoreSummary::default();
        let mut busiest: Vec<RoomSummary> = Vec::new();
        for (key, host) in self.hosts.iter_mut() {
            let awake = host.is_awake();
            if !summary.parties.contains_key(&*key.party) {
                summary.parties.insert(key.party.to_string(), (0, 0));
            }
            let row = summary.parties.get_mut(&*key.party).expect("inserted above");
            if awake {
                row.0 += 1;
            } else {
                row.1 += 1;
            }
            let events = std::mem::take(&mut host.events_this_second);
            let members = host.room.members.len() as u64;
            let rank = (Reverse(u64::from(events)), Reverse(members));
            // Names are copied only for a room that makes the list.
            if busiest.len() < inspector::BUSIEST || busiest.last().is_some_and(|last| rank < last.rank()) {
                let candidate = RoomSummary {
                    party: key.party.to_string(),
                    room: key.id.to_string(),
                    members,
                    events_per_sec: u64::from(events),
                    awake,
                };
                busiest.push(candidate);
                busiest.sort_by_key(RoomSummary::rank);
                busiest.truncate(inspector::BUSIEST);
            }
        }
        summary.busiest = busiest;
        inspector.report(usize::from(self.index), summary);
        if self.index != 0 {
            return;
        }
        let json = inspector.snapshot(&self.shared.stats, rooms::wall_ms());
        let room = Arc::new(RoomKey::new(inspector::PARTY.to_owned(), inspector::ROOM.to_owned()));
        let frame = Message::Text(&json).to_frame();
        let broadcast =
            Arc::new(Broadcast { room, frame, deflated: None, tag: None, without: SmallVec::new(), reply: None });
        for core in 0..self.shared.cores {
            self.send_to(core, CoreMsg::Broadcast(broadcast.clone()));
        }
    }
}
