//! The inspector's view of a core (see `src/inspector`): once a second,
//! this core's summary of its rooms; on core 0, the merged snapshot sent to
//! the inspector pages' feed room as a broadcast, which wakes no room. And
//! an admin's asks of one room: its detail (from its owner, then the
//! backlogs of its connections from the cores holding them), evicting it,
//! closing one of its connections.

use super::links::is_link;
use super::{rooms, State};
use crate::core_msg::{Broadcast, CoreMsg};
use crate::http::Response;
use crate::inspector::{self, Action, CoreSummary, MemberDetail, RoomAsk, RoomDetail, RoomSummary};
use crate::party::{ConnRef, Message};
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
                    storage_bytes: 0,
                    storage_complete: true,
                    snapshot_bytes: 0,
                };
                busiest.push(candidate);
                busiest.sort_by_key(RoomSummary::rank);
                busiest.truncate(inspector::BUSIEST);
            }
        }
        // Sized only for the rooms listed, each a bounded read.
        for listed in &mut busiest {
            let key = dormouse_hibernate::RoomKey::new(&listed.party, &listed.room);
            if let Ok(usage) = self.shared.store.usage(&key, inspector::USAGE_ENTRIES) {
                listed.storage_bytes = usage.storage_bytes;
                listed.storage_complete = usage.complete;
                listed.snapshot_bytes = usage.snapshot_bytes;
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

impl State {
    /// An admin's ask of one room, from the inspector request on `slot`:
    /// to the room's owner, which answers it.
    pub(super) fn ask_room(&mut self, slot: u32, ask: RoomAsk, keep_alive: bool) {
        let refusal = if !self.shared.kinds.contains_key(&*ask.party) || ask.party == inspector::PARTY {
            Some(Response::text(404, format!("Party {} not found", ask.party)))
        } else if ask.room.is_empty() || ask.room.len() > self.shared.limits.max_room_id_bytes {
            Some(Response::text(400, "the room id is empty or too long"))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return self.respond(slot, &refusal, keep_alive);
        }
        let conn = self.conn_ref(slot);
        let action = Box::new(ask.action);
        let room = Arc::new(RoomKey::new(ask.party, ask.room));
        self.send_to_owner(room, |room| CoreMsg::Inspect { conn, room, action });
    }

    /// On the room's owner: answers an admin's ask of `room`.
    pub(super) fn on_inspect(&mut self, conn: ConnRef, room: &Arc<RoomKey>, action: Action) {
        let answer = match action {
            Action::Detail { limit } => return self.room_detail(conn, room, limit),
            Action::Evict => self.admin_evict(room),
            Action::Close { id } => {
                let member = self.hosts.get(room).and_then(|host| host.room.connection(&id).map(|c| c.conn_ref()));
                match member {
                    Some(member) => {
                        let (code, reason) = inspector::ADMIN_CLOSE;
                        let close = CoreMsg::Close { conn: member, code, reason: reason.into() };
                        self.send_to(usize::from(member.core), close);
                        Response::json(200, serde_json::json!({ "closed": id }).to_string())
                    }
                    None => Response::text(404, format!("no connection {id:?} in the room")),
                }
            }
        };
        let response = Box::new(answer);
        self.send_to(usize::from(conn.core), CoreMsg::Respond { conn, response });
        self.let_go_if_unused(room);
    }

    /// An ask placed a room here that has no object and nothing due (in
    /// a cluster it took the lease for it): the lease goes back at once,
    /// as for a room that left memory.
    fn let_go_if_unused(&mut self, room: &Arc<RoomKey>) {
        if !self.hosts.contains_key(room) && !self.alarms.contains_key(room) {
            self.hand_back(room);
        }
    }

    /// Evicts the room's object to its snapshot, when it can go.
    fn admin_evict(&mut self, room: &Arc<RoomKey>) -> Response {
        let Some(host) = self.hosts.get(room) else {
            return Response::text(404, "the room is not in memory");
        };
        if !host.is_awake() {
            return Response::json(200, r#"{"evicted":false,"hibernated":true}"#);
        }
        if !host.room.config.hibernate {
            return Response::text(409, format!("party {} does not hibernate (hibernate = false)", room.party));
        }
        if host.is_waiting() {
            return Response::text(
                409,
                "the room waits for another room, an outbound request or a socket, or owes an answer",
            );
        }
        if !self.evict(room) {
            return Response::text(409, "the room's party keeps its objects in memory (no snapshot)");
        }
        Response::json(200, r#"{"evicted":true,"hibernated":true}"#)
    }

    /// The room's figures and (up to `limit` of) its connections, then on
    /// to the cores that hold them.
    fn room_detail(&mut self, conn: ConnRef, room: &Arc<RoomKey>, limit: usize) {
        let key = dormouse_hibernate::RoomKey::new(&room.party, &room.id);
        let usage = self.shared.store.usage(&key, inspector::USAGE_ENTRIES).unwrap_or_default();
        let mut detail = RoomDetail {
            party: room.party.to_string(),
            room: room.id.to_string(),
            awake: false,
            hosted: false,
            members_total: 0,
            members: Vec::new(),
            storage_bytes: usage.storage_bytes,
            storage_complete: usage.complete,
            snapshot_bytes: usage.snapshot_bytes,
            alarm_ms: None,
            cores_left: Vec::new(),
        };
        if let Some(host) = self.hosts.get(room) {
            detail.awake = host.is_awake();
            detail.hosted = true;
            detail.alarm_ms = host.room.alarm();
            detail.members_total = host.room.connection_count() as u64;
            for member in host.room.connections().take(limit) {
                let conn = member.conn_ref();
                detail.members.push(MemberDetail {
                    id: member.id().to_owned(),
                    tags: member.tags().skip(1).map(str::to_owned).collect(),
                    state_bytes: member.state_len() as u64,
                    core: conn.core,
                    backlog_bytes: None,
                    room_socket: is_link(conn),
                    remote: !is_link(conn) && usize::from(conn.core) >= self.shared.cores,
                    conn,
                });
            }
            // This node's cores add their sockets' backlogs; another node's
            // sockets (its virtual cores here) show none.
            let cores = self.shared.cores as u16;
            detail.cores_left =
                detail.members.iter().filter(|m| !m.room_socket && m.core < cores).map(|m| m.core).collect();
            detail.cores_left.sort_unstable();
            detail.cores_left.dedup();
        }
        self.forward_detail(conn, Box::new(detail));
        self.let_go_if_unused(room);
    }

    /// This core adds the backlogs of its connections in the detail.
    pub(super) fn on_inspect_backlog(&mut self, conn: ConnRef, mut detail: Box<RoomDetail>) {
        detail.cores_left.retain(|&core| core != self.index);
        for member in detail.members.iter_mut().filter(|m| m.core == self.index && !m.room_socket) {
            let record = self.conns.get(member.conn.slot as usize).filter(|c| c.gen == member.conn.gen);
            member.backlog_bytes = record.map(|c| c.out.bytes() as u64);
        }
        self.forward_detail(conn, detail);
    }

    /// Sends the detail to the next core with connections to add, or, when
    /// none is left, answers the request with it.
    fn forward_detail(&mut self, conn: ConnRef, detail: Box<RoomDetail>) {
        match detail.cores_left.first() {
            Some(&core) => self.send_to(usize::from(core), CoreMsg::InspectBacklog { conn, detail }),
            None => {
                let body = serde_json::to_string(&*detail).expect("a room's detail serialises");
                let response = Box::new(Response::json(200, body).with_header("cache-control", "no-store"));
                self.send_to(usize::from(conn.core), CoreMsg::Respond { conn, response });
            }
        }
    }
}
