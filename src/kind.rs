//! Party kinds: how the server creates room objects and runs the static
//! pre-connect and pre-request hooks of a registered [`Party`] type, behind an
//! object-safe interface so one server can serve many party types.

use crate::config::PartyConfig;
use crate::http::RequestHead;
use crate::party::{Connection, Lobby, Message, Party, Rejection, Request, Room};
use std::marker::PhantomData;

pub(crate) trait PartyKind: Send + Sync + 'static {
    fn create(&self, room: &Room) -> Box<dyn Party>;
    fn restore(&self, room: &Room, snapshot: &[u8]) -> Result<Box<dyn Party>, String>;
    fn before_connect(&self, request: &mut RequestHead, lobby: &Lobby<'_>) -> Result<(), Rejection>;
    fn before_request(&self, request: &mut Request, lobby: &Lobby<'_>) -> Result<(), Rejection>;
    /// `Party::on_message_asleep`.
    fn message_asleep(&self, _message: Message<'_>, _sender: &Connection<'_>, _room: &Room) -> bool {
        false
    }
    /// `Party::on_close_asleep`.
    fn close_asleep(&self, _conn: &Connection<'_>, _code: u16, _reason: &str, _room: &Room) -> bool {
        false
    }
    /// `Party::configure`.
    fn configure(&self, _options: &mut PartyConfig) {}
}

pub(crate) struct Kind<P>(PhantomData<fn() -> P>);

impl<P> Kind<P> {
    pub(crate) fn new() -> Self {
        Kind(PhantomData)
    }
}

impl<P: Party> PartyKind for Kind<P> {
    fn create(&self, room: &Room) -> Box<dyn Party> {
        Box::new(P::new(room))
    }

    fn restore(&self, room: &Room, snapshot: &[u8]) -> Result<Box<dyn Party>, String> {
        P::restore(room, snapshot).map(|party| Box::new(party) as Box<dyn Party>)
    }

    fn before_connect(&self, request: &mut RequestHead, lobby: &Lobby<'_>) -> Result<(), Rejection> {
        P::on_before_connect(request, lobby)
    }

    fn before_request(&self, request: &mut Request, lobby: &Lobby<'_>) -> Result<(), Rejection> {
        P::on_before_request(request, lobby)
    }

    fn message_asleep(&self, message: Message<'_>, sender: &Connection<'_>, room: &Room) -> bool {
        P::on_message_asleep(message, sender, room)
    }

    fn close_asleep(&self, conn: &Connection<'_>, code: u16, reason: &str, room: &Room) -> bool {
        P::on_close_asleep(conn, code, reason, room)
    }

    fn configure(&self, options: &mut PartyConfig) {
        P::configure(options)
    }
}
