//! The built-in party kinds the standalone binary serves from config. They use
//! only the public [`Party`] API, like any custom party.

use crate::party::{ConnectCtx, Connection, Message, Party, Room};

/// Every message goes to everyone else in the room. Each connection is tagged
/// with the values of its `tag` query parameters (`?tag=a&tag=b`), so the
/// publish API can reach a tagged subset without custom code.
#[derive(Debug, Default)]
pub struct Relay;

impl Party for Relay {
    fn new(_room: &Room) -> Self {
        Relay
    }

    fn connection_tags(&mut self, _conn: &Connection<'_>, ctx: &ConnectCtx<'_>) -> Vec<String> {
        form_urlencoded::parse(ctx.request().query().as_bytes())
            .filter(|(name, value)| name == "tag" && !value.is_empty())
            .map(|(_, value)| value.into_owned())
            .collect()
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
