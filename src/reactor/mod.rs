//! The per-core reactor: one thread per core that owns a ring, a listener and
//! the sockets it accepted, runs the rooms it owns, and talks to other cores
//! only through bounded channels.
//!
//! A turn of the loop: drain completions (accepts, receives, sends, wake-ups),
//! drain messages from other cores, expire timers, re-arm receives, start the
//! sends queued this turn (one submission for many sockets), pass messages to
//! other cores, then wait. The clock is read once per turn.
//!
//! Connection state lives in [`ConnRecord`]s in a slab. HTTP and WebSocket
//! bytes are handed to the sans-I/O codecs in `http` and `ws`; room events go
//! to the room's owner core as [`CoreMsg`] values, and the room's effects come
//! back the same way. Only this module and its backend touch sockets.

mod backend;
mod epoll;
mod residency;
mod rooms;
mod uring;

pub(crate) use backend::Backend;
pub(crate) use epoll::Epoll;
pub(crate) use uring::{probe as probe_uring, Uring};

use crate::config::{CompressionMode, Limits, PartyConfig, SlowConsumerPolicy};
use crate::http::{self, BodyDecoder, BodyFraming, HttpError, HttpLimits, RequestHead, Response};
use crate::kind::PartyKind;
use crate::outq::WriteQueue;
use crate::party::{ConnRef, Effect, Lobby, Message, Request};
use crate::room::{guard, Admission, Joining, ReplyTo, RoomFailed, RoomHost, RoomKey, RoomMap};
use crate::route::{self, Route};
use crate::ws::{self, WsEvent, WsLimits};
use backend::{Event, Received, MAX_SEND_FRAMES};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use dormouse_tags::{MemberKey, TagIndex, TagInterner};
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thin_vec::ThinVec;
use tungstenite::protocol::frame::Utf8Bytes;

/// A handler for HTTP requests outside the room routes.
pub type FetchHandler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Most messages taken from the inbox in one turn, so sockets keep being
/// served while another core floods this one.
const INBOX_BATCH: usize = 4096;
/// The answer (HTTP 500) when a pre-connect or pre-request hook, or the fetch
/// handler, panicked: the request fails, the core serves on.
const HOOK_FAILED: &str = "internal error: the server's handler panicked";
/// The reason given when a room's storage is behind (close 1013, HTTP 503).
const STORAGE_BEHIND: &str = "try again later: the room's storage is behind";
/// The reason a slow consumer's close frame gives.
const SLOW_CONSUMER: &str = "slow consumer: write backlog exceeded";
/// The reason given when cores are behind (close 1013, HTTP 503).
const OVERLOADED: &str = "try again later: the server is overloaded";

fn overloaded() -> Response {
    Response::text(503, OVERLOADED).with_header("retry-after", "1")
}

/// The answer to a new room's first request or connect when the owner core
/// holds its share of `max_resident_rooms` and none can make way.
fn rooms_full() -> Box<Response> {
    let reason = "try again later: the server holds its maximum of rooms";
    Box::new(Response::text(503, reason).with_header("retry-after", "1"))
}
/// Longest wait for completions when no timer is due sooner.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Recipients a core queues frames for in one turn, in slices (config
/// `limits.fanout_slice`), before it stops taking broadcasts from its inbox
/// and serves its sockets.
const FANOUT_SLICES_PER_TURN: usize = 4;

/// What every core shares: configuration, party kinds, and the way to reach
/// every other core.
pub(crate) struct Shared {
    pub limits: Limits,
    pub cores: usize,
    pub kinds: HashMap<String, Arc<dyn PartyKind>>,
    pub fetch: Option<FetchHandler>,
    pub senders: Vec<Sender<CoreMsg>>,
    /// Each core's channel for the store writer's commit reports.
    pub commit_senders: Vec<Sender<CoreMsg>>,
    pub wake_fds: Vec<std::fs::File>,
    pub stopping: AtomicBool,
    pub stats: Vec<CoreStats>,
    /// `Authorization` header value the publish API accepts ("Bearer <token>").
    pub publish_auth: Option<String>,
    /// Path of the Prometheus endpoint, if enabled.
    pub metrics_path: Option<String>,
    /// The `serve` folder, if any, answered for paths that are not rooms.
    pub static_files: Option<crate::static_files::StaticFiles>,
    /// Snapshots, room storage and alarms.
    pub store: Arc<dormouse_hibernate::Store>,
    /// Options of the configured parties; others get the defaults.
    pub party_configs: HashMap<String, Arc<PartyConfig>>,
    pub default_party_config: Arc<PartyConfig>,
    /// Each core's share of `max_resident_rooms`.
    pub max_resident_per_core: usize,
    /// Set by a graceful shutdown: snapshot, close sockets with 1001, stop.
    pub draining: AtomicBool,
    /// Cores whose sockets are all closed, during a graceful shutdown.
    pub cores_closed: std::sync::atomic::AtomicUsize,
    /// The exclusive lock on `data_dir`, held while the store is open.
    pub _data_dir_lock: std::fs::File,
}

impl Shared {
    pub fn party_config(&self, party: &str) -> Arc<PartyConfig> {
        self.party_configs.get(party).unwrap_or(&self.default_party_config).clone()
    }

    /// Wakes core `core` from its wait.
    pub fn wake(&self, core: usize) {
        // A failed write means the eventfd counter is saturated, so the core
        // is already being woken: nothing is lost.
        let _ = std::io::Write::write(&mut &self.wake_fds[core], &1u64.to_ne_bytes());
    }
}

/// Counters one core publishes for the server handle, `/metrics` and tests.
#[derive(Debug, Default)]
pub struct CoreStats {
    pub connections_open: AtomicU64,
    pub rooms_resident: AtomicU64,
    /// The counters below are the core's [`Counters`], stored once per turn.
    pub rooms_created: AtomicU64,
    pub rooms_woken: AtomicU64,
    pub messages_asleep: AtomicU64,
    pub rooms_evicted: AtomicU64,
    pub rooms_dropped: AtomicU64,
    pub snapshots_corrupt: AtomicU64,
    pub room_events: AtomicU64,
    pub messages_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub broadcasts: AtomicU64,
    pub broadcasts_compressed: AtomicU64,
    pub publishes: AtomicU64,
    pub slow_consumers_closed: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub events_shed: AtomicU64,
}

/// Monotonic counters a core keeps in plain integers on its own thread and
/// stores into its [`CoreStats`] at the end of each turn.
#[derive(Debug, Default)]
struct Counters {
    /// Room objects created.
    rooms_created: u64,
    /// Room objects brought back from a snapshot (hibernation).
    rooms_woken: u64,
    /// Messages a hibernating room handled without waking
    /// (`Party::on_message_asleep`).
    messages_asleep: u64,
    /// Room objects evicted to a snapshot.
    rooms_evicted: u64,
    /// Room objects without snapshots dropped from memory (idle and empty,
    /// or making way under `max_resident_rooms`).
    rooms_dropped: u64,
    /// Snapshots that did not restore (kept aside; the room started fresh).
    snapshots_corrupt: u64,
    /// Events delivered to room objects (connect, message, close, request).
    room_events: u64,
    /// WebSocket messages received.
    messages_in: u64,
    /// WebSocket frames queued to sockets by sends and broadcasts.
    frames_out: u64,
    /// Bytes written to sockets.
    bytes_out: u64,
    /// Broadcasts this core carried out for its local members.
    broadcasts: u64,
    /// Broadcasts and publishes compressed (once each) for members with
    /// permessage-deflate, by the core that made them.
    broadcasts_compressed: u64,
    /// Publish API requests accepted on this core.
    publishes: u64,
    /// Connections closed by the slow-consumer policy.
    slow_consumers_closed: u64,
    /// Frames not queued to a slow consumer under the `drop` policy.
    frames_dropped: u64,
    /// Messages, connects, requests and publishes refused because their
    /// room's storage, or a core, was behind.
    events_shed: u64,
}

impl Counters {
    fn store(&self, stats: &CoreStats) {
        let pairs = [
            (&stats.rooms_created, self.rooms_created),
            (&stats.rooms_woken, self.rooms_woken),
            (&stats.messages_asleep, self.messages_asleep),
            (&stats.rooms_evicted, self.rooms_evicted),
            (&stats.rooms_dropped, self.rooms_dropped),
            (&stats.snapshots_corrupt, self.snapshots_corrupt),
            (&stats.room_events, self.room_events),
            (&stats.messages_in, self.messages_in),
            (&stats.frames_out, self.frames_out),
            (&stats.bytes_out, self.bytes_out),
            (&stats.broadcasts, self.broadcasts),
            (&stats.broadcasts_compressed, self.broadcasts_compressed),
            (&stats.publishes, self.publishes),
            (&stats.slow_consumers_closed, self.slow_consumers_closed),
            (&stats.frames_dropped, self.frames_dropped),
            (&stats.events_shed, self.events_shed),
        ];
        for (stat, value) in pairs {
            stat.store(value, Ordering::Relaxed);
        }
    }
}

/// A message between cores.
pub(crate) enum CoreMsg {
    // To a room's owner core.
    Connect {
        conn: ConnRef,
        room: Arc<RoomKey>,
        joining: Box<Joining>,
    },
    Message {
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        data: Payload,
    },
    Closed {
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        close: Box<CloseInfo>,
    },
    Request {
        conn: ConnRef,
        room: Arc<RoomKey>,
        request: Box<Request>,
    },
    /// From room `from`, its request `id` to room `room` (`Room::request_room`).
    RoomRequest {
        from: Arc<RoomKey>,
        id: u32,
        room: Arc<RoomKey>,
        request: Box<Request>,
    },
    /// To a room's owner core: the response to its request `id`.
    RoomResponse {
        room: Arc<RoomKey>,
        id: u32,
        response: Box<Response>,
    },
    // To a connection's core.
    Accepted {
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        protocol: Option<Box<str>>,
        tags: Box<[Box<str>]>,
    },
    Refused {
        conn: ConnRef,
        reason: Box<str>,
    },
    Send {
        conn: ConnRef,
        frame: Bytes,
    },
    /// One broadcast, shared by every core it goes to.
    Broadcast(Arc<Broadcast>),
    Close {
        conn: ConnRef,
        code: u16,
        reason: Box<str>,
    },
    Respond {
        conn: ConnRef,
        response: Box<Response>,
    },
    /// To a publish request's core: how many local members one core reached.
    Published {
        conn: ConnRef,
        delivered: u64,
    },
    /// To a room's owner core, from the store's writer: the room's storage
    /// batch `seq` committed (or failed with `error`).
    Committed {
        room: Arc<RoomKey>,
        generation: u64,
        seq: u64,
        error: Option<Box<str>>,
    },
}

/// A pre-framed message for a room's members on one or more cores.
pub(crate) struct Broadcast {
    room: Arc<RoomKey>,
    frame: Bytes,
    /// The same message compressed, for members with permessage-deflate.
    deflated: Option<Bytes>,
    /// Only members carrying this tag.
    tag: Option<Arc<str>>,
    without: SmallVec<[ConnRef; 1]>,
    /// A publish request waiting for the count of members reached.
    reply: Option<ConnRef>,
}

const _: () = assert!(size_of::<CoreMsg>() <= 80, "core messages are small; big payloads are boxed");

/// A message's data on its way to the room: text keeps its proof of UTF-8.
pub(crate) enum Payload {
    Text(Utf8Bytes),
    Binary(Bytes),
}

pub(crate) struct CloseInfo {
    code: u16,
    reason: String,
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head.
    Head,
    /// Reading a request body.
    Body,
    /// Waiting for the room's HTTP response.
    AwaitResponse,
    /// Waiting for the room's `on_connect`.
    AwaitConnect,
    /// An open WebSocket.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Writing what is queued, then closing.
    Draining,
    /// Our side is shut down; reading until the peer closes so that it is not
    /// reset before it has read our last bytes.
    Lingering,
    /// Shut down; the record waits for its in-flight operations to finish.
    Dead,
}

/// What an HTTP request in progress carries between phases.
struct HttpState {
    head: RequestHead,
    body: Option<BodyDecoder>,
    keep_alive: bool,
    /// For an upgrade: the client's key, needed for the 101.
    ws_key: Option<String>,
    /// For an upgrade: the `Sec-WebSocket-Extensions` answer when
    /// permessage-deflate was negotiated.
    ws_deflate: Option<&'static str>,
    /// For a publish: cores yet to answer, and members reached so far.
    publish: Option<(usize, u64)>,
}

/// One socket. Small, and allocation-free while idle: the read buffer holds
/// only a partial head or frame, the write queue only unsent frames.
struct ConnRecord {
    fd: OwnedFd,
    gen: u32,
    phase: Phase,
    recv_armed: bool,
    sending: bool,
    in_dirty: bool,
    joined: bool,
    /// The socket negotiated permessage-deflate: it gets broadcasts'
    /// compressed frames, and its compressed messages are inflated.
    deflate: bool,
    /// A slow consumer's close waits for the send in flight: once it
    /// completes, what it did not start is discarded and the close queued.
    close_after_send: bool,
    deadline_ms: u64,
    local_room: u32,
    /// The socket's key in its local room's tag index.
    member_key: u32,
    member: u32,
    /// The close code we sent, reported to the room if the peer never answers.
    close_code: u16,
    /// A thin vector (one pointer): it is empty, and unallocated, unless a
    /// head or frame arrived in parts.
    read_buf: ThinVec<u8>,
    out: WriteQueue,
    decoder: ws::Decoder,
    http: Option<Box<HttpState>>,
}

/// The size of a socket's record, pinned here and reported in the docs.
pub const CONN_RECORD_BYTES: usize = size_of::<ConnRecord>();
const _: () = assert!(CONN_RECORD_BYTES <= 120, "a connection record stays compact");

/// The members of one room that live on this core, indexed by tag.
struct LocalRoom {
    key: Arc<RoomKey>,
    index: TagIndex,
    /// A broadcast being written in slices (`limits.fanout_slice`).
    job: Option<Box<FanoutJob>>,
    /// Messages for the room and its members that arrived during `job`, held
    /// back in arrival order so each member still sees them in order.
    backlog: VecDeque<CoreMsg>,
}

/// A broadcast too big for one turn: the recipients at its arrival, and how
/// far it has got. Members that leave meanwhile are skipped; none can join,
/// since their admission waits in the room's backlog.
struct FanoutJob {
    broadcast: Arc<Broadcast>,
    slots: Vec<u32>,
    next: usize,
    delivered: u64,
}

/// What reaches a core from outside its sockets.
pub(crate) struct Inbox {
    /// Messages from the cores (this one's own are delivered directly).
    pub messages: Receiver<CoreMsg>,
    /// `CoreMsg::Committed` from the store's writer thread.
    pub commits: Receiver<CoreMsg>,
}

pub(crate) struct Core<B: Backend> {
    io: B,
    inbox: Receiver<CoreMsg>,
    commits: Receiver<CoreMsg>,
    listener: OwnedFd,
    st: State,
}

/// Everything but the ring, so completion handlers can borrow received data
/// from the ring while changing this.
struct State {
    index: u16,
    shared: Arc<Shared>,
    http_limits: HttpLimits,
    ws_limits: WsLimits,
    conns: slab::Slab<ConnRecord>,
    next_gen: u32,
    local_rooms: slab::Slab<LocalRoom>,
    local_room_ids: RoomMap<u32>,
    /// Tag names of this core's sockets.
    tag_names: TagInterner,
    /// Local rooms with a sliced broadcast in progress, served round-robin.
    busy_rooms: VecDeque<u32>,
    /// Recipients queued this turn, against `fanout_turn_budget`.
    fanout_this_turn: usize,
    /// Sockets found over their write backlog by the last fan-out.
    slow: Vec<u32>,
    counters: Counters,
    /// Rooms this core owns. Boxed: a table sized for a peak of resident
    /// rooms then costs a pointer per slot, not a whole host.
    hosts: RoomMap<Box<RoomHost>>,
    /// The room objects in memory, per party, oldest touch first.
    evict_queues: Vec<residency::EvictQueue>,
    /// Storage batches waiting for room in the writer's queue, in order.
    submissions: VecDeque<rooms::Submission>,
    /// The alarm of every room this core owns that has one.
    alarms: RoomMap<u64>,
    /// Alarm times (lazy: an entry that no longer matches `alarms` is skipped).
    alarm_heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, Arc<RoomKey>)>>,
    /// Failed runs of each room's alarm.
    alarm_retries: RoomMap<u32>,
    /// Room timers (lazy: an entry that no longer matches its room's
    /// `scheduled_timer` is skipped).
    timer_heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, Arc<RoomKey>)>>,
    /// This core's wake eventfd, for the store's writer to signal commits.
    wake_self: Arc<std::fs::File>,
    /// Room hosts created so far (each gets the next number).
    host_generations: u64,
    /// Messages for each core (this core's own entry is delivered locally).
    outboxes: Vec<VecDeque<CoreMsg>>,
    /// Sockets with frames queued this turn.
    dirty: Vec<u32>,
    /// Sockets whose receive must be (re-)armed: (slot, generation).
    rearm: Vec<(u32, u32)>,
    head_timers: VecDeque<(u64, u32, u32)>,
    close_timers: VecDeque<(u64, u32, u32)>,
    epoch: Instant,
    now_ms: u64,
    ws_events: Vec<WsEvent>,
    effects: Vec<Effect>,
    /// The inbox was full at the start of this turn (see `overloaded`).
    behind: bool,
    /// Messages waiting in local rooms' backlogs behind sliced broadcasts.
    backlogged: usize,
    /// Inflates the compressed messages of this core's sockets, one at a
    /// time (their clients were told `client_no_context_takeover`).
    inflater: crate::deflate::Inflater,
}

impl<B: Backend> Core<B> {
    pub fn new(index: usize, shared: Arc<Shared>, inbox: Inbox, listener: OwnedFd) -> std::io::Result<Core<B>> {
        let limits = &shared.limits;
        let io = B::new(shared.wake_fds[index].as_raw_fd(), limits)?;
        let st = State {
            index: index as u16,
            http_limits: HttpLimits {
                head_bytes_max: limits.max_head_bytes,
                body_bytes_max: limits.max_body_bytes,
                headers_max: limits.max_headers,
            },
            ws_limits: WsLimits { max_message_bytes: limits.max_message_bytes },
            conns: slab::Slab::new(),
            next_gen: 0,
            local_rooms: slab::Slab::new(),
            local_room_ids: RoomMap::default(),
            tag_names: TagInterner::new(),
            busy_rooms: VecDeque::new(),
            fanout_this_turn: 0,
            slow: Vec::new(),
            counters: Counters::default(),
            hosts: RoomMap::default(),
            evict_queues: Vec::new(),
            submissions: VecDeque::new(),
            alarms: RoomMap::default(),
            alarm_heap: Default::default(),
            alarm_retries: RoomMap::default(),
            timer_heap: Default::default(),
            wake_self: Arc::new(shared.wake_fds[index].try_clone()?),
            host_generations: 0,
            outboxes: (0..shared.cores).map(|_| VecDeque::new()).collect(),
            dirty: Vec::new(),
            rearm: Vec::new(),
            head_timers: VecDeque::new(),
            close_timers: VecDeque::new(),
            epoch: Instant::now(),
            now_ms: 0,
            ws_events: Vec::new(),
            effects: Vec::new(),
            behind: false,
            backlogged: 0,
            inflater: crate::deflate::Inflater::new(),
            shared,
        };
        Ok(Core { io, inbox: inbox.messages, commits: inbox.commits, listener, st })
    }

    pub fn run(mut self) {
        self.io.arm_accept(self.listener.as_raw_fd());
        self.st.load_alarms();
        let mut accept_retry_ms: Option<u64> = None;
        let mut drain = Drain::Serving;
        loop {
            self.st.now_ms = self.st.epoch.elapsed().as_millis() as u64;
            // A full inbox: other cores are queueing for this one.
            self.st.behind = self.inbox.len() >= self.st.shared.limits.core_channel_capacity;
            let st = &mut self.st;
            self.io.complete(|event| match event {
                Event::Accepted(socket) => st.on_accept(socket),
                Event::AcceptError(error) => tracing::warn!(core = st.index, %error, "accept failed; retrying"),
                // Out of file descriptors (or a similar operating fault):
                // back off a little, then accept again.
                Event::AcceptStopped { after_error } => {
                    accept_retry_ms = Some(st.now_ms + if after_error { 100 } else { 0 });
                }
                Event::Recv { slot, armed, outcome } => st.on_recv(slot, armed, outcome),
                Event::Sent { slot, result } => st.on_sent(slot, result),
            });
            if accept_retry_ms.is_some_and(|at| at <= self.st.now_ms) {
                accept_retry_ms = None;
                self.io.arm_accept(self.listener.as_raw_fd());
            }

            while let Ok(msg) = self.commits.try_recv() {
                self.st.on_core_msg(msg);
            }
            self.st.fanout_this_turn = 0;
            for _ in 0..INBOX_BATCH {
                // Past a channel's worth of backlog, the inbox waits (and
                // fills, so the cores feeding it refuse new input).
                if self.st.fanout_this_turn >= self.st.fanout_turn_budget()
                    || self.st.backlogged >= self.st.shared.limits.core_channel_capacity
                {
                    break;
                }
                match self.inbox.try_recv() {
                    Ok(msg) => self.st.on_core_msg(msg),
                    Err(_) => break,
                }
            }
            self.st.deliver_local();
            self.st.run_fanout_jobs();
            self.st.expire_timers();
            self.st.run_due_alarms();
            self.st.run_due_timers();
            self.st.evict_idle();
            self.st.submit_pending();
            for (slot, gen) in self.st.rearm.drain(..) {
                if let Some(conn) = self.st.conns.get_mut(slot as usize) {
                    if conn.gen == gen && conn.phase != Phase::Dead && !conn.recv_armed {
                        conn.recv_armed = true;
                        self.io.arm_recv(slot, conn.fd.as_raw_fd());
                    }
                }
            }
            // Counters first: whatever a client sees as a result of this
            // turn (and may then ask /metrics about) is already counted.
            self.st.counters.store(&self.st.shared.stats[usize::from(self.st.index)]);
            self.flush_sends();
            let pending_elsewhere = self.st.flush_outboxes();

            if self.st.shared.stopping.load(Ordering::Acquire) {
                break;
            }
            if self.st.shared.draining.load(Ordering::Acquire) && self.drain_step(&mut drain, pending_elsewhere) {
                break;
            }
            let busy = !self.inbox.is_empty()
                || !self.commits.is_empty()
                || !self.st.outboxes[usize::from(self.st.index)].is_empty()
                || !self.st.busy_rooms.is_empty();
            let wait =
                self.st.next_deadline_wait().min(if pending_elsewhere { Duration::from_millis(1) } else { IDLE_WAIT });
            let wait = if self.st.submissions.is_empty() { wait } else { wait.min(Duration::from_millis(1)) };
            let wait = if drain == Drain::Serving { wait } else { wait.min(Duration::from_millis(10)) };
            let wait = match accept_retry_ms {
                Some(at) => wait.min(Duration::from_millis(at.saturating_sub(self.st.now_ms))),
                None => wait,
            };
            if let Err(e) = self.io.wait(!busy, wait) {
                tracing::error!(core = self.st.index, backend = B::NAME, error = %e, "waiting for I/O failed; core stopping");
                break;
            }
        }
        // Dropping the records closes every socket this core holds.
        self.st.conns.clear();
    }

    /// One step of a graceful shutdown; true once the core may stop. Every
    /// core closes its sockets (1001) and reports when they are gone; once
    /// all have, the rooms have heard every close, so each core snapshots
    /// its hibernating rooms and stops when its writes have committed.
    fn drain_step(&mut self, drain: &mut Drain, pending_elsewhere: bool) -> bool {
        let st = &mut self.st;
        match *drain {
            Drain::Serving => {
                tracing::debug!(core = st.index, sockets = st.conns.len(), "shutdown: closing sockets");
                st.close_all_sockets();
                *drain = Drain::Closing { deadline_ms: st.now_ms + st.shared.limits.close_timeout_ms };
            }
            Drain::Closing { deadline_ms } => {
                if st.conns.is_empty() && !pending_elsewhere && st.outboxes.iter().all(VecDeque::is_empty) {
                    st.shared.cores_closed.fetch_add(1, Ordering::AcqRel);
                    tracing::debug!(core = st.index, "shutdown: sockets closed");
                    *drain = Drain::Closed;
                } else if st.now_ms >= deadline_ms {
                    let slots: Vec<u32> = st.conns.iter().map(|(slot, _)| slot as u32).collect();
                    for slot in slots {
                        st.abort(slot);
                        st.release_if_done(slot);
                    }
                }
            }
            Drain::Closed => {
                if st.shared.cores_closed.load(Ordering::Acquire) == st.shared.cores {
                    while let Ok(msg) = self.inbox.try_recv() {
                        st.on_core_msg(msg);
                    }
                    st.deliver_local();
                    st.evict_all();
                    tracing::debug!(core = st.index, "shutdown: rooms saved; waiting for the writes");
                    *drain = Drain::Flushing;
                }
            }
            Drain::Flushing => return !st.writes_pending(),
        }
        false
    }

    /// Starts one send per socket with queued frames and none in flight.
    fn flush_sends(&mut self) {
        for slot in self.st.dirty.drain(..) {
            let Some(conn) = self.st.conns.get_mut(slot as usize) else { continue };
            conn.in_dirty = false;
            if conn.sending || conn.out.is_empty() || conn.phase == Phase::Dead {
                continue;
            }
            conn.sending = true;
            let (frames, offset) = conn.out.unsent();
            self.io.send(slot, conn.fd.as_raw_fd(), frames, offset);
        }
    }
}

/// Where a core is in a graceful shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    Serving,
    Closing { deadline_ms: u64 },
    Closed,
    Flushing,
}

fn shutdown(fd: &OwnedFd, how: std::net::Shutdown) {
    // An error here means the socket is already gone, which is what we want.
    let _ = socket2::SockRef::from(fd).shutdown(how);
}

impl State {
    /// A receive's outcome for socket `slot`.
    fn on_recv(&mut self, slot: u32, armed: bool, outcome: Received<'_>) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            unreachable!("a socket's record outlives its receive");
        };
        if !armed {
            conn.recv_armed = false;
        }
        let gen = conn.gen;
        match outcome {
            Received::Data(data) => {
                self.on_data(slot, Some(data));
                if !armed {
                    self.rearm.push((slot, gen));
                }
            }
            Received::NoBuffers => self.rearm.push((slot, gen)),
            Received::Eof | Received::Error => self.on_eof(slot),
        }
        self.release_if_done(slot);
    }

    fn conn_ref(&self, slot: u32) -> ConnRef {
        ConnRef { core: self.index, slot, gen: self.conns[slot as usize].gen }
    }

    fn send_to(&mut self, core: usize, msg: CoreMsg) {
        self.outboxes[core].push_back(msg);
    }

    /// Whether this core is behind (its inbox was full at the start of the
    /// turn, its rooms' backlogs behind sliced broadcasts hold a channel's
    /// worth, or this turn's input for itself does) or another is (this
    /// core's outbox for it holds a channel's worth beyond its full channel).
    /// New input from this core's sockets
    /// (messages, connects, requests, publishes) is then refused, with close
    /// 1013 or 503, since whatever it causes may have to queue for the core
    /// that is behind: so outboxes stay bounded. What was taken before, and
    /// closes and replies, still go, in order.
    fn overloaded(&self) -> bool {
        let cap = self.shared.limits.core_channel_capacity;
        self.behind || self.backlogged >= cap || self.outboxes.iter().any(|out| out.len() >= cap)
    }

    fn send_to_owner(&mut self, room: Arc<RoomKey>, msg: impl FnOnce(Arc<RoomKey>) -> CoreMsg) {
        let owner = room.owner(self.shared.cores);
        self.send_to(owner, msg(room));
    }

    fn on_accept(&mut self, socket: OwnedFd) {
        if self.shared.draining.load(Ordering::Relaxed) {
            let response = Response::text(503, "Server shutting down").encode(false);
            let _ = std::io::Write::write(&mut std::fs::File::from(socket), &response);
            return;
        }
        if self.conns.len() >= self.shared.limits.max_connections_per_core {
            // The socket is new and its send buffer empty, so this short
            // blocking write completes at once.
            let response = Response::text(503, "Server at connection capacity").encode(false);
            let _ = std::io::Write::write(&mut std::fs::File::from(socket), &response);
            return;
        }
        let _ = socket2::SockRef::from(&socket).set_tcp_nodelay(true);
        self.next_gen = self.next_gen.wrapping_add(1);
        let deadline_ms = self.now_ms + self.shared.limits.head_timeout_ms;
        let slot = self.conns.insert(ConnRecord {
            fd: socket,
            gen: self.next_gen,
            phase: Phase::Head,
            recv_armed: false,
            sending: false,
            in_dirty: false,
            joined: false,
            deflate: false,
            close_after_send: false,
            deadline_ms,
            local_room: 0,
            member_key: 0,
            member: 0,
            close_code: 1006,
            read_buf: ThinVec::new(),
            out: WriteQueue::new(),
            decoder: ws::Decoder::new(),
            http: None,
        }) as u32;
        self.head_timers.push_back((deadline_ms, slot, self.next_gen));
        self.rearm.push((slot, self.next_gen));
        self.shared.stats[usize::from(self.index)].connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Feeds received bytes (or, with `None`, only what is buffered) to the
    /// socket's current phase. Unconsumed bytes are kept in the record.
    fn on_data(&mut self, slot: u32, data: Option<&mut [u8]>) {
        let conn = &mut self.conns[slot as usize];
        if conn.phase == Phase::Dead {
            return;
        }
        if conn.read_buf.is_empty() {
            let Some(data) = data else { return };
            let used = self.process(slot, data);
            if used < data.len() {
                if let Some(conn) = live(&mut self.conns, slot) {
                    conn.read_buf.extend_from_slice(&data[used..]);
                }
            }
        } else {
            if let Some(data) = data {
                conn.read_buf.extend_from_slice(data);
            }
            let mut buf = std::mem::take(&mut conn.read_buf);
            let used = self.process(slot, &mut buf);
            if let Some(conn) = live(&mut self.conns, slot) {
                if used < buf.len() {
                    buf.drain(..used);
                    conn.read_buf = buf;
                }
            }
        }
        // Bytes kept while waiting on a room are bounded like a head plus a message.
        let bound = self.shared.limits.max_head_bytes + self.shared.limits.max_message_bytes + 16;
        if let Some(conn) = live(&mut self.conns, slot) {
            if conn.read_buf.len() > bound {
                self.abort(slot);
            }
        }
    }

    /// Runs the phase machine over `buf` and returns how many bytes it used.
    fn process(&mut self, slot: u32, buf: &mut [u8]) -> usize {
        let mut used = 0;
        loop {
            let Some(conn) = live(&mut self.conns, slot) else { return buf.len() };
            match conn.phase {
                Phase::Head => match http::parse_head(&buf[used..], &self.http_limits) {
                    Ok(None) => return used,
                    Ok(Some((head, len, framing))) => {
                        used += len;
                        self.on_head(slot, head, framing);
                    }
                    Err(e) => {
                        self.http_error(slot, &e);
                        return buf.len();
                    }
                },
                Phase::Body => {
                    let http = conn.http.as_mut().expect("a body phase has its request");
                    let body = http.body.as_mut().expect("a body phase has a body decoder");
                    match body.feed(&buf[used..]) {
                        Ok(n) => used += n,
                        Err(e) => {
                            self.http_error(slot, &e);
                            return buf.len();
                        }
                    }
                    if !body.is_done() {
                        return used;
                    }
                    self.on_request(slot);
                }
                Phase::Open | Phase::Closing => {
                    let (n, failed) = self.on_frames(slot, &mut buf[used..]);
                    used += n;
                    if !failed {
                        return used;
                    }
                    // The peer broke the protocol: what follows is read in
                    // the phase that follows (looking for its close frame).
                }
                Phase::AwaitResponse | Phase::AwaitConnect => return used,
                Phase::Draining | Phase::Lingering | Phase::Dead => return buf.len(),
            }
        }
    }

    fn on_head(&mut self, slot: u32, head: RequestHead, framing: BodyFraming) {
        let upgrade = match http::parse_upgrade(&head) {
            Ok(upgrade) => upgrade,
            Err(e) => return self.http_error(slot, &e),
        };
        let keep_alive = head.keep_alive();
        let conn = &mut self.conns[slot as usize];
        if let Some(upgrade) = upgrade {
            if framing != BodyFraming::None {
                return self.http_error(slot, &HttpError::Malformed("an upgrade request has no body".into()));
            }
            return self.on_upgrade(slot, head, upgrade);
        }
        let body = match framing {
            BodyFraming::None => None,
            framing => Some(BodyDecoder::new(framing, self.shared.limits.max_body_bytes)),
        };
        let has_body = body.is_some();
        conn.http = Some(Box::new(HttpState { head, body, keep_alive, ws_key: None, ws_deflate: None, publish: None }));
        if has_body {
            conn.phase = Phase::Body;
        } else {
            self.on_request(slot);
        }
    }

    /// A complete HTTP request: to a room, to the fetch handler, or 404.
    fn on_request(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let mut http = conn.http.take().expect("a complete request has its head");
        let body = http.body.as_mut().map(|b| b.take_body()).unwrap_or_default();
        let keep_alive = http.keep_alive;
        let mut request = Request { head: std::mem::replace(&mut http.head, empty_head()), body };
        conn.http = Some(http);
        conn.phase = Phase::AwaitResponse;
        match route::route(request.head.path()) {
            Route::Other => {
                let found =
                    self.shared.static_files.as_ref().and_then(|files| files.answer(request.method(), request.path()));
                let response = if self.shared.metrics_path.as_deref() == Some(request.head.path()) {
                    crate::metrics::respond(&request, &self.shared.stats)
                } else if let Some(file) = found {
                    file
                } else if let Some(fetch) = &self.shared.fetch {
                    guard(|| fetch(&request)).unwrap_or_else(|_| {
                        tracing::error!(path = request.head.path(), "the fetch handler panicked");
                        Response::text(500, HOOK_FAILED)
                    })
                } else {
                    Response::text(404, "Not found")
                };
                self.respond(slot, &response, keep_alive);
            }
            Route::Room { party, room_raw, rest: "/_publish" } => {
                if let Err(response) = self.publish(slot, party, room_raw, &request) {
                    self.respond(slot, &response, keep_alive);
                }
            }
            Route::Room { party, room_raw, .. } => {
                let (kind, room) = match self.resolve(party, room_raw) {
                    Ok(found) => found,
                    Err(response) => return self.respond(slot, &response, keep_alive),
                };
                let lobby = Lobby { party: &room.party, room: &room.id };
                match guard(|| kind.before_request(&mut request, &lobby)) {
                    Ok(Ok(())) => {}
                    Ok(Err(rejection)) => return self.respond(slot, &rejection.into_response(), keep_alive),
                    Err(_) => {
                        tracing::error!(party = %room.party, room = %room.id, "on_before_request panicked");
                        return self.respond(slot, &Response::text(500, HOOK_FAILED), keep_alive);
                    }
                }
                if self.overloaded() {
                    self.counters.events_shed += 1;
                    return self.respond(slot, &overloaded(), keep_alive);
                }
                let conn = self.conn_ref(slot);
                self.send_to_owner(room, |room| CoreMsg::Request { conn, room, request: Box::new(request) });
            }
        }
    }

    /// The publish API: broadcasts the body to the room's members on every
    /// core, filtered by `?tag=`, without reaching the room object. The
    /// response waits for every core's count.
    fn publish(&mut self, slot: u32, party: &str, room_raw: &str, request: &Request) -> Result<(), Response> {
        let Some(auth) = &self.shared.publish_auth else { return Err(Response::text(404, "Not found")) };
        if request.method() != "POST" {
            return Err(Response::text(405, "The publish API takes POST").with_header("Allow", "POST"));
        }
        let given = request.header("authorization").unwrap_or("");
        if !constant_time_eq(given.as_bytes(), auth.as_bytes()) {
            let response = Response::text(401, "A valid bearer token is required to publish");
            return Err(response.with_header("WWW-Authenticate", "Bearer"));
        }
        let (_, room) = self.resolve(party, room_raw)?;
        if self.overloaded() {
            self.counters.events_shed += 1;
            return Err(overloaded());
        }
        let binary =
            request.header("content-type").is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"));
        let message = if binary {
            Message::Binary(&request.body)
        } else {
            let text = std::str::from_utf8(&request.body)
                .map_err(|_| Response::text(400, "The body is not UTF-8; send binary as application/octet-stream"))?;
            Message::Text(text)
        };
        let frame = message.to_frame();
        // This core cannot tell whether any member negotiated deflate, so a
        // message that qualifies is compressed once here in case.
        let deflated = message.to_deflated_frame(&self.shared.party_config(&room.party));
        self.counters.broadcasts_compressed += u64::from(deflated.is_some());
        let tag = route::query_param(request.query(), "tag").map(|t| Arc::<str>::from(&*t));
        let conn = self.conn_ref(slot);
        let broadcast = Arc::new(Broadcast { room, frame, deflated, tag, without: SmallVec::new(), reply: Some(conn) });
        let http = self.conns[slot as usize].http.as_mut().expect("a request in progress has its state");
        http.publish = Some((self.shared.cores, 0));
        self.counters.publishes += 1;
        for core in 0..self.shared.cores {
            self.send_to(core, CoreMsg::Broadcast(broadcast.clone()));
        }
        Ok(())
    }

    /// One core's count for a publish: the last one answers the request.
    fn on_published(&mut self, conn: ConnRef, delivered: u64) {
        let Some(slot) = self.current(conn, Phase::AwaitResponse) else { return };
        let http = self.conns[slot as usize].http.as_mut().expect("a request in progress has its state");
        let Some((waiting, total)) = http.publish.as_mut() else { return };
        *waiting -= 1;
        *total += delivered;
        if *waiting == 0 {
            let (total, keep_alive) = (*total, http.keep_alive);
            let response = Response::json(200, format!("{{\"delivered\":{total}}}"));
            self.respond(slot, &response, keep_alive);
            self.on_data(slot, None);
        }
    }

    /// Finds the party kind and decodes the room id, or says why not.
    fn resolve(&self, party: &str, room_raw: &str) -> Result<(Arc<dyn PartyKind>, Arc<RoomKey>), Response> {
        let kind =
            self.shared.kinds.get(party).ok_or_else(|| Response::text(404, format!("Party {party} not found")))?;
        let id =
            route::decode_room(room_raw, self.shared.limits.max_room_id_bytes).map_err(|e| Response::text(400, e))?;
        Ok((kind.clone(), Arc::new(RoomKey::new(party, id))))
    }

    fn on_upgrade(&mut self, slot: u32, mut head: RequestHead, upgrade: http::Upgrade) {
        let (party, room_raw) = match route::route(head.path()) {
            Route::Room { party, room_raw, .. } => (party.to_owned(), room_raw.to_owned()),
            Route::Other => return self.reject(slot, Response::text(404, "Not found")),
        };
        let (kind, room) = match self.resolve(&party, &room_raw) {
            Ok(found) => found,
            Err(response) => return self.reject(slot, response),
        };
        let id = match route::query_param(head.query(), "_pk") {
            Some(pk) if !pk.is_empty() && pk.len() <= self.shared.limits.max_conn_id_bytes => pk.into_owned(),
            Some(_) => return self.reject(slot, Response::text(400, "connection id (_pk) is empty or too long")),
            None => random_id(),
        };
        let lobby = Lobby { party: &room.party, room: &room.id };
        match guard(|| kind.before_connect(&mut head, &lobby)) {
            Ok(Ok(())) => {}
            Ok(Err(rejection)) => return self.reject(slot, rejection.into_response()),
            Err(_) => {
                tracing::error!(party = %room.party, room = %room.id, "on_before_connect panicked");
                return self.reject(slot, Response::text(500, HOOK_FAILED));
            }
        }
        if self.overloaded() {
            self.counters.events_shed += 1;
            return self.reject(slot, overloaded());
        }
        let compression = self.shared.party_config(&room.party).compression;
        let deflate = upgrade.deflate.filter(|_| compression == CompressionMode::On);
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::AwaitConnect;
        conn.deadline_ms = u64::MAX;
        let uri = head.target.clone();
        conn.http = Some(Box::new(HttpState {
            head: empty_head(),
            body: None,
            keep_alive: false,
            ws_key: Some(upgrade.key),
            ws_deflate: deflate,
            publish: None,
        }));
        let protocols = upgrade.protocols;
        let joining = Box::new(Joining { id, uri, head, protocols, deflate: deflate.is_some() });
        let conn = self.conn_ref(slot);
        self.send_to_owner(room, |room| CoreMsg::Connect { conn, room, joining });
    }

    /// Answers an HTTP request. With keep-alive the socket goes back to
    /// reading the next head (and any pipelined bytes are processed now).
    fn respond(&mut self, slot: u32, response: &Response, keep_alive: bool) {
        self.enqueue(slot, Bytes::from(response.encode(keep_alive)));
        let Some(conn) = live(&mut self.conns, slot) else { return };
        conn.http = None;
        if keep_alive {
            conn.phase = Phase::Head;
            let deadline = self.now_ms + self.shared.limits.head_timeout_ms;
            conn.deadline_ms = deadline;
            let gen = conn.gen;
            self.head_timers.push_back((deadline, slot, gen));
        } else {
            self.drain_then_close(slot);
        }
    }

    /// Refuses a request with `response` and closes the connection.
    fn reject(&mut self, slot: u32, response: Response) {
        self.respond(slot, &response, false);
    }

    fn http_error(&mut self, slot: u32, error: &HttpError) {
        self.enqueue(slot, Bytes::from(http::error_response(error)));
        self.drain_then_close(slot);
    }

    fn drain_then_close(&mut self, slot: u32) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        conn.phase = Phase::Draining;
        conn.http = None;
        let gen = conn.gen;
        let deadline = self.now_ms + self.shared.limits.close_timeout_ms;
        conn.deadline_ms = deadline;
        let idle = !conn.sending && conn.out.is_empty();
        self.close_timers.push_back((deadline, slot, gen));
        if idle {
            self.linger(slot);
        }
    }

    /// Shuts down our side and reads until the peer closes (or the close
    /// timeout), so the peer is not reset before it has read our last bytes.
    fn linger(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::Lingering;
        shutdown(&conn.fd, std::net::Shutdown::Write);
    }

    /// Decodes frames from `buf`; returns the bytes used and whether the
    /// peer broke the protocol (it has then been answered).
    fn on_frames(&mut self, slot: u32, buf: &mut [u8]) -> (usize, bool) {
        let conn = &mut self.conns[slot as usize];
        let mut events = std::mem::take(&mut self.ws_events);
        let inflater = conn.deflate.then_some(&mut self.inflater);
        let (used, result) = conn.decoder.decode(buf, &self.ws_limits, inflater, &mut |event| events.push(event));
        for event in events.drain(..) {
            self.on_ws_event(slot, event);
        }
        self.ws_events = events;
        match result {
            Ok(()) => (used, false),
            Err(error) => {
                self.protocol_error(slot, &error);
                (used, true)
            }
        }
    }

    fn on_ws_event(&mut self, slot: u32, event: WsEvent) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        let phase = conn.phase;
        match (phase, event) {
            (Phase::Open, WsEvent::Text(text)) => self.forward_to_room(slot, Payload::Text(text)),
            (Phase::Open, WsEvent::Binary(data)) => self.forward_to_room(slot, Payload::Binary(data)),
            (Phase::Open | Phase::Closing, WsEvent::Ping(data)) => self.enqueue(slot, ws::pong_frame(&data)),
            (Phase::Open, WsEvent::Close { code, reason }) => {
                // Echo the peer's code (RFC 6455 §5.5.1), then close.
                self.enqueue(slot, ws::close_frame(code, ""));
                self.leave(slot, code.unwrap_or(1005), &reason, None);
                self.drain_then_close(slot);
            }
            (Phase::Closing, WsEvent::Close { code, reason }) => {
                self.leave(slot, code.unwrap_or(1005), &reason, None);
                self.drain_then_close(slot);
            }
            _ => {}
        }
    }

    fn forward_to_room(&mut self, slot: u32, data: Payload) {
        self.counters.messages_in += 1;
        let conn = &self.conns[slot as usize];
        let member = conn.member;
        let room = self.local_rooms[conn.local_room as usize].key.clone();
        if self.overloaded() {
            self.counters.events_shed += 1;
            self.enqueue(slot, ws::close_frame(Some(1013), OVERLOADED));
            return self.start_closing(slot, 1013);
        }
        let conn = self.conn_ref(slot);
        self.send_to_owner(room, |room| CoreMsg::Message { conn, room, member, data });
    }

    /// The peer broke the protocol: it gets a close with the code and reason.
    /// A broken close frame is still its close, so TCP is closed once ours is
    /// written (RFC 6455 §7.1.1); otherwise its close is awaited while the
    /// decoder discards whatever else it sends (the rest of an oversized
    /// frame, say), so that it reads our close instead of a reset.
    fn protocol_error(&mut self, slot: u32, error: &ws::WsError) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        if conn.phase != Phase::Open {
            // Past our close (only an unframeable header gets here): cut it.
            return self.abort(slot);
        }
        let code = error.close_code();
        let reason = error.to_string();
        self.enqueue(slot, ws::close_frame(Some(code), &reason));
        self.leave(slot, code, &reason, Some(&reason));
        if error.is_in_close() {
            self.drain_then_close(slot);
        } else {
            self.start_closing(slot, code);
        }
    }

    /// We sent a close frame: wait for the peer's, at most the close timeout.
    fn start_closing(&mut self, slot: u32, code: u16) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        conn.phase = Phase::Closing;
        conn.close_code = code;
        let deadline = self.now_ms + self.shared.limits.close_timeout_ms;
        conn.deadline_ms = deadline;
        let gen = conn.gen;
        self.close_timers.push_back((deadline, slot, gen));
    }

    /// Tells the room the connection is gone (once) and removes it from this
    /// core's member list.
    fn leave(&mut self, slot: u32, code: u16, reason: &str, error: Option<&str>) {
        let conn = &mut self.conns[slot as usize];
        if !conn.joined {
            return;
        }
        conn.joined = false;
        let (local_room, key, member) = (conn.local_room, conn.member_key, conn.member);
        let lr = &mut self.local_rooms[local_room as usize];
        lr.index.leave(MemberKey(key), &mut self.tag_names);
        let room = lr.key.clone();
        self.forget_room_if_unused(local_room);
        let close = Box::new(CloseInfo { code, reason: reason.to_owned(), error: error.map(str::to_owned) });
        let conn = self.conn_ref(slot);
        self.send_to_owner(room, |room| CoreMsg::Closed { conn, room, member, close });
    }

    /// Shutdown: open WebSockets get close 1001 (clients reconnect), the
    /// rest are cut.
    fn close_all_sockets(&mut self) {
        let slots: Vec<(u32, Phase)> = self.conns.iter().map(|(slot, c)| (slot as u32, c.phase)).collect();
        for (slot, phase) in slots {
            if phase == Phase::Open {
                self.enqueue(slot, ws::close_frame(Some(1001), "server shutting down"));
                self.start_closing(slot, 1001);
            } else if !matches!(phase, Phase::Closing | Phase::Draining | Phase::Lingering) {
                self.abort(slot);
                self.release_if_done(slot);
            }
        }
    }

    /// The alarms of the rooms this core owns, from the store.
    fn load_alarms(&mut self) {
        let alarms = match self.shared.store.alarms() {
            Ok(alarms) => alarms,
            Err(error) => {
                tracing::error!(%error, "cannot read the alarms; none are scheduled");
                return;
            }
        };
        for (key, at_ms) in alarms {
            let room = Arc::new(RoomKey::new(key.party(), key.room()));
            if room.owner(self.shared.cores) == usize::from(self.index) && self.shared.kinds.contains_key(key.party()) {
                self.load_alarm(room, at_ms);
            }
        }
    }

    /// The peer closed its side or the socket failed.
    fn on_eof(&mut self, slot: u32) {
        self.abort(slot);
    }

    /// Ends the socket now: the room hears 1006 if it has not heard otherwise.
    /// With bytes still to write, the kernel may hold part of a frame: the
    /// peer is then reset when the socket closes, not sent a clean end after
    /// a cut frame (which would look to it like a healthy, idle socket).
    fn abort(&mut self, slot: u32) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        let code = if conn.phase == Phase::Closing { conn.close_code } else { 1006 };
        self.leave(slot, code, "", None);
        let conn = &mut self.conns[slot as usize];
        if conn.sending || !conn.out.is_empty() {
            // An error means the socket is gone already.
            let _ = socket2::SockRef::from(&conn.fd).set_linger(Some(Duration::ZERO));
        }
        conn.phase = Phase::Dead;
        conn.out.clear();
        conn.read_buf = ThinVec::new();
        conn.http = None;
        shutdown(&conn.fd, std::net::Shutdown::Both);
    }

    /// Frees a dead socket's record once no operation refers to it.
    fn release_if_done(&mut self, slot: u32) {
        let Some(conn) = self.conns.get(slot as usize) else { return };
        if conn.phase == Phase::Dead && !conn.recv_armed && !conn.sending {
            // Dropping the record closes the socket.
            self.conns.remove(slot as usize);
            self.shared.stats[usize::from(self.index)].connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Queues a frame for the socket. Past the write backlog bound an open
    /// socket is a slow consumer, handled by the configured policy.
    fn enqueue(&mut self, slot: u32, frame: Bytes) {
        let max = self.shared.limits.max_write_backlog_bytes;
        let Some(conn) = live(&mut self.conns, slot) else { return };
        if !conn.out.fits(frame.len(), max) && conn.phase == Phase::Open {
            return self.slow_consumer(slot);
        }
        conn.out.push(frame);
        mark_dirty(conn, slot, &mut self.dirty);
    }

    /// An open socket's backlog is full. Under `close`, what it has not been
    /// sent is discarded but for the rest of a frame the kernel has part of
    /// (so every frame the peer gets is whole), a 1008 close follows, and it
    /// has the close timeout to read them; past it, it is reset (`abort`).
    /// Under `drop`, the frame that did not fit is dropped.
    fn slow_consumer(&mut self, slot: u32) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        if conn.phase != Phase::Open {
            return;
        }
        if self.shared.limits.slow_consumer == SlowConsumerPolicy::Drop {
            self.counters.frames_dropped += 1;
            return;
        }
        if conn.sending {
            // The send in flight may write any part of its frames: they stay
            // until it completes, and `on_sent` trims then.
            conn.out.keep_front(MAX_SEND_FRAMES);
            conn.close_after_send = true;
        } else {
            conn.out.keep_front(usize::from(conn.out.front_started()));
            conn.out.push(ws::close_frame(Some(1008), SLOW_CONSUMER));
            mark_dirty(conn, slot, &mut self.dirty);
        }
        self.counters.slow_consumers_closed += 1;
        self.leave(slot, 1008, SLOW_CONSUMER, Some(SLOW_CONSUMER));
        self.drain_then_close(slot);
    }

    fn on_sent(&mut self, slot: u32, result: i32) {
        let conn = &mut self.conns[slot as usize];
        conn.sending = false;
        if conn.phase == Phase::Dead {
            return self.release_if_done(slot);
        }
        if result < 0 {
            self.abort(slot);
            return self.release_if_done(slot);
        }
        self.counters.bytes_out += result as u64;
        conn.out.advance(result as usize);
        if std::mem::take(&mut conn.close_after_send) {
            conn.out.keep_front(usize::from(conn.out.front_started()));
            conn.out.push(ws::close_frame(Some(1008), SLOW_CONSUMER));
        }
        if !conn.out.is_empty() {
            mark_dirty(conn, slot, &mut self.dirty);
        } else if conn.phase == Phase::Draining {
            self.linger(slot);
        }
    }

    fn expire_timers(&mut self) {
        while let Some(&(deadline, slot, gen)) = self.head_timers.front() {
            if deadline > self.now_ms {
                break;
            }
            self.head_timers.pop_front();
            let Some(conn) = self.conns.get(slot as usize) else { continue };
            if conn.gen == gen && conn.deadline_ms == deadline && matches!(conn.phase, Phase::Head | Phase::Body) {
                let idle = conn.read_buf.is_empty() && conn.phase == Phase::Head;
                if idle {
                    // A keep-alive connection (or a silent one) that sent nothing.
                    self.abort(slot);
                    self.release_if_done(slot);
                } else {
                    let response = Response::text(408, "Request timeout: the request was not completed in time");
                    self.respond(slot, &response, false);
                }
            }
        }
        while let Some(&(deadline, slot, gen)) = self.close_timers.front() {
            if deadline > self.now_ms {
                break;
            }
            self.close_timers.pop_front();
            let Some(conn) = self.conns.get(slot as usize) else { continue };
            let closing = matches!(conn.phase, Phase::Closing | Phase::Draining | Phase::Lingering);
            if conn.gen == gen && conn.deadline_ms == deadline && closing {
                self.abort(slot);
                self.release_if_done(slot);
            }
        }
    }

    fn next_deadline_wait(&self) -> Duration {
        let next = [self.head_timers.front(), self.close_timers.front()]
            .into_iter()
            .flatten()
            .map(|&(deadline, _, _)| deadline)
            .chain(self.next_evict_ms())
            .min();
        let wait = match next {
            Some(deadline) => Duration::from_millis(deadline.saturating_sub(self.now_ms)),
            None => IDLE_WAIT,
        };
        match self.next_alarm_ms().into_iter().chain(self.next_timer_ms()).min() {
            Some(at_ms) => wait.min(Duration::from_millis(at_ms.saturating_sub(rooms::wall_ms()))),
            None => wait,
        }
    }

    /// Delivers messages this core sent to itself (rooms it owns for sockets
    /// it holds). Only those present at the start, so a room that keeps
    /// talking to itself cannot hold the loop.
    fn deliver_local(&mut self) {
        let own = usize::from(self.index);
        for _ in 0..self.outboxes[own].len() {
            let Some(msg) = self.outboxes[own].pop_front() else { break };
            self.on_core_msg(msg);
        }
    }

    /// Passes queued messages to other cores and wakes them. Returns whether
    /// some could not be passed yet (a full channel).
    fn flush_outboxes(&mut self) -> bool {
        let mut pending = false;
        for core in 0..self.outboxes.len() {
            if core == usize::from(self.index) || self.outboxes[core].is_empty() {
                continue;
            }
            let mut sent = false;
            while let Some(msg) = self.outboxes[core].pop_front() {
                match self.shared.senders[core].try_send(msg) {
                    Ok(()) => sent = true,
                    Err(TrySendError::Full(msg)) => {
                        self.outboxes[core].push_front(msg);
                        pending = true;
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.outboxes[core].clear();
                        break;
                    }
                }
            }
            if sent {
                self.shared.wake(core);
            }
        }
        pending
    }

    fn on_core_msg(&mut self, msg: CoreMsg) {
        if let Some(lr) = self.busy_room_of(&msg) {
            self.backlogged += 1;
            return self.local_rooms[lr as usize].backlog.push_back(msg);
        }
        match msg {
            CoreMsg::Connect { conn, room, joining } => {
                if !self.admits_room(&room) {
                    self.counters.events_shed += 1;
                    return self.send_to(usize::from(conn.core), CoreMsg::Respond { conn, response: rooms_full() });
                }
                self.counters.room_events += 1;
                let reply = match self.host(&room).and_then(|host| host.connect(conn, *joining)) {
                    Ok(Admission::Accepted { member, protocol, tags }) => CoreMsg::Accepted {
                        conn,
                        room: room.clone(),
                        member,
                        protocol: protocol.map(String::into_boxed_str),
                        tags,
                    },
                    Ok(Admission::Refused { reason }) => CoreMsg::Refused { conn, reason: reason.into_boxed_str() },
                    Err(failed) => {
                        self.fail_room(&room, &failed);
                        CoreMsg::Refused { conn, reason: failed.reason().into() }
                    }
                };
                self.after_event(&room, Some(reply));
            }
            CoreMsg::Message { conn, room, member, data } => {
                if self.storage_behind(&room) {
                    // What the sender sent before stays and commits in order;
                    // this message was never taken, and the sender is told.
                    self.counters.events_shed += 1;
                    let reason = STORAGE_BEHIND.into();
                    return self.send_to(usize::from(conn.core), CoreMsg::Close { conn, code: 1013, reason });
                }
                let message = match &data {
                    Payload::Text(text) => Message::Text(text.as_str()),
                    Payload::Binary(data) => Message::Binary(data),
                };
                if let Some(host) = self.hosts.get_mut(&room).filter(|host| !host.is_awake()) {
                    match host.message_asleep(conn, member, message) {
                        Ok(false) => {}
                        Ok(true) => {
                            self.counters.messages_asleep += 1;
                            return self.after_event(&room, None);
                        }
                        Err(failed) => return self.fail_room(&room, &failed),
                    }
                }
                let Some(host) = self.existing_host(&room) else { return };
                let outcome = host.and_then(|host| host.message(conn, member, message));
                self.counters.room_events += 1;
                match outcome {
                    Ok(()) => self.after_event(&room, None),
                    Err(failed) => self.fail_room(&room, &failed),
                }
            }
            CoreMsg::Closed { conn, room, member, close } => {
                if let Some(host) = self.hosts.get_mut(&room).filter(|host| !host.is_awake() && close.error.is_none()) {
                    match host.closed_asleep(conn, member, close.code, &close.reason) {
                        Ok(false) => {}
                        Ok(true) => {
                            self.after_event(&room, None);
                            return self.forget_if_on_disk(&room);
                        }
                        Err(failed) => return self.fail_room(&room, &failed),
                    }
                }
                let Some(host) = self.existing_host(&room) else { return };
                let outcome =
                    host.and_then(|host| host.closed(conn, member, close.code, &close.reason, close.error.as_deref()));
                self.counters.room_events += 1;
                match outcome {
                    Ok(()) => self.after_event(&room, None),
                    Err(failed) => self.fail_room(&room, &failed),
                }
            }
            CoreMsg::Request { conn, room, request } => self.on_room_request(ReplyTo::Socket(conn), room, &request),
            CoreMsg::RoomRequest { from, id, room, request } => {
                self.on_room_request(ReplyTo::Room { room: from, id }, room, &request);
            }
            CoreMsg::RoomResponse { room, id, response } => {
                // The caller stays in memory while it waits; gone, it failed since.
                let Some(host) = self.hosts.get_mut(&room).filter(|host| host.is_awake()) else { return };
                self.counters.room_events += 1;
                match host.room_response(id, *response) {
                    Ok(()) => self.after_event(&room, None),
                    Err(failed) => self.fail_room(&room, &failed),
                }
            }
            CoreMsg::Committed { room, generation, seq, error } => self.on_committed(&room, generation, seq, error),
            CoreMsg::Accepted { conn, room, member, protocol, tags } => {
                self.on_accepted(conn, room, member, protocol, &tags);
            }
            CoreMsg::Refused { conn, reason } => {
                let Some(slot) = self.current(conn, Phase::AwaitConnect) else { return };
                let key =
                    self.conns[slot as usize].http.take().and_then(|h| h.ws_key).expect("an upgrade keeps its key");
                self.enqueue(slot, Bytes::from(http::switching_protocols(&key, None, &[])));
                self.conns[slot as usize].phase = Phase::Open;
                self.enqueue(slot, ws::close_frame(Some(1011), &reason));
                self.start_closing(slot, 1011);
            }
            CoreMsg::Send { conn, frame } => {
                if let Some(slot) = self.current(conn, Phase::Open) {
                    self.counters.frames_out += 1;
                    self.enqueue(slot, frame);
                }
            }
            CoreMsg::Broadcast(broadcast) => self.on_broadcast(broadcast),
            CoreMsg::Published { conn, delivered } => self.on_published(conn, delivered),
            CoreMsg::Close { conn, code, reason } => {
                if let Some(slot) = self.current(conn, Phase::Open) {
                    self.enqueue(slot, ws::close_frame(Some(code), &reason));
                    self.start_closing(slot, code);
                }
            }
            CoreMsg::Respond { conn, response } => {
                // To a request, or to an upgrade the room's core refused
                // before the room (no room could be made for it).
                let Some(slot) = self.current(conn, Phase::AwaitResponse).or(self.current(conn, Phase::AwaitConnect))
                else {
                    return;
                };
                let keep_alive = self.conns[slot as usize].http.as_ref().is_some_and(|h| h.keep_alive);
                self.respond(slot, &response, keep_alive);
                self.on_data(slot, None);
            }
        }
    }

    /// The slot of `conn` if it is still that socket and in `phase`.
    fn current(&self, conn: ConnRef, phase: Phase) -> Option<u32> {
        debug_assert_eq!(conn.core, self.index, "messages for a socket go to its core");
        self.conns.get(conn.slot as usize).filter(|c| c.gen == conn.gen && c.phase == phase).map(|_| conn.slot)
    }

    /// A party callback panicked: the room object may be half-updated, so it
    /// is dropped (with the effects of the failed event) and its connections
    /// are closed with 1011. The next event for the room starts a fresh one.
    /// An HTTP request to a room, from a socket or from another room.
    fn on_room_request(&mut self, reply: ReplyTo, room: Arc<RoomKey>, request: &Request) {
        if self.storage_behind(&room) {
            self.counters.events_shed += 1;
            let response = Response::text(503, STORAGE_BEHIND).with_header("retry-after", "1");
            return self.send_reply(reply.message(Box::new(response)));
        }
        if !self.admits_room(&room) {
            self.counters.events_shed += 1;
            return self.send_reply(reply.message(rooms_full()));
        }
        self.counters.room_events += 1;
        let response = match self.host(&room).and_then(|host| host.request(request)) {
            Ok(response) => response,
            Err(failed) => {
                self.fail_room(&room, &failed);
                Response::text(500, failed.reason())
            }
        };
        // A room that answers later keeps where the answer goes.
        if let Some(host) = self.hosts.get_mut(&room) {
            if let Some(token) = host.room.deferred.take() {
                host.deferred.push((token, reply));
                return self.after_event(&room, None);
            }
        }
        self.after_event(&room, Some(reply.message(Box::new(response))));
    }

    fn fail_room(&mut self, room: &Arc<RoomKey>, failed: &RoomFailed) {
        let reason = failed.reason();
        tracing::error!(party = %room.party, room = %room.id, %reason, "the room was reset");
        let Some(mut host) = self.hosts.remove(room) else { return };
        for (_, reply) in host.deferred.drain(..) {
            self.send_reply(reply.message(Box::new(Response::text(500, reason.clone().into_owned()))));
        }
        if host.is_awake() {
            self.stats().rooms_resident.fetch_sub(1, Ordering::Relaxed);
        }
        for conn in host.member_conns() {
            let reason = reason.as_ref().into();
            self.send_to(usize::from(conn.core), CoreMsg::Close { conn, code: 1011, reason });
        }
    }

    fn on_accepted(
        &mut self,
        conn: ConnRef,
        room: Arc<RoomKey>,
        member: u32,
        protocol: Option<Box<str>>,
        tags: &[Box<str>],
    ) {
        let Some(slot) = self.current(conn, Phase::AwaitConnect) else {
            // The socket went away while the room admitted it: the room must
            // hear that it is gone.
            let close = Box::new(CloseInfo { code: 1006, reason: String::new(), error: None });
            return self.send_to_owner(room, |room| CoreMsg::Closed { conn, room, member, close });
        };
        let http = self.conns[slot as usize].http.take().expect("an upgrade keeps its state");
        let key = http.ws_key.expect("an upgrade keeps its key");
        let extensions: Vec<(String, String)> = http
            .ws_deflate
            .map(|value| ("sec-websocket-extensions".to_owned(), value.to_owned()))
            .into_iter()
            .collect();
        self.enqueue(slot, Bytes::from(http::switching_protocols(&key, protocol.as_deref(), &extensions)));
        let local_room = match self.local_room_ids.get(&room) {
            Some(&id) => id,
            None => {
                let lr = LocalRoom { key: room.clone(), index: TagIndex::new(), job: None, backlog: VecDeque::new() };
                let id = self.local_rooms.insert(lr) as u32;
                self.local_room_ids.insert(room, id);
                id
            }
        };
        let key = self.local_rooms[local_room as usize].index.join(slot, tags, &mut self.tag_names);
        let conn = &mut self.conns[slot as usize];
        conn.local_room = local_room;
        conn.member_key = key.0;
        conn.member = member;
        conn.joined = true;
        conn.deflate = http.ws_deflate.is_some();
        conn.phase = Phase::Open;
        // Frames a client sent before the 101 are processed now.
        self.on_data(slot, None);
    }

    /// The local room a message must wait for, if it concerns a room (or a
    /// member of a room) whose sliced broadcast is still going out.
    fn busy_room_of(&self, msg: &CoreMsg) -> Option<u32> {
        let lr = match msg {
            CoreMsg::Broadcast(broadcast) => *self.local_room_ids.get(&broadcast.room)?,
            CoreMsg::Accepted { room, .. } => *self.local_room_ids.get(room)?,
            CoreMsg::Send { conn, .. } | CoreMsg::Close { conn, .. } => {
                self.conns.get(conn.slot as usize).filter(|c| c.gen == conn.gen && c.joined)?.local_room
            }
            _ => return None,
        };
        self.local_rooms[lr as usize].job.is_some().then_some(lr)
    }

    /// Writes one pre-framed broadcast to the matching local members of its
    /// room: at once when they are few, else in slices (`limits.fanout_slice`).
    fn on_broadcast(&mut self, broadcast: Arc<Broadcast>) {
        self.counters.broadcasts += 1;
        let Some(&lr) = self.local_room_ids.get(&broadcast.room) else { return self.reply_published(&broadcast, 0) };
        let tag = match &broadcast.tag {
            None => None,
            Some(name) => match self.tag_names.lookup(name) {
                Some(tag) => Some(tag),
                None => return self.reply_published(&broadcast, 0),
            },
        };
        let room = &mut self.local_rooms[lr as usize];
        let recipients = room.index.slots(tag);
        if recipients.len() > self.shared.limits.fanout_slice {
            let slots = recipients.collect();
            room.job = Some(Box::new(FanoutJob { broadcast, slots, next: 0, delivered: 0 }));
            self.busy_rooms.push_back(lr);
            return;
        }
        self.fanout_this_turn += recipients.len();
        let mut out = FanOut { conns: &mut self.conns, dirty: &mut self.dirty, slow: &mut self.slow };
        let delivered = out.write(recipients, lr, &broadcast, self.index, self.shared.limits.max_write_backlog_bytes);
        self.after_fan_out(delivered);
        self.reply_published(&broadcast, delivered);
    }

    /// Advances sliced broadcasts, one slice per busy room in turn, within
    /// what is left of this turn's budget (and at least one slice).
    fn run_fanout_jobs(&mut self) {
        let slice = self.shared.limits.fanout_slice;
        let mut budget = self.fanout_turn_budget().saturating_sub(self.fanout_this_turn).max(slice);
        while budget > 0 {
            let Some(lr) = self.busy_rooms.pop_front() else { break };
            let job = self.local_rooms[lr as usize].job.as_mut().expect("a busy room has a job");
            let end = job.slots.len().min(job.next + budget.min(slice));
            let mut out = FanOut { conns: &mut self.conns, dirty: &mut self.dirty, slow: &mut self.slow };
            let slice = job.slots[job.next..end].iter().copied();
            let delivered =
                out.write(slice, lr, &job.broadcast, self.index, self.shared.limits.max_write_backlog_bytes);
            budget -= end - job.next;
            self.fanout_this_turn += end - job.next;
            job.next = end;
            job.delivered += delivered;
            let done = end == job.slots.len();
            self.after_fan_out(delivered);
            if done {
                let job = self.local_rooms[lr as usize].job.take().expect("a busy room has a job");
                self.reply_published(&job.broadcast, job.delivered);
                self.drain_backlog(lr);
            } else {
                self.busy_rooms.push_back(lr);
            }
        }
    }

    fn fanout_turn_budget(&self) -> usize {
        self.shared.limits.fanout_slice.saturating_mul(FANOUT_SLICES_PER_TURN)
    }

    /// Handles what a room held back during its sliced broadcast, until the
    /// backlog is empty or another sliced broadcast starts.
    fn drain_backlog(&mut self, lr: u32) {
        while self.local_rooms[lr as usize].job.is_none() {
            let Some(msg) = self.local_rooms[lr as usize].backlog.pop_front() else { break };
            self.backlogged -= 1;
            self.on_core_msg(msg);
        }
        self.forget_room_if_unused(lr);
    }

    /// Drops a local room with no members and nothing in progress.
    fn forget_room_if_unused(&mut self, lr: u32) {
        let room = &self.local_rooms[lr as usize];
        if room.index.is_empty() && room.job.is_none() && room.backlog.is_empty() {
            self.local_room_ids.remove(&room.key);
            self.local_rooms.remove(lr as usize);
        }
    }

    /// Counts a fan-out's frames and applies the slow-consumer policy to the
    /// members it found over their backlog.
    fn after_fan_out(&mut self, delivered: u64) {
        self.counters.frames_out += delivered;
        let mut slow = std::mem::take(&mut self.slow);
        for slot in slow.drain(..) {
            self.slow_consumer(slot);
        }
        self.slow = slow;
    }

    fn reply_published(&mut self, broadcast: &Broadcast, delivered: u64) {
        if let Some(conn) = broadcast.reply {
            self.send_to(usize::from(conn.core), CoreMsg::Published { conn, delivered });
        }
    }

    /// Carries out what the room asked for, draining `effects`.
    fn dispatch_effects(&mut self, room: &Arc<RoomKey>, effects: &mut Vec<Effect>) {
        let Some(host) = self.hosts.get_mut(room) else {
            effects.clear();
            return;
        };
        let cores_with_members: SmallVec<[usize; 8]> =
            host.room.members_per_core.iter().enumerate().filter(|(_, n)| n.get() > 0).map(|(core, _)| core).collect();
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, frame } => self.send_to(usize::from(to.core), CoreMsg::Send { conn: to, frame }),
                Effect::Close { to, code, reason } => {
                    let reason = reason.into_boxed_str();
                    self.send_to(usize::from(to.core), CoreMsg::Close { conn: to, code, reason });
                }
                Effect::RoomRequest { id, party, room: target, request } => {
                    let answer = |status: u16, text: String| CoreMsg::RoomResponse {
                        room: room.clone(),
                        id,
                        response: Box::new(Response::text(status, text)),
                    };
                    if !self.shared.kinds.contains_key(&party) {
                        let own = usize::from(self.index);
                        self.send_to(own, answer(404, format!("no party {party:?}")));
                    } else if target.is_empty() || target.len() > self.shared.limits.max_room_id_bytes {
                        let own = usize::from(self.index);
                        self.send_to(own, answer(400, "the room id is empty or too long".to_owned()));
                    } else {
                        let from = room.clone();
                        let key = Arc::new(RoomKey::new(party, target));
                        self.send_to_owner(key, |room| CoreMsg::RoomRequest { from, id, room, request });
                    }
                }
                Effect::Reply { token, response } => {
                    let Some(host) = self.hosts.get_mut(room) else { continue };
                    let Some(at) = host.deferred.iter().position(|(t, _)| *t == token) else { continue };
                    let (_, reply) = host.deferred.swap_remove(at);
                    self.send_reply(reply.message(response));
                }
                Effect::Broadcast { frame, deflated, tag, without } => {
                    self.counters.broadcasts_compressed += u64::from(deflated.is_some());
                    let room = room.clone();
                    let broadcast = Arc::new(Broadcast { room, frame, deflated, tag, without, reply: None });
                    for &core in &cores_with_members {
                        self.send_to(core, CoreMsg::Broadcast(broadcast.clone()));
                    }
                }
            }
        }
    }

    fn stats(&self) -> &CoreStats {
        &self.shared.stats[usize::from(self.index)]
    }
}

/// The borrows a fan-out needs, apart from the room it reads recipients from.
struct FanOut<'a> {
    conns: &'a mut slab::Slab<ConnRecord>,
    dirty: &'a mut Vec<u32>,
    slow: &'a mut Vec<u32>,
}

impl FanOut<'_> {
    /// Queues the broadcast's frame (the same `Bytes`, no copy) on every
    /// recipient still open in local room `lr`; those over their backlog go to
    /// `slow`. Returns how many got the frame.
    #[inline]
    fn write(
        &mut self,
        recipients: impl Iterator<Item = u32>,
        lr: u32,
        broadcast: &Broadcast,
        core: u16,
        max_backlog: usize,
    ) -> u64 {
        let plain = &broadcast.frame;
        let deflated = broadcast.deflated.as_ref().unwrap_or(plain);
        let mut delivered = 0;
        for slot in recipients {
            let Some(conn) = self.conns.get_mut(slot as usize) else { continue };
            if conn.phase != Phase::Open || !conn.joined || conn.local_room != lr {
                continue;
            }
            if !broadcast.without.is_empty() && broadcast.without.contains(&ConnRef { core, slot, gen: conn.gen }) {
                continue;
            }
            let frame = if conn.deflate { deflated } else { plain };
            if !conn.out.try_push(frame, max_backlog) {
                self.slow.push(slot);
                continue;
            }
            mark_dirty(conn, slot, self.dirty);
            delivered += 1;
        }
        delivered
    }
}

/// Compares a secret without an early exit, so the time taken does not tell
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The record of a socket that is still being served.
fn live(conns: &mut slab::Slab<ConnRecord>, slot: u32) -> Option<&mut ConnRecord> {
    conns.get_mut(slot as usize).filter(|c| c.phase != Phase::Dead)
}

fn mark_dirty(conn: &mut ConnRecord, slot: u32, dirty: &mut Vec<u32>) {
    if !conn.in_dirty {
        conn.in_dirty = true;
        dirty.push(slot);
    }
}

fn empty_head() -> RequestHead {
    RequestHead { method: String::new(), target: String::new(), minor_version: 1, headers: Vec::new() }
}

/// A fresh connection id for a client that sent no `_pk`: a random (version
/// 4) UUID, as PartyKit generates.
fn random_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
