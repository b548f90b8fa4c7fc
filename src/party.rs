//! The room programming model: the [`Party`] trait and the handles its
//! callbacks receive.
//!
//! A party is a kind of room; each room is one object implementing [`Party`],
//! living on its owner core and receiving one event at a time. Callbacks do not
//! perform I/O: `send`, `broadcast` and `close` record effects on the [`Room`],
//! and the reactor carries them out after the callback returns. That keeps room
//! logic testable without sockets and lets later changes hold effects back until
//! storage has committed.

use crate::config::PartyConfig;
use crate::http::{RequestHead, Response};
use crate::outbound::{FetchError, FetchRequest};
use crate::storage::{RoomStore, Savepoint, Storage};
use bytes::Bytes;
use dormouse_hibernate::Store;
use dormouse_tags::{MemberKey, TagIndex, TagInterner};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::hash::BuildHasher;
use std::sync::Arc;
use tungstenite::protocol::frame::Utf8Bytes;

/// A WebSocket message as a room sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

impl<'a> From<&'a str> for Message<'a> {
    fn from(text: &'a str) -> Self {
        Message::Text(text)
    }
}

impl<'a> From<&'a [u8]> for Message<'a> {
    fn from(data: &'a [u8]) -> Self {
        Message::Binary(data)
    }
}

impl Message<'_> {
    /// The message as one unmasked server frame, ready for any number of sockets.
    pub(crate) fn to_frame(self) -> Bytes {
        match self {
            Message::Text(text) => crate::ws::text_frame(text.as_bytes()),
            Message::Binary(data) => crate::ws::binary_frame(data),
        }
    }

    /// The message compressed (permessage-deflate), when the party's
    /// options compress one of its kind and length.
    pub(crate) fn to_deflated_frame(self, config: &PartyConfig) -> Option<Bytes> {
        let (text, payload) = match self {
            Message::Text(text) => (true, text.as_bytes()),
            Message::Binary(data) => (false, data),
        };
        config.compresses(text, payload.len()).then(|| crate::ws::deflated_frame(text, payload))
    }
}

/// An HTTP request to a room, head and complete body.
#[derive(Debug, Clone)]
pub struct Request {
    pub head: RequestHead,
    pub body: Bytes,
}

impl Request {
    pub fn method(&self) -> &str {
        &self.head.method
    }
    pub fn path(&self) -> &str {
        self.head.path()
    }
    pub fn query(&self) -> &str {
        self.head.query()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header_str(name)
    }
}

/// What a pre-connect or pre-request hook knows: the party and room addressed,
/// without access to the room's state (the hook runs on the accepting core).
#[derive(Debug)]
pub struct Lobby<'a> {
    pub party: &'a str,
    pub room: &'a str,
}

/// Why a pre-connect or pre-request hook refused a request.
#[derive(Debug)]
pub enum Rejection {
    /// Answer 401 with this reason as the body.
    Unauthorized(String),
    /// Answer with this response.
    Response(Response),
}

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Rejection::Unauthorized(reason)
    }
}

impl From<&str> for Rejection {
    fn from(reason: &str) -> Self {
        Rejection::Unauthorized(reason.to_owned())
    }
}

impl From<Response> for Rejection {
    fn from(response: Response) -> Self {
        Rejection::Response(response)
    }
}

impl Rejection {
    pub(crate) fn into_response(self) -> Response {
        match self {
            Rejection::Unauthorized(reason) => Response::text(401, reason),
            Rejection::Response(response) => response,
        }
    }
}

/// The request that opened a connection, available in `on_connect`.
#[derive(Debug)]
pub struct ConnectCtx<'a> {
    pub(crate) request: &'a RequestHead,
    pub(crate) protocols: &'a [String],
    pub(crate) chosen_protocol: Option<String>,
}

impl ConnectCtx<'_> {
    /// The upgrade request's head, with any headers a pre-connect hook added.
    pub fn request(&self) -> &RequestHead {
        self.request
    }

    /// The sub-protocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        self.protocols
    }

    /// Chooses one of the offered sub-protocols; it is echoed on the 101.
    /// Returns false (and chooses nothing) when the client did not offer it.
    pub fn accept_protocol(&mut self, protocol: &str) -> bool {
        let offered = self.protocols.iter().any(|p| p == protocol);
        if offered {
            self.chosen_protocol = Some(protocol.to_owned());
        }
        offered
    }
}

/// Server logic for one room. Every room of a party is a separate value of the
/// implementing type, created on the room's first event and driven by one
/// thread, one event at a time.
pub trait Party: 'static {
    /// Creates the object for a room; called before the room's first event.
    fn new(room: &Room) -> Self
    where
        Self: Sized;

    /// Runs on the accepting core before a WebSocket reaches the room, without
    /// access to room state. It may reject the connection (401 by default) or
    /// add headers that `on_connect` then sees.
    fn on_before_connect(_request: &mut RequestHead, _lobby: &Lobby<'_>) -> Result<(), Rejection>
    where
        Self: Sized,
    {
        Ok(())
    }

    /// Like `on_before_connect`, for HTTP requests to the room.
    fn on_before_request(_request: &mut Request, _lobby: &Lobby<'_>) -> Result<(), Rejection>
    where
        Self: Sized,
    {
        Ok(())
    }

    /// Runs once, after `new`, before the room's first event.
    fn on_start(&mut self, _room: &Room) {}

    /// The tags of a joining connection, asked before `on_connect`. A
    /// connection carries its id as a tag too, so at most 9 more (each at most
    /// 256 bytes; duplicates and the id count once). More, or longer, refuse
    /// the connection: 101 then close 1011 with the reason.
    fn connection_tags(&mut self, _conn: &Connection<'_>, _ctx: &ConnectCtx<'_>) -> Vec<String> {
        Vec::new()
    }

    /// A WebSocket connection is joining. The 101 is sent only after this
    /// returns; an error is sent as 101 followed by close 1011 with the reason.
    fn on_connect(&mut self, _conn: &Connection<'_>, _room: &Room, _ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        Ok(())
    }

    fn on_message(&mut self, _message: Message<'_>, _sender: &Connection<'_>, _room: &Room) {}

    /// The connection is gone; `code` is the peer's close code, or 1006 when
    /// the socket ended without a close frame.
    fn on_close(&mut self, _conn: &Connection<'_>, _code: u16, _reason: &str, _room: &Room) {}

    /// The connection broke the protocol; it is being closed with a close code.
    /// `on_close` follows.
    fn on_error(&mut self, _conn: &Connection<'_>, _error: &str, _room: &Room) {}

    fn on_request(&mut self, _request: &Request, _room: &Room) -> Response {
        Response::text(404, "Not found")
    }

    /// The room's alarm (see [`Room::set_alarm`]) is due. It runs at least
    /// once per alarm; an error (or a panic) runs it again later, with
    /// back-off. The alarm is cleared before the call, so the handler may
    /// set the next one.
    fn on_alarm(&mut self, _room: &Room) -> Result<(), String> {
        Ok(())
    }

    /// The room's timer (see [`Room::set_timer`]) is due.
    fn on_timer(&mut self, _room: &Room) {}

    /// The response to request `id` this room made with
    /// [`Room::request_room`].
    fn on_room_response(&mut self, _id: u32, _response: Response, _room: &Room) {}

    /// The outcome of request `id` this room made with [`Room::fetch`]: a
    /// response (of any status), or why there is none (a refused address,
    /// a timeout, a body over the limit, the network).
    fn on_fetch_response(&mut self, _id: u32, _outcome: Result<Response, FetchError>, _room: &Room) {}

    /// An event on socket `socket` this room opened with
    /// [`Room::connect_room`]: its opening, a message from the room at the
    /// other end, its close.
    fn on_room_socket(&mut self, _socket: u32, _event: RoomSocketEvent<'_>, _room: &Room) {}

    /// A message for a room whose object hibernates, before it is woken:
    /// return true when it was handled without the object; it then does
    /// not wake the room and does not reach `on_message`. The room's
    /// members, their state, its storage and effects work as in any
    /// callback. (The `yjs` kind relays awareness this way.)
    fn on_message_asleep(_message: Message<'_>, _sender: &Connection<'_>, _room: &Room) -> bool
    where
        Self: Sized,
    {
        false
    }

    /// Like `on_message_asleep`, for a connection of a hibernating room
    /// that closed cleanly: true when it needs no `on_close` of the object.
    fn on_close_asleep(_conn: &Connection<'_>, _code: u16, _reason: &str, _room: &Room) -> bool
    where
        Self: Sized,
    {
        false
    }

    /// Runs just before the object is snapshotted and evicted (idle, or at
    /// shutdown). Its storage writes commit with the snapshot; messages it
    /// sends go out once they have.
    fn on_hibernate(&mut self, _room: &Room) {}

    /// The party's defaults for options its config does not give (a
    /// built-in kind that hibernates unless told otherwise, say).
    fn configure(_options: &mut PartyConfig)
    where
        Self: Sized,
    {
    }

    /// The room object as bytes, for hibernation (a party with `hibernate =
    /// true` is evicted to disk when idle). `None`, the default, keeps the
    /// object in memory. [`crate::snapshot::encode`] does it for any
    /// `serde::Serialize` type.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Rebuilds a room object from what [`Party::snapshot`] gave, on the
    /// room's next event after an eviction or a restart; `on_start` is not
    /// run again. An error starts the room fresh (with `new`), and the bad
    /// snapshot is kept aside.
    fn restore(_room: &Room, _snapshot: &[u8]) -> Result<Self, String>
    where
        Self: Sized,
    {
        Err("this party does not restore snapshots".to_owned())
    }
}

/// Where a socket lives: the core that accepted it, its slot there, and the
/// slot's generation (so a message for a socket that has since closed, whose
/// slot was reused, is recognised and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnRef {
    pub core: u16,
    pub slot: u32,
    pub gen: u32,
}

/// One connection of a room, as the owner core knows it.
#[derive(Debug)]
pub(crate) struct Member {
    pub id: Box<str>,
    pub uri: Box<str>,
    pub conn: ConnRef,
    pub state: RefCell<Option<Box<[u8]>>>,
    /// The member's entry in the room's tag index; none without tags (most
    /// members), which saves an index record per connection.
    pub tags: Option<MemberKey>,
    /// It negotiated permessage-deflate.
    pub deflate: bool,
}

/// Member indexes by connection id. The ids live in the members; the table
/// holds only their indexes, 4 bytes a slot instead of a copy of every id (a
/// `HashMap<Box<str>, u32>` cost about 90 B per connection in a room of
/// 15,000, measured with heaptrack).
#[derive(Debug, Default)]
pub(crate) struct IdIndex {
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl IdIndex {
    pub fn get(&self, members: &slab::Slab<Member>, id: &str) -> Option<u32> {
        self.table.find(self.hasher.hash_one(id), |&i| &*members[i as usize].id == id).copied()
    }

    /// Indexes `members[index]` by its id, which no other member has.
    pub fn insert(&mut self, members: &slab::Slab<Member>, index: u32) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(&*members[index as usize].id);
        self.table.insert_unique(hash, index, |&i| hasher.hash_one(&*members[i as usize].id));
    }

    /// Forgets member `index`, whose id was `id`. The table shrinks when a
    /// crowd has left, so a room keeps no peak-sized table.
    pub fn remove(&mut self, members: &slab::Slab<Member>, id: &str, index: u32) {
        if let Ok(entry) = self.table.find_entry(self.hasher.hash_one(id), |&i| i == index) {
            entry.remove();
        }
        if self.table.capacity() > 64 && self.table.len() * 4 < self.table.capacity() {
            let hasher = &self.hasher;
            self.table.shrink_to(self.table.len() * 2, |&i| hasher.hash_one(&*members[i as usize].id));
        }
    }
}

/// A message's data on its way to a room: text keeps its proof of UTF-8.
#[derive(Debug)]
pub(crate) enum Payload {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// A side effect requested by room logic, carried out after the callback.
#[derive(Debug)]
pub(crate) enum Effect {
    Send {
        to: ConnRef,
        frame: Bytes,
    },
    /// `deflated` is the same message compressed, for the members that
    /// negotiated permessage-deflate (made only when some did).
    Broadcast {
        frame: Bytes,
        deflated: Option<Bytes>,
        tag: Option<Arc<str>>,
        without: SmallVec<[ConnRef; 1]>,
    },
    Close {
        to: ConnRef,
        code: u16,
        reason: String,
    },
    /// An HTTP request to another room's `on_request`; its response comes
    /// back as `on_room_response(id, ..)`.
    RoomRequest {
        id: u32,
        party: String,
        room: String,
        request: Box<Request>,
    },
    /// An HTTP request to the outside; its outcome comes back as
    /// `on_fetch_response(id, ..)`.
    Fetch {
        id: u32,
        request: Box<FetchRequest>,
    },
    /// A WebSocket-like connection to another room (`Room::connect_room`);
    /// its events come back as `on_room_socket(socket, ..)`.
    SocketOpen {
        socket: u32,
        party: String,
        room: String,
        head: Box<RequestHead>,
    },
    /// A message on an open socket of `SocketOpen`.
    SocketSend {
        socket: u32,
        data: Payload,
    },
    /// This room closes its socket `socket`.
    SocketClose {
        socket: u32,
        code: u16,
        reason: String,
    },
    /// The answer to an HTTP request this room deferred (see
    /// `Room::defer_response`).
    Reply {
        token: u32,
        response: Box<Response>,
    },
}

/// Requests to other rooms one room may have waiting at once.
pub const MAX_ROOM_REQUESTS: u32 = 64;

/// Sockets to other rooms one room may hold at once (opening or open).
pub const MAX_ROOM_SOCKETS: usize = 64;

/// What happens on a socket a room opened to another room with
/// [`Room::connect_room`], delivered to [`Party::on_room_socket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomSocketEvent<'a> {
    /// The other room admitted it (its `on_connect` returned `Ok`): it is
    /// a member there, and [`Room::socket_send`] works.
    Open,
    /// The other room sent it a message (a `send` or a broadcast that
    /// reached it).
    Message(Message<'a>),
    /// The socket is closed: by the other room (its code and reason), by
    /// this room's [`Room::socket_close`], or refused before it opened
    /// (1011 and why: a party that does not exist, a room id that is not
    /// valid, an `on_connect` that said no, a room that failed). Nothing
    /// follows it.
    Close { code: u16, reason: &'a str },
}

/// The room a callback runs in: its identity, its connections, and the
/// effects the callback asks for.
#[derive(Debug)]
pub struct Room {
    pub(crate) id: String,
    pub(crate) party: String,
    pub(crate) members: slab::Slab<Member>,
    pub(crate) by_id: IdIndex,
    pub(crate) effects: RefCell<Vec<Effect>>,
    pub(crate) max_state_bytes: usize,
    /// Members per core, so a broadcast goes only to cores that have some.
    pub(crate) members_per_core: Vec<Cell<u32>>,
    /// Members that negotiated permessage-deflate, so a broadcast is
    /// compressed only when someone will read it compressed.
    pub(crate) deflate_members: u32,
    /// Members by tag (their ids aside: those are in `by_id`).
    pub(crate) tag_index: TagIndex,
    pub(crate) tag_names: TagInterner,
    pub(crate) config: Arc<PartyConfig>,
    pub(crate) store: RoomStore,
    /// The alarm, in milliseconds since the Unix epoch.
    pub(crate) alarm_ms: Cell<Option<u64>>,
    /// The timer, in milliseconds since the Unix epoch.
    pub(crate) timer_ms: Cell<Option<u64>>,
    /// Requests to other rooms sent and not answered yet, and the id of
    /// the next.
    pub(crate) room_requests: Cell<(u32, u32)>,
    /// Set by `on_request` to answer later: the token of its `Effect::Reply`.
    pub(crate) deferred: Cell<Option<u32>>,
    /// Outbound requests sent and not settled yet, and the id of the next.
    pub(crate) fetches: Cell<(u32, u32)>,
    /// `limits.max_fetches_per_room`.
    pub(crate) max_fetches: u32,
    /// Sockets to other rooms, by id, and whether each is open yet; the
    /// id of the next.
    pub(crate) sockets: RefCell<SmallVec<[(u32, bool); 2]>>,
    pub(crate) next_socket: Cell<u32>,
}

impl Room {
    pub(crate) fn new(
        id: String,
        party: String,
        cores: usize,
        max_state_bytes: usize,
        config: Arc<PartyConfig>,
        store: Arc<Store>,
        alarm_ms: Option<u64>,
    ) -> Room {
        Room {
            store: RoomStore::new(store, &party, &id),
            config,
            alarm_ms: Cell::new(alarm_ms),
            timer_ms: Cell::new(None),
            room_requests: Cell::new((0, 1)),
            deferred: Cell::new(None),
            fetches: Cell::new((0, 1)),
            max_fetches: 16,
            sockets: RefCell::new(SmallVec::new()),
            next_socket: Cell::new(1),
            id,
            party,
            members: slab::Slab::new(),
            by_id: IdIndex::default(),
            effects: RefCell::new(Vec::new()),
            max_state_bytes,
            members_per_core: (0..cores).map(|_| Cell::new(0)).collect(),
            deflate_members: 0,
            tag_index: TagIndex::new(),
            tag_names: TagInterner::new(),
        }
    }

    /// The room id (the decoded path segment).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The party (kind of room) this room belongs to.
    pub fn party(&self) -> &str {
        &self.party
    }

    /// The party's options from the config (defaults when it has none).
    pub fn config(&self) -> &PartyConfig {
        &self.config
    }

    /// The room's durable key-value store.
    pub fn storage(&self) -> Storage<'_> {
        Storage { inner: &self.store }
    }

    /// Sets the room's alarm (one per room; this replaces any other) to
    /// `at_ms` milliseconds since the Unix epoch. `on_alarm` runs then, even
    /// after a restart; a time in the past runs it at once. The alarm
    /// commits with the event's storage writes.
    pub fn set_alarm(&self, at_ms: u64) {
        self.alarm_ms.set(Some(at_ms));
        self.store.batch.borrow_mut().set_alarm(&self.store.key, at_ms);
    }

    /// The time the alarm is set for, if any.
    pub fn alarm(&self) -> Option<u64> {
        self.alarm_ms.get()
    }

    /// Cancels the alarm.
    pub fn delete_alarm(&self) {
        if self.alarm_ms.take().is_some() {
            self.store.batch.borrow_mut().delete_alarm(&self.store.key);
        }
    }

    /// Sets the room's timer (one per room; this replaces any other) to
    /// `at_ms` milliseconds since the Unix epoch: `on_timer` runs then. Unlike
    /// the alarm it is not stored: it is cancelled when the room object is
    /// evicted, dropped or failed, and by a restart. (JavaScript rooms build
    /// `setTimeout` and `setInterval` on it.)
    pub fn set_timer(&self, at_ms: u64) {
        self.timer_ms.set(Some(at_ms));
    }

    /// Cancels the timer.
    pub fn cancel_timer(&self) {
        self.timer_ms.set(None);
    }

    /// Sends an HTTP request to room `room` of party `party`, in process:
    /// it reaches that room's `on_request` (on whichever core owns it,
    /// waking it if it hibernates; its pre-request hook does not run) and
    /// its response comes back to this room's `on_room_response` with the
    /// returned id, as an event of its own. The room keeps handling other
    /// events meanwhile, and is not evicted while requests are out. At
    /// most `MAX_ROOM_REQUESTS` at once; past it, `None`.
    pub fn request_room(&self, party: &str, room: &str, request: Request) -> Option<u32> {
        let (waiting, id) = self.room_requests.get();
        if waiting >= MAX_ROOM_REQUESTS {
            return None;
        }
        self.room_requests.set((waiting + 1, id.wrapping_add(1).max(1)));
        let (party, room, request) = (party.to_owned(), room.to_owned(), Box::new(request));
        self.effects.borrow_mut().push(Effect::RoomRequest { id, party, room, request });
        Some(id)
    }

    /// Opens a connection to room `room` of party `party`, in process, that
    /// behaves as one of that room's WebSocket members: it goes through its
    /// `connection_tags` and `on_connect` (its pre-connect hook does not
    /// run) with `path` after the room's URL (`""`, or `/...` and a query),
    /// gets its `send`s and the broadcasts its tags match, and its
    /// messages reach that room's `on_message`, across cores and through
    /// hibernation like any member's. Its events come back to this room's
    /// [`Party::on_room_socket`] with the returned id, each as an event of
    /// its own: `Open` first (or `Close`, if refused). The room keeps
    /// handling other events meanwhile, and is not evicted while it holds
    /// sockets. At most [`MAX_ROOM_SOCKETS`] at once; past it, `None`.
    pub fn connect_room(&self, party: &str, room: &str, path: &str) -> Option<u32> {
        self.connect_room_with(party, room, path, Vec::new())
    }

    /// [`Room::connect_room`], with headers the other room's `on_connect`
    /// sees on the request.
    pub fn connect_room_with(
        &self,
        party: &str,
        room: &str,
        path: &str,
        headers: Vec<crate::http::Header>,
    ) -> Option<u32> {
        let mut sockets = self.sockets.borrow_mut();
        if sockets.len() >= MAX_ROOM_SOCKETS {
            return None;
        }
        let socket = self.next_socket.get();
        self.next_socket.set(socket.wrapping_add(1).max(1));
        sockets.push((socket, false));
        let encoded = percent_encoding::utf8_percent_encode(room, percent_encoding::NON_ALPHANUMERIC);
        let path = if path.is_empty() || path.starts_with(['/', '?']) { path.to_owned() } else { format!("/{path}") };
        let head = Box::new(RequestHead {
            method: "GET".to_owned(),
            target: format!("/parties/{party}/{encoded}{path}"),
            minor_version: 1,
            headers,
        });
        let (party, room) = (party.to_owned(), room.to_owned());
        self.effects.borrow_mut().push(Effect::SocketOpen { socket, party, room, head });
        Some(socket)
    }

    /// Sends `message` on socket `socket` (from [`Room::connect_room`]) to
    /// the room at its other end. False, and nothing sent, unless it is
    /// open (its `Open` came and its `Close` did not).
    pub fn socket_send<'m>(&self, socket: u32, message: impl Into<Message<'m>>) -> bool {
        if !self.sockets.borrow().contains(&(socket, true)) {
            return false;
        }
        let data = match message.into() {
            Message::Text(text) => Payload::Text(text.to_owned().into()),
            Message::Binary(data) => Payload::Binary(Bytes::copy_from_slice(data)),
        };
        self.effects.borrow_mut().push(Effect::SocketSend { socket, data });
        true
    }

    /// Closes socket `socket` (from [`Room::connect_room`]): the other room
    /// hears `on_close` with `code` and `reason`, and this room's
    /// `on_room_socket` gets its `Close` in a later event.
    pub fn socket_close(&self, socket: u32, code: u16, reason: &str) {
        if self.sockets.borrow().iter().any(|&(s, _)| s == socket) {
            let reason = reason.to_owned();
            self.effects.borrow_mut().push(Effect::SocketClose { socket, code, reason });
        }
    }

    /// The rooms of party `party`, addressed by id: `room.parties("main")
    /// .get("lobby").fetch(request)`, PartyKit's
    /// `room.context.parties.main.get("lobby")`. (`Room::party` is this
    /// room's own party name.)
    pub fn parties<'r>(&'r self, party: &'r str) -> Parties<'r> {
        Parties { room: self, party }
    }

    /// Whether the room waits for something that arrives as an event of
    /// its own: another room's answer, an outbound request's, a socket's
    /// opening or its messages.
    pub(crate) fn awaits_events(&self) -> bool {
        self.room_requests.get().0 > 0 || self.fetches.get().0 > 0 || !self.sockets.borrow().is_empty()
    }

    /// Sends an HTTP request to the outside (an `http://` or `https://`
    /// URL): it runs on the server's fetch threads, never on a core, and
    /// its outcome (a response of any status, or why there is none) comes
    /// back to this room's `on_fetch_response` with the returned id, as an
    /// event of its own. The room keeps handling other events meanwhile,
    /// and is not evicted while requests are out. Private and local
    /// addresses are refused unless the config allows them
    /// (`allow_private_fetch`, `fetch_allow`). At most
    /// `limits.max_fetches_per_room` at once; past it, `None`.
    pub fn fetch(&self, request: FetchRequest) -> Option<u32> {
        let (waiting, id) = self.fetches.get();
        if waiting >= self.max_fetches {
            return None;
        }
        self.fetches.set((waiting + 1, id.wrapping_add(1).max(1)));
        self.effects.borrow_mut().push(Effect::Fetch { id, request: Box::new(request) });
        Some(id)
    }

    /// From `on_request`: the request is answered later, by
    /// [`Room::respond_later`] with the token this returns (the response
    /// `on_request` returns is then ignored). The room is not evicted while
    /// an answer is owed.
    pub fn defer_response(&self) -> u32 {
        let (waiting, token) = self.room_requests.get();
        self.room_requests.set((waiting, token.wrapping_add(1).max(1)));
        self.deferred.set(Some(token));
        token
    }

    /// Answers a request deferred with [`Room::defer_response`].
    pub fn respond_later(&self, token: u32, response: Response) {
        self.effects.borrow_mut().push(Effect::Reply { token, response: Box::new(response) });
    }

    /// Runs `f` as a transaction: the storage writes and alarm changes it
    /// makes stand only if it returns `Ok`; on `Err` they are undone (the
    /// event's earlier writes stay). They commit with the event's other
    /// writes, all at once.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&Room) -> Result<T, E>) -> Result<T, E> {
        let savepoint = self.savepoint();
        let result = f(self);
        if result.is_err() {
            self.roll_back(savepoint);
        }
        result
    }

    pub(crate) fn savepoint(&self) -> Savepoint {
        self.store.savepoint(self.alarm_ms.get())
    }

    pub(crate) fn roll_back(&self, savepoint: Savepoint) {
        self.alarm_ms.set(self.store.roll_back(savepoint));
    }

    /// Sends `message` to every connection of the room except those whose ids
    /// are in `without`. The frame is encoded once for all recipients.
    pub fn broadcast<'m>(&self, message: impl Into<Message<'m>>, without: &[&str]) {
        self.broadcast_filtered(None, message.into(), without);
    }

    /// Sends `message` to every connection carrying `tag` (a connection's id
    /// counts as one of its tags) except those whose ids are in `without`.
    /// Only the tagged connections' records are visited, on every core.
    pub fn broadcast_tagged<'m>(&self, tag: &str, message: impl Into<Message<'m>>, without: &[&str]) {
        self.broadcast_filtered(Some(tag), message.into(), without);
    }

    fn broadcast_filtered(&self, tag: Option<&str>, message: Message<'_>, without: &[&str]) {
        let mut without: SmallVec<[ConnRef; 1]> = without
            .iter()
            .filter_map(|id| self.by_id.get(&self.members, id))
            .map(|i| self.members[i as usize].conn)
            .collect();
        let frame = message.to_frame();
        let deflated = if self.deflate_members > 0 { message.to_deflated_frame(&self.config) } else { None };
        let mut effects = self.effects.borrow_mut();
        if let Some(tag) = tag {
            // The member whose id is the tag is reached directly, unless it
            // also carries the tag (then the tag broadcast reaches it).
            if let Some(conn) = self.id_member_not_tagged(tag) {
                let member = conn.member();
                let to = member.conn;
                if !without.contains(&to) {
                    let frame = deflated.as_ref().filter(|_| member.deflate).unwrap_or(&frame).clone();
                    effects.push(Effect::Send { to, frame });
                    without.push(to);
                }
            }
        }
        effects.push(Effect::Broadcast { frame, deflated, tag: tag.map(Arc::from), without });
    }

    /// The member whose id is `tag`, if it does not also carry `tag` as a tag.
    fn id_member_not_tagged(&self, tag: &str) -> Option<Connection<'_>> {
        let conn = self.connection(tag)?;
        let carried = self
            .tag_names
            .lookup(tag)
            .is_some_and(|t| conn.member().tags.is_some_and(|key| self.tag_index.has_tag(key, t)));
        (!carried).then_some(conn)
    }

    /// Every connection carrying `tag` (a connection's id counts as one of
    /// its tags), in unspecified order.
    pub fn connections_tagged<'a>(&'a self, tag: &str) -> impl Iterator<Item = Connection<'a>> + 'a {
        let by_id = self.id_member_not_tagged(tag);
        let tagged = self.tag_names.lookup(tag).map(|t| self.tag_index.slots(Some(t)));
        by_id.into_iter().chain(tagged.into_iter().flatten().map(move |index| Connection { room: self, index }))
    }

    /// The open connection with this id, if any.
    pub fn connection(&self, id: &str) -> Option<Connection<'_>> {
        self.by_id.get(&self.members, id).map(|index| Connection { room: self, index })
    }

    /// Every open connection of the room.
    pub fn connections(&self) -> impl Iterator<Item = Connection<'_>> {
        self.members.iter().map(move |(index, _)| Connection { room: self, index: index as u32 })
    }

    pub fn connection_count(&self) -> usize {
        self.members.len()
    }
}

/// The rooms of one party, from [`Room::parties`].
#[derive(Clone, Copy)]
pub struct Parties<'r> {
    room: &'r Room,
    party: &'r str,
}

impl<'r> Parties<'r> {
    /// Room `id` of the party (made on its first event, like any room).
    pub fn get(self, id: &'r str) -> RoomStub<'r> {
        RoomStub { room: self.room, party: self.party, id }
    }
}

/// Another room, as this room reaches it: [`Room::request_room`] and
/// [`Room::connect_room`] addressed once.
#[derive(Clone, Copy)]
pub struct RoomStub<'r> {
    room: &'r Room,
    party: &'r str,
    id: &'r str,
}

impl RoomStub<'_> {
    /// An HTTP request to the room's `on_request`; see [`Room::request_room`].
    pub fn fetch(self, request: Request) -> Option<u32> {
        self.room.request_room(self.party, self.id, request)
    }

    /// A socket to the room; see [`Room::connect_room`].
    pub fn socket(self, path: &str) -> Option<u32> {
        self.room.connect_room(self.party, self.id, path)
    }
}

/// A handle to one connection of the room.
#[derive(Clone, Copy)]
pub struct Connection<'r> {
    pub(crate) room: &'r Room,
    pub(crate) index: u32,
}

impl std::fmt::Debug for Connection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("id", &self.id()).finish()
    }
}

/// `set_state` was given more than the configured `max_state_bytes`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("connection state of {len} bytes exceeds the limit of {max} bytes")]
pub struct StateTooLarge {
    pub len: usize,
    pub max: usize,
}

impl<'r> Connection<'r> {
    fn member(&self) -> &'r Member {
        &self.room.members[self.index as usize]
    }

    /// The connection id: the client's `_pk`, or one the server generated.
    pub fn id(&self) -> &'r str {
        &self.member().id
    }

    /// The connection's tags: its id first, then those `connection_tags` gave.
    pub fn tags(&self) -> impl Iterator<Item = &'r str> + 'r {
        let room = self.room;
        let own = self
            .member()
            .tags
            .into_iter()
            .flat_map(move |key| room.tag_index.tags(key))
            .map(move |t| room.tag_names.name(t));
        std::iter::once(self.id()).chain(own)
    }

    /// The request target the connection was opened with.
    pub fn uri(&self) -> &'r str {
        &self.member().uri
    }

    pub fn send<'m>(&self, message: impl Into<Message<'m>>) {
        let message = message.into();
        let member = self.member();
        let deflated = if member.deflate { message.to_deflated_frame(&self.room.config) } else { None };
        let frame = deflated.unwrap_or_else(|| message.to_frame());
        self.room.effects.borrow_mut().push(Effect::Send { to: member.conn, frame });
    }

    /// Closes the connection with a close code and reason; `on_close` follows
    /// once the socket is gone.
    pub fn close(&self, code: u16, reason: &str) {
        self.room.effects.borrow_mut().push(Effect::Close { to: self.member().conn, code, reason: reason.to_owned() });
    }

    /// Where the connection's socket is (for the inspector).
    pub(crate) fn conn_ref(&self) -> ConnRef {
        self.member().conn
    }

    /// The size of the state attached to the connection.
    pub(crate) fn state_len(&self) -> usize {
        self.member().state.borrow().as_ref().map_or(0, |s| s.len())
    }

    /// The state attached to this connection, if any.
    pub fn state(&self) -> Option<Vec<u8>> {
        self.member().state.borrow().as_ref().map(|s| s.to_vec())
    }

    /// Attaches state to the connection (bounded by `max_state_bytes`).
    pub fn set_state(&self, state: &[u8]) -> Result<(), StateTooLarge> {
        let max = self.room.max_state_bytes;
        if state.len() > max {
            return Err(StateTooLarge { len: state.len(), max });
        }
        *self.member().state.borrow_mut() = Some(state.into());
        Ok(())
    }
}
