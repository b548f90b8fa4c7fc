//! The server builder and handle: registers party kinds, binds one listener
//! per core (SO_REUSEPORT), starts the core threads and stops them.

use crate::builtin::{Chat, Echo, Relay};
use crate::config::{Config, IoBackend};
use crate::core_msg::{CoreMsg, FetchTicket};
use crate::http::Response;
use crate::inspector;
use crate::kind::{Kind, PartyKind};
use crate::metrics::CoreStats;
use crate::outbound::{AddressPolicy, FetchSettings, Outbound};
use crate::party::{Party, Request};
use crate::rate_limit::{IpLimiter, Rate};
use crate::reactor::{probe_uring, Backend, ConnRates, Core, Epoll, FetchHandler, Inbox, Placement, Shared, Uring};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// Another socket (another server, most likely) listens on the address.
    #[error("cannot listen on {addr}: address in use (is another server running there?)")]
    AddrInUse { addr: SocketAddr },
    /// Another process holds the data directory.
    #[error("data_dir {} is in use by {holder}", path.display())]
    DataDirInUse { path: std::path::PathBuf, holder: String },
    /// `io = "uring"` was asked for where io_uring does not work.
    #[error("io_uring is unavailable: {0}")]
    Uring(String),
    /// A core could not set up its backend.
    #[error("the {backend} backend failed to start: {source}")]
    Backend { backend: &'static str, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `fetch_ca_file` cannot be read, or holds no certificate.
    #[error("{0}")]
    FetchCa(String),
    /// `[cluster]`: NATS cannot be reached, or JetStream refused the buckets.
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("party {0:?} is configured but no kind is registered for it")]
    UnknownParty(String),
    /// The PartyKit project (`partykit.json`) cannot be read.
    #[error("partykit project: {0}")]
    Project(#[from] crate::project::ProjectError),
    /// The `serve` folder cannot be served.
    #[error("{0}")]
    Static(#[from] crate::static_files::StaticError),
    /// A party's JavaScript module cannot run (`file:line:col: message`).
    #[error("{0}")]
    Script(#[from] crate::js::ScriptError),
    /// The data directory's store could not be opened.
    #[error("cannot open the store in {path}: {source}")]
    Store { path: std::path::PathBuf, source: dormouse_hibernate::StoreError },
}

/// Builds a server: the config plus the party kinds it serves.
pub struct Server {
    config: Config,
    kinds: HashMap<String, Arc<dyn PartyKind>>,
    fetch: Option<FetchHandler>,
}

impl Server {
    /// A server with the parties of `config` served by their built-in kinds.
    pub fn new(config: Config) -> Server {
        let mut server = Server { config, kinds: HashMap::new(), fetch: None };
        let configured: Vec<(String, String)> =
            server.config.parties.iter().filter_map(|(name, p)| Some((name.clone(), p.kind.clone()?))).collect();
        for (name, kind) in configured {
            server = match kind.as_str() {
                "relay" => server.party::<Relay>(&name),
                "echo" => server.party::<Echo>(&name),
                "chat" => server.party::<Chat>(&name),
                "yjs" => server.party::<crate::yjs::YDoc>(&name),
                _ => unreachable!("config validation admits only built-in kinds"),
            };
        }
        server
    }

    /// Serves party `name` with the type `P`; replaces a built-in kind of the same name.
    pub fn party<P: Party>(mut self, name: &str) -> Server {
        assert!(crate::config::is_valid_party_name(name), "party name {name:?} must be 1-64 of a-z, 0-9, '-', '_'");
        self.kinds.insert(name.to_owned(), Arc::new(Kind::<P>::new()));
        self
    }

    /// Handles HTTP requests to paths outside `/parties/` and `/party/`.
    pub fn fetch(mut self, handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
        self.fetch = Some(Arc::new(handler));
        self
    }

    /// Starts the server and serves until SIGTERM or SIGINT, then shuts
    /// down gracefully (see [`ServerHandle::serve_until_signal`]): what a
    /// server binary's `main` needs in one call.
    pub fn run(self) -> Result<(), StartError> {
        self.start()?.serve_until_signal()?;
        Ok(())
    }

    /// Binds the listeners and starts the core threads.
    pub fn start(mut self) -> Result<ServerHandle, StartError> {
        if !self.config.huge_pages {
            disable_huge_pages();
        }
        let cores = self.config.core_count();
        let mut limits = self.config.limits.clone();
        let data_dir_lock = lock_data_dir(&self.config.data_dir)?;
        probe_free(self.config.listen)?;
        let mut listeners = Vec::with_capacity(cores);
        let mut addr = self.config.listen;
        for _ in 0..cores {
            let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
            // With port 0 the first bind picks the port; the others join it.
            addr = listener.local_addr()?.as_socket().expect("a TCP listener has an IP address");
            listeners.push(OwnedFd::from(listener));
        }
        let mut senders = Vec::with_capacity(cores);
        let mut commit_senders = Vec::with_capacity(cores);
        let mut receivers = Vec::with_capacity(cores);
        for _ in 0..cores {
            let (tx, rx) = crossbeam_channel::bounded(limits.core_channel_capacity);
            // Commit reports: one per submitted batch, which the core already
            // holds, so unbounded, and the writer never waits for a busy core.
            let (commit_tx, commit_rx) = crossbeam_channel::unbounded();
            senders.push(tx);
            commit_senders.push(commit_tx);
            receivers.push(Inbox { messages: rx, commits: commit_rx });
        }
        quiet_room_failures();
        if let Some(project) = self.config.partykit.clone() {
            crate::project::apply(&mut self.config, &project)?;
        }
        let static_files = match &self.config.serve {
            Some(folder) => Some(crate::static_files::StaticFiles::load(folder, self.config.single_page_app)?),
            None => None,
        };
        let js_limits = crate::js::JsLimits::of(&self.config.limits);
        for (name, party) in self.config.parties.iter_mut() {
            if let Some(main) = &party.main {
                let env = party.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let script = crate::js::Script::load(main, env, js_limits)?;
                let kind = Arc::new(crate::js::JsKind::new(script));
                // PartyKit sends the paths that are not rooms to the main
                // party's onFetch (when no fetch handler is registered).
                if name == "main" && self.fetch.is_none() {
                    let kind = kind.clone();
                    self.fetch = Some(Arc::new(move |request: &Request| {
                        kind.fetch("main", request).unwrap_or_else(|| Response::text(404, "Not found"))
                    }));
                }
                self.kinds.insert(name.clone(), kind);
            }
        }
        if let Some(name) = self.config.parties.keys().find(|name| !self.kinds.contains_key(*name)) {
            return Err(StartError::UnknownParty(name.clone()));
        }
        // Each kind's defaults for the options its config leaves out (a
        // party registered in code without options gets them too).
        for (name, kind) in &self.kinds {
            kind.configure(self.config.parties.entry(name.clone()).or_default());
        }
        let wake_fds = (0..cores).map(|_| eventfd()).collect::<std::io::Result<Vec<_>>>()?;
        let data_dir = self.config.data_dir.clone();
        let store_config = dormouse_hibernate::StoreConfig {
            max_key_bytes: self.config.limits.max_storage_key_bytes,
            max_value_bytes: self.config.limits.max_storage_value_bytes,
            ..Default::default()
        };
        let store = dormouse_hibernate::Store::open(&data_dir, store_config)
            .map_err(|source| StartError::Store { path: data_dir.clone(), source })?;
        let store = Arc::new(store);
        let outbound = {
            let limits = &self.config.limits;
            let settings = FetchSettings {
                threads: limits.fetch_threads,
                queue: limits.max_fetches_per_core.saturating_mul(cores),
                timeout_ms: limits.fetch_timeout_ms,
                max_response_bytes: limits.max_fetch_response_bytes as u64,
                policy: AddressPolicy::new(self.config.allow_private_fetch, self.config.fetch_allow.clone()),
                roots: match &self.config.fetch_ca_file {
                    Some(path) => Some(crate::outbound::read_roots(path).map_err(StartError::FetchCa)?),
                    None => None,
                },
            };
            let senders = senders.clone();
            let wakes = wake_fds.iter().map(std::fs::File::try_clone).collect::<std::io::Result<Vec<_>>>()?;
            Outbound::new(
                settings,
                Arc::new(move |ticket: Box<FetchTicket>, outcome| {
                    let core = usize::from(ticket.core);
                    // A stopped core has nobody left to tell.
                    if senders[core].send(CoreMsg::Fetched { ticket, outcome: Box::new(outcome) }).is_ok() {
                        // A failed write means the eventfd is saturated: the
                        // core is being woken anyway.
                        let _ = std::io::Write::write(&mut &wakes[core], &1u64.to_ne_bytes());
                    }
                }),
            )
        };
        let inspector = self.config.inspector_token.clone().map(|token| {
            self.kinds.insert(inspector::PARTY.to_owned(), Arc::new(Kind::<inspector::Feed>::new()));
            self.config.parties.entry(inspector::PARTY.to_owned()).or_default();
            Arc::new(inspector::Inspector::new(token, cores))
        });
        let party_configs = self.config.parties.iter().map(|(name, p)| (name.clone(), Arc::new(p.clone()))).collect();
        let epoch = std::time::Instant::now();
        // In a cluster: join it before the cores start, so the first
        // socket finds the gateway ready.
        let (gateway, gateway_link) = match &self.config.cluster {
            None => (None, None),
            Some(section) => {
                let (to_gateway, from_cores) = crossbeam_channel::bounded(limits.core_channel_capacity * cores);
                let stats = Arc::<crate::cluster::ClusterStats>::default();
                let link = crate::cluster::CoreLink {
                    stats: stats.clone(),
                    senders: senders.clone(),
                    wakes: wake_fds.iter().map(std::fs::File::try_clone).collect::<Result<_, _>>()?,
                    placement: Placement::new(cores),
                    epoch,
                    store: store.clone(),
                };
                let gateway =
                    crate::cluster::start(section, link, from_cores).map_err(|e| StartError::Cluster(e.to_string()))?;
                fit_nats(&mut limits, gateway.max_item_bytes());
                let request_timeout_ms = section.request_timeout_ms;
                (Some(gateway), Some(crate::cluster::GatewayLink { to_gateway, stats, request_timeout_ms }))
            }
        };
        let shared = Arc::new(Shared {
            limits,
            cores,
            kinds: self.kinds,
            fetch: self.fetch,
            senders,
            commit_senders,
            wake_fds,
            stopping: Default::default(),
            stats: (0..cores).map(|_| CoreStats::default()).collect(),
            placement: Placement::new(cores),
            publish_auth: self.config.publish_token.as_ref().map(|token| format!("Bearer {token}")),
            metrics_path: self.config.metrics.enabled.then(|| self.config.metrics.path.clone()),
            static_files,
            store,
            party_configs,
            default_party_config: Arc::default(),
            max_resident_per_core: (self.config.max_resident_rooms / cores).max(1),
            draining: Default::default(),
            cores_closed: Default::default(),
            epoch,
            conn_rates: ConnRates::of(&self.config.rate_limits),
            ip_limiter: IpLimiter::new(
                Rate::per_sec(self.config.rate_limits.connections_per_ip_per_sec),
                Rate::per_sec(self.config.rate_limits.requests_per_ip_per_sec),
                self.config.rate_limits.max_tracked_ips,
            ),
            trusted_proxies: self.config.trusted_proxies.clone(),
            outbound,
            inspector,
            gateway: gateway_link,
            _data_dir_lock: data_dir_lock,
        });
        let backend = match self.config.io {
            IoBackend::Uring => {
                probe_uring().map_err(StartError::Uring)?;
                Uring::NAME
            }
            IoBackend::Epoll => Epoll::NAME,
            IoBackend::Auto => match probe_uring() {
                Ok(()) => Uring::NAME,
                Err(reason) => {
                    tracing::warn!(%reason, "io_uring is unavailable; using the epoll backend");
                    Epoll::NAME
                }
            },
        };
        // Each core sets up its backend on its own thread (a ring stays on
        // the thread that made it) and reports back, so a failure fails the
        // start instead of a running core.
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(cores);
        let mut threads = Vec::with_capacity(cores);
        for (index, (inbox, listener)) in receivers.into_iter().zip(listeners).enumerate() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let name = format!("dormouse-core-{index}");
            // Room code (JavaScript's interpreter above all) runs on this
            // stack: room for its own limit and the reactor beneath it.
            let stack = 2 * shared.limits.js_stack_bytes + (2 << 20);
            let thread = std::thread::Builder::new().name(name).stack_size(stack).spawn(move || {
                if backend == Uring::NAME {
                    run_core::<Uring>(index, shared, inbox, listener, &ready);
                } else {
                    run_core::<Epoll>(index, shared, inbox, listener, &ready);
                }
            })?;
            threads.push(thread);
        }
        let mut handle = ServerHandle { shared, threads, gateway, addr, backend };
        for _ in 0..cores {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    handle.stop_cores();
                    return Err(StartError::Backend { backend, source });
                }
                Err(_) => unreachable!("every core thread reports once before it can end"),
            }
        }
        tracing::info!(%addr, cores, backend, "dormouse listening");
        Ok(handle)
    }
}

/// In a cluster a WebSocket message or a request body may have to cross
/// nodes in one NATS message: the limits that would let in one too big for
/// NATS's `max_payload` (1 MB by default, less the gateway's slack) come
/// down to fit, said once at start, so such input is refused where it
/// arrives (1009, 413) rather than lost between nodes.
fn fit_nats(limits: &mut crate::config::Limits, item_bytes: usize) {
    let lower = |name: &str, limit: &mut usize, fits: usize| {
        if *limit > fits {
            tracing::warn!(limit = name, configured = *limit, now = fits, "cluster: lowered to fit NATS's max_payload");
            *limit = fits;
        }
    };
    lower("limits.max_message_bytes", &mut limits.max_message_bytes, item_bytes.saturating_sub(4096));
    let body = item_bytes.saturating_sub(limits.max_head_bytes + 4096);
    lower("limits.max_body_bytes", &mut limits.max_body_bytes, body);
}

/// Sets up one core with backend `B`, reports whether that worked, and runs it.
fn run_core<B: Backend>(
    index: usize,
    shared: Arc<Shared>,
    inbox: Inbox,
    listener: OwnedFd,
    ready: &crossbeam_channel::Sender<std::io::Result<()>>,
) {
    match Core::<B>::new(index, shared, inbox, listener) {
        Ok(core) => {
            let _ = ready.send(Ok(()));
            core.run();
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

/// Fails when something already listens on `addr`. The cores' listeners
/// share the port with SO_REUSEPORT, which would let a second server (of the
/// same user) join the port silently and take half the connections; a bind
/// without it finds any listener there.
fn probe_free(addr: SocketAddr) -> Result<(), StartError> {
    use socket2::{Domain, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    // SO_REUSEADDR only passes over sockets in TIME_WAIT, not listeners.
    socket.set_reuse_address(true)?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(StartError::AddrInUse { addr }),
        Err(source) => Err(StartError::Bind { addr, source }),
    }
}

/// Takes an exclusive lock on `data_dir/dormouse.lock` for the life of the
/// server (released when the file closes, also when the process dies), and
/// writes this process's id into it for whoever finds it locked.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    use std::io::{Read, Seek, Write};
    let store_error = |source: std::io::Error| StartError::Store { path: dir.to_owned(), source: source.into() };
    std::fs::create_dir_all(dir).map_err(store_error)?;
    let path = dir.join("dormouse.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(store_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "another process".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(StartError::DataDirInUse { path: dir.to_owned(), holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(store_error(e)),
    }
    file.set_len(0).and_then(|()| file.rewind()).map_err(store_error)?;
    write!(file, "{}", std::process::id()).map_err(store_error)?;
    Ok(file)
}

/// A room failed on purpose (`FailRoom`: a JS room past a bound) has been
/// logged with its reason already; the default panic hook would add a
/// message and a backtrace per failed room. Other panics print as before.
fn quiet_room_failures() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<crate::room::FailRoom>() && !crate::yjs::decoding_untrusted() {
                previous(info);
            }
        }));
    });
}

fn bind(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket)
}

fn eventfd() -> std::io::Result<std::fs::File> {
    #[allow(unsafe_code)]
    // SAFETY: eventfd has no memory-safety preconditions; a non-negative
    // result is a new fd owned by nobody else, which the File takes over.
    unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::os::fd::FromRawFd::from_raw_fd(fd))
    }
}

/// A running server. Dropping it stops the server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The cluster's gateway, if in one: dropped after the cores stop.
    gateway: Option<crate::cluster::Gateway>,
    addr: SocketAddr,
    backend: &'static str,
}

impl ServerHandle {
    /// The I/O backend the cores run: `"io_uring"` or `"epoll"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The core that owns room `room` of party `party` (where its object
    /// runs), of `0..cores`.
    pub fn owner_core(&self, party: &str, room: &str) -> usize {
        self.shared.placement.owner(&crate::room_key::RoomKey::new(party, room))
    }

    /// The address the server listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Open sockets on each core.
    pub fn connections_per_core(&self) -> Vec<u64> {
        self.shared.stats.iter().map(|s| s.connections_open.load(Ordering::Relaxed)).collect()
    }

    /// Room objects resident in memory, over all cores.
    pub fn rooms_resident(&self) -> u64 {
        self.shared.stats.iter().map(|s| s.rooms_resident.load(Ordering::Relaxed)).sum()
    }

    /// Stops every core and waits for them; open sockets are closed.
    pub fn stop(mut self) {
        self.stop_cores();
    }

    /// Stops gracefully: stops accepting (new connections get 503), closes
    /// every WebSocket with 1001 (clients reconnect), snapshots every
    /// resident room of a hibernating party, and returns once everything is
    /// committed to disk.
    pub fn shutdown(mut self) {
        self.shared.draining.store(true, Ordering::Release);
        for core in 0..self.shared.cores {
            self.shared.wake(core);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        drop(self.gateway.take());
        if let Err(error) = self.shared.store.flush() {
            tracing::error!(%error, "flushing the store failed");
        }
    }

    /// A handle that asks for a graceful shutdown from another thread (a
    /// signal handler's): `shutdown` on the handle then completes it.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger { shared: self.shared.clone() }
    }

    /// Counters summed over the cores, by metric name (as on `/metrics`,
    /// without the `dormouse_` prefix and `_total` suffix): `rooms_evicted`,
    /// `rooms_woken`, `snapshots_corrupt`, ...
    pub fn counter(&self, name: &str) -> u64 {
        self.shared.stats.iter().map(|s| crate::metrics::stat(s, name).map_or(0, |v| v.load(Ordering::Relaxed))).sum()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully (see
    /// [`ServerHandle::stop_on_signals`]) and returns. Errs only when the
    /// signal handlers cannot be installed.
    pub fn serve_until_signal(self) -> std::io::Result<()> {
        self.stop_on_signals()?;
        self.wait();
        Ok(())
    }

    /// From now on SIGTERM or SIGINT starts a graceful shutdown: the server
    /// stops accepting (new connections get 503), closes every WebSocket
    /// with 1001 (clients reconnect), snapshots the resident rooms of
    /// hibernating parties and flushes the store, after which
    /// [`ServerHandle::wait`] returns. A second signal exits the process at
    /// once (status 130).
    pub fn stop_on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let trigger = self.shutdown_trigger();
        std::thread::Builder::new().name("dormouse-signals".into()).spawn(move || {
            let mut signals = signals.forever();
            if let Some(signal) = signals.next() {
                tracing::info!(signal, "shutting down: closing sockets and saving rooms");
                trigger.trigger();
            }
            if signals.next().is_some() {
                eprintln!("dormouse: second signal; exiting without finishing the shutdown");
                std::process::exit(130);
            }
        })?;
        Ok(())
    }

    /// Blocks until the cores stop (they stop only when asked, e.g. by a
    /// [`ShutdownTrigger`] or a signal after `stop_on_signals`), then
    /// flushes the store.
    pub fn wait(mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        drop(self.gateway.take());
        if let Err(error) = self.shared.store.flush() {
            tracing::error!(%error, "flushing the store failed");
        }
        tracing::info!("dormouse stopped");
    }

    fn stop_cores(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        for core in 0..self.shared.cores {
            self.shared.wake(core);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        drop(self.gateway.take());
    }
}

/// Starts a graceful shutdown from anywhere (see [`ServerHandle::shutdown`]).
#[derive(Clone)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShutdownTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownTrigger")
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.shared.draining.store(true, Ordering::Release);
        for core in 0..self.shared.cores {
            self.shared.wake(core);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_cores();
    }
}

/// Turns transparent huge pages off for this process (`huge_pages = false`):
/// the allocator asks for them on its arenas, and a huge page is committed
/// whole on first touch. Process-wide and inherited by children; on a kernel
/// without the option the server runs as it is.
#[allow(unsafe_code)]
fn disable_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches
    // no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot disable transparent huge pages");
    }
}
