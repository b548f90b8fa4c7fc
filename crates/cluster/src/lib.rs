//! dormouse nodes on NATS: membership and room leases in JetStream KV, the
//! preferred owner of a room by rendezvous hashing over the live nodes, and
//! messages between nodes, each to the subject `dm.node.<id>` of the node it
//! is for ([`Cluster::send`], delivered there to the callback given to
//! [`Cluster::start_with`]). What the messages say is the server's business
//! (`src/cluster` in the root crate); this crate only carries bytes.
//!
//! `async-nats` needs tokio, so the client lives on one thread of its own
//! running a single-threaded runtime ([`Cluster::start`]). Callers (the
//! cores, later) never block on it: they hand it commands over a bounded
//! channel (`try_send`, refused when full) and hear the outcome in a
//! callback run on that thread, which for the reactor will queue a message
//! for the core and wake it, as the fetch threads do.
//!
//! - **Membership.** Each node puts its id into the bucket `dm_nodes` every
//!   `heartbeat`; the bucket's `max_age` is three heartbeats, so a node that
//!   stops is gone from it within that. After each heartbeat the node lists
//!   the bucket's keys: that is its view of the live nodes ([`Cluster::nodes`]).
//!   (NATS 2.9 has no per-key TTL and sends no watch event when an entry ages
//!   out, so the view is read, not watched.)
//! - **Leases.** A room's owner holds the key of the room in `dm_owners`,
//!   whose `max_age` is the lease time: [`Cluster::acquire`] creates it if
//!   absent, [`Cluster::renew`] updates it at the revision it holds
//!   (compare-and-set), [`Cluster::release`] deletes it at that revision.
//!   An entry not renewed ages out, and another node may then create it.
//! - **The bound.** A holder must stop running the room once its lease may
//!   have expired on the server. Its lease is counted from when it *sent*
//!   the request that made or renewed it (the server's clock starts later),
//!   less a safety margin for clock rate differences: [`Lease::valid_until`]
//!   is `sent + lease - lease / 5`. Renewing every `lease / 3` leaves two
//!   chances to renew before then.
//! - **Alarms.** The bucket `dm_alarms` holds, per room, the time of its
//!   alarm as the node that last ran it wrote it ([`Cluster::set_alarm`],
//!   in the order called). Every node watches it from the start (each
//!   room's latest value first, then every change), delivered as
//!   [`Delivered::Alarm`]: so a room whose node died with an alarm set can
//!   be woken elsewhere when it is due.

mod journal;

pub use journal::{journal_subject, Appended, Entries, JOURNAL_STREAM};

use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The KV bucket of live nodes.
pub const NODES_BUCKET: &str = "dm_nodes";
/// The KV bucket of room leases.
pub const OWNERS_BUCKET: &str = "dm_owners";
/// The KV bucket of rooms' alarm times.
pub const ALARMS_BUCKET: &str = "dm_alarms";
/// Commands waiting for the NATS thread, at most.
pub const COMMAND_QUEUE: usize = 4096;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS servers to connect to (`nats://host:port`).
    pub nats: Vec<String>,
    /// This node's id: unique in the cluster, `[A-Za-z0-9_-]`, at most 64 bytes.
    pub node_id: String,
    /// JetStream replicas of the buckets (1 for a single NATS server).
    pub replicas: usize,
    /// How long a room's lease lasts without renewal.
    pub lease: Duration,
    /// How often a node says it is alive.
    pub heartbeat: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the node id {0:?} is not 1 to 64 of [A-Za-z0-9_-]")]
    NodeId(String),
    #[error("the lease ({lease:?}) must be at least a second and longer than three heartbeats ({heartbeat:?})")]
    Timing { lease: Duration, heartbeat: Duration },
    #[error("cannot reach NATS at {servers:?}: {reason}")]
    Connect { servers: Vec<String>, reason: String },
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("the NATS thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A lease a node holds on a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The entry's revision: what a renewal or release must name.
    pub revision: u64,
    /// Past this instant the holder must assume the lease lost (see the
    /// module's bound).
    pub valid_until: Instant,
}

/// What became of an acquire or a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// This node holds the lease.
    Held(Lease),
    /// Another node holds it.
    HeldBy(String),
    /// The renewal found the lease at another revision (it expired, and
    /// maybe another node took it): the room must stop here.
    Lost,
    /// NATS did not answer as it should (timeout, connection, ...).
    Failed(String),
}

/// Who holds a room's lease, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub revision: u64,
}

/// What the NATS thread hands the callback given to [`Cluster::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// A message another node sent this one ([`Cluster::send`]).
    Message(Bytes),
    /// A room's alarm in `dm_alarms`: the latest value of each room when the
    /// watch starts (again after a lost watch), then each change; `at_ms`
    /// none when the room has none.
    Alarm { party: String, room: String, at_ms: Option<u64> },
}

type Reply<T> = Box<dyn FnOnce(T) + Send>;

enum Command {
    Send { node: String, payload: Bytes },
    Acquire { room: String, reply: Reply<LeaseOutcome> },
    Renew { room: String, revision: u64, reply: Reply<LeaseOutcome> },
    Release { room: String, revision: u64, reply: Reply<bool> },
    Owner { room: String, reply: Reply<Result<Option<Owner>, String>> },
    Append { room: String, expect: u64, payload: Bytes, reply: Reply<Appended> },
    Load { room: String, reply: Reply<Result<Entries, String>> },
    Compact { room: String, before: u64, reply: Reply<Result<u64, String>> },
    SetAlarm { room: String, at_ms: Option<u64> },
}

/// The command queue was full (or the NATS thread is gone): try later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster's command queue is full")]
pub struct Busy;

/// This node's membership of the cluster, and its lease operations.
pub struct Cluster {
    node_id: Arc<str>,
    /// The largest message the NATS server takes (its `max_payload`).
    max_payload: usize,
    commands: tokio::sync::mpsc::Sender<Command>,
    nodes: Arc<RwLock<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_id", &self.node_id).finish()
    }
}

/// The key of a room in `dm_owners`: its party and id, base64url-encoded
/// (a KV key takes only `[-/_=.A-Za-z0-9]`), joined by a dot.
pub fn room_key(party: &str, room: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", engine.encode(party), engine.encode(room))
}

/// The party and room id of a [`room_key`], if it is one.
pub fn parse_room_key(key: &str) -> Option<(String, String)> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (party, room) = key.split_once('.')?;
    let text = |part: &str| String::from_utf8(engine.decode(part).ok()?).ok();
    Some((text(party)?, text(room)?))
}

/// The node among `nodes` that room `key` prefers: the highest hash of
/// (node, room). Every node with the same view picks the same one, and a
/// node joining or leaving moves only the rooms it wins or held (about
/// 1/N of them).
pub fn rendezvous<'a>(nodes: &'a [String], key: &str) -> Option<&'a str> {
    nodes.iter().max_by_key(|node| fnv1a(node.as_bytes(), key.as_bytes())).map(String::as_str)
}

/// FNV-1a over `a`, a separator and `b`, finished with a 64-bit mix: the
/// same on every node and every build (the std hashers are seeded).
fn fnv1a(a: &[u8], b: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in a.iter().chain(&[0xff]).chain(b) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser, so that near names spread.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Cluster {
    /// [`Cluster::start_with`] for a node that hears nothing.
    pub fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        Cluster::start_with(config, |_| {})
    }

    /// Connects to NATS, makes the buckets if need be, subscribes to this
    /// node's subject (each message's payload goes to `deliver`, on the NATS
    /// thread, in the order the NATS server delivers: a sender's messages in
    /// the order sent) and watches the alarms (also to `deliver`), says this
    /// node is alive, and reads the live nodes once, before returning (a
    /// start-up step: it blocks, which is why it is not for a core).
    pub fn start_with(
        config: ClusterConfig,
        deliver: impl FnMut(Delivered) + Send + 'static,
    ) -> Result<Cluster, ClusterError> {
        if !valid_node_id(&config.node_id) {
            return Err(ClusterError::NodeId(config.node_id));
        }
        if config.lease < Duration::from_secs(1) || config.lease <= config.heartbeat * 3 {
            return Err(ClusterError::Timing { lease: config.lease, heartbeat: config.heartbeat });
        }
        let node_id: Arc<str> = config.node_id.as_str().into();
        let nodes = Arc::new(RwLock::new(Vec::new()));
        let (commands, inbox) = tokio::sync::mpsc::channel(COMMAND_QUEUE);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, started) = std::sync::mpsc::channel::<Result<usize, ClusterError>>();
        let view = nodes.clone();
        let thread = std::thread::Builder::new().name("dormouse-nats".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready.send(Err(ClusterError::Thread(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let node = match Node::connect(config, view).await {
                    Ok(node) => {
                        let _ = ready.send(Ok(node.client.server_info().max_payload));
                        node
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                node.run(inbox, stopped, deliver).await;
            });
        })?;
        match started.recv() {
            Ok(Ok(max_payload)) => {
                Ok(Cluster { node_id, max_payload, commands, nodes, stop: Some(stop), thread: Some(thread) })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(ClusterError::JetStream("the NATS thread ended while starting".into())),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The largest message the NATS server takes (`max_payload`, 1 MB by
    /// default): what [`Cluster::send`] can carry at most.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The live nodes as last read (this one among them), sorted.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live nodes, shared: read it for the current view without a copy.
    pub fn view(&self) -> Arc<RwLock<Vec<String>>> {
        self.nodes.clone()
    }

    /// The node room `party`/`room` prefers, by the current view.
    pub fn preferred_owner(&self, party: &str, room: &str) -> Option<String> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        rendezvous(&nodes, &room_key(party, room)).map(str::to_owned)
    }

    /// Whether the command queue takes another command now (for a single
    /// submitting thread: then the next submit is not refused).
    pub fn has_room(&self) -> bool {
        self.commands.capacity() > 0
    }

    fn submit(&self, command: Command) -> Result<(), Busy> {
        self.commands.try_send(command).map_err(|_| Busy)
    }

    /// Sends `payload` to node `node` (at most once: a node that is gone, or
    /// a NATS connection lost meanwhile, loses it; the messages a node sends
    /// another arrive in the order sent).
    pub fn send(&self, node: &str, payload: Bytes) -> Result<(), Busy> {
        self.submit(Command::Send { node: node.to_owned(), payload })
    }

    /// Takes the room's lease if nobody holds it.
    pub fn acquire(
        &self,
        party: &str,
        room: &str,
        reply: impl FnOnce(LeaseOutcome) + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit(Command::Acquire { room: room_key(party, room), reply: Box::new(reply) })
    }

    /// Renews the lease this node holds at `revision`.
    pub fn renew(
        &self,
        party: &str,
        room: &str,
        revision: u64,
        reply: impl FnOnce(LeaseOutcome) + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit(Command::Renew { room: room_key(party, room), revision, reply: Box::new(reply) })
    }

    /// Gives the lease up (true when it was still this node's at `revision`).
    pub fn release(
        &self,
        party: &str,
        room: &str,
        revision: u64,
        reply: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit(Command::Release { room: room_key(party, room), revision, reply: Box::new(reply) })
    }

    /// Who holds the room's lease now, if anyone.
    pub fn owner(
        &self,
        party: &str,
        room: &str,
        reply: impl FnOnce(Result<Option<Owner>, String>) + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit(Command::Owner { room: room_key(party, room), reply: Box::new(reply) })
    }

    /// Appends `payload` to the room's journal, if its last entry is at
    /// stream sequence `expect` (0: it has none). A node appends to a room's
    /// journal one entry at a time, each naming the last.
    pub fn append(
        &self,
        party: &str,
        room: &str,
        expect: u64,
        payload: Bytes,
        reply: impl FnOnce(Appended) + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit(Command::Append { room: room_key(party, room), expect, payload, reply: Box::new(reply) })
    }

    /// The room's journal, in order, up to its last entry when read.
    pub fn load(
        &self,
        party: &str,
        room: &str,
        reply: impl FnOnce(Result<Entries, String>) + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit(Command::Load { room: room_key(party, room), reply: Box::new(reply) })
    }

    /// Writes the room's alarm time into `dm_alarms` (`None`: it has none).
    /// A node's writes reach NATS in the order called; one NATS did not
    /// take is logged, not retried (the next owner's load of the room's
    /// journal writes it again).
    pub fn set_alarm(&self, party: &str, room: &str, at_ms: Option<u64>) -> Result<(), Busy> {
        self.submit(Command::SetAlarm { room: room_key(party, room), at_ms })
    }

    /// Drops the room's journal entries before stream sequence `before`
    /// (answered with how many went).
    pub fn compact(
        &self,
        party: &str,
        room: &str,
        before: u64,
        reply: impl FnOnce(Result<u64, String>) + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit(Command::Compact { room: room_key(party, room), before, reply: Box::new(reply) })
    }
}

impl Drop for Cluster {
    /// Leaves: the node's entry is deleted (others see it gone at their
    /// next read), and the thread ends. Leases it holds age out.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The NATS side, on its thread.
struct Node {
    config: ClusterConfig,
    client: async_nats::Client,
    nodes: async_nats::jetstream::kv::Store,
    owners: async_nats::jetstream::kv::Store,
    alarms: async_nats::jetstream::kv::Store,
    jetstream: async_nats::jetstream::Context,
    journal: async_nats::jetstream::stream::Stream,
    view: Arc<RwLock<Vec<String>>>,
}

/// A KV bucket (made if absent) whose entries live `max_age`: the stream a
/// KV bucket is, made here rather than by `create_key_value`, which first
/// reads the account's info in a form NATS 2.9 does not send (its
/// `reserved_*` fields are newer). The same settings as that call's.
async fn bucket(
    jetstream: &async_nats::jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::stream::{Config, DiscardPolicy};
    let config = Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    };
    let stream = jetstream.get_or_create_stream(&config).await.map_err(|e| e.to_string())?;
    // Made before with other times (a changed lease, say): ours now.
    let found = &stream.cached_info().config;
    if found.max_age != max_age || found.num_replicas != replicas {
        jetstream.update_stream(&config).await.map_err(|e| e.to_string())?;
    }
    jetstream.get_key_value(name).await.map_err(|e| e.to_string())
}

/// How long a request to NATS may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

impl Node {
    async fn connect(config: ClusterConfig, view: Arc<RwLock<Vec<String>>>) -> Result<Node, ClusterError> {
        let servers: Vec<async_nats::ServerAddr> = config
            .nats
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, std::io::Error>>()
            .map_err(|e| ClusterError::Connect { servers: config.nats.clone(), reason: e.to_string() })?;
        let options = async_nats::ConnectOptions::new()
            .name(format!("dormouse {}", config.node_id))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Back soon after NATS is: leases run out while a node is away
            // (the client's default waits up to seconds between tries).
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)))
            .connection_timeout(REQUEST_TIMEOUT);
        // The first connection must come within the timeout (a server of
        // the list that answers); later losses are retried by the client for
        // as long as the node runs.
        let client = tokio::time::timeout(REQUEST_TIMEOUT * 3, options.connect(servers))
            .await
            .map_err(|_| ClusterError::Connect { servers: config.nats.clone(), reason: "timed out".into() })?
            .map_err(|e| ClusterError::Connect { servers: config.nats.clone(), reason: e.to_string() })?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let js = |e: &dyn std::fmt::Display| ClusterError::JetStream(e.to_string());
        let replicas = config.replicas.max(1);
        let nodes = bucket(&jetstream, NODES_BUCKET, config.heartbeat * 3, replicas).await.map_err(|e| js(&e))?;
        let owners = bucket(&jetstream, OWNERS_BUCKET, config.lease, replicas).await.map_err(|e| js(&e))?;
        // Alarms last as long as their rooms: no max_age.
        let alarms = bucket(&jetstream, ALARMS_BUCKET, Duration::ZERO, replicas).await.map_err(|e| js(&e))?;
        let journal = journal::stream(&jetstream, replicas).await.map_err(|e| js(&e))?;
        let node = Node { config, client, nodes, owners, alarms, jetstream, journal, view };
        node.heartbeat().await.map_err(|e| js(&e))?;
        Ok(node)
    }

    /// Says this node is alive, then reads who else is.
    async fn heartbeat(&self) -> Result<(), String> {
        self.nodes.put(&self.config.node_id, Bytes::new()).await.map_err(|e| e.to_string())?;
        let mut keys = self.nodes.keys().await.map_err(|e| e.to_string())?;
        let mut live = Vec::new();
        while let Some(key) = keys.next().await {
            live.push(key.map_err(|e| e.to_string())?);
        }
        live.sort_unstable();
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = live;
        Ok(())
    }

    async fn run(
        self,
        mut inbox: tokio::sync::mpsc::Receiver<Command>,
        mut stopped: tokio::sync::oneshot::Receiver<()>,
        mut deliver: impl FnMut(Delivered),
    ) {
        let mut messages = match self.client.subscribe(node_subject(&self.config.node_id)).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::error!(%error, "cannot subscribe to this node's subject; it receives nothing");
                return;
            }
        };
        let mut beat = tokio::time::interval(self.config.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut alarms = self.watch_alarms().await;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = beat.tick() => {
                    if let Err(error) = self.heartbeat().await {
                        tracing::warn!(%error, "the cluster heartbeat failed");
                    }
                    if alarms.is_none() {
                        alarms = self.watch_alarms().await;
                    }
                }
                entry = next_entry(&mut alarms) => match entry {
                    Some(Ok(entry)) => {
                        if let Some(alarm) = alarm_of(&entry) {
                            deliver(alarm);
                        }
                    }
                    // Watched again from each room's latest value at the
                    // next heartbeat: nothing changed meanwhile is missed.
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the alarms' watch failed; watching again");
                        alarms = None;
                    }
                    None => alarms = None,
                },
                command = inbox.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                message = messages.next() => match message {
                    Some(message) => deliver(Delivered::Message(message.payload)),
                    None => break,
                },
            }
        }
        if let Err(error) = self.nodes.delete(&self.config.node_id).await {
            tracing::warn!(%error, "could not leave the cluster cleanly");
        }
    }

    /// The alarms' watch (none when it cannot be made now: tried again at
    /// the next heartbeat).
    async fn watch_alarms(&self) -> Option<async_nats::jetstream::kv::Watch> {
        match self.alarms.watch_with_history(">").await {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the alarms now");
                None
            }
        }
    }

    /// Sends and alarm writes go out in order, here (only their
    /// acknowledgments are awaited apart); the other KV operations each run
    /// as a task of their own, so one slow round trip does not hold the
    /// others.
    async fn handle(&self, command: Command) {
        if let Command::Send { node, payload } = command {
            if let Err(error) = self.client.publish(node_subject(&node), payload).await {
                tracing::warn!(%error, %node, "a message to a node was not sent");
            }
            return;
        }
        if let Command::SetAlarm { room, at_ms } = command {
            // The bucket's own subject, written as `put` / `delete` would,
            // so that the write is in order with the ones before it.
            let subject = format!("$KV.{ALARMS_BUCKET}.{room}");
            let sent = match at_ms {
                Some(at_ms) => self.jetstream.publish(subject, Bytes::copy_from_slice(&at_ms.to_be_bytes())).await,
                None => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("KV-Operation", "DEL");
                    self.jetstream.publish_with_headers(subject, headers, Bytes::new()).await
                }
            };
            match sent {
                Ok(ack) => {
                    tokio::spawn(async move {
                        if let Err(error) = ack.await {
                            tracing::warn!(%error, %room, "an alarm was not written");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, %room, "an alarm was not written"),
            }
            return;
        }
        match command {
            Command::Append { room, expect, payload, reply } => {
                let jetstream = self.jetstream.clone();
                tokio::spawn(async move { reply(journal::append(&jetstream, &room, expect, payload).await) });
            }
            Command::Load { room, reply } => {
                let stream = self.journal.clone();
                tokio::spawn(async move { reply(journal::load(&stream, &room).await) });
            }
            Command::Compact { room, before, reply } => {
                let stream = self.journal.clone();
                tokio::spawn(async move { reply(journal::compact(&stream, &room, before).await) });
            }
            command => {
                let (config, owners) = (self.config.clone(), self.owners.clone());
                tokio::spawn(async move { kv_command(&config, &owners, command).await });
            }
        }
    }
}

/// The next entry of the alarms' watch; none pending while there is no watch.
async fn next_entry(
    watch: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Option<Result<async_nats::jetstream::kv::Entry, async_nats::jetstream::kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// A `dm_alarms` entry as delivered (none for a key or value that is not one).
fn alarm_of(entry: &async_nats::jetstream::kv::Entry) -> Option<Delivered> {
    use async_nats::jetstream::kv::Operation;
    let (party, room) = parse_room_key(&entry.key)?;
    let at_ms = match entry.operation {
        Operation::Put => Some(u64::from_be_bytes(entry.value.as_ref().try_into().ok()?)),
        Operation::Delete | Operation::Purge => None,
    };
    Some(Delivered::Alarm { party, room, at_ms })
}

/// The subject node `node` receives its messages on.
pub fn node_subject(node: &str) -> String {
    format!("dm.node.{node}")
}

fn lease(config: &ClusterConfig, revision: u64, sent: Instant) -> Lease {
    let lease = config.lease;
    Lease { revision, valid_until: sent + lease - lease / 5 }
}

async fn kv_command(config: &ClusterConfig, owners: &async_nats::jetstream::kv::Store, command: Command) {
    {
        match command {
            Command::Send { .. }
            | Command::SetAlarm { .. }
            | Command::Append { .. }
            | Command::Load { .. }
            | Command::Compact { .. } => {
                unreachable!("handled by the caller")
            }
            Command::Acquire { room, reply } => {
                let sent = Instant::now();
                let value = Bytes::from(config.node_id.clone());
                let outcome = match owners.create(&room, value).await {
                    Ok(revision) => LeaseOutcome::Held(lease(config, revision, sent)),
                    Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                        match owners.entry(room.as_str()).await {
                            Ok(Some(entry)) => LeaseOutcome::HeldBy(String::from_utf8_lossy(&entry.value).into_owned()),
                            // Gone since: the caller may try again.
                            Ok(None) => LeaseOutcome::Failed("the lease changed hands; try again".into()),
                            Err(e) => LeaseOutcome::Failed(e.to_string()),
                        }
                    }
                    Err(e) => LeaseOutcome::Failed(e.to_string()),
                };
                reply(outcome);
            }
            Command::Renew { room, revision, reply } => {
                let sent = Instant::now();
                let value = Bytes::from(config.node_id.clone());
                let outcome = match owners.update(&room, value, revision).await {
                    Ok(revision) => LeaseOutcome::Held(lease(config, revision, sent)),
                    Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                        LeaseOutcome::Lost
                    }
                    Err(e) => LeaseOutcome::Failed(e.to_string()),
                };
                reply(outcome);
            }
            Command::Release { room, revision, reply } => {
                // A delete at the revision held: nobody else's lease goes.
                let released = owners.delete_expect_revision(&room, Some(revision)).await.is_ok();
                reply(released);
            }
            Command::Owner { room, reply } => {
                let outcome = match owners.entry(room.as_str()).await {
                    Ok(Some(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                        Ok(Some(Owner {
                            node: String::from_utf8_lossy(&entry.value).into_owned(),
                            revision: entry.revision,
                        }))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => Err(e.to_string()),
                };
                reply(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_is_stable_and_moves_about_one_room_in_n_when_a_node_joins() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let rooms: Vec<String> = (0..10_000).map(|i| room_key("main", &format!("room-{i}"))).collect();
        let mut moved = 0;
        let mut per_node = std::collections::HashMap::new();
        for room in &rooms {
            let before = rendezvous(&three, room).unwrap();
            let after = rendezvous(&four, room).unwrap();
            assert_eq!(before, rendezvous(&three, room).unwrap(), "the same answer every time");
            if before != after {
                assert_eq!(after, "d", "a room moves only to the node that joined");
                moved += 1;
            }
            *per_node.entry(before).or_insert(0) += 1;
        }
        // About a quarter move to d; each of three nodes holds about a third.
        assert!((2_000..3_000).contains(&moved), "{moved} of 10,000 moved");
        assert!(per_node.values().all(|&n| (3_000..3_700).contains(&n)), "{per_node:?}");
        assert_eq!(rendezvous(&[], "x"), None);
    }

    #[test]
    fn room_keys_are_valid_kv_keys_for_any_room_id() {
        let key = room_key("main", "a room/with.dots and ünïcode");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{key}");
        assert_ne!(room_key("ab", "c"), room_key("a", "bc"));
        let back = parse_room_key(&key).unwrap();
        assert_eq!((back.0.as_str(), back.1.as_str()), ("main", "a room/with.dots and ünïcode"));
        assert_eq!(parse_room_key("no-dot"), None);
        assert_eq!(parse_room_key("!!.xx"), None);
    }
}
