//! Messages between cores on this core: queued per destination during a
//! turn, passed on at its end (or delivered here for this core's own), and
//! each arriving [`CoreMsg`] handed to its handler (the table in
//! `crate::core_msg` says who sends which).

use super::links::is_link;
use super::State;
use crate::cluster::FromCore;
use crate::core_msg::{CoreMsg, ReplyTo};
use crossbeam_channel::TrySendError;

impl State {
    /// Queues `msg` for core `core`: one of this node's, or (in a
    /// cluster) a virtual core, another node's, by way of the gateway.
    #[inline]
    pub(super) fn send_to(&mut self, core: usize, msg: CoreMsg) {
        match self.outboxes.get_mut(core) {
            Some(outbox) => outbox.push_back(msg),
            None => self.remote_out.push((core as u16, msg)),
        }
    }

    /// Whether this core is behind (its inbox was full at the start of the
    /// turn, its rooms' backlogs behind sliced broadcasts hold a channel's
    /// worth, or this turn's input for itself does) or another is (this
    /// core's outbox for it holds a channel's worth beyond its full channel).
    /// New input from this core's sockets
    /// (messages, connects, requests, publishes) is then refused, with close
    /// 1013 or 503, since whatever it causes may have to queue for the core
    /// that is behind: so outboxes stay bounded. What was taken before, and
    /// closes and replies, still go, in order.
    pub(super) fn overloaded(&self) -> bool {
        let cap = self.shared.limits.core_channel_capacity;
        self.behind
            || self.backlogged >= cap
            || self.outboxes.iter().any(|out| out.len() >= cap)
            || self.remote_out.len() >= cap
            || self.routes.as_ref().is_some_and(|r| r.pending_total >= cap)
    }

    /// Delivers messages this core sent to itself (rooms it owns for sockets
    /// it holds). Only those present at the start, so a room that keeps
    /// talking to itself cannot hold the loop.
    pub(super) fn deliver_local(&mut self) {
        let own = usize::from(self.index);
        for _ in 0..self.outboxes[own].len() {
            let Some(msg) = self.outboxes[own].pop_front() else { break };
            self.on_core_msg(msg);
        }
    }

    /// Passes queued messages to other cores and wakes them. Returns whether
    /// some could not be passed yet (a full channel).
    pub(super) fn flush_outboxes(&mut self) -> bool {
        let mut pending = false;
        for core in 0..self.outboxes.len() {
            if core == usize::from(self.index) || self.outboxes[core].is_empty() {
                continue;
            }
            let mut sent = false;
            while let Some(msg) = self.outboxes[core].pop_front() {
                match self.shared.senders[core].try_send(msg) {
                    Ok(()) => sent = true,
                    Err(TrySendError::Full(msg)) => {
                        self.outboxes[core].push_front(msg);
                        pending = true;
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.outboxes[core].clear();
                        break;
                    }
                }
            }
            if sent {
                self.shared.wake(core);
            }
        }
        if let Some(gateway) = &self.shared.gateway {
            if !self.remote_out.is_empty() {
                let batch = std::mem::take(&mut self.remote_out);
                if let Err(e) = gateway.to_gateway.try_send(FromCore::Batch(batch)) {
                    let FromCore::Batch(batch) = e.into_inner() else { unreachable!("sent a batch") };
                    self.remote_out = batch;
                    pending = true;
                }
            }
            while let Some(msg) = self.gateway_out.pop_front() {
                if let Err(e) = gateway.to_gateway.try_send(msg) {
                    self.gateway_out.push_front(e.into_inner());
                    pending = true;
                    break;
                }
            }
        }
        pending
    }

    /// Hands an arriving message to its handler; one for a local room whose
    /// sliced broadcast is still going out waits in its backlog.
    pub(super) fn on_core_msg(&mut self, msg: CoreMsg) {
        if let Some(lr) = self.busy_room_of(&msg) {
            self.backlogged += 1;
            return self.local_rooms[lr as usize].backlog.push_back(msg);
        }
        // In a cluster, only rooms whose lease this node holds run here.
        let msg = match self.routes {
            Some(_) if msg.owner_room().is_some() => match self.refuse_unleased(msg) {
                Some(msg) => msg,
                None => return,
            },
            _ => msg,
        };
        match msg {
            // From the cluster's gateway (placement.rs).
            CoreMsg::Routed { room, to } => self.on_routed(&room, to),
            CoreMsg::Unrouted { room } => self.on_unrouted(&room),
            CoreMsg::NodeGone { cores } => self.on_node_gone(&cores),
            CoreMsg::Lease { room, until_ms } => self.on_lease(&room, until_ms),
            // For rooms this core owns (owner.rs), and the store's reports.
            CoreMsg::Connect { conn, room, joining } => self.on_connect(conn, room, *joining),
            CoreMsg::Message { conn, room, member, data } => self.on_message(conn, &room, member, &data),
            CoreMsg::Closed { conn, room, member, close } => self.on_closed(conn, &room, member, &close),
            CoreMsg::Request { conn, room, request } => self.on_room_request(ReplyTo::Socket(conn), room, &request),
            CoreMsg::RoomRequest { from, id, room, request } => {
                self.on_room_request(ReplyTo::Room { room: from, id }, room, &request);
            }
            CoreMsg::RoomResponse { room, id, response } => self.on_room_response(&room, id, *response),
            CoreMsg::Fetched { ticket, outcome } => self.on_fetched(&ticket, *outcome),
            CoreMsg::Committed { room, generation, seq, error, journal } => match journal {
                Some(batch) => self.journal(room, generation, seq, error, *batch),
                None => {
                    if self.routes.is_some() {
                        // The gateway's word: the journal has it (or not).
                        self.journal_pending = self.journal_pending.saturating_sub(1);
                    }
                    self.on_committed(&room, generation, seq, error);
                }
            },
            CoreMsg::Loaded { room, alarm_ms } => self.sync_alarm(&room, alarm_ms),
            // The inspector's asks of one room (inspect.rs).
            CoreMsg::Inspect { conn, room, action } => self.on_inspect(conn, &room, *action),
            CoreMsg::InspectBacklog { conn, detail } => self.on_inspect_backlog(conn, detail),
            // For sockets this core holds (ws_path.rs, http_path.rs).
            // For rooms' sockets to other rooms (links.rs).
            CoreMsg::Accepted { conn, room, member, tags, .. } if is_link(conn) => {
                self.on_link_accepted(conn, room, member, &tags);
            }
            CoreMsg::Refused { conn, reason } if is_link(conn) => self.on_link_refused(conn, &reason),
            CoreMsg::Send { conn, frame } if is_link(conn) => self.on_link_send(conn, frame),
            CoreMsg::Close { conn, code, reason } if is_link(conn) => self.on_link_close(conn, code, reason),
            CoreMsg::LinkFrame { conn, frame } => self.on_link_frame(conn, &frame),
            CoreMsg::LinkClosed { conn, code, reason } => self.on_link_closed(conn, code, &reason),
            CoreMsg::Accepted { conn, room, member, protocol, tags } => {
                self.on_accepted(conn, room, member, protocol, &tags);
            }
            CoreMsg::Refused { conn, reason } => self.on_refused(conn, &reason),
            CoreMsg::Send { conn, frame } => self.on_send(conn, frame),
            CoreMsg::Close { conn, code, reason } => self.on_close(conn, code, &reason),
            CoreMsg::Respond { conn, response } => self.on_respond(conn, &response),
            // Broadcasts and their counts (fanout.rs, publish.rs).
            CoreMsg::Broadcast(broadcast) => self.on_broadcast(broadcast),
            CoreMsg::Published { conn, delivered } => self.on_published(conn, delivered),
        }
    }
}
