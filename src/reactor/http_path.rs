//! What an HTTP request's bytes become: a head and a body read, then a
//! response from `/metrics`, the `serve` folder or the fetch handler, a
//! request for a room's owner (after the party's pre-request hook), or a
//! publish; and the response written back (keep-alive or close).

use super::conn::{live, HttpState, Phase};
use super::{overloaded, State, HOOK_FAILED};
use crate::config::CorsOption;
use crate::core_msg::CoreMsg;
use crate::cors;
use crate::http::{self, BodyDecoder, BodyFraming, HttpError, RequestHead, Response};
use crate::kind::PartyKind;
use crate::party::{ConnRef, Lobby, Request};
use crate::rate_limit::IpAction;
use crate::room::guard;
use crate::room_key::RoomKey;
use crate::route::{self, Route};
use bytes::Bytes;
use std::sync::Arc;

pub(super) fn empty_head() -> RequestHead {
    RequestHead { method: String::new(), target: String::new(), minor_version: 1, headers: Vec::new() }
}

impl State {
    pub(super) fn on_head(&mut self, slot: u32, head: RequestHead, framing: BodyFraming) {
        let upgrade = match http::parse_upgrade(&head) {
            Ok(upgrade) => upgrade,
            Err(e) => return self.http_error(slot, &e),
        };
        let action = if upgrade.is_some() { IpAction::Connect } else { IpAction::Request };
        if !self.ip_admitted(slot, &head, action) {
            return;
        }
        let keep_alive = head.keep_alive();
        let conn = &mut self.conns[slot as usize];
        if let Some(upgrade) = upgrade {
            if framing != BodyFraming::None {
                return self.http_error(slot, &HttpError::Malformed("an upgrade request has no body".into()));
            }
            return self.on_upgrade(slot, head, upgrade);
        }
        let body = match framing {
            BodyFraming::None => None,
            framing => Some(BodyDecoder::new(framing, self.shared.limits.max_body_bytes)),
        };
        let has_body = body.is_some();
        conn.http = Some(Box::new(HttpState {
            head,
            body,
            keep_alive,
            ws_key: None,
            ws_deflate: None,
            publish: None,
            cors: Vec::new(),
        }));
        if has_body {
            conn.phase = Phase::Body;
        } else {
            self.on_request(slot);
        }
    }

    /// A complete HTTP request: to a room, to the fetch handler, or 404.
    pub(super) fn on_request(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let mut http = conn.http.take().expect("a complete request has its head");
        let body = http.body.as_mut().map(|b| b.take_body()).unwrap_or_default();
        let keep_alive = http.keep_alive;
        let mut request = Request { head: std::mem::replace(&mut http.head, empty_head()), body };
        conn.http = Some(http);
        conn.phase = Phase::AwaitResponse;
        match route::route(request.head.path()) {
            Route::Other => {
                let found =
                    self.shared.static_files.as_ref().and_then(|files| files.answer(request.method(), request.path()));
                let path = request.head.path();
                let inspector =
                    self.shared.inspector.as_ref().filter(|_| path == "/_dormouse" || path.starts_with("/_dormouse/"));
                let response = if let Some(inspector) = inspector {
                    match inspector.room_ask(&request) {
                        Some(Ok(ask)) => return self.ask_room(slot, ask, keep_alive),
                        Some(Err(refusal)) => refusal,
                        None => inspector.respond(&request),
                    }
                } else if self.shared.metrics_path.as_deref() == Some(request.head.path()) {
                    crate::metrics::respond(
                        &request,
                        &self.shared.stats,
                        self.shared.gateway.as_ref().map(|g| g.figures()),
                    )
                } else if let Some(file) = found {
                    file
                } else if let Some(fetch) = &self.shared.fetch {
                    guard(|| fetch(&request)).unwrap_or_else(|_| {
                        tracing::error!(path = request.head.path(), "the fetch handler panicked");
                        Response::text(500, HOOK_FAILED)
                    })
                } else {
                    Response::text(404, "Not found")
                };
                self.respond(slot, &response, keep_alive);
            }
            Route::Room { party, .. } if self.cors_answered(slot, party, &request.head, keep_alive) => {}
            Route::Room { party, room_raw, rest: "/_publish" } => {
                if let Err(response) = self.publish(slot, party, room_raw, &request) {
                    self.respond(slot, &response, keep_alive);
                }
            }
            Route::Room { party, room_raw, .. } => {
                let (kind, room) = match self.resolve(party, room_raw) {
                    Ok(found) => found,
                    Err(response) => return self.respond(slot, &response, keep_alive),
                };
                let lobby = Lobby { party: &room.party, room: &room.id };
                match guard(|| kind.before_request(&mut request, &lobby)) {
                    Ok(Ok(())) => {}
                    Ok(Err(rejection)) => return self.respond(slot, &rejection.into_response(), keep_alive),
                    Err(_) => {
                        tracing::error!(party = %room.party, room = %room.id, "on_before_request panicked");
                        return self.respond(slot, &Response::text(500, HOOK_FAILED), keep_alive);
                    }
                }
                if self.overloaded() {
                    self.counters.events_shed += 1;
                    return self.respond(slot, &overloaded(), keep_alive);
                }
                let conn = self.conn_ref(slot);
                self.send_to_owner(room, |room| CoreMsg::Request { conn, room, request: Box::new(request) });
            }
        }
    }

    /// Finds the party kind and decodes the room id, or says why not.
    pub(super) fn resolve(&self, party: &str, room_raw: &str) -> Result<(Arc<dyn PartyKind>, Arc<RoomKey>), Response> {
        let kind =
            self.shared.kinds.get(party).ok_or_else(|| Response::text(404, format!("Party {party} not found")))?;
        let id =
            route::decode_room(room_raw, self.shared.limits.max_room_id_bytes).map_err(|e| Response::text(400, e))?;
        Ok((kind.clone(), Arc::new(RoomKey::new(party, id))))
    }

    /// Answers an HTTP request. With keep-alive the socket goes back to
    /// reading the next head (and any pipelined bytes are processed now).
    pub(super) fn respond(&mut self, slot: u32, response: &Response, keep_alive: bool) {
        let cors = live(&mut self.conns, slot).and_then(|c| c.http.as_mut()).map(|h| std::mem::take(&mut h.cors));
        self.enqueue(slot, Bytes::from(response.encode_with(keep_alive, cors.as_deref().unwrap_or_default())));
        let Some(conn) = live(&mut self.conns, slot) else { return };
        conn.http = None;
        if keep_alive {
            conn.phase = Phase::Head;
            let deadline = self.now_ms + self.shared.limits.head_timeout_ms;
            conn.deadline_ms = deadline;
            let gen = conn.gen;
            self.head_timers.push_back((deadline, slot, gen));
        } else {
            self.drain_then_close(slot);
        }
    }

    /// Refuses a request with `response` and closes the connection.
    pub(super) fn reject(&mut self, slot: u32, response: Response) {
        self.respond(slot, &response, false);
    }

    pub(super) fn http_error(&mut self, slot: u32, error: &HttpError) {
        self.enqueue(slot, Bytes::from(http::error_response(error)));
        self.drain_then_close(slot);
    }

    /// A room's response: to a request, or to an upgrade the room's core
    /// refused before the room (no room could be made for it).
    pub(super) fn on_respond(&mut self, conn: ConnRef, response: &Response) {
        let Some(slot) = self.current(conn, Phase::AwaitResponse).or(self.current(conn, Phase::AwaitConnect)) else {
            return;
        };
        let keep_alive = self.conns[slot as usize].http.as_ref().is_some_and(|h| h.keep_alive);
        self.respond(slot, response, keep_alive);
        self.on_data(slot, None);
    }

    /// Under the party's `cors`: answers a preflight (true), or notes the
    /// headers the response to an allowed origin will carry.
    fn cors_answered(&mut self, slot: u32, party: &str, head: &RequestHead, keep_alive: bool) -> bool {
        let config = self.shared.party_config(party);
        let Some(rules) = config.cors.as_ref().and_then(CorsOption::rules) else { return false };
        if let Some(response) = cors::preflight(&rules, head) {
            self.respond(slot, &response, keep_alive);
            return true;
        }
        if let Some(http) = self.conns[slot as usize].http.as_mut() {
            http.cors = cors::response_headers(&rules, head);
        }
        false
    }
}
