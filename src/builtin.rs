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

/// A chat room: relays like [`Relay`] (with the same `?tag=` tags), keeps
/// the last `history` messages (per-party config, default 100), sends them
/// to each new connection on connect (one frame per message, oldest first),
/// and appends every message to room storage before relaying it. With
/// `durability = "strict"` a message is relayed only once it is on disk, so
/// every message any client received is in the history after a crash.
#[derive(Debug)]
pub struct Chat {
    history: std::collections::VecDeque<(bool, Vec<u8>)>,
    /// Sequence number of the next message.
    next: u64,
}

impl Chat {
    const PREFIX: &'static [u8] = b"m/";

    fn key(seq: u64) -> Vec<u8> {
        format!("m/{seq:020}").into_bytes()
    }

    /// The history as room storage has it.
    fn load(room: &Room) -> Chat {
        let limit = room.config().history;
        let options = crate::ListOptions {
            prefix: Some(Self::PREFIX.to_vec()),
            reverse: true,
            limit: Some(limit),
            ..Default::default()
        };
        let entries = room.storage().list(&options).unwrap_or_else(|error| {
            tracing::error!(room = room.id(), %error, "cannot read the chat history");
            Vec::new()
        });
        let next = entries
            .first()
            .and_then(|(key, _)| std::str::from_utf8(&key[Self::PREFIX.len()..]).ok()?.parse::<u64>().ok())
            .map_or(0, |last| last + 1);
        let history = entries
            .into_iter()
            .rev()
            .filter_map(|(_, value)| {
                let (&kind, data) = value.split_first()?;
                Some((kind == b't', data.to_vec()))
            })
            .collect();
        Chat { history, next }
    }
}

impl Party for Chat {
    fn new(room: &Room) -> Self {
        Chat::load(room)
    }

    fn connection_tags(&mut self, conn: &Connection<'_>, ctx: &ConnectCtx<'_>) -> Vec<String> {
        Relay.connection_tags(conn, ctx)
    }

    fn on_connect(&mut self, conn: &Connection<'_>, _room: &Room, _ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        for (text, data) in &self.history {
            match text {
                true => conn.send(std::str::from_utf8(data).expect("text messages are stored as UTF-8")),
                false => conn.send(data.as_slice()),
            }
        }
        Ok(())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        let (text, data) = match message {
            Message::Text(text) => (true, text.as_bytes()),
            Message::Binary(data) => (false, data),
        };
        let mut value = Vec::with_capacity(data.len() + 1);
        value.push(if text { b't' } else { b'b' });
        value.extend_from_slice(data);
        let limit = room.config().history as u64;
        let stored =
            room.storage().put(Chat::key(self.next), &value).and_then(|()| match self.next.checked_sub(limit) {
                Some(old) => room.storage().delete(Chat::key(old)).map(drop),
                None => Ok(()),
            });
        if let Err(error) = stored {
            let code = if matches!(error, crate::StorageError::ValueTooLarge { .. }) { 1009 } else { 1011 };
            sender.close(code, &format!("message not stored: {error}"));
            return;
        }
        self.next += 1;
        self.history.push_back((text, data.to_vec()));
        if self.history.len() > limit as usize {
            self.history.pop_front();
        }
        room.broadcast(message, &[sender.id()]);
    }

    /// The history lives in storage; the snapshot only marks the room as
    /// hibernated, and waking reads the history back.
    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }

    fn restore(room: &Room, _snapshot: &[u8]) -> Result<Self, String> {
        Ok(Chat::load(room))
    }
}
