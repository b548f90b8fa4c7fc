//! The messages between cores: what a socket's core sends a room's owner,
//! what the owner sends back, and what the store's writer reports. Every
//! message goes over a bounded channel (or, for the core itself, a local
//! queue) and is handled on arrival in `reactor::messages`.
//!
//! | message | from | to | what it carries |
//! |---|---|---|---|
//! | `Connect` | a socket's core | the room's owner | an upgrade to admit (`Joining`) |
//! | `Message` | a socket's core | the room's owner | a member's WebSocket message |
//! | `Closed` | a socket's core | the room's owner | a member's socket is gone |
//! | `Request` | a socket's core | the room's owner | an HTTP request to the room |
//! | `RoomRequest` | a room's owner | another room's owner | `Room::request_room` |
//! | `RoomResponse` | a room's owner | the caller's owner | the answer to a `RoomRequest` |
//! | `Accepted`, `Refused` | the room's owner | the socket's core | the answer to `Connect` |
//! | `Send`, `Close` | the room's owner | the socket's core | a room's `send` or `close` of one member |
//! | `Broadcast` | a room's owner, or a publish's core | every core with members | one pre-framed message |
//! | `Respond` | the room's owner | the socket's core | an HTTP response |
//! | `Published` | each core | the publish's core | members one core reached |
//! | `Committed` | the store's writer | the room's owner | a storage batch committed (or failed) |
//! | `Fetched` | a fetch thread | the room's owner | the outcome of a room's `fetch` |
//! | `Inspect` | the inspector request's core | the room's owner | an admin's ask of one room (detail, evict, close) |
//! | `InspectBacklog` | the room's owner, then each core in turn | the cores holding its listed connections | a room's detail, gathering backlogs |
//! | `LinkFrame`, `LinkClosed` | a core, to itself | (the core holding a room's socket to another room) | a frame for it, its close |
//! | `Routed`, `Unrouted`, `NodeGone` | the cluster's gateway | a core | where a room runs (this node or another), that it moved, that a node left |
//! | `Lease` | the cluster's gateway | a room's owner core | until when it may run the room, or that it may not |

use crate::http::{RequestHead, Response};
use crate::outbound::FetchError;
use crate::party::{ConnRef, Request};
use crate::room_key::RoomKey;
use bytes::Bytes;
use smallvec::SmallVec;
use std::sync::Arc;

/// Where the outcome of a room's outbound request goes: its owner core,
/// the room (the host of `generation`: one made since is another object
/// and never sees it) and the request's id.
#[derive(Debug)]
pub(crate) struct FetchTicket {
    pub core: u16,
    pub room: Arc<RoomKey>,
    pub generation: u64,
    pub id: u32,
}

/// A message between cores.
pub(crate) enum CoreMsg {
    // To a room's owner core.
    Connect {
        conn: ConnRef,
        room: Arc<RoomKey>,
        joining: Box<Joining>,
    },
    Message {
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        data: Payload,
    },
    Closed {
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        close: Box<CloseInfo>,
    },
    Request {
        conn: ConnRef,
        room: Arc<RoomKey>,
        request: Box<Request>,
    },
    /// From room `from`, its request `id` to room `room` (`Room::request_room`).
    RoomRequest {
        from: Arc<RoomKey>,
        id: u32,
        room: Arc<RoomKey>,
        request: Box<Request>,
    },
    /// To a room's owner core: the response to its request `id`.
    RoomResponse {
        room: Arc<RoomKey>,
        id: u32,
        response: Box<Response>,
    },
    /// To a room's owner core, from a fetch thread: the outcome of its
    /// outbound request.
    Fetched {
        ticket: Box<FetchTicket>,
        outcome: Box<Result<Response, FetchError>>,
    },
    /// To a room's owner core: what an admin asks of the room.
    Inspect {
        conn: ConnRef,
        room: Arc<RoomKey>,
        action: Box<crate::inspector::Action>,
    },
    /// From the cluster's gateway: where `room` runs (`cluster::LOCAL`:
    /// here, else a virtual core of the node that runs it), or, none, that
    /// it cannot be placed now.
    Routed {
        room: Arc<RoomKey>,
        to: Option<u16>,
    },
    /// From the cluster's gateway: a node left the cluster; `cores` are
    /// its virtual cores. Routes to it are forgotten, its members leave.
    NodeGone {
        cores: Arc<[u16]>,
    },
    /// From the cluster's gateway: forget where `room` runs (it moved).
    Unrouted {
        room: Arc<RoomKey>,
    },
    /// From the cluster's gateway to a room's owner core: it may run the
    /// room until `until_ms` (on the cores' clock), or, none, no longer.
    Lease {
        room: Arc<RoomKey>,
        until_ms: Option<u64>,
    },
    /// A room's detail on its way through the cores holding its listed
    /// connections, to the inspector request `conn`.
    InspectBacklog {
        conn: ConnRef,
        detail: Box<crate::inspector::RoomDetail>,
    },
    // To a connection's core.
    Accepted {
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        protocol: Option<Box<str>>,
        tags: Box<[Box<str>]>,
    },
    Refused {
        conn: ConnRef,
        reason: Box<str>,
    },
    Send {
        conn: ConnRef,
        frame: Bytes,
    },
    /// One broadcast, shared by every core it goes to.
    Broadcast(Arc<Broadcast>),
    /// A broadcast's frame for a room's socket to another room (a link,
    /// `reactor/links.rs`), from this core's fan-out to itself.
    LinkFrame {
        conn: ConnRef,
        frame: Bytes,
    },
    /// A link is closed (by either end); from its core to itself, after
    /// the frames that came before the close.
    LinkClosed {
        conn: ConnRef,
        code: u16,
        reason: Box<str>,
    },
    Close {
        conn: ConnRef,
        code: u16,
        reason: Box<str>,
    },
    Respond {
        conn: ConnRef,
        response: Box<Response>,
    },
    /// To a publish request's core: how many local members one core reached.
    Published {
        conn: ConnRef,
        delivered: u64,
    },
    /// To a room's owner core, from the store's writer: the room's storage
    /// batch `seq` committed (or failed with `error`). In a cluster the
    /// writer's report carries the batch (`journal`) for the gateway, which
    /// reports again, without it, once the room's journal holds it too.
    Committed {
        room: Arc<RoomKey>,
        generation: u64,
        seq: u64,
        error: Option<Box<str>>,
        journal: Option<Box<ForJournal>>,
    },
    /// From the cluster's gateway to a room's owner core: the room's state
    /// was loaded from its journal into the store, with this alarm.
    Loaded {
        room: Arc<RoomKey>,
        alarm_ms: Option<u64>,
    },
}

/// A committed batch on its way to its room's journal (in a cluster).
pub(crate) struct ForJournal {
    /// The batch, `Batch::encode`d.
    pub bytes: Bytes,
    /// What it did to the room's alarm (`Batch::alarm_change`), for the
    /// cluster's alarm index.
    pub alarm: Option<Option<u64>>,
}

/// A pre-framed message for a room's members on one or more cores.
pub(crate) struct Broadcast {
    pub room: Arc<RoomKey>,
    pub frame: Bytes,
    /// The same message compressed, for members with permessage-deflate.
    pub deflated: Option<Bytes>,
    /// Only members carrying this tag.
    pub tag: Option<Arc<str>>,
    pub without: SmallVec<[ConnRef; 1]>,
    /// A publish request waiting for the count of members reached.
    pub reply: Option<ConnRef>,
}

const _: () = assert!(size_of::<CoreMsg>() <= 80, "core messages are small; big payloads are boxed");

pub(crate) use crate::party::Payload;

/// Set in the slot of a link's `ConnRef` (a room's socket to another room,
/// `reactor/links.rs`); socket slots never reach it.
pub(crate) const LINK_BIT: u32 = 1 << 31;

/// Where the answer to a message that cannot be handled goes.
pub(crate) enum Bounce {
    /// To a connection's core.
    Conn(ConnRef, CoreMsg),
    /// To a room's owner (a room's request to another).
    Room(Arc<RoomKey>, CoreMsg),
}

impl CoreMsg {
    /// The room a message for a room's owner is for.
    pub fn owner_room(&self) -> Option<&Arc<RoomKey>> {
        match self {
            CoreMsg::Connect { room, .. }
            | CoreMsg::Message { room, .. }
            | CoreMsg::Closed { room, .. }
            | CoreMsg::Request { room, .. }
            | CoreMsg::RoomRequest { room, .. }
            | CoreMsg::Inspect { room, .. } => Some(room),
            _ => None,
        }
    }

    /// The "try again" answer to a message for a room's owner that cannot
    /// be handled (the room is between owners): an upgrade or a request is
    /// answered 503 with `Retry-After` (a room's socket to another room is
    /// refused), a member closed with 1012; a close needs none.
    pub fn bounce(self, reason: &str) -> Option<Bounce> {
        let busy = || Box::new(Response::text(503, reason).with_header("retry-after", "1"));
        Some(match self {
            CoreMsg::Connect { conn, .. } if conn.slot & LINK_BIT != 0 => {
                Bounce::Conn(conn, CoreMsg::Refused { conn, reason: reason.into() })
            }
            CoreMsg::Connect { conn, .. } => Bounce::Conn(conn, CoreMsg::Respond { conn, response: busy() }),
            CoreMsg::Message { conn, .. } => {
                Bounce::Conn(conn, CoreMsg::Close { conn, code: 1012, reason: reason.into() })
            }
            CoreMsg::Request { conn, .. } | CoreMsg::Inspect { conn, .. } => {
                Bounce::Conn(conn, CoreMsg::Respond { conn, response: busy() })
            }
            CoreMsg::RoomRequest { from, id, .. } => {
                Bounce::Room(from.clone(), CoreMsg::RoomResponse { room: from, id, response: busy() })
            }
            _ => return None,
        })
    }
}

pub(crate) struct CloseInfo {
    pub code: u16,
    pub reason: String,
    pub error: Option<String>,
}

/// What a new connection brings to the room.
#[derive(Debug)]
pub(crate) struct Joining {
    pub id: String,
    pub uri: String,
    pub head: RequestHead,
    pub protocols: Vec<String>,
    /// It negotiated permessage-deflate.
    pub deflate: bool,
}

/// Where the response to a request to a room goes.
#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// A socket's HTTP request.
    Socket(ConnRef),
    /// Request `id` of room `room` (`Room::request_room`).
    Room { room: Arc<RoomKey>, id: u32 },
}

impl ReplyTo {
    pub fn message(self, response: Box<Response>) -> CoreMsg {
        match self {
            ReplyTo::Socket(conn) => CoreMsg::Respond { conn, response },
            ReplyTo::Room { room, id } => CoreMsg::RoomResponse { room, id, response },
        }
    }
}
