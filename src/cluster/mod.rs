//! The server's side of a cluster (`[cluster]` in the config): the
//! gateway, a thread between this node's cores and `dormouse-cluster`'s
//! NATS thread. Cores never wait on it; they hand it what leaves the node
//! and ask it where rooms run, over one bounded channel, and it answers
//! with [`CoreMsg`]s on their usual channels.
//!
//! - **Routes.** A core that has a message for a room it has no route for
//!   holds the message and asks ([`FromCore::Resolve`]); the gateway answers
//!   `CoreMsg::Routed`: this node (it holds the room's lease, made now if
//!   nobody held it and this node is the room's preferred owner), or the
//!   node that holds it (or, when nobody does, the preferred node, which
//!   takes the lease when the message arrives). Messages from one socket
//!   keep their order: they wait in the core behind the question.
//! - **Virtual cores.** A socket of another node is, to this node's rooms,
//!   a `ConnRef` whose core is past this node's cores: an entry of the
//!   gateway's peer table (that node, that core). What a core sends to such
//!   a core goes to the gateway, batched per turn, and on to that node, one
//!   NATS message per node per batch (`wire.rs`); a broadcast to members on
//!   several cores of another node goes once.
//! - **Leases.** The gateway renews the leases it holds every third of the
//!   lease and tells the room's owner core how long it may run the room
//!   (`CoreMsg::Lease`): four fifths of the lease after the renewal was
//!   sent. A core that finds a room's lease lapsed stops the room (its
//!   members are closed with 1012 so they reconnect) and answers what came
//!   for it with "try again".
//! - **Publish.** The publish API reaches the other nodes' members through
//!   the gateway, which adds their counts up into one answer.

mod gateway;
mod peers;
mod wire;

pub(crate) use gateway::{start, CoreLink, Gateway};

use crate::core_msg::{Broadcast, CoreMsg};
use crate::metrics::ClusterFigures;
use crate::room_key::RoomKey;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The "core" of publish counts on their way to the gateway (which adds
/// them up for another node): never a real or virtual core.
pub(crate) const GATEWAY_CORE: u16 = u16::MAX - 1;
/// In a route: the room runs on this node.
pub(crate) const LOCAL: u16 = u16::MAX;
/// Peers' (node, core) pairs a node keeps virtual cores for, at most.
pub(crate) const MAX_PEERS: usize = 4096;
/// What the gateway holds for rooms it is placing, at most per room.
pub(crate) const MAX_PENDING_PER_ROOM: usize = 4096;

/// What a core hands the gateway.
pub(crate) enum FromCore {
    /// Messages for other nodes, each for a virtual core, in order.
    Batch(Vec<(u16, CoreMsg)>),
    /// Where does `room` run? Answered with `CoreMsg::Routed` to `core`.
    /// `take`: this node has a claim (an alarm due here), so it takes the
    /// lease if nobody holds it, preferred or not.
    Resolve { room: Arc<RoomKey>, core: u16, take: bool },
    /// A publish for the other nodes' members: answered with one
    /// `CoreMsg::Published` to its `reply`, their sum.
    Publish(Arc<Broadcast>),
    /// The owner core found the room's lease lapsed and stopped the room.
    Lapsed(Arc<RoomKey>),
    /// A batch of `room` the store committed (`Batch::encode`), for its
    /// journal: answered with `CoreMsg::Committed` (no journal) to `core`
    /// once the journal holds it, or with the error. `alarm`: what it did
    /// to the room's alarm, for the cluster's alarm index.
    Journal { room: Arc<RoomKey>, core: u16, generation: u64, seq: u64, batch: Bytes, alarm: Option<Option<u64>> },
}

/// What the cores hold of the gateway.
pub(crate) struct GatewayLink {
    pub to_gateway: crossbeam_channel::Sender<FromCore>,
    pub stats: Arc<ClusterStats>,
    /// `[cluster] request_timeout_ms`.
    pub request_timeout_ms: u64,
}

/// The gateway's figures, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    pub nodes: AtomicU64,
    pub leases: AtomicU64,
    /// Lease renewals sent to NATS.
    pub renewals: AtomicU64,
    /// Leases NATS confirmed given back.
    pub released: AtomicU64,
    /// Rooms' journal checkpoints appended.
    pub checkpoints: AtomicU64,
    /// Journal entries read when taking rooms.
    pub entries_read: AtomicU64,
}

impl GatewayLink {
    /// The live nodes, the leases held and the lease traffic so far.
    pub fn figures(&self) -> ClusterFigures {
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let s = &self.stats;
        ClusterFigures {
            nodes: read(&s.nodes),
            leases: read(&s.leases),
            renewals: read(&s.renewals),
            released: read(&s.released),
            checkpoints: read(&s.checkpoints),
            entries_read: read(&s.entries_read),
        }
    }
}

/// The reason things for a room are refused while it moves between nodes.
pub(crate) const MOVING: &str = "try again: the room is moving between nodes";
