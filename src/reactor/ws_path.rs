//! A WebSocket from its upgrade to its last frame: the party's pre-connect
//! hook, the owner's admission (the 101, or a refusal as a close), frames
//! decoded into messages for the room, pings, closes and protocol errors,
//! and the member leaving its room.

use super::conn::{live, HttpState, Phase};
use super::http_path::empty_head;
use super::{overloaded, State, HOOK_FAILED, OVERLOADED};
use crate::config::CompressionMode;
use crate::core_msg::{CloseInfo, CoreMsg, Joining, Payload};
use crate::http::{self, RequestHead, Response};
use crate::inspector;
use crate::party::{ConnRef, Lobby};
use crate::room::guard;
use crate::room_key::RoomKey;
use crate::route::{self, Route};
use crate::ws::{self, WsEvent};
use bytes::Bytes;
use dormouse_tags::MemberKey;
use std::sync::Arc;

/// A fresh connection id for a client that sent no `_pk`: a random (version
/// 4) UUID, as PartyKit generates.
pub(super) fn random_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl State {
    pub(super) fn on_upgrade(&mut self, slot: u32, mut head: RequestHead, upgrade: http::Upgrade) {
        let (party, room_raw) = match route::route(head.path()) {
            // The inspector's feed is reached only by its own path, where
            // its cookie goes (and no room sees it).
            Route::Room { party, .. } if party == inspector::PARTY => {
                return self.reject(slot, Response::text(404, format!("Party {party} not found")));
            }
            Route::Room { party, room_raw, .. } => (party.to_owned(), room_raw.to_owned()),
            Route::Other if head.path() == inspector::LIVE_PATH && self.shared.inspector.is_some() => {
                (inspector::PARTY.to_owned(), inspector::ROOM.to_owned())
            }
            Route::Other => return self.reject(slot, Response::text(404, "Not found")),
        };
        let (kind, room) = match self.resolve(&party, &room_raw) {
            Ok(found) => found,
            Err(response) => return self.reject(slot, response),
        };
        let id = match route::query_param(head.query(), "_pk") {
            Some(pk) if !pk.is_empty() && pk.len() <= self.shared.limits.max_conn_id_bytes => pk.into_owned(),
            Some(_) => return self.reject(slot, Response::text(400, "connection id (_pk) is empty or too long")),
            None => random_id(),
        };
        if &*room.party == inspector::PARTY
            && !self.shared.inspector.as_ref().is_some_and(|inspector| inspector.authorized(&head))
        {
            return self.reject(slot, Response::text(401, "the inspector token is required"));
        }
        let config = self.shared.party_config(&room.party);
        if let Err(response) = crate::cors::ws_origin_allowed(config.ws_origins.as_deref(), &head) {
            return self.reject(slot, response);
        }
        let lobby = Lobby { party: &room.party, room: &room.id };
        match guard(|| kind.before_connect(&mut head, &lobby)) {
            Ok(Ok(())) => {}
            Ok(Err(rejection)) => return self.reject(slot, rejection.into_response()),
            Err(_) => {
                tracing::error!(party = %room.party, room = %room.id, "on_before_connect panicked");
                return self.reject(slot, Response::text(500, HOOK_FAILED));
            }
        }
        if self.overloaded() {
            self.counters.events_shed += 1;
            return self.reject(slot, overloaded());
        }
        let compression = config.compression;
        let deflate = upgrade.deflate.filter(|_| compression == CompressionMode::On);
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::AwaitConnect;
        conn.deadline_ms = u64::MAX;
        let uri = head.target.clone();
        conn.http = Some(Box::new(HttpState {
            head: empty_head(),
            body: None,
            keep_alive: false,
            ws_key: Some(upgrade.key),
            ws_deflate: deflate,
            publish: None,
            cors: Vec::new(),
        }));
        let protocols = upgrade.protocols;
        let joining = Box::new(Joining { id, uri, head, protocols, deflate: deflate.is_some() });
        let conn = self.conn_ref(slot);
        self.send_to_owner(room, |room| CoreMsg::Connect { conn, room, joining });
    }

    pub(super) fn on_accepted(
        &mut self,
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        protocol: Option<Box<str>>,
        tags: &[Box<str>],
    ) {
        let Some(slot) = self.current(conn, Phase::AwaitConnect) else {
            // The socket went away while the room admitted it: the room must
            // hear that it is gone.
            let close = Box::new(CloseInfo { code: 1006, reason: String::new(), error: None });
            return self.send_to_owner(room, |room| CoreMsg::Closed { conn, room, member, close });
        };
        let http = self.conns[slot as usize].http.take().expect("an upgrade keeps its state");
        let key = http.ws_key.expect("an upgrade keeps its key");
        let extensions: Vec<(String, String)> = http
            .ws_deflate
            .map(|value| ("sec-websocket-extensions".to_owned(), value.to_owned()))
            .into_iter()
            .collect();
        self.enqueue(slot, Bytes::from(http::switching_protocols(&key, protocol.as_deref(), &extensions)));
        let local_room = self.local_room_for(room);
        let key = self.local_rooms[local_room as usize].index.join(slot, tags, &mut self.tag_names);
        let conn = &mut self.conns[slot as usize];
        conn.local_room = local_room;
        conn.member_key = key.0;
        conn.member = member;
        conn.joined = true;
        conn.deflate = http.ws_deflate.is_some();
        conn.phase = Phase::Open;
        // Frames a client sent before the 101 are processed now.
        self.on_data(slot, None);
    }

    /// Decodes frames from `buf`; returns the bytes used and whether the
    /// peer broke the protocol (it has then been answered).
    pub(super) fn on_frames(&mut self, slot: u32, buf: &mut [u8]) -> (usize, bool) {
        let conn = &mut self.conns[slot as usize];
        let mut events = std::mem::take(&mut self.ws_events);
        let inflater = conn.deflate.then_some(&mut self.inflater);
        let (used, result) = conn.decoder.decode(buf, &self.ws_limits, inflater, &mut |event| events.push(event));
        for event in events.drain(..) {
            self.on_ws_event(slot, event);
        }
        self.ws_events = events;
        match result {
            Ok(()) => (used, false),
            Err(error) => {
                self.protocol_error(slot, &error);
                (used, true)
            }
        }
    }

    pub(super) fn on_ws_event(&mut self, slot: u32, event: WsEvent) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        let phase = conn.phase;
        match (phase, event) {
            (Phase::Open, WsEvent::Text(text)) if self.within_rate(slot, text.len()) => {
                self.forward_to_room(slot, Payload::Text(text))
            }
            (Phase::Open, WsEvent::Binary(data)) if self.within_rate(slot, data.len()) => {
                self.forward_to_room(slot, Payload::Binary(data))
            }
            (Phase::Open, WsEvent::Ping(data)) if self.within_rate(slot, data.len()) => {
                self.enqueue(slot, ws::pong_frame(&data))
            }
            (Phase::Closing, WsEvent::Ping(data)) => self.enqueue(slot, ws::pong_frame(&data)),
            (Phase::Open, WsEvent::Close { code, reason }) => {
                // Echo the peer's code (RFC 6455 §5.5.1), then close.
                self.enqueue(slot, ws::close_frame(code, ""));
                self.leave(slot, code.unwrap_or(1005), &reason, None);
                self.drain_then_close(slot);
            }
            (Phase::Closing, WsEvent::Close { code, reason }) => {
                self.leave(slot, code.unwrap_or(1005), &reason, None);
                self.drain_then_close(slot);
            }
            _ => {}
        }
    }

    pub(super) fn forward_to_room(&mut self, slot: u32, data: Payload) {
        self.counters.messages_in += 1;
        let conn = &self.conns[slot as usize];
        let member = conn.member;
        let room = self.local_rooms[conn.local_room as usize].key.clone();
        if self.overloaded() {
            self.counters.events_shed += 1;
            self.enqueue(slot, ws::close_frame(Some(1013), OVERLOADED));
            return self.start_closing(slot, 1013);
        }
        let conn = self.conn_ref(slot);
        self.send_to_owner(room, |room| CoreMsg::Message { conn, room, member, data });
    }

    /// The peer broke the protocol: it gets a close with the code and reason.
    /// A broken close frame is still its close, so TCP is closed once ours is
    /// written (RFC 6455 §7.1.1); otherwise its close is awaited while the
    /// decoder discards whatever else it sends (the rest of an oversized
    /// frame, say), so that it reads our close instead of a reset.
    pub(super) fn protocol_error(&mut self, slot: u32, error: &ws::WsError) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        if conn.phase != Phase::Open {
            // Past our close (only an unframeable header gets here): cut it.
            return self.abort(slot);
        }
        let code = error.close_code();
        let reason = error.to_string();
        self.enqueue(slot, ws::close_frame(Some(code), &reason));
        self.leave(slot, code, &reason, Some(&reason));
        if error.is_in_close() {
            self.drain_then_close(slot);
        } else {
            self.start_closing(slot, code);
        }
    }

    /// We sent a close frame: wait for the peer's, at most the close timeout.
    pub(super) fn start_closing(&mut self, slot: u32, code: u16) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        conn.phase = Phase::Closing;
        conn.close_code = code;
        let deadline = self.now_ms + self.shared.limits.close_timeout_ms;
        conn.deadline_ms = deadline;
        let gen = conn.gen;
        self.close_timers.push_back((deadline, slot, gen));
    }

    /// Tells the room the connection is gone (once) and removes it from this
    /// core's member list.
    pub(super) fn leave(&mut self, slot: u32, code: u16, reason: &str, error: Option<&str>) {
        let conn = &mut self.conns[slot as usize];
        if !conn.joined {
            return;
        }
        conn.joined = false;
        let (local_room, key, member) = (conn.local_room, conn.member_key, conn.member);
        let lr = &mut self.local_rooms[local_room as usize];
        lr.index.leave(MemberKey(key), &mut self.tag_names);
        let room = lr.key.clone();
        self.forget_room_if_unused(local_room);
        let close = Box::new(CloseInfo { code, reason: reason.to_owned(), error: error.map(str::to_owned) });
        let conn = self.conn_ref(slot);
        self.send_to_owner(room, |room| CoreMsg::Closed { conn, room, member, close });
    }

    /// The room refused the connection: it is upgraded, then closed with
    /// 1011 and the reason (a browser shows a close, not a failed upgrade).
    pub(super) fn on_refused(&mut self, conn: ConnRef, reason: &str) {
        let Some(slot) = self.current(conn, Phase::AwaitConnect) else { return };
        let key = self.conns[slot as usize].http.take().and_then(|h| h.ws_key).expect("an upgrade keeps its key");
        self.enqueue(slot, Bytes::from(http::switching_protocols(&key, None, &[])));
        self.conns[slot as usize].phase = Phase::Open;
        self.enqueue(slot, ws::close_frame(Some(1011), reason));
        self.start_closing(slot, 1011);
    }

    /// A room's `send` to one member.
    pub(super) fn on_send(&mut self, conn: ConnRef, frame: Bytes) {
        if let Some(slot) = self.current(conn, Phase::Open) {
            self.counters.frames_out += 1;
            self.enqueue(slot, frame);
        }
    }

    /// A room's `close` of one member.
    pub(super) fn on_close(&mut self, conn: ConnRef, code: u16, reason: &str) {
        if let Some(slot) = self.current(conn, Phase::Open) {
            self.enqueue(slot, ws::close_frame(Some(code), reason));
            self.start_closing(slot, code);
        }
    }
}
