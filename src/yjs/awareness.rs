//! Awareness (presence: names, cursors, selections) of a Yjs room, kept per
//! connection in the connection's state, so it needs neither the document
//! nor the room object and lives through hibernation.
//!
//! A connection's state is one flags byte and then the awareness entries it
//! set, as a y-protocols awareness update (`clientID, clock, JSON` per
//! entry; one set to `null` is kept as such), for the clients of its first
//! awareness update only (see `OWNS`). It is bounded by the party's
//! `max_state_bytes` (16 KiB for this kind). An awareness message is relayed
//! as it came to every member, its sender too (as y-websocket's server does:
//! a lone client's provider reconnects after 30 s without a message, and its
//! own awareness renewal every 15 s is what it hears). A newcomer, or a
//! query, gets every member's entries in one message; a closing connection's
//! entries go to the others as `null` with the next clock.

use crate::party::{Connection, Message, Room};
use std::collections::HashMap;
use yrs::encoding::write::Write;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::protocol::MSG_AWARENESS;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

/// The connection applies nothing it sends to the document.
pub(super) const READ_ONLY: u8 = 1;
/// The clients the connection speaks for are known: those of its first
/// awareness update (a provider's own, sent as it connects). y-websocket's
/// and y-partykit's providers send every awareness change they hear back to
/// the server, others' too; those echoes are relayed but not kept as the
/// connection's, or its close would remove (or keep) the wrong clients.
const OWNS: u8 = 2;

/// Why a connection is closed: code and reason.
pub(super) type Close = (u16, String);

/// The connection's flags (the first byte of its state).
pub(super) fn flags(conn: &Connection<'_>) -> u8 {
    conn.state().and_then(|state| state.first().copied()).unwrap_or(0)
}

/// The awareness entries the connection set.
fn entries(conn: &Connection<'_>) -> AwarenessUpdate {
    conn.state()
        .filter(|state| state.len() > 1)
        .and_then(|state| AwarenessUpdate::decode_v1(&state[1..]).ok())
        .unwrap_or_else(|| AwarenessUpdate { clients: HashMap::new() })
}

/// Stores the connection's flags and entries as its state.
fn store(conn: &Connection<'_>, flags: u8, entries: &AwarenessUpdate) -> Result<(), Close> {
    let mut state = vec![flags];
    if !entries.clients.is_empty() {
        state.extend_from_slice(&entries.encode_v1());
    }
    conn.set_state(&state).map_err(|too_large| {
        (1009, format!("awareness state of {} bytes exceeds the limit of {} bytes", too_large.len, too_large.max))
    })
}

/// Marks a new connection with its flags.
pub(super) fn init(conn: &Connection<'_>, flags: u8) -> Result<(), Close> {
    store(conn, flags, &AwarenessUpdate { clients: HashMap::new() })
}

/// An awareness message (`frame` whole, `payload` the update in it) from
/// `sender`: its entries are kept, and the message goes to every member.
pub(super) fn on_update(frame: &[u8], payload: &[u8], sender: &Connection<'_>, room: &Room) -> Result<(), Close> {
    let update = decode(payload)?;
    let (flags, mut kept) = (flags(sender), entries(sender));
    for (client, entry) in update.clients {
        // A client set to null stays owned (its entry kept as null), so the
        // connection may set it again.
        if flags & OWNS == 0 || kept.clients.contains_key(&client) {
            kept.clients.insert(client, entry);
        }
    }
    store(sender, flags | OWNS, &kept)?;
    room.broadcast(Message::Binary(frame), &[]);
    Ok(())
}

/// An awareness update from a client.
pub(super) fn decode(payload: &[u8]) -> Result<AwarenessUpdate, Close> {
    super::untrusted("malformed awareness update", || AwarenessUpdate::decode_v1(payload).map_err(|e| e.to_string()))
}

/// One message with every member's entries (but `except`'s), if any.
pub(super) fn everyone(room: &Room, except: Option<&str>) -> Option<Vec<u8>> {
    let mut all = AwarenessUpdate { clients: HashMap::new() };
    for conn in room.connections().filter(|conn| Some(conn.id()) != except) {
        all.clients.extend(entries(&conn).clients.into_iter().filter(|(_, entry)| !is_null(entry)));
    }
    (!all.clients.is_empty()).then(|| message(&all))
}

/// The closing connection's entries, removed for everyone else: `null` at
/// the next clock, unless another member has set that client since (a
/// provider that reconnected before its old socket closed).
pub(super) fn on_close(conn: &Connection<'_>, room: &Room) {
    let mut gone = entries(conn);
    gone.clients.retain(|_, entry| !is_null(entry));
    if gone.clients.is_empty() {
        return;
    }
    for other in room.connections().filter(|other| other.id() != conn.id()) {
        for (client, entry) in entries(&other).clients {
            if !is_null(&entry) {
                gone.clients.remove(&client);
            }
        }
    }
    for entry in gone.clients.values_mut() {
        *entry = AwarenessUpdateEntry { clock: entry.clock.wrapping_add(1), json: "null".into() };
    }
    if !gone.clients.is_empty() {
        room.broadcast(Message::Binary(&message(&gone)), &[conn.id()]);
    }
}

fn is_null(entry: &AwarenessUpdateEntry) -> bool {
    &*entry.json == "null"
}

/// The y-protocols awareness message carrying `update`.
fn message(update: &AwarenessUpdate) -> Vec<u8> {
    let mut out = Vec::new();
    out.write_var(MSG_AWARENESS);
    out.write_buf(update.encode_v1());
    out
}
