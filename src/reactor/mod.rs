//! The per-core reactor: one thread per core that owns a ring, a listener and
//! the sockets it accepted, runs the rooms it owns, and talks to other cores
//! only through bounded channels.
//!
//! Connection state lives in `ConnRecord`s in a slab. HTTP and WebSocket
//! bytes are handed to the sans-I/O codecs in `http` and `ws`; room events go
//! to the room's owner core as [`CoreMsg`] values, and the room's effects come
//! back the same way. Only this module and its backend touch sockets.
//!
//! One file per concern, all of them `impl State` blocks over the one
//! `State` below (so a turn can borrow the ring and the state apart):
//!
//! | file | what it holds |
//! |---|---|
//! | `turn.rs` | the loop: one turn's steps in order, and graceful shutdown |
//! | `conn.rs` | `ConnRecord` and `Phase`: accepting, reading, closing, freeing a socket |
//! | `http_path.rs` | what a request's bytes become: a response, a room's request, a publish |
//! | `ws_path.rs` | the upgrade and its admission, frames in, a member leaving |
//! | `write.rs` | frames out: the write queue, slow consumers, send completions |
//! | `publish.rs` | the publish API (`POST .../_publish`) |
//! | `fanout.rs` | `LocalRoom`, tag-filtered broadcasts to local members, sliced over turns |
//! | `links.rs` | sockets between rooms: a room's connection to another, as a member there |
//! | `timers.rs` | socket deadlines (head, close), and how long a turn may wait |
//! | `messages.rs` | the core-to-core outboxes, and each arriving `CoreMsg` to its handler |
//! | `owner.rs` | a room owner's handling of events for its rooms, their effects, failures |
//! | `placement.rs` | where a room runs, and the one way a message leaves for it |
//! | `rooms.rs` | rooms that outlive memory: wake, evict, durability, alarms, timers |
//! | `residency.rs` | the eviction queues and the bound on resident rooms |
//! | `rate.rs` | rate limits: each socket's message and byte buckets, each client IP's |
//! | `inspect.rs` | the inspector's summary of the core's rooms, and (core 0) its live feed |
//! | `stats.rs` | the core's counters, stored for `/metrics` once per turn |
//! | `backend.rs`, `uring.rs`, `epoll.rs` | the I/O backends behind one trait |

mod backend;
mod conn;
mod epoll;
mod fanout;
mod http_path;
mod inspect;
mod links;
mod messages;
mod owner;
mod placement;
mod publish;
mod rate;
mod residency;
mod rooms;
mod stats;
mod timers;
mod turn;
mod uring;
mod write;
mod ws_path;

pub(crate) use crate::room_key::Placement;
pub(crate) use backend::Backend;
pub use conn::CONN_RECORD_BYTES;
pub(crate) use epoll::Epoll;
pub(crate) use rate::ConnRates;
pub(crate) use uring::{probe as probe_uring, Uring};

use crate::config::{Limits, PartyConfig};
use crate::core_msg::CoreMsg;
use crate::http::{HttpLimits, Response};
use crate::kind::PartyKind;
use crate::metrics::CoreStats;
use crate::party::{Effect, Request};
use crate::room::RoomHost;
use crate::room_key::{RoomKey, RoomMap};
use crate::ws::{WsEvent, WsLimits};
use conn::ConnRecord;
use crossbeam_channel::{Receiver, Sender};
use dormouse_tags::TagInterner;
use fanout::LocalRoom;
use stats::Counters;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// A handler for HTTP requests outside the room routes.
pub type FetchHandler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

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
    /// Where each room runs.
    pub placement: Placement,
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
    /// The cores' common clock origin (`now_ms` counts from it), so that
    /// times they pass to the shared IP limiter agree.
    pub epoch: Instant,
    /// Each WebSocket's message and byte limits.
    pub conn_rates: ConnRates,
    /// Each client IP's upgrade and request limits, if any is set.
    pub ip_limiter: Option<crate::rate_limit::IpLimiter>,
    /// The threads that run rooms' outbound requests.
    pub outbound: crate::outbound::Outbound<Box<crate::core_msg::FetchTicket>>,
    /// The inspector (`inspector_token`), if on.
    pub inspector: Option<Arc<crate::inspector::Inspector>>,
    /// Proxies trusted to name the client (`trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The cluster's gateway (`[cluster]`), if this node is in one.
    pub gateway: Option<crate::cluster::GatewayLink>,
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
    /// Links (rooms' sockets to other rooms) the last fan-out reached.
    link_hits: Vec<u32>,
    /// The sockets this core's rooms hold to other rooms (at most
    /// `MAX_ROOM_SOCKETS` per room).
    links: slab::Slab<links::Link>,
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
    /// In a cluster: where rooms run, and what waits for an answer.
    routes: Option<Box<placement::Routes>>,
    /// Messages for other nodes' connections and rooms (virtual cores),
    /// for the gateway at the end of the turn.
    remote_out: Vec<(u16, CoreMsg)>,
    /// Questions and publishes for the gateway.
    gateway_out: VecDeque<crate::cluster::FromCore>,
    /// Batches handed to the gateway for their rooms' journals, not yet answered.
    journal_pending: usize,
    /// Sockets with frames queued this turn.
    dirty: Vec<u32>,
    /// Sockets whose receive must be (re-)armed: (slot, generation).
    rearm: Vec<(u32, u32)>,
    head_timers: VecDeque<(u64, u32, u32)>,
    close_timers: VecDeque<(u64, u32, u32)>,
    epoch: Instant,
    now_ms: u64,
    /// Each socket's rate buckets (message and byte arrival times, see
    /// `rate.rs`), by slot: beside the records, not in them, so the
    /// fan-out's walk over records does not carry them.
    conn_rates: Vec<[u64; 2]>,
    /// Outbound requests of this core's rooms not settled yet (at most
    /// `limits.max_fetches_per_core`).
    fetches_in_flight: usize,
    /// When this core next reports to the inspector.
    next_inspect_ms: u64,
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

impl State {
    fn new(index: usize, shared: Arc<Shared>) -> std::io::Result<State> {
        let limits = &shared.limits;
        Ok(State {
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
            link_hits: Vec::new(),
            links: slab::Slab::new(),
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
            routes: shared.gateway.as_ref().map(|_| Box::default()),
            remote_out: Vec::new(),
            gateway_out: VecDeque::new(),
            journal_pending: 0,
            dirty: Vec::new(),
            rearm: Vec::new(),
            head_timers: VecDeque::new(),
            close_timers: VecDeque::new(),
            epoch: shared.epoch,
            now_ms: 0,
            conn_rates: Vec::new(),
            fetches_in_flight: 0,
            next_inspect_ms: 0,
            ws_events: Vec::new(),
            effects: Vec::new(),
            behind: false,
            backlogged: 0,
            inflater: crate::deflate::Inflater::new(),
            shared,
        })
    }
}
