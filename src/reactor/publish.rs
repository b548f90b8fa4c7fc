//! The publish API (`POST /parties/<party>/<room>/_publish`): a bearer
//! token, one broadcast to the room's members on every core without the
//! room object, and the answer once every core has counted its members.

use super::conn::Phase;
use super::{overloaded, State};
use crate::core_msg::{Broadcast, CoreMsg};
use crate::http::{constant_time_eq, Response};
use crate::party::{ConnRef, Message, Request};
use crate::route;
use smallvec::SmallVec;
use std::sync::Arc;

impl State {
    /// The publish API: broadcasts the body to the room's members on every
    /// core, filtered by `?tag=`, without reaching the room object. The
    /// response waits for every core's count.
    pub(super) fn publish(
        &mut self,
        slot: u32,
        party: &str,
        room_raw: &str,
        request: &Request,
    ) -> Result<(), Response> {
        let Some(auth) = &self.shared.publish_auth else { return Err(Response::text(404, "Not found")) };
        if request.method() != "POST" {
            return Err(Response::text(405, "The publish API takes POST").with_header("Allow", "POST"));
        }
        let given = request.header("authorization").unwrap_or("");
        if !constant_time_eq(given.as_bytes(), auth.as_bytes()) {
            let response = Response::text(401, "A valid bearer token is required to publish");
            return Err(response.with_header("WWW-Authenticate", "Bearer"));
        }
        let (_, room) = self.resolve(party, room_raw)?;
        if self.overloaded() {
            self.counters.events_shed += 1;
            return Err(overloaded());
        }
        let binary =
            request.header("content-type").is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"));
        let message = if binary {
            Message::Binary(&request.body)
        } else {
            let text = std::str::from_utf8(&request.body)
                .map_err(|_| Response::text(400, "The body is not UTF-8; send binary as application/octet-stream"))?;
            Message::Text(text)
        };
        let frame = message.to_frame();
        // This core cannot tell whether any member negotiated deflate, so a
        // message that qualifies is compressed once here in case.
        let deflated = message.to_deflated_frame(&self.shared.party_config(&room.party));
        self.counters.broadcasts_compressed += u64::from(deflated.is_some());
        let tag = route::query_param(request.query(), "tag").map(|t| Arc::<str>::from(&*t));
        let conn = self.conn_ref(slot);
        let broadcast = Arc::new(Broadcast { room, frame, deflated, tag, without: SmallVec::new(), reply: Some(conn) });
        // In a cluster the gateway takes it to the other nodes and answers
        // once, with their sum.
        let others = usize::from(self.shared.gateway.is_some());
        let http = self.conns[slot as usize].http.as_mut().expect("a request in progress has its state");
        http.publish = Some((self.shared.cores + others, 0));
        self.counters.publishes += 1;
        for core in 0..self.shared.cores {
            self.send_to(core, CoreMsg::Broadcast(broadcast.clone()));
        }
        if others > 0 {
            self.gateway_out.push_back(crate::cluster::FromCore::Publish(broadcast));
        }
        Ok(())
    }

    /// One core's count for a publish: the last one answers the request.
    pub(super) fn on_published(&mut self, conn: ConnRef, delivered: u64) {
        let Some(slot) = self.current(conn, Phase::AwaitResponse) else { return };
        let http = self.conns[slot as usize].http.as_mut().expect("a request in progress has its state");
        let Some((waiting, total)) = http.publish.as_mut().filter(|(waiting, _)| *waiting > 0) else { return };
        *waiting -= 1;
        *total += delivered;
        if *waiting == 0 {
            let (total, keep_alive) = (*total, http.keep_alive);
            let response = Response::json(200, format!("{{\"delivered\":{total}}}"));
            self.respond(slot, &response, keep_alive);
            self.on_data(slot, None);
        }
    }

    pub(super) fn reply_published(&mut self, broadcast: &Broadcast, delivered: u64) {
        if let Some(conn) = broadcast.reply {
            self.send_to(usize::from(conn.core), CoreMsg::Published { conn, delivered });
        }
    }
}
