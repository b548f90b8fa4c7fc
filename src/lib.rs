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
pub mod config;
pub mod http;
mod kind;
mod metrics;
mod outq;
pub mod party;
mod reactor;
mod room;
mod route;
mod server;
pub mod snapshot;
mod storage;
pub mod ws;

pub use builtin::{Chat, Echo, Relay};
pub use config::{Config, Durability, Limits, MetricsConfig, PartyConfig, SlowConsumerPolicy};
pub use http::{RequestHead, Response};
pub use party::{ConnectCtx, Connection, Lobby, Message, Party, Rejection, Request, Room, StateTooLarge};
pub use server::{Server, ServerHandle, ShutdownTrigger, StartError};
pub use storage::{ListOptions, Storage, StorageError};

/// Internals the benchmarks in `benches/` drive; not a stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::outq::WriteQueue;
    pub use crate::reactor::CONN_RECORD_BYTES;
}
