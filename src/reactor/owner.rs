//! What the owner core of a room does with events for it: connects,
//! messages and closes (tried asleep first for a hibernating room),
//! requests from sockets and other rooms, room responses; the effects a
//! room asks for, turned into messages; and a failed room reset.

use super::{rooms_full, State, STORAGE_BEHIND};
use crate::core_msg::{Broadcast, CloseInfo, CoreMsg, FetchTicket, Joining, Payload, ReplyTo};
use crate::http::Response;
use crate::outbound::FetchError;
use crate::party::{ConnRef, Effect, Message, Request};
use crate::room::{Admission, RoomFailed};
use crate::room_key::RoomKey;
use smallvec::SmallVec;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a socket the room does not know (in a cluster) is closed.
const NOT_A_MEMBER: &str = "reconnect: the room no longer has this connection";

impl State {
    /// A socket's upgrade to admit: the room is made or woken if need be,
    /// and its answer goes back once the event's writes commit.
    pub(super) fn on_connect(&mut self, conn: ConnRef, room: Arc<RoomKey>, joining: Joining) {
        if !self.admits_room(&room) {
            self.counters.events_shed += 1;
            return self.send_to(usize::from(conn.core), CoreMsg::Respond { conn, response: rooms_full() });
        }
        self.counters.room_events += 1;
        let reply = match self.host(&room).and_then(|host| host.connect(conn, joining)) {
            Ok(Admission::Accepted { member, protocol, tags }) => CoreMsg::Accepted {
                conn,
                room: room.clone(),
                member,
                protocol: protocol.map(String::into_boxed_str),
                tags,
            },
            Ok(Admission::Refused { reason }) => CoreMsg::Refused { conn, reason: reason.into_boxed_str() },
            Err(failed) => {
                self.fail_room(&room, &failed);
                CoreMsg::Refused { conn, reason: failed.reason().into() }
            }
        };
        self.after_event(&room, Some(reply));
    }

    /// A member's message: to the room asleep if its party takes it so,
    /// else to the room (woken if it hibernates).
    pub(super) fn on_message(&mut self, conn: ConnRef, room: &Arc<RoomKey>, member: u32, data: &Payload) {
        if self.storage_behind(room) {
            // What the sender sent before stays and commits in order;
            // this message was never taken, and the sender is told.
            self.counters.events_shed += 1;
            let reason = STORAGE_BEHIND.into();
            return self.send_to(usize::from(conn.core), CoreMsg::Close { conn, code: 1013, reason });
        }
        // In a cluster a socket can outlive its membership unheard: the
        // close its room sent when it stopped (a lease lost) went over NATS,
        // at most once. Its next message tells it to reconnect.
        if self.routes.is_some() && !self.hosts.get(room).is_some_and(|host| host.is_current(conn, member)) {
            let reason = NOT_A_MEMBER.into();
            return self.send_to(usize::from(conn.core), CoreMsg::Close { conn, code: 1012, reason });
        }
        let message = match data {
            Payload::Text(text) => Message::Text(text.as_str()),
            Payload::Binary(data) => Message::Binary(data),
        };
        if let Some(host) = self.hosts.get_mut(room).filter(|host| !host.is_awake()) {
            match host.message_asleep(conn, member, message) {
                Ok(false) => {}
                Ok(true) => {
                    self.counters.messages_asleep += 1;
                    return self.after_event(room, None);
                }
                Err(failed) => return self.fail_room(room, &failed),
            }
        }
        let Some(host) = self.existing_host(room) else { return };
        let outcome = host.and_then(|host| host.message(conn, member, message));
        self.counters.room_events += 1;
        match outcome {
            Ok(()) => self.after_event(room, None),
            Err(failed) => self.fail_room(room, &failed),
        }
    }

    /// A member's socket is gone: the room hears it (asleep if its party
    /// takes it so).
    pub(super) fn on_closed(&mut self, conn: ConnRef, room: &Arc<RoomKey>, member: u32, close: &CloseInfo) {
        if let Some(host) = self.hosts.get_mut(room).filter(|host| !host.is_awake() && close.error.is_none()) {
            match host.closed_asleep(conn, member, close.code, &close.reason) {
                Ok(false) => {}
                Ok(true) => {
                    self.after_event(room, None);
                    return self.forget_if_on_disk(room);
                }
                Err(failed) => return self.fail_room(room, &failed),
            }
        }
        let Some(host) = self.existing_host(room) else { return };
        let outcome =
            host.and_then(|host| host.closed(conn, member, close.code, &close.reason, close.error.as_deref()));
        self.counters.room_events += 1;
        match outcome {
            Ok(()) => self.after_event(room, None),
            Err(failed) => self.fail_room(room, &failed),
        }
    }

    /// The answer to a request this core's room `room` made of another.
    pub(super) fn on_room_response(&mut self, room: &Arc<RoomKey>, id: u32, response: Response) {
        // The caller stays in memory while it waits; gone, it failed since.
        let Some(host) = self.hosts.get_mut(room).filter(|host| host.is_awake()) else { return };
        self.counters.room_events += 1;
        match host.room_response(id, response) {
            Ok(()) => self.after_event(room, None),
            Err(failed) => self.fail_room(room, &failed),
        }
    }

    /// The outcome of an outbound request a room of this core made.
    pub(super) fn on_fetched(&mut self, ticket: &FetchTicket, outcome: Result<Response, FetchError>) {
        self.fetches_in_flight = self.fetches_in_flight.saturating_sub(1);
        // The room stays in memory while it waits; gone or made anew, the
        // one that asked failed since.
        let Some(host) =
            self.hosts.get_mut(&ticket.room).filter(|host| host.is_awake() && host.generation == ticket.generation)
        else {
            return;
        };
        self.counters.room_events += 1;
        match host.fetch_response(ticket.id, outcome) {
            Ok(()) => self.after_event(&ticket.room, None),
            Err(failed) => self.fail_room(&ticket.room, &failed),
        }
    }

    /// An HTTP request to a room, from a socket or from another room.
    pub(super) fn on_room_request(&mut self, reply: ReplyTo, room: Arc<RoomKey>, request: &Request) {
        if self.storage_behind(&room) {
            self.counters.events_shed += 1;
            let response = Response::text(503, STORAGE_BEHIND).with_header("retry-after", "1");
            return self.send_reply(reply.message(Box::new(response)));
        }
        if !self.admits_room(&room) {
            self.counters.events_shed += 1;
            return self.send_reply(reply.message(rooms_full()));
        }
        self.counters.room_events += 1;
        let response = match self.host(&room).and_then(|host| host.request(request)) {
            Ok(response) => response,
            Err(failed) => {
                self.fail_room(&room, &failed);
                Response::text(500, failed.reason())
            }
        };
        // A room that answers later keeps where the answer goes.
        if let Some(host) = self.hosts.get_mut(&room) {
            if let Some(token) = host.room.deferred.take() {
                host.deferred.push((token, reply));
                return self.after_event(&room, None);
            }
        }
        self.after_event(&room, Some(reply.message(Box::new(response))));
    }

    /// A party callback panicked: the room object may be half-updated, so it
    /// is dropped (with the effects of the failed event) and its connections
    /// are closed with 1011; what it owed answers is answered 500. The next
    /// event for the room starts a fresh one.
    pub(super) fn fail_room(&mut self, room: &Arc<RoomKey>, failed: &RoomFailed) {
        let reason = failed.reason();
        tracing::error!(party = %room.party, room = %room.id, %reason, "the room was reset");
        if let Some(inspector) = &self.shared.inspector {
            inspector.room_failed(super::rooms::wall_ms(), &room.party, &room.id, &reason);
        }
        self.drop_room(room, 500, 1011, &reason);
    }

    /// Stops a room that may not run here any more (in a cluster, its
    /// lease lapsed): its members are closed with `code`, so they
    /// reconnect, and what it owed answers is answered 503.
    pub(super) fn stop_room(&mut self, room: &Arc<RoomKey>, code: u16, reason: &str) {
        if self.hosts.contains_key(room) {
            tracing::info!(party = %room.party, room = %room.id, %reason, "the room stops on this node");
            self.drop_room(room, 503, code, reason);
        }
    }

    /// Drops a room's host: its waiting requests get `status`, its members
    /// and its sockets to other rooms close with `code`.
    fn drop_room(&mut self, room: &Arc<RoomKey>, status: u16, code: u16, reason: &str) {
        let Some(mut host) = self.hosts.remove(room) else { return };
        for (_, reply) in host.deferred.drain(..) {
            self.send_reply(reply.message(Box::new(Response::text(status, reason.to_owned()))));
        }
        if host.is_awake() {
            self.stats().rooms_resident.fetch_sub(1, Ordering::Relaxed);
        }
        for conn in host.member_conns() {
            self.send_to(usize::from(conn.core), CoreMsg::Close { conn, code, reason: reason.into() });
        }
        // Its sockets to other rooms go with it.
        self.drop_links(&host.links, code, reason);
    }

    /// Carries out what the room asked for, draining `effects`.
    pub(super) fn dispatch_effects(&mut self, room: &Arc<RoomKey>, effects: &mut Vec<Effect>) {
        let Some(host) = self.hosts.get_mut(room) else {
            effects.clear();
            return;
        };
        let generation = host.generation;
        let cores_with_members: SmallVec<[usize; 8]> =
            host.room.members_per_core.iter().enumerate().filter(|(_, n)| n.get() > 0).map(|(core, _)| core).collect();
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, frame } => self.send_to(usize::from(to.core), CoreMsg::Send { conn: to, frame }),
                Effect::Close { to, code, reason } => {
                    let reason = reason.into_boxed_str();
                    self.send_to(usize::from(to.core), CoreMsg::Close { conn: to, code, reason });
                }
                Effect::RoomRequest { id, party, room: target, request } => {
                    let answer = |status: u16, text: String| CoreMsg::RoomResponse {
                        room: room.clone(),
                        id,
                        response: Box::new(Response::text(status, text)),
                    };
                    if !self.shared.kinds.contains_key(&party) {
                        let own = usize::from(self.index);
                        self.send_to(own, answer(404, format!("no party {party:?}")));
                    } else if target.is_empty() || target.len() > self.shared.limits.max_room_id_bytes {
                        let own = usize::from(self.index);
                        self.send_to(own, answer(400, "the room id is empty or too long".to_owned()));
                    } else {
                        let from = room.clone();
                        let key = Arc::new(RoomKey::new(party, target));
                        self.send_to_owner(key, |room| CoreMsg::RoomRequest { from, id, room, request });
                    }
                }
                Effect::Fetch { id, request } => {
                    let ticket = Box::new(FetchTicket { core: self.index, room: room.clone(), generation, id });
                    self.fetches_in_flight += 1;
                    let refused = if self.fetches_in_flight > self.shared.limits.max_fetches_per_core {
                        Some(ticket)
                    } else {
                        self.shared.outbound.submit(ticket, request).err()
                    };
                    if let Some(ticket) = refused {
                        let max = self.shared.limits.max_fetches_per_core;
                        let error = FetchError(format!("{max} outbound requests are already in flight on this core"));
                        let own = usize::from(self.index);
                        self.send_to(own, CoreMsg::Fetched { ticket, outcome: Box::new(Err(error)) });
                    }
                }
                Effect::SocketOpen { socket, party, room: target, head } => {
                    self.open_link(room, socket, (party, target), *head);
                }
                Effect::SocketSend { socket, data } => self.link_send(room, socket, data),
                Effect::SocketClose { socket, code, reason } => self.link_close(room, socket, code, reason),
                Effect::Reply { token, response } => {
                    let Some(host) = self.hosts.get_mut(room) else { continue };
                    let Some(at) = host.deferred.iter().position(|(t, _)| *t == token) else { continue };
                    let (_, reply) = host.deferred.swap_remove(at);
                    self.send_reply(reply.message(response));
                }
                Effect::Broadcast { frame, deflated, tag, without } => {
                    self.counters.broadcasts_compressed += u64::from(deflated.is_some());
                    let room = room.clone();
                    let broadcast = Arc::new(Broadcast { room, frame, deflated, tag, without, reply: None });
                    for &core in &cores_with_members {
                        self.send_to(core, CoreMsg::Broadcast(broadcast.clone()));
                    }
                }
            }
        }
    }
}
