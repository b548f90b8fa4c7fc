//! Sockets between rooms (`Room::connect_room`): a link is a member of the
//! room it connects to, held by the core that owns the room that opened
//! it, so it joins that room's members like a socket of this core does.
//! Its `ConnRef` has [`LINK_BIT`] set in its slot: the fan-out, which
//! finds no record for such a slot, hands its frames here, and `Send`,
//! `Close`, `Accepted` and `Refused` for it come here instead of to a
//! socket. What a link receives becomes an event of the room that opened
//! it, delivered through this core's own outbox (so two rooms that answer
//! each other take turns with the rest of the core).

use super::State;
use crate::core_msg::{Broadcast, CloseInfo, CoreMsg, Joining, Payload};
use crate::http::RequestHead;
use crate::party::{ConnRef, Message, RoomSocketEvent};
use crate::room_key::RoomKey;
use bytes::Bytes;
use dormouse_tags::MemberKey;
use std::sync::Arc;

pub(super) use crate::core_msg::LINK_BIT;

/// What a room's socket to another room went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkPhase {
    /// Waiting for the other room's `on_connect`.
    Connecting,
    /// A member of the other room, in this core's local room `local_room`.
    Open { member: u32, local_room: u32, member_key: u32 },
    /// Closed by its room, or gone from the other: the close is on its way
    /// to the room that opened it.
    Closing,
}

/// One socket from a room of this core to another room.
pub(super) struct Link {
    gen: u32,
    /// The room that opened it (owned by this core), and which host of it.
    caller: Arc<RoomKey>,
    generation: u64,
    /// Its id in the caller (`Room::connect_room`'s return).
    socket: u32,
    /// The room it connects to.
    target: Arc<RoomKey>,
    phase: LinkPhase,
}

#[inline]
pub(super) fn is_link(conn: ConnRef) -> bool {
    conn.slot & LINK_BIT != 0
}

impl State {
    /// The link `conn` names, if it is still that link.
    fn link(&self, conn: ConnRef) -> Option<&Link> {
        self.links.get((conn.slot & !LINK_BIT) as usize).filter(|link| link.gen == conn.gen)
    }

    fn link_ref(&self, index: u32) -> ConnRef {
        ConnRef { core: self.index, slot: index | LINK_BIT, gen: self.links[index as usize].gen }
    }

    /// The local room a message for link `conn` must wait behind, when it
    /// is a member of a room with a sliced broadcast going out.
    pub(super) fn link_local_room(&self, conn: ConnRef) -> Option<u32> {
        match self.link(conn)?.phase {
            LinkPhase::Open { local_room, .. } => Some(local_room),
            LinkPhase::Connecting | LinkPhase::Closing => None,
        }
    }

    /// Room `caller` (of this core) opens socket `socket` to room `party`
    /// / `room`. A party that does not exist, or an id that is not valid,
    /// closes it at once, in an event of its own.
    pub(super) fn open_link(
        &mut self,
        caller: &Arc<RoomKey>,
        socket: u32,
        (party, room): (String, String),
        head: RequestHead,
    ) {
        let Some(host) = self.hosts.get_mut(caller) else { return };
        let generation = host.generation;
        self.next_gen = self.next_gen.wrapping_add(1);
        let target = Arc::new(RoomKey::new(party, room));
        let phase = LinkPhase::Connecting;
        let link = Link { gen: self.next_gen, caller: caller.clone(), generation, socket, target, phase };
        let index = self.links.insert(link) as u32;
        host.links.push((socket, index));
        let conn = self.link_ref(index);
        let own = usize::from(self.index);
        let target = &self.links[index as usize].target;
        let refusal =
            if !self.shared.kinds.contains_key(&*target.party) || target.party.as_ref() == crate::inspector::PARTY {
                Some(format!("no party {:?}", target.party))
            } else if target.id.is_empty() || target.id.len() > self.shared.limits.max_room_id_bytes {
                Some("the room id is empty or too long".to_owned())
            } else {
                None
            };
        if let Some(reason) = refusal {
            return self.send_to(own, CoreMsg::Refused { conn, reason: reason.into_boxed_str() });
        }
        let joining = Box::new(Joining {
            id: super::ws_path::random_id(),
            uri: head.target.clone(),
            head,
            protocols: Vec::new(),
            deflate: false,
        });
        let target = target.clone();
        self.send_to_owner(target, |room| CoreMsg::Connect { conn, room, joining });
    }

    /// The link of `caller`'s socket `socket`, if it has one.
    fn link_of(&self, caller: &Arc<RoomKey>, socket: u32) -> Option<u32> {
        let host = self.hosts.get(caller)?;
        host.links.iter().find(|&&(s, _)| s == socket).map(|&(_, index)| index)
    }

    /// A message on `caller`'s socket `socket`, to the room at its other end.
    pub(super) fn link_send(&mut self, caller: &Arc<RoomKey>, socket: u32, data: Payload) {
        let Some(index) = self.link_of(caller, socket) else { return };
        let link = &self.links[index as usize];
        let LinkPhase::Open { member, .. } = link.phase else { return };
        let (conn, target) = (self.link_ref(index), link.target.clone());
        self.send_to_owner(target, |room| CoreMsg::Message { conn, room, member, data });
    }

    /// `caller` closes its socket `socket`: the other room hears it now,
    /// the caller in an event of its own.
    pub(super) fn link_close(&mut self, caller: &Arc<RoomKey>, socket: u32, code: u16, reason: String) {
        let Some(index) = self.link_of(caller, socket) else { return };
        let conn = self.link_ref(index);
        self.leave_link(index, code, &reason);
        let own = usize::from(self.index);
        self.send_to(own, CoreMsg::LinkClosed { conn, code, reason: reason.into_boxed_str() });
    }

    /// Takes link `index` out of the room it is a member of, which hears
    /// `code` and `reason` as its `on_close`; it stays, closing, until its
    /// `Close` reaches the caller (an admission on its way finds it closed).
    fn leave_link(&mut self, index: u32, code: u16, reason: &str) {
        let conn = self.link_ref(index);
        let link = &mut self.links[index as usize];
        let phase = std::mem::replace(&mut link.phase, LinkPhase::Closing);
        let LinkPhase::Open { member, local_room, member_key } = phase else { return };
        let target = link.target.clone();
        self.local_rooms[local_room as usize].index.leave(MemberKey(member_key), &mut self.tag_names);
        self.forget_room_if_unused(local_room);
        let close = Box::new(CloseInfo { code, reason: reason.to_owned(), error: None });
        self.send_to_owner(target, |room| CoreMsg::Closed { conn, room, member, close });
    }

    /// The other room admitted link `conn`: it joins that room's members on
    /// this core, and the caller hears `Open`.
    pub(super) fn on_link_accepted(&mut self, conn: ConnRef, room: Arc<RoomKey>, member: u32, tags: &[Box<str>]) {
        let Some(link) = self.link(conn).filter(|link| link.phase == LinkPhase::Connecting) else {
            // The caller is gone (or closed the socket) meanwhile: the room
            // that admitted it must hear that it is gone.
            let close = Box::new(CloseInfo { code: 1006, reason: String::new(), error: None });
            return self.send_to_owner(room, |room| CoreMsg::Closed { conn, room, member, close });
        };
        let (caller, generation, socket) = (link.caller.clone(), link.generation, link.socket);
        let local_room = self.local_room_for(room);
        let member_key = self.local_rooms[local_room as usize].index.join(conn.slot, tags, &mut self.tag_names).0;
        self.links[(conn.slot & !LINK_BIT) as usize].phase = LinkPhase::Open { member, local_room, member_key };
        self.socket_event(&caller, generation, socket, RoomSocketEvent::Open);
    }

    /// The other room refused link `conn` (or it could not be made).
    pub(super) fn on_link_refused(&mut self, conn: ConnRef, reason: &str) {
        if self.link(conn).is_some_and(|link| link.phase == LinkPhase::Connecting) {
            self.end_link(conn, 1011, reason);
        }
    }

    /// The other room's `send` to link `conn`: it goes the way of the
    /// broadcasts' frames for it, through this core's own outbox, so that
    /// the caller hears them all in the order they came.
    pub(super) fn on_link_send(&mut self, conn: ConnRef, frame: Bytes) {
        let own = usize::from(self.index);
        self.send_to(own, CoreMsg::LinkFrame { conn, frame });
    }

    /// A frame for link `conn` (the other room's `send`, or a broadcast):
    /// the caller hears its message.
    pub(super) fn on_link_frame(&mut self, conn: ConnRef, frame: &Bytes) {
        let Some(link) = self.link(conn).filter(|link| matches!(link.phase, LinkPhase::Open { .. })) else { return };
        let (caller, generation, socket) = (link.caller.clone(), link.generation, link.socket);
        let Some((text, payload)) = crate::ws::server_frame_payload(frame) else { return };
        let message = if text {
            match std::str::from_utf8(payload) {
                Ok(text) => Message::Text(text),
                Err(_) => return,
            }
        } else {
            Message::Binary(payload)
        };
        self.socket_event(&caller, generation, socket, RoomSocketEvent::Message(message));
    }

    /// The other room closes link `conn`: it leaves the room (which hears
    /// its own close come back, as from a client), and the caller hears
    /// the close after the frames that came before it.
    pub(super) fn on_link_close(&mut self, conn: ConnRef, code: u16, reason: Box<str>) {
        if !self.link(conn).is_some_and(|link| matches!(link.phase, LinkPhase::Open { .. })) {
            return;
        }
        self.leave_link(conn.slot & !LINK_BIT, code, &reason);
        let own = usize::from(self.index);
        self.send_to(own, CoreMsg::LinkClosed { conn, code, reason });
    }

    /// Link `conn` is closed, from either end: the caller hears it, and
    /// the link is gone.
    pub(super) fn on_link_closed(&mut self, conn: ConnRef, code: u16, reason: &str) {
        if self.link(conn).is_some() {
            self.end_link(conn, code, reason);
        }
    }

    /// The caller hears the close, and the link is freed.
    fn end_link(&mut self, conn: ConnRef, code: u16, reason: &str) {
        let link = self.links.remove((conn.slot & !LINK_BIT) as usize);
        self.socket_event(&link.caller, link.generation, link.socket, RoomSocketEvent::Close { code, reason });
    }

    /// The room `caller` is gone (it failed): its sockets close, and the
    /// rooms they were members of hear `code`.
    pub(super) fn drop_links(&mut self, links: &[(u32, u32)], code: u16, reason: &str) {
        for &(_, index) in links {
            self.leave_link(index, code, reason);
            self.links.remove(index as usize);
        }
    }

    /// Queues a broadcast's frame for the links the last fan-out of local
    /// room `lr` reached (those still open there, and not left out), each
    /// delivered to its room as a message of its own. Returns how many.
    pub(super) fn reach_links(&mut self, lr: u32, broadcast: &Broadcast) -> u64 {
        let mut hits = std::mem::take(&mut self.link_hits);
        let own = usize::from(self.index);
        let mut reached = 0;
        for slot in hits.drain(..) {
            let Some(link) = self.links.get((slot & !LINK_BIT) as usize) else { continue };
            if !matches!(link.phase, LinkPhase::Open { local_room, .. } if local_room == lr) {
                continue;
            }
            let conn = ConnRef { core: self.index, slot, gen: link.gen };
            if broadcast.without.contains(&conn) {
                continue;
            }
            self.send_to(own, CoreMsg::LinkFrame { conn, frame: broadcast.frame.clone() });
            reached += 1;
        }
        self.link_hits = hits;
        reached
    }

    /// Delivers an event of socket `socket` to its room, if it is still the
    /// host that opened it (woken, if it opened the socket asleep).
    fn socket_event(&mut self, caller: &Arc<RoomKey>, generation: u64, socket: u32, event: RoomSocketEvent<'_>) {
        if self.hosts.get(caller).is_none_or(|host| host.generation != generation) {
            return;
        }
        self.counters.room_events += 1;
        match self.host(caller).and_then(|host| host.socket_event(socket, event)) {
            Ok(()) => self.after_event(caller, None),
            Err(failed) => self.fail_room(caller, &failed),
        }
    }
}
