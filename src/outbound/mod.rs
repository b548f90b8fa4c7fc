//! Outbound HTTP from rooms (`Room::fetch`, JavaScript's `fetch`): the
//! requests run on a small pool of threads of their own, never on a core,
//! and each outcome is handed back (to the room's owner core, as a
//! message) by the `deliver` function the pool is made with, so this
//! module knows nothing of cores or rooms.
//!
//! The client is `ureq` (blocking, rustls): one request per pool thread at
//! a time, so the pool's size is the number of requests in progress at
//! once; the cores bound how many each of them has waiting (`[limits]`).
//! Threads are started as the requests need them, up to `fetch_threads`.

mod policy;

pub use policy::AddressPolicy;

use crate::http::Response;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP request a room makes to the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// A shorter time limit than `limits.fetch_timeout_ms`, if wanted.
    pub timeout_ms: Option<u64>,
}

impl FetchRequest {
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> FetchRequest {
        FetchRequest {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            timeout_ms: None,
        }
    }

    pub fn get(url: impl Into<String>) -> FetchRequest {
        FetchRequest::new("GET", url)
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> FetchRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> FetchRequest {
        self.body = body.into();
        self
    }

    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> FetchRequest {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

/// Why an outbound request has no response: the URL, the address policy,
/// the network, a limit. (A response with any status is a response.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// The pool's bounds, from `[limits]` and the top-level fetch keys.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub threads: usize,
    /// Requests waiting or running at once, over every core: the queue's
    /// bound (each core keeps its own share below it).
    pub queue: usize,
    pub timeout_ms: u64,
    pub max_response_bytes: u64,
    pub policy: AddressPolicy,
    /// The CAs `https://` requests trust; `None`: Mozilla's roots.
    pub roots: Option<Vec<ureq::tls::Certificate<'static>>>,
}

/// The certificates of a PEM file (`fetch_ca_file`), for
/// [`FetchSettings::roots`]; an error says what is wrong with it.
pub fn read_roots(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("fetch_ca_file {}: {e}", path.display()))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert),
            Ok(_) => {}
            Err(e) => return Err(format!("fetch_ca_file {}: {e}", path.display())),
        }
    }
    if roots.is_empty() {
        return Err(format!("fetch_ca_file {}: no certificate in it", path.display()));
    }
    Ok(roots)
}

type Deliver<T> = Arc<dyn Fn(T, Result<Response, FetchError>) + Send + Sync>;

struct Job<T> {
    ticket: T,
    request: Box<FetchRequest>,
}

/// The pool. `T` is what the caller needs back with each outcome (for the
/// reactor: the room, its generation and the request's id).
pub struct Outbound<T: Send + 'static> {
    jobs: Sender<Job<T>>,
    shared: Arc<Pool<T>>,
}

struct Pool<T> {
    jobs: Receiver<Job<T>>,
    agent: ureq::Agent,
    settings: FetchSettings,
    deliver: Deliver<T>,
    /// Threads started, and those among them waiting for a job.
    started: Mutex<usize>,
    idle: AtomicUsize,
}

impl<T: Send + 'static> Outbound<T> {
    pub fn new(settings: FetchSettings, deliver: Deliver<T>) -> Outbound<T> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Proxies from the environment would route around the policy.
            .proxy(None)
            .max_redirects(5)
            // One kept-alive connection per thread, to one host or many:
            // ureq's default of 3 per host made most requests to a busy API
            // open a new connection (11.2-11.8k against 16.2-17.0k
            // completions/s from 1,000 rooms, `cargo bench --bench fetch`).
            .max_idle_connections(settings.threads)
            .max_idle_connections_per_host(settings.threads)
            .timeout_global(Some(Duration::from_millis(settings.timeout_ms)))
            .user_agent(concat!("dormouse/", env!("CARGO_PKG_VERSION")))
            .tls_config(match &settings.roots {
                Some(roots) => {
                    ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(roots)).build()
                }
                None => ureq::tls::TlsConfig::default(),
            })
            .build();
        let resolver = policy::GuardedResolver { policy: settings.policy.clone() };
        let agent =
            ureq::Agent::with_parts(config, ureq::unversioned::transport::DefaultConnector::default(), resolver);
        let (tx, rx) = crossbeam_channel::bounded(settings.queue.max(1));
        let shared =
            Arc::new(Pool { jobs: rx, agent, settings, deliver, started: Mutex::new(0), idle: AtomicUsize::new(0) });
        Outbound { jobs: tx, shared }
    }

    /// Queues a request; its outcome reaches `deliver` from a pool thread.
    /// Refused (with the ticket back) only when the queue is full, which
    /// the cores' own bounds keep from happening.
    pub fn submit(&self, ticket: T, request: Box<FetchRequest>) -> Result<(), T> {
        match self.jobs.try_send(Job { ticket, request }) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => return Err(job.ticket),
        }
        if self.shared.idle.load(Ordering::Acquire) == 0 {
            self.start_thread();
        }
        Ok(())
    }

    fn start_thread(&self) {
        // A poisoned count is still a count.
        let mut started = self.shared.started.lock().unwrap_or_else(|e| e.into_inner());
        if *started >= self.shared.settings.threads {
            return;
        }
        let pool = self.shared.clone();
        let spawned = std::thread::Builder::new().name(format!("dormouse-fetch-{started}")).spawn(move || pool.work());
        match spawned {
            Ok(_) => *started += 1,
            // The running threads will take the job; logged, as any
            // operating fault is.
            Err(e) => tracing::warn!(error = %e, "could not start a fetch thread"),
        }
    }
}

impl<T> Pool<T> {
    fn work(&self) {
        loop {
            self.idle.fetch_add(1, Ordering::AcqRel);
            let job = self.jobs.recv();
            self.idle.fetch_sub(1, Ordering::AcqRel);
            // Every sender gone: the server stopped.
            let Ok(job) = job else { return };
            let outcome = self.run(&job.request);
            (self.deliver)(job.ticket, outcome);
        }
    }

    fn run(&self, request: &FetchRequest) -> Result<Response, FetchError> {
        let uri: ureq::http::Uri =
            request.url.parse().map_err(|_| FetchError(format!("{:?} is not a URL", request.url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(FetchError(format!("{:?} is not an absolute http:// or https:// URL", request.url)));
        }
        let mut builder = ureq::http::Request::builder().method(request.method.as_str()).uri(uri);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = builder.body(request.body.to_vec()).map_err(|e| FetchError(format!("bad request: {e}")))?;
        let timeout_ms = request.timeout_ms.map_or(self.settings.timeout_ms, |ms| ms.min(self.settings.timeout_ms));
        let built = self.agent.configure_request(built).timeout_global(Some(Duration::from_millis(timeout_ms))).build();
        let mut response = self.agent.run(built).map_err(|e| describe(&e, timeout_ms))?;
        let max = self.settings.max_response_bytes;
        let body = response.body_mut().with_config().limit(max).read_to_vec().map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => FetchError(format!("the response body is over {max} bytes")),
            e => describe(&e, timeout_ms),
        })?;
        let mut answer = Response::new(response.status().as_u16()).with_body(body);
        // The body is whole (its length is its own) and the connection ours.
        let hop_by_hop = ["transfer-encoding", "connection", "keep-alive", "content-length"];
        for (name, value) in response.headers().iter().filter(|(name, _)| !hop_by_hop.contains(&name.as_str())) {
            answer = answer.with_header(name.as_str(), String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        Ok(answer)
    }
}

fn describe(error: &ureq::Error, timeout_ms: u64) -> FetchError {
    match error {
        ureq::Error::Timeout(_) => FetchError(format!("no response within {timeout_ms} ms")),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => FetchError(e.to_string()),
        e => FetchError(e.to_string()),
    }
}
