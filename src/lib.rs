//! dormouse: a self-hosted, PartyKit-compatible room server.
//!
//! A *party* is a kind of room, a type implementing [`Party`]; a *room* is one
//! instance of it, addressed as `/parties/:party/:room`. Every WebSocket and
//! HTTP request for a room reaches the same single-threaded room object on the
//! room's owner core. Build a server with [`Server`], register parties, start
//! it, and keep the [`ServerHandle`]:
//!
//! ```no_run
//! use dormouse::{Config, Connection, Message, Party, Room, Server};
//!
//! struct Shout;
//! impl Party for Shout {
//!     fn new(_room: &Room) -> Self { Shout }
//!     fn on_message(&mut self, message: Message<'_>, _sender: &Connection<'_>, room: &Room) {
//!         if let Message::Text(text) = message {
//!             room.broadcast(text.to_uppercase().as_str(), &[]);
//!         }
//!     }
//! }
//!
//! let server = Server::new(Config::embedded_default()).party::<Shout>("shout").start().unwrap();
//! server.wait();
//! ```
#![deny(unsafe_code)]

mod builtin;
mod client_ip;
mod cluster;
pub mod config;
mod core_msg;
mod cors;
pub mod deflate;
pub mod http;
mod inspector;
pub(crate) mod js;
mod kind;
mod metrics;
mod outbound;
mod outq;
pub mod party;
mod project;
mod rate_limit;
mod reactor;
mod room;
mod room_key;
mod route;
mod server;
pub mod snapshot;
mod static_files;
mod storage;
pub mod ws;
pub mod yjs;

pub use builtin::{Chat, Echo, Relay};
pub use config::{CompressionMode, Config, Durability, Limits, MetricsConfig, PartyConfig, SlowConsumerPolicy};
pub use http::{Header, RequestHead, Response};
pub use outbound::{FetchError, FetchRequest};
pub use party::{
    ConnectCtx, Connection, Lobby, Message, Parties, Party, Rejection, Request, Room, RoomSocketEvent, RoomStub,
    StateTooLarge,
};
pub use server::{Server, ServerHandle, ShutdownTrigger, StartError};
pub use storage::{ListOptions, Storage, StorageError};
pub use yjs::{YDoc, YjsHooks};

/// Internals the benchmarks in `benches/` drive; not a stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::outq::WriteQueue;
    pub use crate::reactor::CONN_RECORD_BYTES;
    use crate::room::RoomHost;
    use std::sync::Arc;

    /// One room of party type `P` on a store, evicted and woken the way the
    /// reactor does it (without the reactor).
    pub struct Hibernation {
        host: RoomHost,
    }

    impl Hibernation {
        pub fn new<P: crate::Party>(store: Arc<dormouse_hibernate::Store>, room: &str) -> Hibernation {
            Hibernation::of_kind(store, room, Arc::new(crate::kind::Kind::<P>::new()))
        }

        /// A room of the JavaScript (or TypeScript) module `main`, with the
        /// default limits, and one connection (`bench`) joined.
        pub fn javascript(store: Arc<dormouse_hibernate::Store>, room: &str, main: &std::path::Path) -> Hibernation {
            let limits = crate::js::JsLimits::of(&crate::Config::from_toml("").expect("the defaults are valid").limits);
            let script = crate::js::Script::load(main, Vec::new(), limits).unwrap_or_else(|e| panic!("{e}"));
            let mut room = Hibernation::of_kind(store, room, Arc::new(crate::js::JsKind::new(script)));
            room.join();
            room
        }

        /// Joins one connection, `bench`, and drops what joining sent it.
        pub fn join(&mut self) {
            let joining = crate::core_msg::Joining {
                id: "bench".into(),
                uri: "/parties/bench/room".into(),
                head: crate::http::RequestHead {
                    method: "GET".into(),
                    target: "/parties/bench/room?_pk=bench".into(),
                    minor_version: 1,
                    headers: Vec::new(),
                },
                protocols: Vec::new(),
                deflate: false,
            };
            let conn = crate::party::ConnRef { core: 0, slot: 0, gen: 0 };
            match self.host.connect(conn, joining) {
                Ok(crate::room::Admission::Accepted { .. }) => {}
                _ => panic!("the bench connection joins"),
            }
            self.host.room.effects.borrow_mut().clear();
        }

        fn of_kind(
            store: Arc<dormouse_hibernate::Store>,
            room: &str,
            kind: Arc<dyn crate::kind::PartyKind>,
        ) -> Hibernation {
            let config = Arc::new(crate::PartyConfig { hibernate: true, ..Default::default() });
            let room = crate::party::Room::new(room.into(), "bench".into(), 1, 2048, config, store, None);
            let (host, _) = RoomHost::new(room, kind, None, 0).unwrap_or_else(|_| panic!("the party starts"));
            Hibernation { host }
        }

        /// Delivers a text message from the `bench` connection (see
        /// `join`) and takes the effects it asked for: the room's cost of
        /// one event, without sockets.
        pub fn message(&mut self, text: &str) -> usize {
            self.deliver(crate::Message::Text(text))
        }

        /// As `message`, for a binary one.
        pub fn binary(&mut self, data: &[u8]) -> usize {
            self.deliver(crate::Message::Binary(data))
        }

        fn deliver(&mut self, message: crate::Message<'_>) -> usize {
            let member = self.host.room.by_id.get(&self.host.room.members, "bench").expect("the bench connection");
            let conn = self.host.room.members[member as usize].conn;
            self.host.message(conn, member, message).unwrap_or_else(|_| panic!("the room runs"));
            let effects = std::mem::take(&mut *self.host.room.effects.borrow_mut());
            effects.len()
        }

        /// An HTTP request to the room's `on_request`; its effects are taken.
        pub fn request(&mut self, method: &str, body: Vec<u8>) -> crate::Response {
            let head = crate::http::RequestHead {
                method: method.into(),
                target: "/parties/bench/room".into(),
                minor_version: 1,
                headers: Vec::new(),
            };
            let request = crate::Request { head, body: body.into() };
            let response = self.host.request(&request).unwrap_or_else(|_| panic!("the room runs"));
            self.host.room.effects.borrow_mut().clear();
            response
        }

        /// Hands the room's storage writes so far to the store's writer.
        pub fn commit(&mut self) {
            let store = &self.host.room.store;
            if let Some((_, batch)) = store.take_batch() {
                store.store.submit(batch, Box::new(|result| result.expect("the writes commit"))).expect("store open");
            }
        }

        /// Serialises the object, seals the envelope, hands the write to the
        /// store's writer and drops the object: the owner core's cost of an
        /// eviction (the commit happens on the writer thread).
        pub fn evict(&mut self) {
            let seq = self.host.room.store.seq.get();
            let envelope = self.host.evict(seq).expect("the party snapshots");
            let store = &self.host.room.store;
            store.batch.borrow_mut().put_snapshot(&store.key, envelope);
            let (_, batch) = store.take_batch().expect("the batch holds the snapshot");
            store.store.submit(batch, Box::new(|result| result.expect("the snapshot commits"))).expect("store open");
        }

        /// Waits for the eviction's write and forgets the in-memory copy, so
        /// the next wake reads the store as after a restart.
        pub fn settle(&mut self) {
            let store = &self.host.room.store;
            store.store.flush().expect("the store flushes");
            store.committed(store.seq.get() - 1);
            self.host.unsaved = None;
        }

        /// Reads the snapshot, checks and decompresses it, and restores the
        /// object: the cost of a wake-up before the event is delivered.
        pub fn wake(&mut self) {
            match self.host.wake() {
                Ok(Some(crate::room::Origin::Restored)) => {}
                _ => panic!("the room restores from its snapshot"),
            }
        }
    }
}
