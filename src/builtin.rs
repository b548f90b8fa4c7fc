//! The built-in party kinds the standalone binary serves from config. They use
//! only the public [`Party`] API, like any custom party.

use crate::party::{Connection, Message, Party, Room};

/// Every message goes to everyone else in the room.
#[derive(Debug, Default)]
pub struct Relay;

impl Party for Relay {
    fn new(_room: &Room) -> Self {
        Relay
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        room.broadcast(message, &[sender.id()]);
    }
}

/// Every message goes back to its sender.
#[derive(Debug, Default)]
pub struct Echo;

impl Party for Echo {
    fn new(_room: &Room) -> Self {
        Echo
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, _room: &Room) {
        sender.send(message);
    }
}
