//! Server configuration: the TOML file format, its defaults, and every limit
//! the server enforces, in one place.
//!
//! Each limit has a default and a one-line reason next to it. Parsing rejects
//! unknown keys and bad values with an error that names the key, so a typo in a
//! config file stops the server at start-up instead of being silently ignored.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address every core listens on (SO_REUSEPORT).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where durable state lives (used by hibernation and room storage).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Number of core threads; default: the machine's available parallelism.
    #[serde(default)]
    pub cores: Option<usize>,
    /// The I/O backend: `auto` (io_uring where it works, else epoll), `uring` or `epoll`.
    #[serde(default)]
    pub io: IoBackend,
    /// Bearer token of the publish API (`POST /parties/:party/:room/_publish`).
    /// Without one the endpoint is off and answers 404.
    #[serde(default)]
    pub publish_token: Option<String>,
    /// Token of the inspector page at `/_dormouse/` (16+ printable
    /// characters). Without one the inspector is off (404).
    #[serde(default)]
    pub inspector_token: Option<String>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Proxies (addresses or CIDR blocks, e.g. `["10.0.0.0/8", "::1"]`)
    /// whose `Forwarded` or `X-Forwarded-For` header names the client for
    /// the per-IP rate limits. Empty (default): every peer is the client;
    /// such headers from anyone else are ignored.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Let rooms' outbound requests (`fetch`) reach loopback, private,
    /// link-local and other local addresses. Off: a room cannot be used to
    /// call the services next to the server.
    #[serde(default)]
    pub allow_private_fetch: bool,
    /// Networks rooms may fetch from although they are private (an
    /// internal API, say), as CIDR blocks or addresses.
    #[serde(default, deserialize_with = "networks")]
    pub fetch_allow: Vec<ipnet::IpNet>,
    /// A PEM file of the certificate authorities rooms' `https://` fetches
    /// trust, instead of the built-in Mozilla roots (for a private CA).
    /// Unset: the Mozilla roots.
    #[serde(default)]
    pub fetch_ca_file: Option<std::path::PathBuf>,
    /// Most room objects held in memory at once, over all cores (each core
    /// holds at most its share). Past it, the least recently used room that
    /// can go is evicted to disk (or dropped, when it keeps its object only
    /// in memory and has no connections); a new room that finds none gets
    /// 503 with `Retry-After`.
    #[serde(default = "default_max_resident_rooms")]
    pub max_resident_rooms: usize,
    /// Let the allocator back the heap with transparent huge pages. Off by
    /// default: the server then sets `PR_SET_THP_DISABLE` for its process at
    /// start-up (as Redis does), because with 2 MiB pages a socket's few
    /// hundred bytes pin whole huge pages and memory grows in 2 MiB steps
    /// (372–398 against 569–714 B per idle connection at 15,000, runs
    /// alternating with it off and on).
    #[serde(default)]
    pub huge_pages: bool,
    /// Parties and their options, by name: built-in kinds, or options for a
    /// party registered in code (then without `kind`).
    #[serde(default)]
    pub parties: BTreeMap<String, PartyConfig>,
    /// A PartyKit project's `partykit.json` (relative to this file): its
    /// parties, vars and `serve` folder are read at start-up.
    #[serde(default)]
    pub partykit: Option<PathBuf>,
    /// A folder of static files answered for paths that are not rooms
    /// (relative to this file); read into memory at start-up.
    #[serde(default)]
    pub serve: Option<PathBuf>,
    /// With `serve`: a path with no file gets `index.html` (a single-page
    /// app's own router takes it from there) instead of 404.
    #[serde(default)]
    pub single_page_app: bool,
    /// Run as one node of a cluster on NATS (see `[cluster]`). Absent:
    /// a single node, with no NATS at run time.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]`: how this node joins the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// NATS servers (with JetStream), e.g. `["nats://127.0.0.1:4222"]`.
    pub nats: Vec<String>,
    /// This node's id, unique in the cluster: 1 to 64 of `[A-Za-z0-9_-]`.
    pub node_id: String,
    /// JetStream replicas of the cluster's buckets (1 for one NATS server,
    /// 3 for a three-server NATS cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a room's lease lasts unrenewed (10 s). An owner renews it
    /// every third of that and stops running the room once four fifths of
    /// it passed since its last successful renewal was sent.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often a node says it is alive (2 s); a node silent for three
    /// heartbeats is gone.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long an HTTP request sent to a room on another node waits for
    /// its answer (60 s) before it is answered 504: what crosses nodes
    /// goes at most once, so an answer lost in a NATS failover never comes.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_request_timeout_ms() -> u64 {
    60_000
}

fn default_replicas() -> usize {
    1
}
fn default_lease_ms() -> u64 {
    10_000
}
fn default_heartbeat_ms() -> u64 {
    2_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyConfig {
    /// A built-in kind (`relay`, `echo`, `chat`); absent for a party
    /// registered in code or written in JavaScript (`main`).
    #[serde(default)]
    pub kind: Option<String>,
    /// A JavaScript or TypeScript module serving the party, in PartyKit's
    /// API, bundled with what it imports; relative to the config file's
    /// folder.
    #[serde(default)]
    pub main: Option<PathBuf>,
    /// `room.env` of a JavaScript party: names and string values.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Evict idle room objects to an LMDB snapshot; the next event brings
    /// them back. Sockets stay open meanwhile. (From `hibernate` in the
    /// TOML, else a JavaScript server's `options.hibernate`, else false.)
    #[serde(skip)]
    pub hibernate: bool,
    /// `hibernate` as the TOML gave it, if it did.
    #[serde(default, rename = "hibernate")]
    pub(crate) hibernate_option: Option<bool>,
    /// Time without events after which a hibernating room is evicted.
    #[serde(default = "default_idle_evict_ms")]
    pub idle_evict_ms: u64,
    /// Time without connections and events after which a room whose object
    /// lives only in memory (no `hibernate`) is dropped, as Durable Objects
    /// are: its storage and alarm stay, its next event creates it afresh.
    #[serde(default = "default_idle_drop_ms")]
    pub idle_drop_ms: u64,
    /// `strict`: what an event produced (messages, responses) is released
    /// only once its storage writes have committed. `relaxed`: at once.
    #[serde(default)]
    pub durability: Durability,
    /// The `chat` kind: messages kept and sent to each new connection.
    #[serde(default = "default_history")]
    pub history: usize,
    /// permessage-deflate for the party's sockets: `on` (default) accepts
    /// clients' offers and sends text messages of `compression_min_bytes`
    /// or more compressed to the members that negotiated it (a broadcast is
    /// compressed once for all of them); `off` declines every offer.
    #[serde(default)]
    pub compression: CompressionMode,
    /// Shorter text messages go uncompressed (256 B): below this deflate
    /// saves little and costs the compressor's time per message.
    #[serde(default = "default_compression_min_bytes")]
    pub compression_min_bytes: usize,
    /// Per-connection state of this party's rooms; default
    /// `limits.max_state_bytes` (the `yjs` kind: 16 KiB, for the awareness
    /// states a connection sets).
    #[serde(default)]
    pub max_state_bytes: Option<usize>,
    /// The `yjs` kind: largest document, as stored (merged state plus the
    /// updates since, 32 MiB). An update past it is refused and its sender
    /// closed with 1009.
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: usize,
    /// Cross-origin HTTP to the party's rooms: `true` (any origin), or
    /// `{ origins, methods, headers, max_age, credentials }`. Preflights
    /// are answered without the room; responses to allowed origins carry
    /// the `Access-Control-Allow-*` headers.
    #[serde(default)]
    pub cors: Option<CorsOption>,
    /// Origins whose pages may open WebSockets to the party's rooms (`*`
    /// for any); others get 403. Absent: any origin.
    #[serde(default)]
    pub ws_origins: Option<Vec<String>>,
}

/// A party's `cors` option: `true`/`false`, or its rules.
#[derive(Debug, Clone, PartialEq)]
pub enum CorsOption {
    Any(bool),
    Rules(CorsRules),
}

/// The rules of `cors = { ... }`; what is left out has a default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsRules {
    /// Origins allowed, as browsers send them (`https://app.example`);
    /// `*` or none: any.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Methods allowed (default GET, HEAD, POST, PUT, PATCH, DELETE).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request headers allowed (default: whatever a preflight asks for).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Seconds a browser may cache a preflight's answer (default 600).
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Allow cookies and HTTP auth (`Access-Control-Allow-Credentials`);
    /// needs a list of origins.
    #[serde(default)]
    pub credentials: bool,
}

impl CorsRules {
    /// Whether every origin is allowed (`*`, or none listed).
    pub(crate) fn allows_any_origin(&self) -> bool {
        self.origins.is_empty() || self.origins.iter().any(|o| o == "*")
    }
}

impl CorsOption {
    /// The rules in force, if CORS is on.
    pub(crate) fn rules(&self) -> Option<std::borrow::Cow<'_, CorsRules>> {
        match self {
            CorsOption::Any(false) => None,
            CorsOption::Any(true) => Some(std::borrow::Cow::Owned(CorsRules::default())),
            CorsOption::Rules(rules) => Some(std::borrow::Cow::Borrowed(rules)),
        }
    }
}

impl<'de> Deserialize<'de> for CorsOption {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CorsOption;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table { origins, methods, headers, max_age, credentials }")
            }
            fn visit_bool<E: serde::de::Error>(self, any: bool) -> Result<CorsOption, E> {
                Ok(CorsOption::Any(any))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<CorsOption, A::Error> {
                CorsRules::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(CorsOption::Rules)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Whether a party's sockets may use permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CompressionMode {
    #[default]
    On,
    Off,
}

impl PartyConfig {
    /// Whether a message of this kind and length is sent compressed to
    /// members that negotiated permessage-deflate.
    pub(crate) fn compresses(&self, text: bool, len: usize) -> bool {
        self.compression == CompressionMode::On && text && len >= self.compression_min_bytes
    }
}

impl Default for PartyConfig {
    fn default() -> Self {
        PartyConfig {
            kind: None,
            main: None,
            vars: BTreeMap::new(),
            hibernate: false,
            hibernate_option: None,
            idle_evict_ms: default_idle_evict_ms(),
            idle_drop_ms: default_idle_drop_ms(),
            durability: Durability::default(),
            history: default_history(),
            compression: CompressionMode::default(),
            compression_min_bytes: default_compression_min_bytes(),
            max_state_bytes: None,
            max_document_bytes: default_max_document_bytes(),
            cors: None,
            ws_origins: None,
        }
    }
}

/// When the effects of an event that wrote to room storage are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the writes commit: no client sees what a crash could undo.
    #[default]
    Strict,
    /// At once; a crash may undo writes whose effects were seen.
    Relaxed,
}

/// Which I/O backend the cores run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum IoBackend {
    /// io_uring when a start-up probe finds every feature it needs, else
    /// epoll (with one log line naming the reason).
    #[default]
    Auto,
    /// io_uring, or refuse to start.
    Uring,
    /// epoll.
    Epoll,
}

/// The Prometheus endpoint on the main listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve the counters (on by default).
    pub enabled: bool,
    /// Path of the endpoint (`/metrics`); it must not be a room route.
    pub path: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, path: "/metrics".to_owned() }
    }
}

/// What happens to a connection whose write backlog is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Discard its backlog and close it with 1008 and a reason (default).
    #[default]
    Close,
    /// Keep it open and drop the frames that do not fit (counted in metrics).
    Drop,
}

/// A list of networks, each a CIDR block or a single address.
fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let entries = Vec::<String>::deserialize(deserializer)?;
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("{entry:?} is not an address or a CIDR block (e.g. 10.0.0.0/8)"))
                })
        })
        .collect()
}

/// What happens to a message over its connection's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAction {
    /// Close the connection with 1008 "rate limit" (default).
    #[default]
    Close,
    /// Discard the message (counted in metrics); the connection stays.
    Drop,
}

/// Rate limits, applied by the reactor before any room sees the traffic.
/// A bucket holds one second of its rate: a client may spend a second's
/// worth at once, then the rate. 0 turns a limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// WebSocket messages (text, binary, ping) one connection may send per
    /// second (10,000): far above what a person or a 120 Hz game sends
    /// (and above a load tester's publisher pacing itself by deliveries to
    /// a small room, ~3,000/s here), far below what a runaway loop does to
    /// a large room.
    pub messages_per_sec: u64,
    /// Bytes of those messages (decoded) per connection per second
    /// (16 MiB). At least `limits.max_message_bytes`, so any legal message
    /// can pass.
    pub bytes_per_sec: u64,
    /// Past either: `close` (default) or `drop`.
    pub action: RateLimitAction,
    /// WebSocket upgrades per client IP per second (off by default: behind
    /// NAT or an untrusted proxy many people share an address, and the load
    /// tester opens tens of thousands of sockets from one). Past it: 429
    /// with `Retry-After`.
    pub connections_per_ip_per_sec: u64,
    /// Other HTTP requests per client IP per second (off by default, for the
    /// same reasons). Past it: 429 with `Retry-After`.
    pub requests_per_ip_per_sec: u64,
    /// Client addresses tracked at once for the per-IP limits (65,536,
    /// ~64 B each). When every one was active within the last second, a new
    /// address is let through untracked (and counted).
    pub max_tracked_ips: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            messages_per_sec: 10_000,
            bytes_per_sec: 16 << 20,
            action: RateLimitAction::Close,
            connections_per_ip_per_sec: 0,
            requests_per_ip_per_sec: 0,
            max_tracked_ips: 65_536,
        }
    }
}

/// Every bound the server enforces. Defaults are chosen so that one peer can
/// cost the server at most a small, known amount of memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket message, reassembled (1 MiB, as PartyKit), and
    /// for a compressed one also once inflated (a zip bomb is stopped at
    /// it). Past it: close 1009.
    pub max_message_bytes: usize,
    /// Largest HTTP request head (16 KiB). Past it: 431.
    pub max_head_bytes: usize,
    /// Largest HTTP request body (1 MiB). Past it: 413.
    pub max_body_bytes: usize,
    /// Most request headers (64). Past it: 431.
    pub max_headers: usize,
    /// Time for a client to send a complete request head, and the keep-alive
    /// idle time between requests (10 s): drops slow and silent peers.
    pub head_timeout_ms: u64,
    /// Time to wait for the peer's close frame after ours (5 s).
    pub close_timeout_ms: u64,
    /// Bytes queued for one socket that it has not read yet (4 MiB). Past it
    /// the connection is a slow consumer, handled by `slow_consumer`.
    pub max_write_backlog_bytes: usize,
    /// `close` (default: close 1008 with a reason) or `drop` (drop the frames
    /// that do not fit).
    pub slow_consumer: SlowConsumerPolicy,
    /// Open sockets per core (50,000). Past it new connections get 503.
    pub max_connections_per_core: usize,
    /// Per-connection state set by the party (2 KiB, as Durable Objects).
    pub max_state_bytes: usize,
    /// Room ids longer than this (256 bytes, decoded) are refused with 400.
    pub max_room_id_bytes: usize,
    /// Connection ids (`_pk`) longer than this (128 bytes) are refused with 400.
    pub max_conn_id_bytes: usize,
    /// Size of one receive buffer in the per-core provided-buffer ring (4 KiB).
    pub recv_buffer_bytes: usize,
    /// Receive buffers per core (1,024, a power of two): 4 MiB per core by
    /// default, allocated at start and shared by all of that core's sockets.
    pub recv_buffers_per_core: usize,
    /// Messages queued between two cores before the sender holds them back
    /// (65,536). The sender's outbox holds as many again; past that, new input
    /// for the core that is behind is refused (close 1013, 503).
    pub core_channel_capacity: usize,
    /// A broadcast to more local recipients than this (16,384) is written in
    /// slices of this many per turn, so other rooms on the core are served
    /// in between; a core queues at most four slices' worth per turn.
    pub fanout_slice: usize,
    /// Largest room storage key (2 KiB, as Durable Objects). Past it: an error from `put`.
    pub max_storage_key_bytes: usize,
    /// Largest room storage value (128 KiB, as Durable Objects). Past it: an error from `put`.
    pub max_storage_value_bytes: usize,
    /// JavaScript heap of one core, all its JS rooms together (256 MiB). A
    /// room whose allocation fails past it is failed (1011, 500).
    pub js_heap_bytes_per_core: usize,
    /// CPU time one event of a JS room may take (100 ms). Past it the
    /// handler is stopped and the room failed (1011, 500).
    pub js_event_budget_ms: u64,
    /// JavaScript stack (512 KiB). Deeper recursion fails the room.
    pub js_stack_bytes: usize,
    /// Events of one room waiting for storage (65,536): under strict
    /// durability, events whose effects wait for their writes to commit;
    /// otherwise, batches the writer has not committed yet. Past it, while
    /// the disk falls behind, the room's new WebSocket messages close their
    /// sender with 1013 and its HTTP requests get 503, so memory stays
    /// bounded. A bound on memory, not a rate limit: group commit keeps a
    /// healthy disk far below it even under clients that pipeline writes.
    pub max_pending_events_per_room: usize,
    /// Outbound requests (`fetch`) one room may have in flight (16). Past
    /// it `fetch` fails at once.
    pub max_fetches_per_room: usize,
    /// Outbound requests in flight per core (256), every room together.
    /// Past it a request fails at once; with `max_fetch_response_bytes`
    /// this bounds the memory responses may hold.
    pub max_fetches_per_core: usize,
    /// Largest outbound response body (4 MiB). Past it the request fails.
    pub max_fetch_response_bytes: usize,
    /// Time for an outbound request, redirects and body included (30 s).
    pub fetch_timeout_ms: u64,
    /// Threads that run outbound requests, started as needed (32): how many
    /// are in progress at once; the rest wait their turn.
    pub fetch_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_head_bytes: 16 << 10,
            max_body_bytes: 1 << 20,
            max_headers: 64,
            head_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
            max_write_backlog_bytes: 4 << 20,
            slow_consumer: SlowConsumerPolicy::Close,
            max_connections_per_core: 50_000,
            max_state_bytes: 2 << 10,
            max_room_id_bytes: 256,
            max_conn_id_bytes: 128,
            recv_buffer_bytes: 4 << 10,
            recv_buffers_per_core: 1024,
            core_channel_capacity: 65_536,
            fanout_slice: 16_384,
            max_storage_key_bytes: 2048,
            max_storage_value_bytes: 128 << 10,
            max_pending_events_per_room: 65_536,
            js_heap_bytes_per_core: 256 << 20,
            js_event_budget_ms: 100,
            js_stack_bytes: 512 << 10,
            max_fetches_per_room: 16,
            max_fetches_per_core: 256,
            max_fetch_response_bytes: 4 << 20,
            fetch_timeout_ms: 30_000,
            fetch_threads: 32,
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:1999".parse().expect("the default listen address is valid")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./dormouse-data")
}

fn default_idle_evict_ms() -> u64 {
    10_000
}

fn default_idle_drop_ms() -> u64 {
    60_000
}

fn default_compression_min_bytes() -> usize {
    256
}

fn default_history() -> usize {
    100
}

fn default_max_document_bytes() -> usize {
    32 << 20
}

fn default_max_resident_rooms() -> usize {
    100_000
}

/// A configuration that could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

impl Config {
    /// Parses and checks a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)?;
        for party in config.parties.values_mut() {
            party.hibernate = party.hibernate_option.unwrap_or(false);
        }
        config.validate()?;
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::from_toml(DEFAULT_CONFIG_TOML).expect("the embedded default config is valid")
    }

    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Config::from_toml(&text)?;
        // Modules are named relative to the file that names them.
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        for party in config.parties.values_mut() {
            if let Some(main) = party.main.as_mut().filter(|main| main.is_relative()) {
                *main = dir.join(&*main);
            }
        }
        for path in [&mut config.partykit, &mut config.serve].into_iter().flatten() {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        Ok(config)
    }

    /// The number of core threads to run.
    pub fn core_count(&self) -> usize {
        self.cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, reason: &str| Err(ConfigError::Invalid { key: key.to_owned(), reason: reason.to_owned() });
        if let Some(cores) = self.cores {
            if cores == 0 || cores > 256 {
                return invalid("cores", "must be between 1 and 256");
            }
        }
        for (name, party) in &self.parties {
            if name == "_dormouse" {
                return invalid("parties._dormouse", "the name is the inspector's own");
            }
            if !is_valid_party_name(name) {
                return invalid(&format!("parties.{name}"), "a party name is 1-64 characters of a-z, 0-9, '-' and '_'");
            }
            if party.kind.is_some() && party.main.is_some() {
                return invalid(&format!("parties.{name}"), "has both `kind` and `main`; a party is one or the other");
            }
            if let Some(kind) = &party.kind {
                if !BUILTIN_KINDS.contains(&kind.as_str()) {
                    return invalid(
                        &format!("parties.{name}.kind"),
                        &format!("unknown kind {kind:?}; built-in kinds are {BUILTIN_KINDS:?}"),
                    );
                }
            }
            if party.idle_evict_ms == 0 {
                return invalid(&format!("parties.{name}.idle_evict_ms"), "must be greater than 0");
            }
            if let Some(rules) = party.cors.as_ref().and_then(CorsOption::rules) {
                if rules.credentials && rules.allows_any_origin() {
                    return invalid(
                        &format!("parties.{name}.cors"),
                        "credentials need a list of origins: with `*` any site could act as the user",
                    );
                }
            }
            if party.idle_drop_ms == 0 {
                return invalid(&format!("parties.{name}.idle_drop_ms"), "must be greater than 0");
            }
            if !(1..=100_000).contains(&party.history) {
                return invalid(&format!("parties.{name}.history"), "must be between 1 and 100000");
            }
        }
        for (key, token) in [("publish_token", &self.publish_token), ("inspector_token", &self.inspector_token)] {
            if let Some(token) = token {
                if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
                    return invalid(key, "must be at least 16 printable ASCII characters without spaces or ';'");
                }
            }
        }
        if self.metrics.enabled {
            let path = &self.metrics.path;
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return invalid("metrics.path", "must be a path starting with '/', without query or spaces");
            }
            if crate::route::route(path) != crate::route::Route::Other {
                return invalid("metrics.path", "must not be a room route (/parties/... or /party/...)");
            }
        }
        let l = &self.limits;
        let positive = [
            ("limits.max_message_bytes", l.max_message_bytes as u64),
            ("limits.max_head_bytes", l.max_head_bytes as u64),
            ("limits.max_headers", l.max_headers as u64),
            ("limits.head_timeout_ms", l.head_timeout_ms),
            ("limits.close_timeout_ms", l.close_timeout_ms),
            ("limits.max_write_backlog_bytes", l.max_write_backlog_bytes as u64),
            ("limits.max_connections_per_core", l.max_connections_per_core as u64),
            ("limits.max_room_id_bytes", l.max_room_id_bytes as u64),
            ("limits.max_conn_id_bytes", l.max_conn_id_bytes as u64),
            ("limits.core_channel_capacity", l.core_channel_capacity as u64),
            ("limits.fanout_slice", l.fanout_slice as u64),
            ("limits.max_storage_key_bytes", l.max_storage_key_bytes as u64),
            ("limits.max_storage_value_bytes", l.max_storage_value_bytes as u64),
            ("limits.max_pending_events_per_room", l.max_pending_events_per_room as u64),
            ("limits.js_heap_bytes_per_core", l.js_heap_bytes_per_core as u64),
            ("limits.js_event_budget_ms", l.js_event_budget_ms),
            ("limits.js_stack_bytes", l.js_stack_bytes as u64),
            ("limits.max_fetches_per_room", l.max_fetches_per_room as u64),
            ("limits.max_fetches_per_core", l.max_fetches_per_core as u64),
            ("limits.max_fetch_response_bytes", l.max_fetch_response_bytes as u64),
            ("limits.fetch_timeout_ms", l.fetch_timeout_ms),
            ("limits.fetch_threads", l.fetch_threads as u64),
            ("max_resident_rooms", self.max_resident_rooms as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be greater than 0");
            }
        }
        if l.max_head_bytes < 512 {
            return invalid("limits.max_head_bytes", "must be at least 512");
        }
        if !(1024..=(1 << 20)).contains(&l.recv_buffer_bytes) {
            return invalid("limits.recv_buffer_bytes", "must be between 1024 and 1048576");
        }
        if !l.recv_buffers_per_core.is_power_of_two() || !(8..=32768).contains(&l.recv_buffers_per_core) {
            return invalid("limits.recv_buffers_per_core", "must be a power of two between 8 and 32768");
        }
        if l.max_storage_key_bytes > 2048 {
            return invalid("limits.max_storage_key_bytes", "must be at most 2048");
        }
        if l.max_storage_value_bytes > (16 << 20) {
            return invalid("limits.max_storage_value_bytes", "must be at most 16777216");
        }
        if l.max_room_id_bytes > 1024 {
            return invalid("limits.max_room_id_bytes", "must be at most 1024");
        }
        if l.js_stack_bytes > (8 << 20) {
            return invalid("limits.js_stack_bytes", "must be at most 8388608");
        }
        if l.max_connections_per_core > (1 << 24) {
            return invalid("limits.max_connections_per_core", "must be at most 16777216");
        }
        if l.fetch_threads > 1024 {
            return invalid("limits.fetch_threads", "must be at most 1024");
        }
        let r = &self.rate_limits;
        if r.bytes_per_sec != 0 && r.bytes_per_sec < l.max_message_bytes as u64 {
            return invalid(
                "rate_limits.bytes_per_sec",
                "must be 0 (no limit) or at least limits.max_message_bytes, or a message of legal size could never pass",
            );
        }
        if r.max_tracked_ips == 0 {
            return invalid("rate_limits.max_tracked_ips", "must be greater than 0");
        }
        if let Some(c) = &self.cluster {
            if c.nats.is_empty() {
                return invalid("cluster.nats", "must name at least one NATS server");
            }
            let id_ok = (1..=64).contains(&c.node_id.len())
                && c.node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return invalid("cluster.node_id", "must be 1 to 64 of A-Z, a-z, 0-9, - and _");
            }
            if !(1..=5).contains(&c.replicas) {
                return invalid("cluster.replicas", "must be 1 to 5");
            }
            if c.lease_ms < 1000 || c.lease_ms <= 3 * c.heartbeat_ms || c.heartbeat_ms == 0 {
                return invalid(
                    "cluster.lease_ms",
                    "must be at least 1000 and longer than three heartbeats (cluster.heartbeat_ms, above 0)",
                );
            }
            if c.request_timeout_ms == 0 {
                return invalid("cluster.request_timeout_ms", "must be above 0");
            }
        }
        Ok(())
    }
}

/// The built-in party kinds the standalone binary can serve from config.
pub const BUILTIN_KINDS: &[&str] = &["relay", "echo", "chat", "yjs"];

/// Party names appear in URLs and metrics, so they are kept to a plain alphabet.
pub fn is_valid_party_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_has_a_relay_main_party() {
        let config = Config::embedded_default();
        assert_eq!(config.listen, "127.0.0.1:1999".parse().unwrap());
        assert_eq!(config.parties["main"].kind.as_deref(), Some("relay"));
        assert_eq!(config.limits.max_message_bytes, 1 << 20);
    }

    /// The first TOML block after `marker` in the README.
    fn readme_block(marker: &str) -> &'static str {
        let readme = include_str!("../README.md");
        let after = &readme[readme.find(marker).expect("the README has the marker")..];
        let start = after.find("```toml\n").expect("a TOML block follows") + "```toml\n".len();
        &after[start..start + after[start..].find("```").expect("the block ends")]
    }

    #[test]
    fn the_readme_shows_the_embedded_default_and_every_key_with_its_default() {
        assert_eq!(readme_block("the embedded default is used;"), DEFAULT_CONFIG_TOML);
        let reference = Config::from_toml(readme_block("Every key, with its default")).expect("the reference parses");
        let defaults = Config::from_toml("").unwrap();
        assert_eq!(format!("{:?}", reference.limits), format!("{:?}", defaults.limits));
        assert_eq!(format!("{:?}", reference.metrics), format!("{:?}", defaults.metrics));
        assert_eq!(format!("{:?}", reference.rate_limits), format!("{:?}", defaults.rate_limits));
        assert_eq!(reference.trusted_proxies, defaults.trusted_proxies);
        assert_eq!(
            (reference.allow_private_fetch, &reference.fetch_allow),
            (defaults.allow_private_fetch, &defaults.fetch_allow)
        );
        let main = PartyConfig { kind: Some("relay".into()), hibernate_option: Some(false), ..PartyConfig::default() };
        assert_eq!(format!("{:?}", reference.parties["main"]), format!("{main:?}"));
        assert_eq!(
            (reference.listen, &reference.data_dir, reference.io, reference.max_resident_rooms, reference.huge_pages),
            (defaults.listen, &defaults.data_dir, defaults.io, defaults.max_resident_rooms, defaults.huge_pages)
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err = Config::from_toml("[limits]\nmax_mesage_bytes = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_mesage_bytes"), "{err}");
    }

    #[test]
    fn cors_is_true_false_or_rules_and_credentials_need_origins() {
        let party = |toml: &str| Config::from_toml(&format!("[parties.api]\n{toml}\n"));
        let rules = party("cors = { origins = [\"https://a.example\"], max_age = 5 }").unwrap();
        let expected = CorsRules { origins: vec!["https://a.example".into()], max_age: Some(5), ..Default::default() };
        assert_eq!(rules.parties["api"].cors, Some(CorsOption::Rules(expected)));
        assert_eq!(party("cors = true").unwrap().parties["api"].cors, Some(CorsOption::Any(true)));
        let err = party("cors = \"yes\"").unwrap_err().to_string();
        assert!(err.contains("true, false, or a table"), "{err}");
        let err = party("cors = { origin = [] }").unwrap_err().to_string();
        assert!(err.contains("origin"), "{err}");
        let err = party("cors = { credentials = true }").unwrap_err().to_string();
        assert!(err.contains("parties.api.cors") && err.contains("credentials need a list of origins"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::from_toml("listen = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Config::from_toml("[parties.main]\nkind = \"nope\"\n").unwrap_err();
        assert!(err.to_string().contains("parties.main.kind"), "{err}");
        let err = Config::from_toml("[limits]\nmax_message_bytes = 0\n").unwrap_err();
        assert!(err.to_string().contains("limits.max_message_bytes"), "{err}");
        let err = Config::from_toml("[limits]\nrecv_buffers_per_core = 100\n").unwrap_err();
        assert!(err.to_string().contains("limits.recv_buffers_per_core"), "{err}");
        let err = Config::from_toml("[parties.Main]\nkind = \"relay\"\n").unwrap_err();
        assert!(err.to_string().contains("parties.Main"), "{err}");
        let err = Config::from_toml("publish_token = \"short\"\n").unwrap_err();
        assert!(err.to_string().contains("publish_token"), "{err}");
        let err = Config::from_toml("[metrics]\npath = \"/party/x\"\n").unwrap_err();
        assert!(err.to_string().contains("metrics.path"), "{err}");
        let err = Config::from_toml("[limits]\nslow_consumer = \"ignore\"\n").unwrap_err();
        assert!(err.to_string().contains("slow_consumer"), "{err}");
        let err = Config::from_toml("[rate_limits]\nbytes_per_sec = 1000\n").unwrap_err();
        assert!(err.to_string().contains("rate_limits.bytes_per_sec"), "{err}");
        let err = Config::from_toml("[rate_limits]\naction = \"ignore\"\n").unwrap_err();
        assert!(err.to_string().contains("action"), "{err}");
        let err = Config::from_toml("inspector_token = \"short\"\n").unwrap_err();
        assert!(err.to_string().contains("inspector_token"), "{err}");
        let err = Config::from_toml("[parties._dormouse]\nkind = \"relay\"\n").unwrap_err();
        assert!(err.to_string().contains("inspector's own"), "{err}");
        let err = Config::from_toml("[limits]\nfetch_threads = 5000\n").unwrap_err();
        assert!(err.to_string().contains("limits.fetch_threads"), "{err}");
        let err = Config::from_toml("fetch_allow = [\"localhost\"]\n").unwrap_err();
        assert!(err.to_string().contains("fetch_allow"), "{err}");
        let err = Config::from_toml("trusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.to_string().contains("trusted_proxies") && err.to_string().contains("10.0.0.0/33"), "{err}");
    }

    #[test]
    fn a_cluster_section_needs_nats_a_valid_node_id_and_a_lease_past_three_heartbeats() {
        assert!(Config::from_toml("").unwrap().cluster.is_none(), "no section: a single node");
        let ok = Config::from_toml("[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nnode_id = \"node-a\"\n").unwrap();
        let c = ok.cluster.unwrap();
        assert_eq!((c.replicas, c.lease_ms, c.heartbeat_ms, c.request_timeout_ms), (1, 10_000, 2_000, 60_000));
        let bad = |toml: &str, field: &str| {
            let err = Config::from_toml(&format!("[cluster]\n{toml}")).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        };
        bad("nats = []\nnode_id = \"a\"", "cluster.nats");
        bad("nats = [\"nats://x:1\"]\nnode_id = \"a b\"", "cluster.node_id");
        bad("nats = [\"nats://x:1\"]\nnode_id = \"a\"\nreplicas = 0", "cluster.replicas");
        bad("nats = [\"nats://x:1\"]\nnode_id = \"a\"\nlease_ms = 3000\nheartbeat_ms = 1000", "cluster.lease_ms");
        bad("nats = [\"nats://x:1\"]\nnode_id = \"a\"\nrequest_timeout_ms = 0", "cluster.request_timeout_ms");
        bad("node_id = \"a\"", "nats");
    }

    #[test]
    fn trusted_proxies_are_blocks_or_single_addresses_and_rate_limits_can_be_off() {
        let config = Config::from_toml("trusted_proxies = [\"10.0.0.0/8\", \"::1\", \" 192.0.2.7 \"]\n").unwrap();
        let nets: Vec<String> = config.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        let off = Config::from_toml("[rate_limits]\nmessages_per_sec = 0\nbytes_per_sec = 0\n").unwrap();
        assert_eq!((off.rate_limits.messages_per_sec, off.rate_limits.bytes_per_sec), (0, 0));
    }
}
