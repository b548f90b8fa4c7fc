//! Where a room runs, and the one way a message leaves for it.
//!
//! Every core computes the same owner core for a room from the hash its
//! key carries, so a room's events reach one core wherever its sockets
//! are. A socket's path, the fan-out and the room side never pick a core
//! for a room themselves: they ask [`State::send_to_owner`] (or
//! [`State::owns`]).
//!
//! In a cluster (`crate::cluster`) the room may run on another node: each
//! core keeps a route per room it has sent to (this node, or the virtual
//! core of the node that runs it), asks the gateway for a room it has none
//! for and holds that room's messages meanwhile, in order. The owner core
//! runs a room only while the gateway says its lease holds.

use super::conn::Phase;
use super::links::{is_link, LINK_BIT};
use super::State;
use crate::cluster::{FromCore, LOCAL, MOVING};
use crate::core_msg::{Bounce, CloseInfo, CoreMsg};
use crate::http::Response;
use crate::party::ConnRef;
use crate::room_key::{RoomKey, RoomMap};
use std::collections::VecDeque;
use std::sync::Arc;

/// Why a member on a node that left the cluster left its room.
const NODE_GONE: &str = "its node left the cluster";

/// Why a socket whose room ran on a node that left is closed (1012).
const ROOM_NODE_GONE: &str = "reconnect: the room's node left the cluster";
/// A request to another node's room that waited `request_timeout_ms`.
const REMOTE_TIMEOUT: &str = "the room's node did not answer in time (cluster.request_timeout_ms)";

/// A core's routes in a cluster.
#[derive(Default)]
pub(super) struct Routes {
    /// Where each room runs: `LOCAL`, or the virtual core of its node.
    routes: RoomMap<u16>,
    /// Messages for rooms the gateway is placing, in order.
    pending: RoomMap<VecDeque<CoreMsg>>,
    pub(super) pending_total: usize,
    /// Until when this core may run each room it owns (`now_ms`).
    leases: RoomMap<u64>,
    /// This core's upgrades and requests (the inspector's too) sent to
    /// other nodes' rooms, with the virtual core of that node and when
    /// (`now_ms`), oldest first: answered 503 if the node leaves first, a
    /// request 504 once it waited `request_timeout_ms`. Pruned of the
    /// answered ones as it grows.
    awaiting: VecDeque<(ConnRef, u16, u64)>,
}

impl Routes {
    /// Whether this core's lease on `room` holds now. The clock now, not
    /// the turn's: a process paused mid-turn (SIGSTOP, a VM stall) must not
    /// run the room on an old reading.
    fn lease_holds(&self, room: &RoomKey, epoch: std::time::Instant) -> bool {
        let now_ms = epoch.elapsed().as_millis() as u64;
        self.leases.get(room).is_some_and(|&until| now_ms < until)
    }
}

impl State {
    /// Sends the message made for `room` to the core that owns it.
    pub(super) fn send_to_owner(&mut self, room: Arc<RoomKey>, msg: impl FnOnce(Arc<RoomKey>) -> CoreMsg) {
        let Some(routes) = self.routes.as_deref_mut() else {
            let owner = self.shared.placement.owner(&room);
            return self.send_to(owner, msg(room));
        };
        if let Some(waiting) = routes.pending.get_mut(&room) {
            waiting.push_back(msg(room));
            routes.pending_total += 1;
            return;
        }
        match routes.routes.get(&room) {
            Some(&LOCAL) => {
                let owner = self.shared.placement.owner(&room);
                self.send_to(owner, msg(room));
            }
            Some(&node) => self.send_remote(node, msg(room)),
            None => {
                routes.pending.insert(room.clone(), VecDeque::from([msg(room.clone())]));
                routes.pending_total += 1;
                self.gateway_out.push_back(FromCore::Resolve { room, core: self.index, take: false });
            }
        }
    }

    /// Whether this core owns `room` (in a cluster: were it on this node).
    pub(super) fn owns(&self, room: &RoomKey) -> bool {
        self.shared.placement.owner(room) == usize::from(self.index)
    }

    /// The gateway's answer: where `room` runs, or (none) that it cannot
    /// be placed now. What waited goes there, in order, or is answered
    /// "try again".
    pub(super) fn on_routed(&mut self, room: &Arc<RoomKey>, to: Option<u16>) {
        let Some(routes) = self.routes.as_deref_mut() else { return };
        let waiting = routes.pending.remove(room).unwrap_or_default();
        routes.pending_total -= waiting.len();
        match to {
            Some(to) => {
                routes.routes.insert(room.clone(), to);
                let owner = self.shared.placement.owner(room);
                for msg in waiting {
                    if to == LOCAL {
                        self.send_to(owner, msg);
                    } else {
                        self.send_remote(to, msg);
                    }
                }
            }
            None => {
                for msg in waiting {
                    self.bounce(msg);
                }
            }
        }
    }

    /// Sends a message for a room to the node (virtual core `to`) that
    /// runs it, noting the upgrades and requests that wait for its answer.
    fn send_remote(&mut self, to: u16, msg: CoreMsg) {
        if let (
            CoreMsg::Connect { conn, .. } | CoreMsg::Request { conn, .. } | CoreMsg::Inspect { conn, .. },
            Some(routes),
        ) = (&msg, self.routes.as_deref_mut())
        {
            if routes.awaiting.len() >= 2 * (self.conns.len() + self.links.len()) + 64 {
                // Keep those still waiting: a socket in its upgrade or request,
                // a link that still exists (its refusal checks its phase).
                let (conns, links) = (&self.conns, &self.links);
                routes.awaiting.retain(|(c, _, _)| {
                    if is_link(*c) {
                        links.contains((c.slot & !LINK_BIT) as usize)
                    } else {
                        conns.get(c.slot as usize).is_some_and(|r| {
                            r.gen == c.gen && matches!(r.phase, Phase::AwaitResponse | Phase::AwaitConnect)
                        })
                    }
                });
            }
            routes.awaiting.push_back((*conn, to, self.now_ms));
        }
        self.send_to(usize::from(to), msg);
    }

    /// Answers 504 the requests that waited `request_timeout_ms` for
    /// another node's room (the request or its answer was lost between
    /// nodes, or the room is that slow), closing their connections so that
    /// a late answer finds nobody; upgrades keep waiting (their clients
    /// time out themselves, and their close reaches the room).
    pub(super) fn expire_remote_requests(&mut self) {
        let Some(timeout) = self.shared.gateway.as_ref().map(|g| g.request_timeout_ms) else { return };
        loop {
            let Some(routes) = self.routes.as_deref_mut() else { return };
            match routes.awaiting.front() {
                Some(&(_, _, sent)) if sent + timeout <= self.now_ms => {}
                _ => return,
            }
            let (conn, _, _) = routes.awaiting.pop_front().expect("looked at");
            if is_link(conn) {
                continue;
            }
            if let Some(slot) = self.current(conn, Phase::AwaitResponse) {
                let response = Response::text(504, REMOTE_TIMEOUT).with_header("retry-after", "1");
                self.respond(slot, &response, false);
            }
        }
    }

    /// The room moved: the next message for it asks again.
    pub(super) fn on_unrouted(&mut self, room: &Arc<RoomKey>) {
        if let Some(routes) = self.routes.as_deref_mut() {
            routes.routes.remove(room);
        }
    }

    /// A node left the cluster (`cores`: its virtual cores): routes to it
    /// are forgotten, so the next message asks again, and its sockets leave
    /// this core's rooms as closed (1006).
    pub(super) fn on_node_gone(&mut self, cores: &[u16]) {
        let Some(routes) = self.routes.as_deref_mut() else { return };
        let mut orphans = Vec::new();
        routes.routes.retain(|room, to| {
            let gone = cores.contains(to);
            if gone {
                orphans.push(room.clone());
            }
            !gone
        });
        // This core's sockets in rooms that ran there are members of
        // nothing now: closed with 1012, they reconnect and the room is
        // placed again.
        for room in orphans {
            let Some(&lr) = self.local_room_ids.get(&room) else { continue };
            let slots: Vec<u32> =
                self.local_rooms[lr as usize].index.slots(None).filter(|s| s & LINK_BIT == 0).collect();
            for slot in slots {
                let Some(gen) = self.conns.get(slot as usize).map(|c| c.gen) else { continue };
                self.on_close(ConnRef { core: self.index, slot, gen }, 1012, ROOM_NODE_GONE);
            }
        }
        type Members = Vec<(ConnRef, u32)>;
        let gone: Vec<(Arc<RoomKey>, Members)> = self
            .hosts
            .iter()
            .map(|(room, host)| (room.clone(), host.members_on(cores)))
            .filter(|(_, members)| !members.is_empty())
            .collect();
        for (room, members) in gone {
            for (conn, member) in members {
                let close = CloseInfo { code: 1006, reason: NODE_GONE.into(), error: None };
                self.on_closed(conn, &room, member, &close);
            }
        }
        // What waited for the node's rooms gets no answer from it.
        let Some(routes) = self.routes.as_deref_mut() else { return };
        let (lost, kept): (VecDeque<_>, VecDeque<_>) =
            routes.awaiting.drain(..).partition(|(_, to, _)| cores.contains(to));
        routes.awaiting = kept;
        for (conn, _, _) in lost {
            if is_link(conn) {
                self.on_link_refused(conn, NODE_GONE);
            } else {
                let response = Response::text(503, NODE_GONE).with_header("retry-after", "1");
                self.on_respond(conn, &response);
            }
        }
    }

    /// The gateway's word on a room this core owns: it may run it until
    /// `until_ms`, or no longer (then it stops now).
    pub(super) fn on_lease(&mut self, room: &Arc<RoomKey>, until_ms: Option<u64>) {
        let Some(routes) = self.routes.as_deref_mut() else { return };
        match until_ms {
            Some(until) => {
                routes.leases.insert(room.clone(), until);
            }
            None => {
                routes.leases.remove(room);
                routes.routes.remove(room);
                self.stop_room(room, 1012, MOVING);
            }
        }
    }

    /// In a cluster, whether a message for a room's owner must not be
    /// handled here: the room's lease lapsed (or was never this node's).
    /// Then the room stops, the message is answered "try again", and the
    /// gateway hears of it.
    pub(super) fn refuse_unleased(&mut self, msg: CoreMsg) -> Option<CoreMsg> {
        let Some(routes) = self.routes.as_deref_mut() else { return Some(msg) };
        let Some(room) = msg.owner_room() else { return Some(msg) };
        if routes.lease_holds(room, self.epoch) {
            return Some(msg);
        }
        let room = room.clone();
        let had = routes.leases.remove(&room).is_some();
        routes.routes.remove(&room);
        self.stop_room(&room, 1012, MOVING);
        if had {
            self.gateway_out.push_back(FromCore::Lapsed(room));
        }
        self.bounce(msg);
        None
    }

    /// Whether this core may run `room` now (an alarm due): always on a
    /// single node; in a cluster while its lease holds, else the gateway
    /// is asked to place it here (the alarm is this node's, in its store)
    /// unless another node holds it.
    pub(super) fn may_run(&mut self, room: &Arc<RoomKey>) -> bool {
        let Some(routes) = self.routes.as_deref_mut() else { return true };
        if routes.lease_holds(room, self.epoch) {
            return true;
        }
        self.gateway_out.push_back(FromCore::Resolve { room: room.clone(), core: self.index, take: true });
        false
    }

    /// A room left this core's memory with nothing due (no members, no
    /// alarm): in a cluster its lease goes back, so the table of leases
    /// is bounded by the rooms in use, and the room's next event places it
    /// afresh (on its preferred node).
    pub(super) fn hand_back(&mut self, room: &Arc<RoomKey>) {
        let Some(routes) = self.routes.as_deref_mut() else { return };
        routes.routes.remove(room);
        if routes.leases.remove(room).is_some() {
            self.gateway_out.push_back(FromCore::Lapsed(room.clone()));
        }
    }

    /// Answers a message for a room that cannot take it now.
    pub(super) fn bounce(&mut self, msg: CoreMsg) {
        match msg.bounce(MOVING) {
            Some(Bounce::Conn(conn, reply)) => self.send_to(usize::from(conn.core), reply),
            Some(Bounce::Room(room, reply)) => self.send_to_owner(room, |_| reply),
            None => {}
        }
    }
}
