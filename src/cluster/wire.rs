//! What one node sends another: a batch of the [`CoreMsg`]s that cross
//! nodes, encoded with `postcard`. A connection is named globally on the
//! wire (its node, core, slot and generation); the receiving gateway turns
//! it back into a local `ConnRef` (its own sockets) or a virtual one (a
//! socket of another node, see `peers.rs`).

use crate::core_msg::{Broadcast, CloseInfo, Joining, Payload};
use crate::http::{Header, RequestHead, Response};
use crate::party::Request;
use serde::{Deserialize, Serialize};

/// A batch from one node: the node names its connections use, and items
/// in the order their cores sent them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Batch {
    pub from: String,
    pub names: Vec<String>,
    pub items: Vec<Item>,
}

/// A connection: `node` indexes the batch's `names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Conn {
    pub node: u16,
    pub core: u16,
    pub slot: u32,
    pub gen: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Room {
    pub party: String,
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Head {
    pub method: String,
    pub target: String,
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Http {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A [`CoreMsg`] that crosses nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Item {
    // For a room's owner (the receiver's core that owns it).
    Connect {
        conn: Conn,
        room: Room,
        id: String,
        uri: String,
        head: Head,
        protocols: Vec<String>,
        deflate: bool,
    },
    Message {
        conn: Conn,
        room: Room,
        member: u32,
        text: bool,
        data: Vec<u8>,
    },
    Closed {
        conn: Conn,
        room: Room,
        member: u32,
        code: u16,
        reason: String,
        error: Option<String>,
    },
    Request {
        conn: Conn,
        room: Room,
        head: Head,
        body: Vec<u8>,
    },
    RoomRequest {
        from: Room,
        id: u32,
        room: Room,
        head: Head,
        body: Vec<u8>,
    },
    RoomResponse {
        room: Room,
        id: u32,
        response: Http,
    },
    // For a connection of the receiver.
    Accepted {
        conn: Conn,
        room: Room,
        member: u32,
        protocol: Option<String>,
        tags: Vec<String>,
    },
    Refused {
        conn: Conn,
        reason: String,
    },
    Send {
        conn: Conn,
        frame: Vec<u8>,
    },
    Close {
        conn: Conn,
        code: u16,
        reason: String,
    },
    Respond {
        conn: Conn,
        response: Http,
    },
    Published {
        conn: Conn,
        delivered: u64,
    },
    /// An admin's ask of `room` (the inspector), for its owner; answered
    /// with a `Respond`.
    Inspect {
        conn: Conn,
        room: Room,
        action: crate::inspector::Action,
    },
    /// The sender no longer runs `room`: the receiver's routes to it go.
    Unroute {
        room: Room,
    },
    /// One broadcast for the receiver's members of `room`: on its cores
    /// `cores`, or all of them when empty (a publish, whose count goes
    /// back to `reply`).
    Broadcast {
        room: Room,
        frame: Vec<u8>,
        deflated: Option<Vec<u8>>,
        tag: Option<String>,
        without: Vec<Conn>,
        reply: Option<Conn>,
        cores: Vec<u16>,
    },
}

impl Item {
    /// About how many bytes the item takes encoded: its payloads, and a
    /// bound on the rest (names, headers up to their count's share).
    pub fn weight(&self) -> usize {
        let head = |h: &Head| h.target.len() + h.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>();
        256 + match self {
            Item::Connect { id, uri, head: h, .. } => id.len() + uri.len() + head(h),
            Item::Message { data, .. } => data.len(),
            Item::Closed { reason, error, .. } => reason.len() + error.as_ref().map_or(0, String::len),
            Item::Request { head: h, body, .. } | Item::RoomRequest { head: h, body, .. } => head(h) + body.len(),
            Item::RoomResponse { response, .. } | Item::Respond { response, .. } => {
                response.body.len() + response.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>()
            }
            Item::Accepted { tags, .. } => tags.iter().map(|t| t.len() + 2).sum(),
            Item::Send { frame, .. } => frame.len(),
            Item::Broadcast { frame, deflated, without, .. } => {
                frame.len() + deflated.as_ref().map_or(0, Vec::len) + 16 * without.len()
            }
            Item::Inspect { action, .. } => match action {
                crate::inspector::Action::Close { id } => id.len(),
                _ => 0,
            },
            Item::Refused { .. } | Item::Close { .. } | Item::Published { .. } | Item::Unroute { .. } => 0,
        }
    }
}

pub(crate) fn encode(batch: &Batch) -> bytes::Bytes {
    postcard::to_stdvec(batch).expect("a batch always encodes").into()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Batch, postcard::Error> {
    postcard::from_bytes(bytes)
}

impl Head {
    pub fn of(head: &RequestHead) -> Head {
        Head {
            method: head.method.clone(),
            target: head.target.clone(),
            minor_version: head.minor_version,
            headers: head.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
        }
    }

    pub fn into_head(self) -> RequestHead {
        RequestHead {
            method: self.method,
            target: self.target,
            minor_version: self.minor_version,
            headers: self.headers.into_iter().map(|(name, value)| Header { name, value }).collect(),
        }
    }
}

impl Http {
    pub fn of(response: &Response) -> Http {
        Http { status: response.status, headers: response.headers.clone(), body: response.body.to_vec() }
    }

    pub fn into_response(self) -> Box<Response> {
        Box::new(Response { status: self.status, headers: self.headers, body: self.body.into() })
    }
}

pub(crate) fn request(request: &Request) -> (Head, Vec<u8>) {
    (Head::of(&request.head), request.body.to_vec())
}

pub(crate) fn into_request(head: Head, body: Vec<u8>) -> Box<Request> {
    Box::new(Request { head: head.into_head(), body: body.into() })
}

pub(crate) fn joining(joining: &Joining) -> (String, String, Head, Vec<String>, bool) {
    (joining.id.clone(), joining.uri.clone(), Head::of(&joining.head), joining.protocols.clone(), joining.deflate)
}

pub(crate) fn payload(data: &Payload) -> (bool, Vec<u8>) {
    match data {
        Payload::Text(text) => (true, text.as_bytes().to_vec()),
        Payload::Binary(data) => (false, data.to_vec()),
    }
}

/// The payload back; text that is not UTF-8 (a peer that is not a dormouse
/// node of this version) is refused.
pub(crate) fn into_payload(text: bool, data: Vec<u8>) -> Option<Payload> {
    if text {
        tungstenite::Utf8Bytes::try_from(bytes::Bytes::from(data)).ok().map(Payload::Text)
    } else {
        Some(Payload::Binary(data.into()))
    }
}

pub(crate) fn close_info(close: &CloseInfo) -> (u16, String, Option<String>) {
    (close.code, close.reason.clone(), close.error.clone())
}

pub(crate) fn broadcast_parts(b: &Broadcast) -> (Vec<u8>, Option<Vec<u8>>, Option<String>) {
    (b.frame.to_vec(), b.deflated.as_ref().map(|d| d.to_vec()), b.tag.as_deref().map(str::to_owned))
}
