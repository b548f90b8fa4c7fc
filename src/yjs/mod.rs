//! The `yjs` kind: a collaborative document per room that y-websocket's
//! `WebsocketProvider` and y-partykit's provider use unmodified.
//!
//! The wire format is y-protocols over binary frames: a sync message (step
//! 1, a state vector: answered with step 2, the update the sender lacks;
//! step 2 or update: applied, stored, relayed to the other members), an
//! awareness message (relayed, kept per connection: see [`awareness`]), or
//! a query for awareness. y-partykit's provider cuts messages over 1 MB into
//! binary chunks between two text markers (`y-pk-batch#{..}`); they are
//! joined here. On connect the server sends its own step 1 and every
//! member's awareness, as y-websocket's server does.
//!
//! The document lives in room storage ([`log`]): an update is appended
//! before it is relayed, so under strict durability every update a client
//! received survives a crash. The kind hibernates by default: after
//! `idle_evict_ms` without document traffic the `Doc` is dropped (its tail
//! merged into the stored state first) and loaded again by the next sync
//! message; readers joining are served from the stored state until an
//! update needs the `Doc` ([`document`]). Awareness and its queries are served while it sleeps
//! ([`Party::on_message_asleep`]), and so are clean closes: presence traffic
//! never wakes a document.
//!
//! HTTP to a document room: `GET` answers the merged document as one Yjs
//! v1 update; `POST` with a v1 update applies it as a client's update would
//! be. Both pass the party's pre-request hook ([`YjsHooks`]).

mod awareness;
mod document;
mod log;

use crate::config::PartyConfig;
use crate::http::{RequestHead, Response};
use crate::party::{ConnectCtx, Connection, Lobby, Message, Party, Rejection, Request, Room};
use crate::room::FailRoom;
use document::Document;
use std::collections::HashMap;
use std::marker::PhantomData;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::protocol::{MSG_AUTH, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC};
use yrs::sync::protocol::{MSG_SYNC_STEP_1, MSG_SYNC_STEP_2, MSG_SYNC_UPDATE};
use yrs::updates::decoder::Decode;
use yrs::{Doc, StateVector, Transact, Update};

/// The request header a pre-connect hook sets (any value) to make a
/// connection read-only; `?readonly` (not `0` or `false`) does it too.
pub const READ_ONLY_HEADER: &str = "x-yjs-read-only";

/// Per-connection state of this kind unless the config says otherwise: a
/// connection's awareness entries (a cursor and a name take ~200 bytes).
const DEFAULT_MAX_STATE_BYTES: usize = 16 << 10;

/// The text marker around a y-partykit provider's chunked message.
const BATCH_MARKER: &str = "y-pk-batch#";

/// Static hooks of a Yjs party: who may connect (and read-only or not), and
/// who may use its HTTP API. The default, [`Open`], lets everyone in.
pub trait YjsHooks: 'static {
    /// As [`Party::on_before_connect`]; add [`READ_ONLY_HEADER`] to the
    /// request to make the connection read-only.
    fn on_before_connect(_request: &mut RequestHead, _lobby: &Lobby<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    /// As [`Party::on_before_request`].
    fn on_before_request(_request: &mut Request, _lobby: &Lobby<'_>) -> Result<(), Rejection> {
        Ok(())
    }
}

/// No hooks: every connection and request is let in.
#[derive(Debug)]
pub struct Open;

impl YjsHooks for Open {}

/// A Yjs document room (the built-in `yjs` kind is `YDoc<Open>`). Register
/// `YDoc<MyHooks>` on a [`crate::Server`] for one with authentication.
pub struct YDoc<H: YjsHooks = Open> {
    doc: Document,
    log: log::Log,
    /// y-partykit chunked messages being received, by connection id.
    batches: HashMap<Box<str>, Batch>,
    hooks: PhantomData<fn() -> H>,
}

/// A chunked message being received.
struct Batch {
    id: String,
    size: usize,
    count: usize,
    data: Vec<u8>,
    parts: usize,
}

/// A y-partykit batch marker's JSON.
#[derive(serde::Deserialize)]
struct Marker {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    size: usize,
    count: usize,
}

/// A y-protocols message, split.
enum Incoming<'a> {
    SyncStep1(&'a [u8]),
    /// Step 2 or update: an update to apply.
    Update(&'a [u8]),
    /// The awareness update inside.
    Awareness(&'a [u8]),
    QueryAwareness,
    /// A client's auth message: the server ignores it.
    Auth,
}

type Close = awareness::Close;

/// Splits a message into its type and payload; nothing is decoded beyond.
fn split(data: &[u8]) -> Result<Incoming<'_>, Close> {
    let malformed = |e: yrs::encoding::read::Error| (1007, format!("malformed y-protocols message: {e}"));
    let mut cursor = Cursor::new(data);
    let tag: u8 = cursor.read_var().map_err(malformed)?;
    let payload = |cursor: &mut Cursor<'_>| -> Result<&[u8], Close> {
        let len: usize = cursor.read_var().map_err(malformed)?;
        let start = cursor.next;
        data.get(start..start.saturating_add(len))
            .ok_or_else(|| (1007, "malformed y-protocols message: truncated".into()))
    };
    match tag {
        MSG_SYNC => match cursor.read_var::<u8>().map_err(malformed)? {
            MSG_SYNC_STEP_1 => Ok(Incoming::SyncStep1(payload(&mut cursor)?)),
            MSG_SYNC_STEP_2 | MSG_SYNC_UPDATE => Ok(Incoming::Update(payload(&mut cursor)?)),
            other => Err((1003, format!("unknown y-protocols sync message type {other}"))),
        },
        MSG_AWARENESS => Ok(Incoming::Awareness(payload(&mut cursor)?)),
        MSG_QUERY_AWARENESS => Ok(Incoming::QueryAwareness),
        MSG_AUTH => Ok(Incoming::Auth),
        other => Err((1003, format!("unknown y-protocols message type {other}"))),
    }
}

/// Runs a `yrs` decoder (or an apply) on bytes from a client. yrs 0.28
/// asserts on some malformed input instead of returning an error (a client
/// id past 53 bits panics in `ClientID::new`, found by the property test
/// below), and a panic in a room callback fails the whole room; so the
/// panic is caught here and becomes the sender's error. What the closure
/// touches is dropped with it or was not changed yet (decoding builds new
/// values; an apply is tried on the document only after its update decoded).
pub(super) fn untrusted<T>(what: &str, decode: impl FnOnce() -> Result<T, String>) -> Result<T, Close> {
    // The server's panic hook stays quiet meanwhile: a hostile client must
    // not fill the log with backtraces.
    DECODING.set(true);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
    DECODING.set(false);
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err((1007, format!("{what}: {error}"))),
        Err(_) => Err((1007, format!("{what}: rejected by the decoder"))),
    }
}

thread_local! {
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is decoding a client's bytes in [`untrusted`] (a
/// panic there is the client's error, not worth a log line).
pub(crate) fn decoding_untrusted() -> bool {
    DECODING.get()
}

/// A sync message of `kind` carrying `payload`.
fn sync_message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.write_var(MSG_SYNC);
    out.write_var(kind);
    out.write_buf(payload);
    out
}

/// Handles what needs no document: awareness and its queries.
fn presence(data: &[u8], incoming: &Incoming<'_>, sender: &Connection<'_>, room: &Room) -> Result<bool, Close> {
    match incoming {
        Incoming::Awareness(payload) => awareness::on_update(data, payload, sender, room).map(|()| true),
        Incoming::QueryAwareness => {
            if let Some(all) = awareness::everyone(room, None) {
                sender.send(all.as_slice());
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn is_read_only(request: &RequestHead) -> bool {
    let asked = form_urlencoded::parse(request.query().as_bytes())
        .any(|(name, value)| name == "readonly" && value != "0" && value != "false");
    asked || request.header(READ_ONLY_HEADER).is_some()
}

impl<H: YjsHooks> YDoc<H> {
    /// The room's document as storage has it. A document that does not load
    /// fails the room (its clients see 1011 with the reason); what is
    /// stored stays as it is.
    fn load(room: &Room) -> Self {
        let loaded = log::Log::load(room).and_then(|(log, stored)| Ok((log, Document::load(stored)?)));
        match loaded {
            Ok((log, doc)) => YDoc { doc, log, batches: HashMap::new(), hooks: PhantomData },
            Err(error) => Self::unloadable(room, error),
        }
    }

    fn unloadable(room: &Room, error: String) -> ! {
        tracing::error!(party = room.party(), room = room.id(), %error, "a Yjs document does not load");
        std::panic::panic_any(FailRoom(error))
    }

    /// The `Doc`, built now if the room was serving its stored state.
    fn doc(&mut self, room: &Room) -> &Doc {
        match self.doc.doc() {
            Ok(_) => self.doc.live().expect("just built"),
            Err(error) => Self::unloadable(room, error),
        }
    }

    /// Applies an update (from a client or a POST), stores it and relays it
    /// to every member but `from`.
    fn apply(&mut self, update: &[u8], from: Option<&str>, room: &Room) -> Result<(), Close> {
        let decoded = untrusted("malformed Yjs update", || Update::decode_v1(update).map_err(|e| e.to_string()))?;
        if decoded.is_empty() || self.doc.knows(&decoded) {
            return Ok(());
        }
        let max = room.config().max_document_bytes;
        if self.log.size() + update.len() > max {
            return Err((1009, format!("the document would exceed its limit of {max} bytes")));
        }
        let doc = self.doc(room);
        untrusted("the update does not apply", || doc.transact_mut().apply_update(decoded).map_err(|e| e.to_string()))?;
        self.log.append(room, update).map_err(|e| (1011, format!("the update was not stored: {e}")))?;
        if self.log.wants_compaction() {
            self.compact(room);
        }
        let message = sync_message(MSG_SYNC_UPDATE, update);
        room.broadcast(Message::Binary(&message), from.as_slice());
        Ok(())
    }

    fn compact(&mut self, room: &Room) {
        // A document not built has nothing to compact: it is as stored.
        let Some(doc) = self.doc.live() else { return };
        if let Err(error) = self.log.compact(room, doc) {
            // The tail stays, and is read on the next load: nothing is lost.
            tracing::error!(party = room.party(), room = room.id(), %error, "a Yjs document was not compacted");
        }
    }

    fn on_binary(&mut self, data: &[u8], sender: &Connection<'_>, room: &Room) -> Result<(), Close> {
        let incoming = split(data)?;
        if presence(data, &incoming, sender, room)? {
            return Ok(());
        }
        match incoming {
            Incoming::SyncStep1(state_vector) => {
                let sv = untrusted("malformed state vector", || {
                    StateVector::decode_v1(state_vector).map_err(|e| e.to_string())
                })?;
                let update = match self.doc.diff(&sv) {
                    Ok(update) => update,
                    Err(error) => Self::unloadable(room, error),
                };
                sender.send(sync_message(MSG_SYNC_STEP_2, &update).as_slice());
                Ok(())
            }
            Incoming::Update(_) if awareness::flags(sender) & awareness::READ_ONLY != 0 => Ok(()),
            Incoming::Update(update) => self.apply(update, Some(sender.id()), room),
            Incoming::Auth | Incoming::Awareness(_) | Incoming::QueryAwareness => Ok(()),
        }
    }

    /// A y-partykit batch marker: starts or ends a chunked message.
    fn on_marker(&mut self, text: &str, sender: &Connection<'_>, room: &Room) -> Result<(), Close> {
        let marker: Marker = serde_json::from_str(&text[BATCH_MARKER.len()..])
            .map_err(|e| (1007, format!("malformed y-partykit batch marker: {e}")))?;
        let max = room.config().max_document_bytes;
        match marker.kind.as_str() {
            "start" => {
                let pending: usize = self.batches.values().map(|b| b.size).sum();
                if marker.size.saturating_add(pending) > max {
                    return Err((
                        1009,
                        format!("a chunked message of {} bytes is past the limit of {max}", marker.size),
                    ));
                }
                let batch = Batch { id: marker.id, size: marker.size, count: marker.count, data: Vec::new(), parts: 0 };
                self.batches.insert(sender.id().into(), batch);
                Ok(())
            }
            "end" => {
                let batch =
                    self.batches.remove(sender.id()).ok_or((1002, "a batch ended that never started".into()))?;
                if batch.id != marker.id || batch.parts != batch.count || batch.data.len() != batch.size {
                    return Err((1002, "a chunked message does not match its markers".into()));
                }
                self.on_binary(&batch.data, sender, room)
            }
            other => Err((1007, format!("unknown y-partykit batch marker type {other:?}"))),
        }
    }
}

impl<H: YjsHooks> Party for YDoc<H> {
    fn new(room: &Room) -> Self {
        Self::load(room)
    }

    fn configure(options: &mut PartyConfig) {
        if options.hibernate_option.is_none() {
            options.hibernate = true;
        }
        options.max_state_bytes.get_or_insert(DEFAULT_MAX_STATE_BYTES);
    }

    fn on_before_connect(request: &mut RequestHead, lobby: &Lobby<'_>) -> Result<(), Rejection> {
        H::on_before_connect(request, lobby)
    }

    fn on_before_request(request: &mut Request, lobby: &Lobby<'_>) -> Result<(), Rejection> {
        H::on_before_request(request, lobby)
    }

    fn on_connect(&mut self, conn: &Connection<'_>, room: &Room, ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        let flags = if is_read_only(ctx.request()) { awareness::READ_ONLY } else { 0 };
        awareness::init(conn, flags).map_err(|(_, reason)| reason)?;
        conn.send(sync_message(MSG_SYNC_STEP_1, &self.doc.state_vector()).as_slice());
        if let Some(all) = awareness::everyone(room, Some(conn.id())) {
            conn.send(all.as_slice());
        }
        Ok(())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        let outcome = match message {
            Message::Binary(data) => match self.batches.get_mut(sender.id()) {
                Some(batch) => {
                    batch.parts += 1;
                    batch.data.extend_from_slice(data);
                    if batch.data.len() > batch.size || batch.parts > batch.count {
                        self.batches.remove(sender.id());
                        Err((1002, "a chunked message is longer than its start marker said".into()))
                    } else {
                        Ok(())
                    }
                }
                None => self.on_binary(data, sender, room),
            },
            Message::Text(text) if text.starts_with(BATCH_MARKER) => self.on_marker(text, sender, room),
            Message::Text(_) => Err((1003, "a yjs room takes binary y-protocols messages".into())),
        };
        if let Err((code, reason)) = outcome {
            sender.close(code, &reason);
        }
    }

    fn on_message_asleep(message: Message<'_>, sender: &Connection<'_>, room: &Room) -> bool {
        let Message::Binary(data) = message else { return false };
        let incoming = match split(data) {
            Ok(incoming @ (Incoming::Awareness(_) | Incoming::QueryAwareness)) => incoming,
            // The document's business, or an error it reports.
            _ => return false,
        };
        if let Err((code, reason)) = presence(data, &incoming, sender, room) {
            sender.close(code, &reason);
        }
        true
    }

    fn on_close(&mut self, conn: &Connection<'_>, _code: u16, _reason: &str, room: &Room) {
        self.batches.remove(conn.id());
        awareness::on_close(conn, room);
    }

    fn on_close_asleep(conn: &Connection<'_>, _code: u16, _reason: &str, room: &Room) -> bool {
        awareness::on_close(conn, room);
        true
    }

    fn on_request(&mut self, request: &Request, room: &Room) -> Response {
        match request.method() {
            "GET" | "HEAD" => {
                let update = self.doc.whole();
                Response::new(200).with_header("content-type", "application/octet-stream").with_body(update)
            }
            "POST" => match self.apply(&request.body, None, room) {
                Ok(()) => Response::text(200, "applied"),
                Err((1009, reason)) => Response::text(413, reason),
                Err((1011, reason)) => Response::text(500, reason),
                Err((_, reason)) => Response::text(400, reason),
            },
            _ => Response::text(405, "a yjs room takes GET and POST").with_header("allow", "GET, HEAD, POST"),
        }
    }

    fn on_hibernate(&mut self, room: &Room) {
        self.compact(room);
    }

    /// The document is in storage; the snapshot only marks the room as
    /// hibernated, and waking reads the document back.
    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }

    fn restore(room: &Room, _snapshot: &[u8]) -> Result<Self, String> {
        Ok(Self::load(room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_by_type() {
        let step1 = sync_message(MSG_SYNC_STEP_1, &[0]);
        assert!(matches!(split(&step1), Ok(Incoming::SyncStep1([0]))));
        let update = sync_message(MSG_SYNC_UPDATE, &[0, 0]);
        assert!(matches!(split(&update), Ok(Incoming::Update([0, 0]))));
        assert!(matches!(split(&[MSG_QUERY_AWARENESS]), Ok(Incoming::QueryAwareness)));
        assert!(matches!(split(&[9, 0]), Err((1003, _))));
        assert!(matches!(split(&[MSG_SYNC, 7]), Err((1003, _))));
        // A length past the end, and an empty frame.
        assert!(matches!(split(&[MSG_SYNC, MSG_SYNC_UPDATE, 200, 1]), Err((1007, _))));
        assert!(matches!(split(&[]), Err((1007, _))));
    }

    proptest::proptest! {
        /// Whatever a client sends, splitting it and decoding what is
        /// inside (as `on_binary` and `awareness::on_update` do) returns an
        /// error or a value; it never panics, which would fail the room and
        /// close every member.
        #[test]
        fn any_bytes_split_and_decode_without_panicking(data in proptest::collection::vec(proptest::num::u8::ANY, 0..96)) {
            let mut messages = vec![data.clone()];
            // The same bytes as the payload of each kind of message, so the
            // decoders see them, not just the splitter.
            for kind in [MSG_SYNC_STEP_1, MSG_SYNC_UPDATE] {
                messages.push(sync_message(kind, &data));
            }
            let mut awareness = vec![MSG_AWARENESS];
            awareness.write_buf(&data);
            messages.push(awareness);
            for message in &messages {
                match split(message) {
                    Ok(Incoming::SyncStep1(sv)) => {
                        let _ = untrusted("sv", || StateVector::decode_v1(sv).map_err(|e| e.to_string()));
                    }
                    Ok(Incoming::Update(update)) => {
                        let doc = Doc::new();
                        let _ = untrusted("update", || {
                            let update = Update::decode_v1(update).map_err(|e| e.to_string())?;
                            doc.transact_mut().apply_update(update).map_err(|e| e.to_string())
                        });
                    }
                    Ok(Incoming::Awareness(payload)) => {
                        let _ = awareness::decode(payload);
                    }
                    Ok(Incoming::QueryAwareness | Incoming::Auth) | Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn read_only_comes_from_the_query_or_a_hook_header() {
        let head = |target: &str, headers: Vec<crate::http::Header>| RequestHead {
            method: "GET".into(),
            target: target.into(),
            minor_version: 1,
            headers,
        };
        assert!(is_read_only(&head("/parties/docs/a?readonly=1", vec![])));
        assert!(is_read_only(&head("/parties/docs/a?readonly", vec![])));
        assert!(!is_read_only(&head("/parties/docs/a?readonly=false", vec![])));
        assert!(!is_read_only(&head("/parties/docs/a", vec![])));
        let header = crate::http::Header { name: READ_ONLY_HEADER.into(), value: b"0".to_vec() };
        assert!(is_read_only(&head("/parties/docs/a?readonly=0", vec![header])));
    }
}
