//! Hosting of room objects on their owner core: creating a room on its first
//! event, admitting connections (with the duplicate-id rule), delivering
//! events one at a time, and handing the effects they produce to the reactor.

use crate::core_msg::{CoreMsg, Joining, ReplyTo};
use crate::http::Response;
use crate::kind::PartyKind;
use crate::outbound::FetchError;
use crate::party::{ConnRef, ConnectCtx, Connection, Effect, Member, Message, Party, Request, Room, RoomSocketEvent};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

/// What became of a connection attempt.
pub(crate) enum Admission {
    /// Admitted, with the sub-protocol chosen and the tags the connection's
    /// core indexes (those `connection_tags` gave, the id aside).
    Accepted {
        member: u32,
        protocol: Option<String>,
        tags: Box<[Box<str>]>,
    },
    Refused {
        reason: String,
    },
}

/// A party callback panicked. The room object may be half-updated, so the
/// caller must drop the room (and close its connections) rather than use it.
#[derive(Debug)]
pub(crate) struct RoomFailed {
    /// What the failure said of itself, when it said (a [`FailRoom`]).
    reason: Option<Box<str>>,
}

/// The reason given to the clients of a room whose party code panicked.
pub(crate) const ROOM_FAILED: &str = "room failed: the party code panicked";

impl RoomFailed {
    /// A storage write of the room failed: what it produced may not be shown.
    pub fn storage() -> RoomFailed {
        RoomFailed { reason: Some("a storage write failed".into()) }
    }

    /// The close reason and HTTP body the room's clients get: a Rust panic's
    /// own message stays in the log (it may say anything), a [`FailRoom`]'s
    /// reason is shown.
    pub fn reason(&self) -> std::borrow::Cow<'static, str> {
        match &self.reason {
            Some(reason) => format!("room failed: {reason}").into(),
            None => ROOM_FAILED.into(),
        }
    }
}

/// A panic payload that fails the room with a reason fit for its clients
/// (a JS room past a bound, say): `std::panic::panic_any(FailRoom(..))`.
pub(crate) struct FailRoom(pub String);

/// Runs a party callback (or a hook, or the fetch handler), turning a panic
/// into `RoomFailed`. What the callback touched is thrown away on failure,
/// which is why unwind safety is asserted.
pub(crate) fn guard<R>(callback: impl FnOnce() -> R) -> Result<R, RoomFailed> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback))
        .map_err(|payload| RoomFailed { reason: payload.downcast::<FailRoom>().ok().map(|f| f.0.into()) })
}

/// A room object and the room it runs in. The object is absent while the
/// room hibernates: its snapshot is on disk, or in `unsaved` until the write
/// commits. The room itself (members, tags, connection state) stays.
pub(crate) struct RoomHost {
    party: Option<Box<dyn Party>>,
    kind: Arc<dyn PartyKind>,
    pub room: Room,
    /// The snapshot of an eviction whose write has not committed yet, with
    /// the batch's sequence number: a wake-up before the commit restores
    /// from here.
    pub unsaved: Option<(u64, Arc<[u8]>)>,
    /// When the room last handled an event (the core's clock).
    pub last_event_ms: u64,
    /// Whether the room is in its core's eviction queue.
    pub queued: bool,
    /// Effects held until a storage batch commits (strict durability).
    pub held: VecDeque<Held>,
    /// The last storage batch submitted and not yet committed.
    pub uncommitted: Option<u64>,
    /// The last storage batch committed (batches commit in order).
    pub committed_seq: u64,
    /// Tells this host from an earlier one of the same room (after a
    /// failure), so a commit report for the earlier one is ignored.
    pub generation: u64,
    /// The alarm time the core's schedule has for this room, so the
    /// schedule is touched only when the room changes its alarm.
    pub scheduled_alarm: Option<u64>,
    /// Likewise for the room's timer.
    pub scheduled_timer: Option<u64>,
    /// HTTP requests the room deferred, by token, and where their answer goes.
    pub deferred: Vec<(u32, ReplyTo)>,
    /// Events since the inspector last looked (`reactor/inspect.rs`).
    pub events_this_second: u32,
    /// The room's sockets to other rooms (`Room::connect_room`): each id
    /// and its link on this core (`reactor/links.rs`).
    pub links: Vec<(u32, u32)>,
}

/// What one event produced, held until batch `seq` commits.
pub(crate) struct Held {
    pub seq: u64,
    pub effects: Vec<Effect>,
    pub reply: Option<CoreMsg>,
}

/// The codec id of party-made snapshot bytes in the envelope.
pub(crate) const SNAPSHOT_CODEC_PARTY: u8 = 1;

/// How a room object came to be.
pub(crate) enum Origin {
    /// Created fresh with `new` and `on_start`.
    Fresh,
    /// Restored from its snapshot.
    Restored,
    /// Its snapshot was corrupt or did not restore (kept aside): created fresh.
    Corrupt { error: String, bytes: Vec<u8> },
}

/// Checks the tags a party gave a connection against the limits and returns
/// them without duplicates and without the connection's id (always a tag).
fn check_tags(id: &str, mut tags: Vec<String>) -> Result<Vec<String>, String> {
    use dormouse_tags::{MAX_TAGS, MAX_TAG_BYTES};
    if let Some(long) = tags.iter().find(|t| t.len() > MAX_TAG_BYTES) {
        return Err(format!("a connection tag of {} bytes exceeds the limit of {MAX_TAG_BYTES} bytes", long.len()));
    }
    tags.retain(|t| t != id);
    tags.sort_unstable();
    tags.dedup();
    if tags.len() + 1 > MAX_TAGS {
        return Err(format!(
            "{} connection tags exceed the limit of {MAX_TAGS} (the connection id is one of them)",
            tags.len() + 1
        ));
    }
    Ok(tags)
}

impl RoomHost {
    /// The room, restored from its snapshot when `snapshot` holds one (the
    /// raw envelope from the store), else created fresh.
    pub fn new(
        room: Room,
        kind: Arc<dyn PartyKind>,
        snapshot: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(RoomHost, Origin), RoomFailed> {
        let scheduled_alarm = room.alarm_ms.get();
        let mut host = RoomHost {
            scheduled_alarm,
            scheduled_timer: None,
            deferred: Vec::new(),
            events_this_second: 0,
            links: Vec::new(),
            party: None,
            kind,
            room,
            unsaved: None,
            last_event_ms: now_ms,
            queued: false,
            held: VecDeque::new(),
            uncommitted: None,
            generation: 0,
            committed_seq: 0,
        };
        let origin = match snapshot {
            Some(bytes) => host.restore_envelope(bytes)?,
            None => {
                host.create()?;
                Origin::Fresh
            }
        };
        Ok((host, origin))
    }

    fn create(&mut self) -> Result<(), RoomFailed> {
        let (kind, room) = (&self.kind, &self.room);
        self.party = Some(guard(|| {
            let mut party = kind.create(room);
            party.on_start(room);
            party
        })?);
        Ok(())
    }

    /// Restores the object from raw snapshot bytes; on failure creates it
    /// fresh and says why.
    fn restore_raw(&mut self, raw: &[u8]) -> Result<Result<(), String>, RoomFailed> {
        let (kind, room) = (&self.kind, &self.room);
        match guard(|| kind.restore(room, raw)) {
            Ok(Ok(party)) => {
                self.party = Some(party);
                Ok(Ok(()))
            }
            Ok(Err(error)) => {
                self.create()?;
                Ok(Err(error))
            }
            Err(_) => {
                self.create()?;
                Ok(Err("restore panicked".to_owned()))
            }
        }
    }

    fn restore_envelope(&mut self, bytes: Vec<u8>) -> Result<Origin, RoomFailed> {
        let raw = match dormouse_hibernate::envelope::decode(&bytes) {
            Ok((SNAPSHOT_CODEC_PARTY, raw)) => raw,
            Ok((codec, _)) => {
                self.create()?;
                return Ok(Origin::Corrupt { error: format!("unknown snapshot codec {codec}"), bytes });
            }
            Err(error) => {
                self.create()?;
                return Ok(Origin::Corrupt { error: error.to_string(), bytes });
            }
        };
        Ok(match self.restore_raw(&raw)? {
            Ok(()) => Origin::Restored,
            Err(error) => Origin::Corrupt { error, bytes },
        })
    }

    /// Whether the room object is in memory.
    pub fn is_awake(&self) -> bool {
        self.party.is_some()
    }

    /// Brings a hibernated object back: from the unsaved snapshot if its
    /// write has not committed, else from the store. `None` when it was
    /// awake already.
    pub fn wake(&mut self) -> Result<Option<Origin>, RoomFailed> {
        if self.party.is_some() {
            return Ok(None);
        }
        if let Some((_, raw)) = self.unsaved.take() {
            return Ok(Some(match self.restore_raw(&raw)? {
                Ok(()) => Origin::Restored,
                Err(error) => Origin::Corrupt { error, bytes: raw.to_vec() },
            }));
        }
        let store = &self.room.store;
        let snapshot = store.store.snapshot(&store.key).unwrap_or_else(|error| {
            tracing::error!(party = %self.room.party, room = %self.room.id, %error, "cannot read a snapshot");
            None
        });
        Ok(Some(match snapshot {
            Some(bytes) => self.restore_envelope(bytes)?,
            None => {
                self.create()?;
                Origin::Corrupt { error: "the snapshot is missing".to_owned(), bytes: Vec::new() }
            }
        }))
    }

    /// Serialises the object and drops it. Returns the snapshot envelope to
    /// write, or `None` when the party keeps its objects in memory.
    pub fn evict(&mut self, seq: u64) -> Option<Vec<u8>> {
        let (party, room) = (self.party.as_mut()?, &self.room);
        let raw = guard(|| party.snapshot()).ok().flatten()?;
        let savepoint = room.savepoint();
        if guard(|| party.on_hibernate(room)).is_err() {
            // Half done, maybe: the object stays, and its writes are undone.
            room.roll_back(savepoint);
            room.effects.borrow_mut().clear();
            tracing::error!(party = %room.party, room = %room.id, "on_hibernate panicked; the room stays in memory");
            return None;
        }
        let envelope = dormouse_hibernate::envelope::encode(SNAPSHOT_CODEC_PARTY, &raw);
        self.party = None;
        // A timer belongs to the object in memory.
        self.room.timer_ms.set(None);
        self.scheduled_timer = None;
        self.unsaved = Some((seq, raw.into()));
        Some(envelope)
    }

    /// The alarm is due: it is cleared, then `on_alarm` runs.
    pub fn alarm(&mut self) -> Result<Result<(), String>, RoomFailed> {
        // The core took it off its schedule to run it.
        self.scheduled_alarm = None;
        self.room.delete_alarm();
        let room = &self.room;
        let party = self.party.as_mut().expect("a room is woken before it gets an event");
        guard(|| party.on_alarm(room))
    }

    /// The timer is due: it is cleared, then `on_timer` runs.
    pub fn timer(&mut self) -> Result<(), RoomFailed> {
        self.scheduled_timer = None;
        self.room.timer_ms.set(None);
        let room = &self.room;
        let party = self.party.as_mut().expect("a room with a timer is awake");
        guard(|| party.on_timer(room))
    }

    /// Admits a connection: a connection with the same id that is still open
    /// is replaced (and closed), then `on_connect` decides.
    pub fn connect(&mut self, conn: ConnRef, joining: Joining) -> Result<Admission, RoomFailed> {
        if let Some(old) = self.room.by_id.get(&self.room.members, &joining.id) {
            let old_conn = self.remove_member(old).conn;
            self.room.effects.borrow_mut().push(Effect::Close {
                to: old_conn,
                code: 1000,
                reason: "replaced by a new connection with the same id".to_owned(),
            });
        }
        let room = &mut self.room;
        let member = room.members.vacant_key() as u32;
        room.members.insert(Member {
            id: joining.id.into_boxed_str(),
            uri: joining.uri.into_boxed_str(),
            conn,
            state: RefCell::new(None),
            tags: None,
            deflate: joining.deflate,
        });
        room.deflate_members += u32::from(joining.deflate);
        room.by_id.insert(&room.members, member);
        // Past this node's cores: another node's (a cluster's virtual core).
        let core = usize::from(conn.core);
        if core >= room.members_per_core.len() {
            room.members_per_core.resize_with(core + 1, Default::default);
        }
        let counter = &room.members_per_core[core];
        counter.set(counter.get() + 1);

        let mut ctx = ConnectCtx { request: &joining.head, protocols: &joining.protocols, chosen_protocol: None };
        let handle = Connection { room: &self.room, index: member };
        let party = self.party.as_mut().expect("a room is woken before it gets an event");
        let asked = guard(|| party.connection_tags(&handle, &ctx))?;
        let own = match check_tags(&self.room.members[member as usize].id, asked) {
            Ok(own) => own,
            Err(reason) => {
                self.remove_member(member);
                return Ok(Admission::Refused { reason });
            }
        };
        let room = &mut self.room;
        if !own.is_empty() {
            room.members[member as usize].tags = Some(room.tag_index.join(member, &own, &mut room.tag_names));
        }

        let handle = Connection { room: &self.room, index: member };
        let (party, room) = (self.party.as_mut().expect("a room is woken before it gets an event"), &self.room);
        match guard(|| party.on_connect(&handle, room, &mut ctx))? {
            Ok(()) => Ok(Admission::Accepted {
                member,
                protocol: ctx.chosen_protocol,
                tags: own.into_iter().map(String::into_boxed_str).collect(),
            }),
            Err(reason) => {
                self.remove_member(member);
                Ok(Admission::Refused { reason })
            }
        }
    }

    /// Events waiting for storage: held until their batch commits (strict
    /// durability), or with a batch the writer has not committed yet.
    pub fn pending_storage(&self) -> usize {
        let submitted = self.room.store.seq.get() - 1;
        self.held.len().max(submitted.saturating_sub(self.committed_seq) as usize)
    }

    fn remove_member(&mut self, member: u32) -> Member {
        let room = &mut self.room;
        let removed = room.members.remove(member as usize);
        if let Some(key) = removed.tags {
            room.tag_index.leave(key, &mut room.tag_names);
        }
        self.room.by_id.remove(&self.room.members, &removed.id, member);
        let counter = &self.room.members_per_core[usize::from(removed.conn.core)];
        counter.set(counter.get() - 1);
        self.room.deflate_members -= u32::from(removed.deflate);
        removed
    }

    /// Whether `member` is still the room's entry for the socket `conn` (it is
    /// not once the socket was replaced or has left).
    pub fn is_current(&self, conn: ConnRef, member: u32) -> bool {
        self.room.members.get(member as usize).is_some_and(|m| m.conn == conn)
    }

    /// A message for the room while its object hibernates: whether the
    /// party handled it without waking (`on_message_asleep`). A message of
    /// a socket that is no longer a member counts as handled.
    pub fn message_asleep(&mut self, conn: ConnRef, member: u32, message: Message<'_>) -> Result<bool, RoomFailed> {
        if !self.is_current(conn, member) {
            return Ok(true);
        }
        let (kind, room) = (&self.kind, &self.room);
        let sender = Connection { room, index: member };
        guard(|| kind.message_asleep(message, &sender, room))
    }

    /// A clean close while the object hibernates: whether the party handled
    /// it without waking (`on_close_asleep`); the member is then gone.
    pub fn closed_asleep(&mut self, conn: ConnRef, member: u32, code: u16, reason: &str) -> Result<bool, RoomFailed> {
        if !self.is_current(conn, member) {
            return Ok(true);
        }
        let (kind, room) = (&self.kind, &self.room);
        let handle = Connection { room, index: member };
        let handled = guard(|| kind.close_asleep(&handle, code, reason, room))?;
        if handled {
            self.remove_member(member);
        }
        Ok(handled)
    }

    pub fn message(&mut self, conn: ConnRef, member: u32, message: Message<'_>) -> Result<(), RoomFailed> {
        if self.is_current(conn, member) {
            let sender = Connection { room: &self.room, index: member };
            let (party, room) = (self.party.as_mut().expect("a room is woken before it gets an event"), &self.room);
            guard(|| party.on_message(message, &sender, room))?;
        }
        Ok(())
    }

    /// The socket is gone. A replaced socket's close is ignored, so it never
    /// removes the connection that replaced it.
    pub fn closed(
        &mut self,
        conn: ConnRef,
        member: u32,
        code: u16,
        reason: &str,
        error: Option<&str>,
    ) -> Result<(), RoomFailed> {
        if !self.is_current(conn, member) {
            return Ok(());
        }
        let handle = Connection { room: &self.room, index: member };
        let (party, room) = (self.party.as_mut().expect("a room is woken before it gets an event"), &self.room);
        guard(|| {
            if let Some(error) = error {
                party.on_error(&handle, error, room);
            }
            party.on_close(&handle, code, reason, room);
        })?;
        self.remove_member(member);
        Ok(())
    }

    pub fn request(&mut self, request: &Request) -> Result<Response, RoomFailed> {
        let (party, room) = (self.party.as_mut().expect("a room is woken before it gets an event"), &self.room);
        guard(|| party.on_request(request, room))
    }

    /// The response to the room's request `id` to another room.
    pub fn room_response(&mut self, id: u32, response: Response) -> Result<(), RoomFailed> {
        let (waiting, next) = self.room.room_requests.get();
        self.room.room_requests.set((waiting.saturating_sub(1), next));
        let (party, room) = (self.party.as_mut().expect("a room waiting for a response is awake"), &self.room);
        guard(|| party.on_room_response(id, response, room))
    }

    /// The outcome of the room's outbound request `id`.
    pub fn fetch_response(&mut self, id: u32, outcome: Result<Response, FetchError>) -> Result<(), RoomFailed> {
        let (waiting, next) = self.room.fetches.get();
        self.room.fetches.set((waiting.saturating_sub(1), next));
        let (party, room) = (self.party.as_mut().expect("a room waiting for a fetch is awake"), &self.room);
        guard(|| party.on_fetch_response(id, outcome, room))
    }

    /// An event on the room's socket `socket` to another room. After a
    /// close the socket is gone (on both sides of the room).
    pub fn socket_event(&mut self, socket: u32, event: RoomSocketEvent<'_>) -> Result<(), RoomFailed> {
        {
            let mut sockets = self.room.sockets.borrow_mut();
            let Some(at) = sockets.iter().position(|&(s, _)| s == socket) else { return Ok(()) };
            match event {
                RoomSocketEvent::Open => sockets[at].1 = true,
                RoomSocketEvent::Close { .. } => {
                    sockets.swap_remove(at);
                }
                RoomSocketEvent::Message(_) => {}
            }
        }
        if matches!(event, RoomSocketEvent::Close { .. }) {
            self.links.retain(|&(s, _)| s != socket);
        }
        let (party, room) = (self.party.as_mut().expect("a room is woken before it gets an event"), &self.room);
        guard(|| party.on_room_socket(socket, event, room))
    }

    /// Whether the room waits for another room's response or an outbound
    /// request's, holds sockets to other rooms, or owes an answer: it
    /// stays in memory until not.
    pub fn is_waiting(&self) -> bool {
        self.room.awaits_events() || !self.deferred.is_empty()
    }

    /// The sockets of every member, for closing them when the room fails.
    pub fn member_conns(&self) -> impl Iterator<Item = ConnRef> + '_ {
        self.room.members.iter().map(|(_, m)| m.conn)
    }

    /// The members whose sockets are on cores `cores` (another node's, in
    /// a cluster), with their indexes.
    pub fn members_on(&self, cores: &[u16]) -> Vec<(ConnRef, u32)> {
        let on = |m: &&Member| cores.contains(&m.conn.core);
        self.room.members.iter().filter(|(_, m)| on(m)).map(|(i, m)| (m.conn, i as u32)).collect()
    }

    /// Moves the effects of the last event into `out`, keeping both
    /// vectors' capacity for the next event.
    pub fn drain_effects(&mut self, out: &mut Vec<Effect>) {
        out.append(self.room.effects.get_mut());
    }
}
