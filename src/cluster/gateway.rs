//! The gateway's thread: what the cores hand it, what other nodes send,
//! and the outcomes of lease operations, handled one at a time; then the
//! batches built meanwhile go out, one NATS message per node.

mod alarms;
mod journal;

use super::peers::Peers;
use super::wire::{self, Batch, Conn, Item, Room};
use super::{FromCore, GATEWAY_CORE, LOCAL, MAX_PENDING_PER_ROOM, MOVING};
use crate::config::ClusterSection;
use crate::core_msg::{Bounce, Broadcast, CloseInfo, CoreMsg, Joining};
use crate::party::ConnRef;
use crate::room_key::{Placement, RoomKey, RoomMap};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use dormouse_cluster::{Busy, Cluster, ClusterConfig, ClusterError, Delivered, Lease, LeaseOutcome, Owner};
use journal::{Journal, JournalEvent, Loading};
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How the gateway reaches the cores.
pub(crate) struct CoreLink {
    pub stats: Arc<super::ClusterStats>,
    pub senders: Vec<Sender<CoreMsg>>,
    pub wakes: Vec<std::fs::File>,
    pub placement: Placement,
    /// The cores' clock origin (`CoreMsg::Lease` counts from it).
    pub epoch: Instant,
    /// The node's store: a room taken here gets its journal's state in it.
    pub store: Arc<dormouse_hibernate::Store>,
}

/// How long a publish waits for other nodes' counts before it answers
/// with those it has (a node gone meanwhile never answers).
const PUBLISH_WAIT: Duration = Duration::from_secs(3);

/// Bytes of a NATS message kept for a batch's own fields and an item's
/// framing around its payload.
pub(crate) const BATCH_SLACK: usize = 64 << 10;

/// How long a stopping node waits for NATS to take its leases back.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Messages the gateway takes from the cores at most before it passes on
/// what they made (so a flood cannot hold the other side).
const CORE_BATCHES_PER_ROUND: usize = 64;

/// What the gateway takes from the NATS thread at most per round, so the
/// cores' side is served while other nodes flood this one.
const NATS_EVENTS_PER_ROUND: usize = 1024;

/// What reaches the gateway from the NATS thread.
enum Event {
    Nats(Bytes),
    Owner {
        room: Arc<RoomKey>,
        result: Result<Option<Owner>, String>,
    },
    Acquired {
        room: Arc<RoomKey>,
        outcome: LeaseOutcome,
    },
    Renewed {
        room: Arc<RoomKey>,
        revision: u64,
        outcome: LeaseOutcome,
    },
    Released {
        room: Arc<RoomKey>,
    },
    Journal(JournalEvent),
    /// The alarm index says the room's alarm is this.
    Alarm {
        room: Arc<RoomKey>,
        at_ms: Option<u64>,
    },
}

/// A room being placed: who asked, and what came for it meanwhile.
#[derive(Default)]
struct Placing {
    cores: SmallVec<[u16; 2]>,
    items: Vec<CoreMsg>,
    /// Take the lease even if another node is preferred (something was
    /// sent here for the room: the sender thought this node its owner).
    take: bool,
}

enum Placed {
    Here,
    At(Arc<str>),
    Nowhere(String),
}

/// A publish count being added up.
struct Tally {
    remaining: usize,
    delivered: u64,
    reply: Reply,
    since: Instant,
}

enum Reply {
    /// The publish request, on this node.
    Local(ConnRef),
    /// Another node's gateway, tallying its own publish as token `slot`.
    Remote(Arc<str>, u32),
}

/// A batch being built for a node, and, when its last item is a
/// broadcast, which one (held, so its address stays its own) and where,
/// so that more cores of the node join it.
struct Outgoing {
    node: Arc<str>,
    batch: Batch,
    last_broadcast: Option<(Arc<Broadcast>, usize)>,
}

/// The running gateway; dropped (after the cores stopped), it leaves the
/// cluster and ends.
pub(crate) struct Gateway {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    max_payload: usize,
}

impl Gateway {
    /// The largest message NATS carries between nodes; a WebSocket
    /// message or request body must fit in it with `BATCH_SLACK` to spare.
    pub fn max_item_bytes(&self) -> usize {
        self.max_payload.saturating_sub(BATCH_SLACK)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Joins the cluster and starts the gateway. `from_cores` is the channel
/// whose senders the cores hold (`GatewayLink`).
pub(crate) fn start(
    section: &ClusterSection,
    cores: CoreLink,
    from_cores: Receiver<FromCore>,
) -> Result<Gateway, ClusterError> {
    let config = ClusterConfig {
        nats: section.nats.clone(),
        node_id: section.node_id.clone(),
        replicas: section.replicas,
        lease: Duration::from_millis(section.lease_ms),
        heartbeat: Duration::from_millis(section.heartbeat_ms),
    };
    let lease = config.lease;
    // From the NATS thread: it waits here when the gateway is behind
    // (and NATS then holds what comes for this node), never the reverse:
    // the gateway only ever tries to hand the NATS thread something.
    let (events, inbox) = crossbeam_channel::bounded(4096);
    let nats = events.clone();
    let cluster = Cluster::start_with(config, move |delivered| {
        let _ = nats.send(match delivered {
            Delivered::Message(payload) => Event::Nats(payload),
            Delivered::Alarm { party, room, at_ms } => {
                Event::Alarm { room: Arc::new(RoomKey::new(party, room)), at_ms }
            }
        });
    })?;
    let view = cluster.view();
    let max_payload = cluster.max_payload();
    let cores_n = cores.senders.len();
    let mut state = State {
        me: cluster.node_id().into(),
        cluster,
        view,
        cores,
        peers: Peers::new(cores_n),
        held: RoomMap::default(),
        loading: RoomMap::default(),
        journals: RoomMap::default(),
        alarms: alarms::Alarms::default(),
        stalled: RoomMap::default(),
        next_epoch: 0,
        to_store: VecDeque::new(),
        placing: RoomMap::default(),
        tallies: HashMap::new(),
        next_tally: 0,
        out: Vec::new(),
        unsent: VecDeque::new(),
        events,
        last_view: Vec::new(),
        budget: max_payload.saturating_sub(BATCH_SLACK).max(BATCH_SLACK),
        renew_every: lease / 3,
        next_renewal: Instant::now() + lease / 3,
    };
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("dormouse-gateway".into())
        .spawn(move || state.run(&inbox, &from_cores, &stopped))
        .map_err(ClusterError::Thread)?;
    Ok(Gateway { stop: Some(stop), thread: Some(thread), max_payload })
}

struct State {
    me: Arc<str>,
    cluster: Cluster,
    view: Arc<RwLock<Vec<String>>>,
    cores: CoreLink,
    peers: Peers,
    /// The leases this node holds.
    held: RoomMap<Lease>,
    /// Rooms whose lease is held, being loaded from their journals.
    loading: RoomMap<Loading>,
    /// The journals this node appends to.
    journals: RoomMap<Journal>,
    /// The cluster's alarm index, as heard.
    alarms: alarms::Alarms,
    /// Journals with batches waiting for room in the NATS thread's queue.
    stalled: RoomMap<()>,
    next_epoch: u64,
    /// Restores the store had no room for yet.
    to_store: VecDeque<(dormouse_hibernate::Batch, dormouse_hibernate::Done)>,
    placing: RoomMap<Placing>,
    tallies: HashMap<u32, Tally>,
    next_tally: u32,
    /// Batches being built this round, per node.
    out: Vec<Outgoing>,
    /// Batches the NATS thread had no room for yet.
    unsent: VecDeque<(Arc<str>, Bytes)>,
    /// For the lease operations' outcomes.
    events: Sender<Event>,
    /// The live nodes at the last look (`watch_nodes`).
    last_view: Vec<String>,
    renew_every: Duration,
    next_renewal: Instant,
    /// What one NATS message may carry, less room for a batch's own fields.
    budget: usize,
}

impl State {
    fn run(&mut self, inbox: &Receiver<Event>, from_cores: &Receiver<FromCore>, stopped: &Receiver<()>) {
        loop {
            let wait = if self.unsent.is_empty() {
                self.next_renewal.saturating_duration_since(Instant::now()).min(Duration::from_millis(500))
            } else {
                Duration::from_millis(1)
            };
            let mut select = crossbeam_channel::Select::new();
            let nats = select.recv(inbox);
            let stop = select.recv(stopped);
            // While the NATS thread is behind, the cores wait (their
            // outboxes fill and they refuse new input).
            let cores = self.unsent.is_empty().then(|| select.recv(from_cores));
            match select.select_timeout(wait) {
                Ok(op) if op.index() == nats => match op.recv(inbox) {
                    Ok(event) => self.on_event(event),
                    Err(_) => return,
                },
                Ok(op) if op.index() == stop => {
                    let _ = op.recv(stopped);
                    return self.release_all(inbox);
                }
                Ok(op) => match op.recv(from_cores) {
                    Ok(msg) => {
                        debug_assert!(cores.is_some());
                        self.on_core(msg);
                        for _ in 0..CORE_BATCHES_PER_ROUND {
                            match from_cores.try_recv() {
                                Ok(msg) => self.on_core(msg),
                                Err(_) => break,
                            }
                        }
                    }
                    // The server stopped: leave the cluster.
                    Err(_) => return self.release_all(inbox),
                },
                Err(_) => {}
            }
            for _ in 0..NATS_EVENTS_PER_ROUND {
                match inbox.try_recv() {
                    Ok(event) => self.on_event(event),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if now >= self.next_renewal {
                self.renew_all(now);
                self.expire_tallies(now);
                self.next_renewal = now + self.renew_every;
            }
            self.watch_nodes();
            self.look_at_alarms();
            self.submit_to_store();
            self.pump_stalled();
            self.flush();
            let nodes = self.view.read().unwrap_or_else(|e| e.into_inner()).len() as u64;
            self.cores.stats.nodes.store(nodes, std::sync::atomic::Ordering::Relaxed);
            self.cores.stats.leases.store(self.held.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Nats(payload) => self.on_batch(&payload),
            Event::Owner { room, result } => self.on_owner(room, result),
            Event::Acquired { room, outcome } => self.on_acquired(room, outcome),
            Event::Renewed { room, revision, outcome } => self.on_renewed(&room, revision, outcome),
            Event::Released { room } => self.acquire(room),
            Event::Journal(event) => self.on_journal_event(event),
            Event::Alarm { room, at_ms } => self.on_alarm(room, at_ms),
        }
    }

    fn on_core(&mut self, msg: FromCore) {
        match msg {
            FromCore::Batch(msgs) => {
                for (to, msg) in msgs {
                    self.pass_on(to, msg);
                }
            }
            FromCore::Resolve { room, core, take } => {
                if self.runs_here(&room) {
                    return self.deliver(usize::from(core), CoreMsg::Routed { room, to: Some(LOCAL) });
                }
                match self.placing_entry(&room) {
                    Some(placing) => {
                        placing.cores.push(core);
                        placing.take |= take;
                    }
                    None => self.deliver(usize::from(core), CoreMsg::Routed { room, to: None }),
                }
            }
            FromCore::Publish(broadcast) => self.publish(broadcast),
            FromCore::Lapsed(room) => {
                if let Some(lease) = self.held.remove(&room) {
                    let _ = self.release(&room, lease.revision, None);
                    // After a renewal's word the owner core may not have
                    // read yet: it must not take that for a lease held.
                    self.tell_lease(&room, None);
                    self.unroute(&room);
                    self.unroute_elsewhere(&room);
                    self.journal_unheld(&room);
                }
            }
            FromCore::Journal { room, core, generation, seq, batch, alarm } => {
                self.journal(room, core, generation, seq, batch, alarm)
            }
        }
    }

    // ---- placement ----

    /// The room's placing entry, started (an owner lookup) if new; none
    /// when the lookup cannot be asked for now.
    fn placing_entry(&mut self, room: &Arc<RoomKey>) -> Option<&mut Placing> {
        if !self.placing.contains_key(room) {
            let events = self.events.clone();
            let key = room.clone();
            let asked = self.cluster.owner(&room.party, &room.id, move |result| {
                let _ = events.send(Event::Owner { room: key, result });
            });
            if asked.is_err() {
                tracing::warn!(party = %room.party, room = %room.id, "the cluster's queue is full; the room waits");
                return None;
            }
            self.placing.insert(room.clone(), Placing::default());
        }
        self.placing.get_mut(room)
    }

    fn alive(&self, node: &str) -> bool {
        self.view.read().unwrap_or_else(|e| e.into_inner()).iter().any(|n| n == node)
    }

    fn on_owner(&mut self, room: Arc<RoomKey>, result: Result<Option<Owner>, String>) {
        let Some(take) = self.placing.get(&room).map(|p| p.take) else { return };
        match result {
            Err(error) => self.placed(&room, Placed::Nowhere(error)),
            Ok(Some(owner)) if *owner.node == *self.me => {
                // An earlier run of this node held it: give it up, then take it.
                let sent = self.release(&room, owner.revision, Some(Event::Released { room: room.clone() }));
                if sent.is_err() {
                    self.placed(&room, Placed::Nowhere("the cluster's queue is full".into()));
                }
            }
            Ok(Some(owner)) if self.alive(&owner.node) => self.placed(&room, Placed::At(owner.node.into())),
            Ok(Some(_)) => {
                self.placed(&room, Placed::Nowhere("the room's owner node is gone; its lease runs out soon".into()));
            }
            Ok(None) => {
                let preferred = {
                    let view = self.view.read().unwrap_or_else(|e| e.into_inner());
                    let key = dormouse_cluster::room_key(&room.party, &room.id);
                    dormouse_cluster::rendezvous(&view, &key).map(Arc::<str>::from)
                };
                match preferred {
                    Some(node) if *node != *self.me && !take => self.placed(&room, Placed::At(node)),
                    _ => self.acquire(room),
                }
            }
        }
    }

    fn acquire(&mut self, room: Arc<RoomKey>) {
        let events = self.events.clone();
        let key = room.clone();
        let sent = self.cluster.acquire(&room.party, &room.id, move |outcome| {
            let _ = events.send(Event::Acquired { room: key, outcome });
        });
        if sent.is_err() {
            self.placed(&room, Placed::Nowhere("the cluster's queue is full".into()));
        }
    }

    fn on_acquired(&mut self, room: Arc<RoomKey>, outcome: LeaseOutcome) {
        match outcome {
            LeaseOutcome::Held(lease) => {
                self.held.insert(room.clone(), lease);
                self.tell_lease(&room, Some(lease));
                // It runs here once its state from the journal is in.
                self.load(room);
            }
            LeaseOutcome::HeldBy(node) if node != *self.me && self.alive(&node) => {
                self.placed(&room, Placed::At(node.into()));
            }
            LeaseOutcome::HeldBy(_) => self.placed(&room, Placed::Nowhere("its owner node is gone".into())),
            LeaseOutcome::Lost | LeaseOutcome::Failed(_) => {
                self.placed(&room, Placed::Nowhere("the lease could not be taken".into()));
            }
        }
    }

    /// A room is placed (or cannot be): the cores that asked hear where,
    /// and what came for it goes there (or is answered "try again").
    fn placed(&mut self, room: &Arc<RoomKey>, placed: Placed) {
        let Some(placing) = self.placing.remove(room) else { return };
        let to = match &placed {
            Placed::Here => Some(LOCAL),
            Placed::At(node) => self.peers.number(node, LOCAL),
            Placed::Nowhere(reason) => {
                tracing::warn!(party = %room.party, room = %room.id, %reason, "the room cannot be placed now");
                None
            }
        };
        for core in placing.cores {
            self.deliver(usize::from(core), CoreMsg::Routed { room: room.clone(), to });
        }
        for msg in placing.items {
            match &placed {
                Placed::Here => self.deliver_to_owner(room, msg),
                // Sent on once; the node it goes to takes the lease or
                // sends it to the holder, never back.
                Placed::At(node) => {
                    let node = node.clone();
                    self.encode(&node, msg);
                }
                Placed::Nowhere(_) => self.bounce(msg),
            }
        }
    }

    /// A message for a room's owner, from another node.
    fn for_owner(&mut self, msg: CoreMsg) {
        let room = msg.owner_room().expect("a message for an owner names its room").clone();
        if self.runs_here(&room) {
            return self.deliver_to_owner(&room, msg);
        }
        match self.placing_entry(&room) {
            Some(placing) if placing.items.len() < MAX_PENDING_PER_ROOM => {
                placing.take = true;
                placing.items.push(msg);
            }
            _ => self.bounce(msg),
        }
    }

    fn bounce(&mut self, msg: CoreMsg) {
        match msg.bounce(MOVING) {
            Some(Bounce::Conn(conn, reply)) => self.deliver_to_conn(conn, reply),
            Some(Bounce::Room(room, reply)) => {
                if self.runs_here(&room) {
                    self.deliver_to_owner(&room, reply);
                } else if let Some(placing) = self.placing.get_mut(&room) {
                    placing.items.push(reply);
                }
                // Else the asking room is gone or elsewhere: nobody waits.
            }
            None => {}
        }
    }

    /// The cores have stopped (the server shuts down): every lease held
    /// goes back, so the rooms can run elsewhere at once rather than after
    /// their leases run out. Waits for NATS's answers, `RELEASE_WAIT` at most.
    fn release_all(&mut self, inbox: &Receiver<Event>) {
        let deadline = Instant::now() + RELEASE_WAIT;
        let mut held: Vec<(Arc<RoomKey>, Lease)> = self.held.drain().collect();
        let mut waiting = 0usize;
        while !held.is_empty() || waiting > 0 {
            if let Some((room, lease)) = held.last() {
                let sent = self.release(room, lease.revision, Some(Event::Released { room: room.clone() }));
                if sent.is_ok() {
                    held.pop();
                    waiting += 1;
                    continue;
                }
            }
            // The queue is full (or all are sent): wait for an answer.
            match inbox.recv_deadline(deadline) {
                Ok(Event::Released { .. }) => waiting -= 1,
                // Renewed on its way: that lease goes back too.
                Ok(Event::Renewed { room, outcome: LeaseOutcome::Held(lease), .. }) => held.push((room, lease)),
                Ok(_) => {}
                Err(_) => {
                    let left = held.len() + waiting;
                    return tracing::warn!(left, "leases not given back in time; they run out by themselves");
                }
            }
        }
    }

    /// Tells the cores of nodes that left the view (their virtual cores).
    fn watch_nodes(&mut self) {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner()).clone();
        if view == self.last_view {
            return;
        }
        let gone: Vec<String> = self.last_view.iter().filter(|n| !view.contains(n)).cloned().collect();
        self.last_view = view;
        for node in gone {
            tracing::warn!(%node, "a node left the cluster");
            let cores: Arc<[u16]> = self.peers.of(&node).into();
            if cores.is_empty() {
                continue;
            }
            for core in 0..self.cores.senders.len() {
                self.deliver(core, CoreMsg::NodeGone { cores: cores.clone() });
            }
        }
    }

    // ---- leases ----

    /// Gives the lease on `room` at `revision` back; `then`: the event to
    /// hear when NATS has answered (whether or not it was still ours).
    fn release(&self, room: &Arc<RoomKey>, revision: u64, then: Option<Event>) -> Result<(), Busy> {
        let (stats, events) = (self.cores.stats.clone(), self.events.clone());
        self.cluster.release(&room.party, &room.id, revision, move |released| {
            if released {
                stats.released.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(event) = then {
                let _ = events.send(event);
            }
        })
    }

    fn tell_lease(&mut self, room: &Arc<RoomKey>, lease: Option<Lease>) {
        let until_ms = lease.map(|l| l.valid_until.saturating_duration_since(self.cores.epoch).as_millis() as u64);
        let owner = self.cores.placement.owner(room);
        self.deliver(owner, CoreMsg::Lease { room: room.clone(), until_ms });
    }

    fn renew_all(&mut self, now: Instant) {
        let held: Vec<(Arc<RoomKey>, Lease)> = self.held.iter().map(|(r, l)| (r.clone(), *l)).collect();
        for (room, lease) in held {
            if lease.valid_until <= now {
                self.lost(&room);
                continue;
            }
            let events = self.events.clone();
            let key = room.clone();
            let revision = lease.revision;
            self.cores.stats.renewals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A full queue: the next round tries again, within the lease.
            let _ = self.cluster.renew(&room.party, &room.id, revision, move |outcome| {
                let _ = events.send(Event::Renewed { room: key, revision, outcome });
            });
        }
    }

    fn on_renewed(&mut self, room: &Arc<RoomKey>, revision: u64, outcome: LeaseOutcome) {
        // Only the renewal of the lease held now counts.
        match self.held.get(room) {
            Some(held) if held.revision == revision => {}
            Some(_) => return,
            None => {
                // Given back while this renewal was on its way: the release
                // (at the old revision) missed it, so the renewed lease
                // would name this node until it ran out, and other nodes
                // would route the room here. Give the renewed one back too.
                if let LeaseOutcome::Held(lease) = outcome {
                    let _ = self.release(room, lease.revision, None);
                }
                return;
            }
        }
        match outcome {
            LeaseOutcome::Held(lease) => {
                self.held.insert(room.clone(), lease);
                self.tell_lease(room, Some(lease));
            }
            LeaseOutcome::Lost | LeaseOutcome::HeldBy(_) => self.lost(room),
            LeaseOutcome::Failed(error) => {
                tracing::warn!(party = %room.party, room = %room.id, %error, "a lease renewal failed; retrying");
            }
        }
    }

    /// The lease is gone: the owner core stops the room, every core
    /// forgets its route.
    fn lost(&mut self, room: &Arc<RoomKey>) {
        tracing::warn!(party = %room.party, room = %room.id, "the room's lease was lost; it stops here");
        self.held.remove(room);
        self.tell_lease(room, None);
        self.unroute(room);
        self.unroute_elsewhere(room);
        self.journal_unheld(room);
    }

    /// Whether `room` runs here: its lease held and its state loaded.
    fn runs_here(&self, room: &RoomKey) -> bool {
        self.held.contains_key(room) && !self.loading.contains_key(room)
    }

    /// Tells the other nodes this one no longer runs `room`, so that their
    /// routes to it go and the room's next event places it afresh.
    fn unroute_elsewhere(&mut self, room: &Arc<RoomKey>) {
        let others: Vec<Arc<str>> = {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            view.iter().filter(|n| **n != *self.me).map(|n| Arc::from(n.as_str())).collect()
        };
        for node in others {
            let item = Item::Unroute { room: Room { party: room.party.to_string(), id: room.id.to_string() } };
            self.batch_for(&node).items.push(item);
        }
    }

    fn unroute(&mut self, room: &Arc<RoomKey>) {
        for core in 0..self.cores.senders.len() {
            self.deliver(core, CoreMsg::Unrouted { room: room.clone() });
        }
    }

    // ---- publishes ----

    fn publish(&mut self, broadcast: Arc<Broadcast>) {
        let conn = broadcast.reply.expect("a publish waits for its count");
        let others: Vec<Arc<str>> = {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            view.iter().filter(|n| **n != *self.me).map(|n| Arc::from(n.as_str())).collect()
        };
        if others.is_empty() {
            return self.deliver(usize::from(conn.core), CoreMsg::Published { conn, delivered: 0 });
        }
        let token = self.tally(others.len(), Reply::Local(conn));
        for node in others {
            let reply = ConnRef { core: GATEWAY_CORE, slot: token, gen: 0 };
            let copy = Broadcast {
                room: broadcast.room.clone(),
                frame: broadcast.frame.clone(),
                deflated: broadcast.deflated.clone(),
                tag: broadcast.tag.clone(),
                without: SmallVec::new(),
                reply: Some(reply),
            };
            self.encode(&node, CoreMsg::Broadcast(Arc::new(copy)));
        }
    }

    fn tally(&mut self, remaining: usize, reply: Reply) -> u32 {
        let token = self.next_tally;
        self.next_tally = self.next_tally.wrapping_add(1);
        self.tallies.insert(token, Tally { remaining, delivered: 0, reply, since: Instant::now() });
        token
    }

    fn count(&mut self, token: u32, delivered: u64) {
        let Some(tally) = self.tallies.get_mut(&token) else { return };
        tally.remaining = tally.remaining.saturating_sub(1);
        tally.delivered += delivered;
        if tally.remaining == 0 {
            let tally = self.tallies.remove(&token).expect("present");
            self.answer(tally);
        }
    }

    fn answer(&mut self, tally: Tally) {
        match tally.reply {
            Reply::Local(conn) => {
                self.deliver(usize::from(conn.core), CoreMsg::Published { conn, delivered: tally.delivered });
            }
            Reply::Remote(node, token) => {
                let conn = self.conn_at(&node, GATEWAY_CORE, token);
                self.encode(&node, CoreMsg::Published { conn, delivered: tally.delivered });
            }
        }
    }

    /// The `ConnRef` of (another node's) `core` and `slot`; for its
    /// gateway, a number outside the peer table, read back in `wire_conn`.
    fn conn_at(&mut self, node: &str, core: u16, slot: u32) -> ConnRef {
        let core = self.peers.number(node, core).unwrap_or(GATEWAY_CORE);
        ConnRef { core, slot, gen: 0 }
    }

    fn expire_tallies(&mut self, now: Instant) {
        let late: Vec<u32> =
            self.tallies.iter().filter(|(_, t)| now - t.since >= PUBLISH_WAIT).map(|(&k, _)| k).collect();
        for token in late {
            let tally = self.tallies.remove(&token).expect("present");
            self.answer(tally);
        }
    }

    // ---- to the cores ----

    fn deliver(&mut self, core: usize, msg: CoreMsg) {
        // The cores take their inbox every turn; waiting here (rarely,
        // briefly) is the gateway's back-pressure on other nodes.
        if self.cores.senders[core].send(msg).is_ok() {
            let _ = std::io::Write::write(&mut &self.cores.wakes[core], &1u64.to_ne_bytes());
        }
    }

    fn deliver_to_owner(&mut self, room: &RoomKey, msg: CoreMsg) {
        let owner = self.cores.placement.owner(room);
        self.deliver(owner, msg);
    }

    /// A message for a connection: this node's own, a count for the
    /// gateway's tally, or another node's.
    fn deliver_to_conn(&mut self, conn: ConnRef, msg: CoreMsg) {
        if usize::from(conn.core) < self.cores.senders.len() {
            self.deliver(usize::from(conn.core), msg);
        } else {
            self.pass_on(conn.core, msg);
        }
    }

    /// A core's message for a virtual core: on to its node.
    fn pass_on(&mut self, to: u16, msg: CoreMsg) {
        if to == GATEWAY_CORE {
            if let CoreMsg::Published { conn, delivered } = msg {
                self.count(conn.slot, delivered);
            }
            return;
        }
        let Some((node, _)) = self.peers.get(to) else {
            return tracing::warn!(to, "a message for an unknown virtual core was dropped");
        };
        let node = node.clone();
        match msg {
            CoreMsg::Broadcast(b) => {
                let core = self.peers.get(to).map_or(0, |(_, core)| core);
                self.encode_broadcast(&node, &b, Some(core));
            }
            msg => self.encode(&node, msg),
        }
    }

    // ---- the wire ----

    fn outgoing(&mut self, node: &Arc<str>) -> &mut Outgoing {
        let at = match self.out.iter().position(|o| o.node == *node) {
            Some(at) => at,
            None => {
                let batch = Batch { from: self.me.to_string(), names: vec![self.me.to_string()], items: Vec::new() };
                self.out.push(Outgoing { node: node.clone(), batch, last_broadcast: None });
                self.out.len() - 1
            }
        };
        &mut self.out[at]
    }

    fn batch_for(&mut self, node: &Arc<str>) -> &mut Batch {
        let out = self.outgoing(node);
        out.last_broadcast = None;
        &mut out.batch
    }

    /// The wire name of a connection (this node's, or a peer's).
    fn wire_conn(&mut self, node: &Arc<str>, conn: ConnRef) -> Conn {
        let (name, core) = if usize::from(conn.core) < self.cores.senders.len() || conn.core == GATEWAY_CORE {
            (self.me.clone(), conn.core)
        } else {
            match self.peers.get(conn.core) {
                Some((name, core)) => (name.clone(), core),
                None => (self.me.clone(), GATEWAY_CORE),
            }
        };
        let batch = &mut self.outgoing(node).batch;
        let index = match batch.names.iter().position(|n| **n == *name) {
            Some(i) => i,
            None => {
                batch.names.push(name.to_string());
                batch.names.len() - 1
            }
        };
        Conn { node: index as u16, core, slot: conn.slot, gen: conn.gen }
    }

    /// Adds `msg` to the batch for `node`; a broadcast already in it for
    /// another core of that node gains that core instead.
    fn encode(&mut self, node: &Arc<str>, msg: CoreMsg) {
        let room = |r: &RoomKey| Room { party: r.party.to_string(), id: r.id.to_string() };
        let item = match msg {
            CoreMsg::Connect { conn, room: r, joining } => {
                let conn = self.wire_conn(node, conn);
                let (id, uri, head, protocols, deflate) = wire::joining(&joining);
                Item::Connect { conn, room: room(&r), id, uri, head, protocols, deflate }
            }
            CoreMsg::Message { conn, room: r, member, data } => {
                let conn = self.wire_conn(node, conn);
                let (text, data) = wire::payload(&data);
                Item::Message { conn, room: room(&r), member, text, data }
            }
            CoreMsg::Closed { conn, room: r, member, close } => {
                let conn = self.wire_conn(node, conn);
                let (code, reason, error) = wire::close_info(&close);
                Item::Closed { conn, room: room(&r), member, code, reason, error }
            }
            CoreMsg::Request { conn, room: r, request } => {
                let conn = self.wire_conn(node, conn);
                let (head, body) = wire::request(&request);
                Item::Request { conn, room: room(&r), head, body }
            }
            CoreMsg::RoomRequest { from, id, room: r, request } => {
                let (head, body) = wire::request(&request);
                Item::RoomRequest { from: room(&from), id, room: room(&r), head, body }
            }
            CoreMsg::RoomResponse { room: r, id, response } => {
                Item::RoomResponse { room: room(&r), id, response: wire::Http::of(&response) }
            }
            CoreMsg::Accepted { conn, room: r, member, protocol, tags } => Item::Accepted {
                conn: self.wire_conn(node, conn),
                room: room(&r),
                member,
                protocol: protocol.map(String::from),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
            CoreMsg::Refused { conn, reason } => {
                Item::Refused { conn: self.wire_conn(node, conn), reason: reason.into() }
            }
            CoreMsg::Send { conn, frame } => Item::Send { conn: self.wire_conn(node, conn), frame: frame.to_vec() },
            CoreMsg::Close { conn, code, reason } => {
                Item::Close { conn: self.wire_conn(node, conn), code, reason: reason.into() }
            }
            CoreMsg::Respond { conn, response } => {
                Item::Respond { conn: self.wire_conn(node, conn), response: wire::Http::of(&response) }
            }
            CoreMsg::Published { conn, delivered } => Item::Published { conn: self.wire_conn(node, conn), delivered },
            CoreMsg::Broadcast(b) => return self.encode_broadcast(node, &b, None),
            CoreMsg::Inspect { conn, room: r, action } => {
                Item::Inspect { conn: self.wire_conn(node, conn), room: room(&r), action: *action }
            }
            _ => return tracing::warn!("a core message that stays on its node was addressed to another; dropped"),
        };
        if item.weight() > self.budget {
            return self.oversized(node, item);
        }
        self.batch_for(node).items.push(item);
    }

    /// An item too big for one NATS message (past what the node's limits
    /// let in, e.g. a room's large response or `send`): answered with an
    /// error where someone waits, else dropped and logged, never sent in
    /// part.
    fn oversized(&mut self, node: &Arc<str>, item: Item) {
        let weight = item.weight();
        tracing::error!(weight, budget = self.budget, %node, "a message too large for NATS was not sent to a node");
        let too_large = |status: u16| {
            let text = format!("the message ({weight} B) is too large to cross nodes (NATS max_payload)");
            wire::Http::of(&crate::http::Response::text(status, text))
        };
        let answer = match item {
            Item::RoomResponse { room, id, .. } => Item::RoomResponse { room, id, response: too_large(502) },
            Item::Respond { conn, .. } => Item::Respond { conn, response: too_large(502) },
            Item::Send { conn, .. } => {
                Item::Close { conn, code: 1009, reason: "a message from the room was too large to deliver".into() }
            }
            _ => return,
        };
        self.batch_for(node).items.push(answer);
    }

    /// A broadcast for `core` of `node` (or, none, all its cores: a
    /// publish): the same broadcast already in the batch for another core
    /// of the node gains the core instead of a copy.
    fn encode_broadcast(&mut self, node: &Arc<str>, b: &Arc<Broadcast>, core: Option<u16>) {
        let at = self.out.iter().position(|o| o.node == *node);
        if let (Some(core), Some(at)) = (core, at) {
            let out = &mut self.out[at];
            if let Some((last, index)) = &out.last_broadcast {
                if Arc::ptr_eq(last, b) {
                    let index = *index;
                    if let Item::Broadcast { cores, .. } = &mut out.batch.items[index] {
                        cores.push(core);
                        return;
                    }
                }
            }
        }
        // Only the connections of that node matter there.
        let mut without = Vec::new();
        for &conn in &b.without {
            if self.peers.get(conn.core).is_some_and(|(n, _)| n == node) {
                without.push(self.wire_conn(node, conn));
            }
        }
        let reply = b.reply.map(|c| self.wire_conn(node, c));
        let (frame, deflated, tag) = wire::broadcast_parts(b);
        let room = Room { party: b.room.party.to_string(), id: b.room.id.to_string() };
        let cores = core.into_iter().collect();
        let mut item = Item::Broadcast { room, frame, deflated, tag, without, reply, cores };
        if item.weight() > self.budget {
            // The plain frame alone, if that fits: deflate members read
            // uncompressed messages too.
            if let Item::Broadcast { deflated, .. } = &mut item {
                *deflated = None;
            }
            if item.weight() > self.budget {
                let weight = item.weight();
                return tracing::error!(weight, %node, "a broadcast too large for NATS was not sent to a node");
            }
        }
        let out = self.outgoing(node);
        out.last_broadcast = Some((b.clone(), out.batch.items.len()));
        out.batch.items.push(item);
    }

    /// Passes the round's batches to the NATS thread.
    fn flush(&mut self) {
        while let Some((node, payload)) = self.unsent.pop_front() {
            if self.cluster.send(&node, payload.clone()).is_err() {
                self.unsent.push_front((node, payload));
                break;
            }
        }
        for Outgoing { node, batch, .. } in std::mem::take(&mut self.out) {
            // In NATS messages of at most the budget each, in order (an
            // item is never over it: `encode` saw to that).
            let Batch { from, names, items } = batch;
            let mut chunks = vec![Vec::new()];
            let mut weight = 0;
            for item in items {
                let w = item.weight();
                if weight + w > self.budget && !chunks.last().is_some_and(Vec::is_empty) {
                    chunks.push(Vec::new());
                    weight = 0;
                }
                weight += w;
                chunks.last_mut().expect("one at least").push(item);
            }
            for items in chunks.into_iter().filter(|c| !c.is_empty()) {
                let payload = wire::encode(&Batch { from: from.clone(), names: names.clone(), items });
                if !self.unsent.is_empty() || self.cluster.send(&node, payload.clone()).is_err() {
                    self.unsent.push_back((node.clone(), payload));
                }
            }
        }
    }

    // ---- from other nodes ----

    /// The `ConnRef` on this node of a wire connection.
    fn local_conn(&mut self, batch: &Batch, conn: Conn) -> Option<ConnRef> {
        let name = batch.names.get(usize::from(conn.node))?;
        let core = if **name == *self.me {
            if usize::from(conn.core) >= self.cores.senders.len() && conn.core != GATEWAY_CORE {
                return None;
            }
            conn.core
        } else {
            self.peers.number(name, conn.core)?
        };
        Some(ConnRef { core, slot: conn.slot, gen: conn.gen })
    }

    fn on_batch(&mut self, payload: &[u8]) {
        let mut batch = match wire::decode(payload) {
            Ok(batch) => batch,
            Err(error) => return tracing::warn!(%error, "a message from another node does not decode; dropped"),
        };
        let items = std::mem::take(&mut batch.items);
        for item in items {
            if self.on_item(&batch, item).is_none() {
                tracing::warn!(from = %batch.from, "a message from another node names what is not here; dropped");
            }
        }
    }

    fn on_item(&mut self, batch: &Batch, item: Item) -> Option<()> {
        let key = |r: Room| Arc::new(RoomKey::new(r.party, r.id));
        match item {
            Item::Connect { conn, room, id, uri, head, protocols, deflate } => {
                let conn = self.local_conn(batch, conn)?;
                let joining = Box::new(Joining { id, uri, head: head.into_head(), protocols, deflate });
                self.for_owner(CoreMsg::Connect { conn, room: key(room), joining });
            }
            Item::Message { conn, room, member, text, data } => {
                let conn = self.local_conn(batch, conn)?;
                let data = wire::into_payload(text, data)?;
                self.for_owner(CoreMsg::Message { conn, room: key(room), member, data });
            }
            Item::Closed { conn, room, member, code, reason, error } => {
                let conn = self.local_conn(batch, conn)?;
                let close = Box::new(CloseInfo { code, reason, error });
                self.for_owner(CoreMsg::Closed { conn, room: key(room), member, close });
            }
            Item::Request { conn, room, head, body } => {
                let conn = self.local_conn(batch, conn)?;
                let request = wire::into_request(head, body);
                self.for_owner(CoreMsg::Request { conn, room: key(room), request });
            }
            Item::Inspect { conn, room, action } => {
                let conn = self.local_conn(batch, conn)?;
                self.for_owner(CoreMsg::Inspect { conn, room: key(room), action: Box::new(action) });
            }
            Item::RoomRequest { from, id, room, head, body } => {
                let request = wire::into_request(head, body);
                self.for_owner(CoreMsg::RoomRequest { from: key(from), id, room: key(room), request });
            }
            Item::RoomResponse { room, id, response } => {
                let room = key(room);
                let response = response.into_response();
                // To the asking room's owner: here, or it moved (nobody waits).
                if self.runs_here(&room) {
                    self.deliver_to_owner(&room, CoreMsg::RoomResponse { room: room.clone(), id, response });
                }
            }
            Item::Accepted { conn, room, member, protocol, tags } => {
                let conn = self.local_conn(batch, conn)?;
                let protocol = protocol.map(String::into_boxed_str);
                let tags = tags.into_iter().map(String::into_boxed_str).collect();
                self.deliver_to_conn(conn, CoreMsg::Accepted { conn, room: key(room), member, protocol, tags });
            }
            Item::Refused { conn, reason } => {
                let conn = self.local_conn(batch, conn)?;
                self.deliver_to_conn(conn, CoreMsg::Refused { conn, reason: reason.into() });
            }
            Item::Send { conn, frame } => {
                let conn = self.local_conn(batch, conn)?;
                self.deliver_to_conn(conn, CoreMsg::Send { conn, frame: frame.into() });
            }
            Item::Close { conn, code, reason } => {
                let conn = self.local_conn(batch, conn)?;
                self.deliver_to_conn(conn, CoreMsg::Close { conn, code, reason: reason.into() });
            }
            Item::Respond { conn, response } => {
                let conn = self.local_conn(batch, conn)?;
                self.deliver_to_conn(conn, CoreMsg::Respond { conn, response: response.into_response() });
            }
            Item::Published { conn, delivered } => {
                let conn = self.local_conn(batch, conn)?;
                if conn.core == GATEWAY_CORE {
                    self.count(conn.slot, delivered);
                }
            }
            Item::Unroute { room } => self.unroute(&key(room)),
            Item::Broadcast { room, frame, deflated, tag, without, reply, cores } => {
                let mut skip = SmallVec::new();
                for conn in without {
                    skip.push(self.local_conn(batch, conn)?);
                }
                let n = self.cores.senders.len();
                let reply = match reply {
                    Some(conn) => {
                        // Another node's publish: this node's cores count,
                        // the gateway adds their counts up for it.
                        let from: Arc<str> = batch.names.get(usize::from(conn.node))?.as_str().into();
                        let token = self.tally(n, Reply::Remote(from, conn.slot));
                        Some(ConnRef { core: GATEWAY_CORE, slot: token, gen: 0 })
                    }
                    None => None,
                };
                let broadcast = Arc::new(Broadcast {
                    room: key(room),
                    frame: frame.into(),
                    deflated: deflated.map(Bytes::from),
                    tag: tag.map(Arc::from),
                    without: skip,
                    reply,
                });
                let targets: Vec<usize> = if cores.is_empty() {
                    (0..n).collect()
                } else {
                    cores.iter().map(|&c| usize::from(c)).filter(|&c| c < n).collect()
                };
                for core in targets {
                    self.deliver(core, CoreMsg::Broadcast(broadcast.clone()));
                }
            }
        }
        Some(())
    }
}
