//! The `fanout` scenario: N connections in one room, P of them publishing
//! timestamped, numbered messages; every delivery is checked and timed.
//!
//! Each message carries its publisher, sequence number and send time (ns on a
//! clock shared by all threads of this process). A delivery's latency is its
//! receive time minus the send time; a message's *last-receiver latency* is the
//! latest of its N-1 deliveries (the relay convention: everyone but the
//! sender), which is what a user of a big room waits for. Messages delivered
//! fewer than N-1 times are losses, more are duplicates; a receiver seeing a
//! publisher's sequence go backwards counts as out of order.
//!
//! Connections are spread over `threads` workers, each with its own `mio`
//! poll; each thread keeps its own tallies, merged at the end.

use crate::socket::{self, Connected, Received};
use crate::target::{ProcSample, Target};
use anyhow::Result;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"DMLT";
/// Magic, publisher u32, sequence u64, send time u64.
pub const HEADER_BYTES: usize = 24;
/// Handshakes in flight per thread while ramping up.
const HANDSHAKES_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone)]
pub struct Plan {
    /// The first server: the one whose publish API `tags` drives.
    pub target: Target,
    /// More servers (nodes of one cluster, say): connection `g` goes to
    /// server `g % (1 + others.len())`, the first counted as 0.
    pub others: Vec<Target>,
    /// Room name; with several rooms, room `i` is `<room>-<i>`.
    pub room: String,
    /// Connection `g` joins room `g % rooms`; publishers are connections
    /// `0..publishers`, so with `publishers == rooms` each room has one.
    pub rooms: usize,
    pub connections: usize,
    pub publishers: usize,
    /// Messages per second, over all publishers.
    pub rate: f64,
    /// Instead of `rate`: keep about this many messages in flight (sent and
    /// not yet at every receiver), sending as fast as they are delivered.
    pub in_flight: Option<u64>,
    /// For the `tags` scenario: every `tag_every`-th connection carries
    /// `?tag=hot`, the others `?tag=cold`.
    pub tag_every: Option<usize>,
    pub payload_bytes: usize,
    /// Messages are JSON text (the stamp in its first field) instead of
    /// binary, as PartyKit apps send them.
    pub text: bool,
    /// Offer permessage-deflate; compressed frames are inflated (as far as
    /// the stamp) by the receivers.
    pub deflate: bool,
    /// Editors of Yjs documents: the messages are y-protocols sync updates
    /// inserting a stamped text (see `crate::yjs`) in this framing.
    pub yjs: Option<crate::yjs::Protocol>,
    /// With `yjs`: awareness updates (a cursor moving) per second from each
    /// publisher, besides its document updates; load, not timed.
    pub awareness_rate: f64,
    pub duration: Duration,
    /// How long to wait for outstanding deliveries after the last send.
    pub drain: Duration,
    /// After the drain, how long the connections stay open and silent
    /// before the server's memory is sampled again (`server_held`): long
    /// enough, and a hibernating party's rooms have left memory.
    pub hold: Duration,
    pub connect_timeout: Duration,
    pub threads: usize,
    pub source_ips: Vec<IpAddr>,
    pub server_pid: Option<u32>,
}

impl Plan {
    /// The room connection `global` joins.
    /// The server connection `global` connects to.
    pub fn target_of(&self, global: usize) -> &Target {
        match global % (1 + self.others.len()) {
            0 => &self.target,
            i => &self.others[i - 1],
        }
    }

    pub fn room_of(&self, global: usize) -> String {
        if self.rooms == 1 {
            self.room.clone()
        } else {
            format!("{}-{}", self.room, global % self.rooms)
        }
    }

    /// Everyone else in the publisher's room (the relay convention).
    pub fn receivers_per_message(&self) -> u64 {
        (self.connections / self.rooms - 1) as u64
    }

    /// The tag connection `global` carries, if the run tags connections.
    pub fn tag_of(&self, global: usize) -> Option<&'static str> {
        self.tag_every.map(|every| if global.is_multiple_of(every) { HOT_TAG } else { COLD_TAG })
    }

    /// How many connections carry the hot tag.
    pub fn hot_connections(&self) -> u64 {
        (0..self.connections).filter(|&g| self.tag_of(g) == Some(HOT_TAG)).count() as u64
    }

    /// Receivers of a message from `publisher`: the hot connections for a tag
    /// publish, every connection for a full publish, else the relay convention.
    pub fn receivers_of(&self, publisher: u32) -> u64 {
        match publisher {
            TAG_PUBLISHER => self.hot_connections(),
            FULL_PUBLISHER => self.connections as u64,
            _ => self.receivers_per_message(),
        }
    }
}

/// Publisher ids of messages sent through the publish API (not by a
/// connection): to the hot tag, and to the whole room.
pub const TAG_PUBLISHER: u32 = 0xffff_fff0;
pub const FULL_PUBLISHER: u32 = 0xffff_fff1;
pub const HOT_TAG: &str = "hot";
/// Classes of messages, reported apart: from connections, tag publishes, full publishes.
const CLASSES: usize = 3;

pub fn class_of(publisher: u32) -> usize {
    match publisher {
        TAG_PUBLISHER => 1,
        FULL_PUBLISHER => 2,
        _ => 0,
    }
}
pub const COLD_TAG: &str = "cold";

/// A message of the harness's format: magic, publisher, sequence, send time
/// (ns since `epoch`), padded to `payload.len()`.
pub fn stamp(payload: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    payload[..4].copy_from_slice(MAGIC);
    payload[4..8].copy_from_slice(&publisher.to_le_bytes());
    payload[8..16].copy_from_slice(&seq.to_le_bytes());
    payload[16..24].copy_from_slice(&sent_ns.to_le_bytes());
}

/// The text form's first bytes: `{"m":"` then the stamp in hex.
const TEXT_MAGIC: &[u8; 6] = br#"{"m":""#;
/// The smallest text message: the stamp field and a closing brace.
pub const TEXT_HEADER_BYTES: usize = TEXT_MAGIC.len() + 40 + 2;

/// A JSON text message of `len` bytes (at least `TEXT_HEADER_BYTES`): the
/// stamp as 40 hex digits in field `m`, then cursor-like objects as padding
/// (it compresses about as app JSON does, 3-4x).
pub fn text_message(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    out.extend_from_slice(TEXT_MAGIC);
    out.extend_from_slice(&[b'0'; 40]);
    out.extend_from_slice(br#"","d":["#);
    let mut i = 0u32;
    while out.len() + 64 < len {
        let item = format!(r#"{{"id":"user-{i:04}","x":{},"y":{},"on":true}},"#, i * 37 % 1280, i * 91 % 720);
        out.extend_from_slice(item.as_bytes());
        i += 1;
    }
    while out.len() + 2 < len {
        out.push(b' ');
    }
    out.truncate(len.saturating_sub(2).max(TEXT_HEADER_BYTES - 2));
    out.extend_from_slice(b"]}");
    out
}

/// Writes the stamp into a message made by [`text_message`].
pub fn stamp_text(message: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    let hex = format!("{publisher:08x}{seq:016x}{sent_ns:016x}");
    message[TEXT_MAGIC.len()..TEXT_MAGIC.len() + 40].copy_from_slice(hex.as_bytes());
}

/// The stamp of a message of either form: publisher, sequence, send time.
fn read_stamp(payload: &[u8]) -> Option<(u32, u64, u64)> {
    if payload.len() >= HEADER_BYTES && &payload[..4] == MAGIC {
        let publisher = u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
        let sent = u64::from_le_bytes(payload[16..24].try_into().expect("8 bytes"));
        return Some((publisher, seq, sent));
    }
    let hex = payload.strip_prefix(TEXT_MAGIC)?.get(..40)?;
    let field = |range: std::ops::Range<usize>| {
        std::str::from_utf8(&hex[range]).ok().and_then(|h| u64::from_str_radix(h, 16).ok())
    };
    Some((field(0..8)? as u32, field(8..24)?, field(24..40)?))
}

/// The stamp of a text message somewhere inside `payload` (a Yjs update
/// carrying it as inserted text).
fn find_stamp(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let at = payload.windows(TEXT_MAGIC.len()).position(|w| w == TEXT_MAGIC)?;
    read_stamp(&payload[at..])
}

/// The first bytes of a compressed message's payload, enough for the stamp:
/// a receiver inflates only that much (each one would otherwise spend the
/// client's CPU, shared with the server here, on the whole message).
fn inflate_prefix(compressed: &[u8], out: &mut Vec<u8>) {
    let mut inflater = flate2::Decompress::new(false);
    out.clear();
    out.reserve(64);
    let _ = inflater.decompress_vec(compressed, out, flate2::FlushDecompress::Sync);
}

/// Everything one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub rooms: usize,
    pub connections: usize,
    pub publishers: usize,
    pub payload_bytes: usize,
    pub connect_secs: f64,
    pub publish_secs: f64,
    /// From the first send to the last delivery: the span `delivered_frames_per_sec` divides by.
    pub delivery_secs: f64,
    pub messages_sent: u64,
    /// Awareness updates sent besides the messages (the yjs scenario).
    pub awareness_sent: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub delivered_frames_per_sec: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub errors: HashMap<String, u64>,
    pub delivery_latency_us: Percentiles,
    pub last_receiver_latency_us: Percentiles,
    pub handshake_latency_us: Percentiles,
    pub server_before: Option<ProcSample>,
    pub server_connected: Option<ProcSample>,
    pub server_after: Option<ProcSample>,
    /// After the hold (the connections open and silent), if the run held.
    pub server_held: Option<ProcSample>,
    pub server_bytes_per_connection: Option<f64>,
    /// The server's RSS after the hold over before connecting, per connection.
    pub server_bytes_per_connection_held: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The server's CPU per delivered frame times a message's receivers:
    /// what one message costs delivered to all of them (a Yjs update:
    /// applied, stored, relayed). An overloaded server that delivers only
    /// part of what was sent is charged for what it delivered.
    pub server_cpu_us_per_message_delivered: Option<f64>,
    /// Whether the messages were JSON text, and permessage-deflate offered.
    pub text: bool,
    pub deflate: bool,
    /// Bytes on the wire per delivered frame, header included.
    pub wire_bytes_per_delivery: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub count: u64,
    /// (quantile, microseconds) from the median to the maximum, for plots.
    pub curve: Vec<(f64, f64)>,
}

/// The quantiles a latency curve is drawn through.
const CURVE_QUANTILES: &[f64] = &[0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];

impl Percentiles {
    pub(crate) fn from(h: &Histogram<u64>) -> Percentiles {
        let us = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            count: h.len(),
            curve: if h.is_empty() {
                Vec::new()
            } else {
                CURVE_QUANTILES.iter().map(|&q| (q, us(h.value_at_quantile(q)))).collect()
            },
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds are valid")
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking,
    Open,
    /// We sent a close frame and wait for the server to close the TCP
    /// connection first (so TIME_WAIT lands on the server, not on our ports).
    Closing,
    Closed,
}

struct Conn {
    stream: TcpStream,
    global: usize,
    /// When the connect started (ns since the epoch).
    started_ns: u64,
    state: State,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Highest sequence seen from each publisher heard so far. A connection
    /// hears few publishers, so a short list beats a table of all of them.
    last_seq: Vec<(u32, u64)>,
    /// Whether this connection carries the hot tag (tags scenario).
    hot: bool,
}

/// One worker's tallies.
pub(crate) struct Tally {
    /// (publisher, seq) -> (deliveries, latest latency ns)
    messages: HashMap<(u32, u64), (u32, u64)>,
    /// Delivery latency per class of publisher (see [`class_of`]).
    latency: [Histogram<u64>; CLASSES],
    /// From connect to the 101, per successful handshake.
    handshake: Histogram<u64>,
    /// Connections started.
    attempts: u64,
    sent: u64,
    /// Awareness updates sent (yjs), not counted as messages.
    awareness_sent: u64,
    out_of_order: u64,
    /// Tag publishes that reached a connection without the tag.
    wrong_receivers: u64,
    /// When the last delivery arrived (ns since the epoch).
    last_delivery_ns: u64,
    /// Bytes of the delivered frames as they came off the wire (compressed
    /// ones compressed), headers included.
    wire_bytes: u64,
    errors: HashMap<String, u64>,
    progress: Arc<Progress>,
}

impl Tally {
    fn error(&mut self, kind: impl Into<String>) {
        self.errors_n(kind, 1);
    }

    fn errors_n(&mut self, kind: impl Into<String>, n: u64) {
        *self.errors.entry(kind.into()).or_default() += n;
        self.progress.errors.fetch_add(n, Ordering::Relaxed);
    }
}

/// The head of a complete server frame at the start of `buf`.
pub(crate) struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// Bytes of the header (server frames are unmasked).
    pub header: usize,
    /// Bytes of the payload that follows it.
    pub len: usize,
}

/// The head of the frame at the start of `buf`, once the whole frame is
/// there; `None` while more bytes are needed.
pub(crate) fn frame_head(buf: &[u8]) -> Option<FrameHead> {
    if buf.len() < 2 {
        return None;
    }
    let (fin, opcode, len7) = (buf[0] & 0x80 != 0, buf[0] & 0x0f, (buf[1] & 0x7f) as usize);
    let (len, header) = match len7 {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize, 10),
        126 | 127 => return None,
        n => (n, 2),
    };
    (buf.len() >= header + len).then_some(FrameHead { fin, opcode, header, len })
}

pub(crate) fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// A client frame: FIN, the opcode, masked with a zero key. Servers must
/// accept any key; a zero key keeps the payload as is, so the client spends
/// nothing on masking.
pub(crate) fn client_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Counts all workers share, so the drain ends once every expected delivery
/// has arrived. Workers add to them once per poll turn, not per message.
#[derive(Default)]
pub(crate) struct Progress {
    sent: AtomicU64,
    /// Deliveries the messages sent so far should make.
    expected: AtomicU64,
    delivered: AtomicU64,
    /// Handshakes completed and errors so far, for the live progress line.
    handshakes: AtomicU64,
    errors: AtomicU64,
    /// Set once whoever publishes from outside the workers has finished (at
    /// once when the workers' own publishers are all there is).
    driver_done: std::sync::atomic::AtomicBool,
}

/// Prints one line, rewritten every second, while a run is under way; only
/// when stderr is a terminal, so logs and pipes get the final table alone.
struct ProgressLine {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    fn start(progress: Arc<Progress>) -> ProgressLine {
        use std::io::IsTerminal;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    let delivered = progress.delivered.load(Ordering::Relaxed);
                    eprint!(
                        "\r{} handshakes | {} sent | {} delivered/s | {} errors   ",
                        progress.handshakes.load(Ordering::Relaxed),
                        progress.sent.load(Ordering::Relaxed),
                        delivered - last,
                        progress.errors.load(Ordering::Relaxed),
                    );
                    last = delivered;
                }
                eprintln!();
            })
        });
        ProgressLine { stop, thread }
    }
}

impl Progress {
    /// Whether every message sent so far has reached all its receivers.
    pub(crate) fn all_delivered(&self) -> bool {
        self.delivered.load(Ordering::Relaxed) >= self.expected.load(Ordering::Relaxed)
    }

    /// Counts a message sent from outside the workers (the publish API).
    pub(crate) fn count_sent(&self, receivers: u64) {
        self.expected.fetch_add(receivers, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    progress: Arc<Progress>,
    /// Deliveries not yet added to `progress`.
    unreported: u64,
    plan: Arc<Plan>,
    index: usize,
    /// Churn cycle, part of every connection id so cycles never collide.
    cycle: usize,
    poll: Poll,
    conns: Vec<Conn>,
    tally: Tally,
    epoch: Instant,
    /// The stamp end of the compressed message being read.
    inflated: Vec<u8>,
}

impl Worker {
    /// The global connection ids this worker owns.
    fn ids(plan: &Plan, index: usize) -> Vec<usize> {
        (0..plan.connections).filter(|i| i % plan.threads == index).collect()
    }

    fn new(plan: Arc<Plan>, index: usize, epoch: Instant, progress: Arc<Progress>) -> Result<Worker> {
        let tally = Tally {
            messages: HashMap::new(),
            latency: std::array::from_fn(|_| histogram()),
            handshake: histogram(),
            attempts: 0,
            sent: 0,
            awareness_sent: 0,
            out_of_order: 0,
            wrong_receivers: 0,
            last_delivery_ns: 0,
            wire_bytes: 0,
            errors: HashMap::new(),
            progress: progress.clone(),
        };
        Ok(Worker {
            poll: Poll::new()?,
            conns: Vec::new(),
            tally,
            epoch,
            inflated: Vec::with_capacity(64),
            index,
            cycle: 0,
            plan,
            progress,
            unreported: 0,
        })
    }

    /// Opens this worker's connections, a bounded number of handshakes at a
    /// time. Returns when all are open, failed, or the connect timeout passed.
    fn connect_all(&mut self) -> Result<()> {
        let ids = Worker::ids(&self.plan, self.index);
        let deadline = Instant::now() + self.plan.connect_timeout;
        let mut next = 0;
        let mut events = Events::with_capacity(1024);
        loop {
            let mut in_flight =
                self.conns.iter().filter(|c| matches!(c.state, State::Connecting | State::Handshaking)).count();
            while next < ids.len() && in_flight < HANDSHAKES_IN_FLIGHT {
                let global = ids[next];
                next += 1;
                let sources = &self.plan.source_ips;
                let source = (!sources.is_empty()).then(|| sources[global % sources.len()]);
                self.tally.attempts += 1;
                match socket::connect(self.plan.target_of(global).addr, source) {
                    Ok(mut stream) => {
                        let token = Token(self.conns.len());
                        self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                        self.conns.push(Conn {
                            stream,
                            global,
                            started_ns: now_ns(self.epoch),
                            state: State::Connecting,
                            rbuf: Vec::new(),
                            wbuf: Vec::new(),
                            last_seq: Vec::new(),
                            hot: self.plan.tag_of(global) == Some(HOT_TAG),
                        });
                        in_flight += 1;
                    }
                    Err(e) => self.tally.error(format!("connect: {}", e.kind())),
                }
            }
            let pending = self.conns.iter().any(|c| matches!(c.state, State::Connecting | State::Handshaking));
            if !pending && next >= ids.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                for conn in &mut self.conns {
                    if matches!(conn.state, State::Connecting | State::Handshaking) {
                        conn.state = State::Closed;
                        self.tally.error("handshake timeout");
                    }
                }
                return Ok(());
            }
            self.poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            for event in events.iter() {
                self.on_event(event.token().0);
            }
        }
    }

    fn on_event(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if conn.state == State::Connecting {
            match socket::connected(&conn.stream) {
                Connected::Yes => {
                    let server = self.plan.target_of(conn.global);
                    let mut target = server
                        .request_target(&self.plan.room_of(conn.global), &format!("lt-{}-{}", self.cycle, conn.global));
                    if let Some(tag) = self.plan.tag_of(conn.global) {
                        target.push_str("&tag=");
                        target.push_str(tag);
                    }
                    let request = socket::upgrade_request(&target, server.addr, self.plan.deflate);
                    conn.wbuf.extend_from_slice(request.as_bytes());
                    conn.state = State::Handshaking;
                }
                Connected::NotYet => return,
                Connected::Failed(error) => {
                    conn.state = State::Closed;
                    self.tally.error(error);
                    return;
                }
            }
        }
        self.flush(i);
        self.read(i);
    }

    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if conn.state == State::Closed {
            return;
        }
        if let Err(error) = socket::flush(&mut conn.stream, &mut conn.wbuf) {
            conn.state = State::Closed;
            self.tally.error(error);
        }
    }

    fn read(&mut self, i: usize) {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let conn = &mut self.conns[i];
            if matches!(conn.state, State::Closed | State::Connecting) {
                return;
            }
            match socket::read_some(&mut conn.stream, &mut conn.rbuf, &mut chunk) {
                Received::Data => self.parse(i),
                Received::WouldBlock => return,
                Received::Eof => {
                    if conn.state != State::Closing {
                        self.tally.error("closed by server");
                    }
                    conn.state = State::Closed;
                    return;
                }
                Received::Failed(error) => {
                    conn.state = State::Closed;
                    self.tally.error(error);
                    return;
                }
            }
        }
    }

    fn parse(&mut self, i: usize) {
        let now = now_ns(self.epoch);
        let conn = &mut self.conns[i];
        let mut used = 0;
        if conn.state == State::Handshaking {
            let Some(end) = conn.rbuf.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            if !conn.rbuf.starts_with(b"HTTP/1.1 101") {
                let status = String::from_utf8_lossy(&conn.rbuf[..conn.rbuf.len().min(12)]).into_owned();
                conn.state = State::Closed;
                self.tally.error(format!("handshake refused: {status}"));
                return;
            }
            conn.state = State::Open;
            if let Some(protocol) = self.plan.yjs {
                for hello in crate::yjs::hello(protocol, &self.plan.room_of(conn.global)) {
                    client_frame(2, &hello, &mut conn.wbuf);
                }
            }
            self.progress.handshakes.fetch_add(1, Ordering::Relaxed);
            let _ = self.tally.handshake.record(now.saturating_sub(conn.started_ns).max(1));
            used = end + 4;
        }
        let mut pong = Vec::new();
        loop {
            let buf = &conn.rbuf[used..];
            let Some(FrameHead { fin, opcode, header, len }) = frame_head(buf) else { break };
            let mut payload = &buf[header..header + len];
            if buf[0] & 0x40 != 0 {
                inflate_prefix(payload, &mut self.inflated);
                payload = &self.inflated;
            }
            let stamp = match (fin && matches!(opcode, 1 | 2), self.plan.yjs) {
                (false, _) => None,
                // Inside an update (as sent, or re-encoded by the server);
                // servers that echo an update to its sender are not counted twice.
                // A sync step 2 (the answer to the client's step 1) carries
                // the whole document so far, not a delivery.
                (true, Some(protocol)) => (!crate::yjs::is_sync_step_2(protocol, payload))
                    .then(|| find_stamp(payload))
                    .flatten()
                    .filter(|&(publisher, _, _)| publisher != conn.global as u32),
                (true, None) => read_stamp(payload),
            };
            match opcode {
                1 | 2 if stamp.is_some() => {
                    let (publisher, seq, sent) = stamp.expect("checked");
                    self.tally.wire_bytes += (header + len) as u64;
                    let latency = now.saturating_sub(sent).max(1);
                    let _ = self.tally.latency[class_of(publisher)].record(latency);
                    if publisher == TAG_PUBLISHER && !conn.hot {
                        self.tally.wrong_receivers += 1;
                    }
                    self.unreported += 1;
                    self.tally.last_delivery_ns = now;
                    let entry = self.tally.messages.entry((publisher, seq)).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 = entry.1.max(latency);
                    match conn.last_seq.iter_mut().find(|(p, _)| *p == publisher) {
                        Some((_, last)) if seq <= *last => self.tally.out_of_order += 1,
                        Some((_, last)) => *last = seq,
                        None => conn.last_seq.push((publisher, seq)),
                    }
                }
                9 => client_frame(10, payload, &mut pong),
                8 if conn.state == State::Closing => {}
                8 => {
                    let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    self.tally.error(format!("closed by server with {code}"));
                    conn.state = State::Closed;
                    return;
                }
                _ => {}
            }
            used += header + len;
        }
        conn.rbuf.drain(..used);
        if !pong.is_empty() {
            conn.wbuf.extend_from_slice(&pong);
            self.flush(i);
        }
    }

    /// Sends from this worker's publishers at their share of the rate until
    /// `end`, servicing every socket meanwhile, then drains until `drain_end`.
    fn publish(&mut self, start: Instant, end: Instant, drain_end: Instant) -> Result<()> {
        let plan = self.plan.clone();
        let per_publisher = plan.rate / plan.publishers as f64;
        let interval = Duration::from_secs_f64(1.0 / per_publisher.max(1e-9));
        let mine: Vec<usize> = (0..self.conns.len()).filter(|&i| self.conns[i].global < plan.publishers).collect();
        let mut seqs = vec![0u64; mine.len()];
        let mut payload = if plan.text || plan.yjs.is_some() {
            text_message(plan.payload_bytes)
        } else {
            vec![0u8; plan.payload_bytes.max(HEADER_BYTES)]
        };
        let receivers = plan.receivers_per_message();
        let editors: Vec<crate::yjs::Editor> = match plan.yjs {
            Some(_) => mine.iter().map(|&i| crate::yjs::Editor::new(self.conns[i].global)).collect(),
            None => Vec::new(),
        };
        let mut message = Vec::new();
        let mut awareness_sent = vec![0u64; mine.len()];
        let mut events = Events::with_capacity(4096);
        loop {
            let now = Instant::now();
            if now < end {
                for (k, &i) in mine.iter().enumerate() {
                    let due = match plan.in_flight {
                        // As fast as delivered: one more whenever the room has
                        // fewer than `window` messages outstanding.
                        Some(window) => {
                            let outstanding = self.progress.expected.load(Ordering::Relaxed)
                                - self
                                    .progress
                                    .delivered
                                    .load(Ordering::Relaxed)
                                    .min(self.progress.expected.load(Ordering::Relaxed));
                            seqs[k] + u64::from(outstanding < window * receivers)
                        }
                        // Messages due by now, on a fixed schedule from the
                        // start; publisher g is offset by g/P of an interval,
                        // so the publishers together send at an even total rate.
                        None => {
                            let phase = self.conns[i].global as f64 / plan.publishers as f64;
                            let elapsed = (now - start).as_secs_f64() * per_publisher;
                            if elapsed >= phase {
                                (elapsed - phase) as u64 + 1
                            } else {
                                0
                            }
                        }
                    };
                    while seqs[k] < due && self.conns[i].state == State::Open {
                        let (publisher, sent_ns) = (self.conns[i].global as u32, now_ns(self.epoch));
                        if let Some(protocol) = plan.yjs {
                            stamp_text(&mut payload, publisher, seqs[k], sent_ns);
                            let doc_name = plan.room_of(self.conns[i].global);
                            editors[k].update(protocol, &doc_name, &payload, &mut message);
                            client_frame(2, &message, &mut self.conns[i].wbuf);
                        } else if plan.text {
                            stamp_text(&mut payload, publisher, seqs[k], sent_ns);
                            client_frame(1, &payload, &mut self.conns[i].wbuf);
                        } else {
                            stamp(&mut payload, publisher, seqs[k], sent_ns);
                            client_frame(2, &payload, &mut self.conns[i].wbuf);
                        }
                        seqs[k] += 1;
                        self.tally.sent += 1;
                        self.progress.expected.fetch_add(receivers, Ordering::Relaxed);
                        self.progress.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    if let (Some(protocol), true) = (plan.yjs, plan.awareness_rate > 0.0) {
                        // On its own fixed schedule from the start.
                        let due = ((now - start).as_secs_f64() * plan.awareness_rate) as u64 + 1;
                        while awareness_sent[k] < due && self.conns[i].state == State::Open {
                            awareness_sent[k] += 1;
                            let doc_name = plan.room_of(self.conns[i].global);
                            editors[k].awareness(protocol, &doc_name, awareness_sent[k] as u32, &mut message);
                            client_frame(2, &message, &mut self.conns[i].wbuf);
                            self.tally.awareness_sent += 1;
                        }
                    }
                    self.flush(i);
                }
            } else if self.progress.driver_done.load(Ordering::Relaxed) && (now >= drain_end || self.all_delivered()) {
                return Ok(());
            }
            let wait = match plan.in_flight {
                Some(_) if now < end => Duration::from_micros(100),
                _ if now < end => interval.min(Duration::from_millis(1)),
                _ => Duration::from_millis(10),
            };
            self.poll.poll(&mut events, Some(wait))?;
            for event in events.iter() {
                let i = event.token().0;
                self.flush(i);
                self.read(i);
            }
            self.progress.delivered.fetch_add(std::mem::take(&mut self.unreported), Ordering::Relaxed);
        }
    }

    /// Keeps this worker's connections serviced (pings answered), sending
    /// nothing, until `until`.
    fn idle(&mut self, until: Instant) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        while Instant::now() < until {
            self.poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            for event in events.iter() {
                let i = event.token().0;
                self.flush(i);
                self.read(i);
            }
        }
        Ok(())
    }

    /// Whether every message sent so far, by any worker, has reached all its
    /// receivers.
    fn all_delivered(&self) -> bool {
        self.progress.all_delivered()
    }

    /// Closes every open connection with a close handshake, waiting (at most
    /// `timeout`) for the server to close each TCP connection first.
    fn close_all(&mut self, timeout: Duration) -> Result<()> {
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Open {
                client_frame(8, &1000u16.to_be_bytes(), &mut self.conns[i].wbuf);
                self.conns[i].state = State::Closing;
                self.flush(i);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut events = Events::with_capacity(1024);
        while self.conns.iter().any(|c| c.state == State::Closing) && Instant::now() < deadline {
            self.poll.poll(&mut events, Some(Duration::from_millis(50)))?;
            for event in events.iter() {
                self.read(event.token().0);
            }
        }
        let unanswered = self.conns.iter().filter(|c| c.state == State::Closing).count() as u64;
        if unanswered > 0 {
            self.tally.errors_n("close not answered in time", unanswered);
        }
        self.conns.clear();
        Ok(())
    }
}

pub fn run(plan: Plan) -> Result<Report> {
    assert!(
        plan.connections >= 2 * plan.rooms
            && plan.connections.is_multiple_of(plan.rooms)
            && (1..=plan.connections).contains(&plan.publishers)
            && plan.rate > 0.0,
        "the CLI validates the plan"
    );
    let plan = Arc::new(plan);
    let run = drive(plan.clone(), |_, _, _| Ok(()))?;
    Ok(merge(&plan, run))
}

/// A run of the workers: their tallies, when publishing started, and the
/// server samples before connecting, once connected, and at the end.
pub(crate) struct Driven<T> {
    pub tallies: Vec<Tally>,
    pub epoch: Instant,
    pub start: Instant,
    pub connect_secs: f64,
    pub before: Option<ProcSample>,
    pub connected: Option<ProcSample>,
    pub after: Option<ProcSample>,
    /// Sampled after the hold, the connections still open (see `Plan::hold`).
    pub held: Option<ProcSample>,
    pub out: T,
}

/// Connects the workers' connections, then, while the workers publish their
/// share (if any) and read, runs `driver` on this thread with the shared
/// progress and the publishing start; the workers stop after the driver
/// returns and their own publishing and drain are over.
pub(crate) fn drive<T>(
    plan: Arc<Plan>,
    driver: impl FnOnce(&Progress, Instant, Instant) -> Result<T>,
) -> Result<Driven<T>> {
    let epoch = Instant::now();
    let before = plan.server_pid.map(crate::target::sample).transpose()?;
    let connected = Arc::new(Barrier::new(plan.threads + 1));
    let go = Arc::new(Barrier::new(plan.threads + 1));
    let held = Arc::new(Barrier::new(plan.threads + 1));
    let released = Arc::new(Barrier::new(plan.threads + 1));
    let holds = !plan.hold.is_zero();
    let schedule = Arc::new(std::sync::Mutex::new(None::<(Instant, Instant, Instant)>));
    let progress = Arc::new(Progress::default());
    let _line = ProgressLine::start(progress.clone());
    let mut handles = Vec::new();
    for index in 0..plan.threads {
        let (plan, connected, go) = (plan.clone(), connected.clone(), go.clone());
        let (held, released) = (held.clone(), released.clone());
        let (schedule, progress) = (schedule.clone(), progress.clone());
        handles.push(std::thread::spawn(move || -> Result<Tally> {
            let mut worker = Worker::new(plan, index, epoch, progress)?;
            let result = worker.connect_all();
            connected.wait();
            go.wait();
            result?;
            let (start, end, drain_end) =
                schedule.lock().expect("no worker panics holding the lock").expect("set before go");
            worker.publish(start, end, drain_end)?;
            if holds {
                let hold = worker.idle(Instant::now() + worker.plan.hold);
                held.wait();
                released.wait();
                hold?;
            }
            worker.close_all(Duration::from_secs(5))?;
            Ok(worker.tally)
        }));
    }
    let connect_started = Instant::now();
    connected.wait();
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let connected_sample = plan.server_pid.map(crate::target::sample).transpose()?;
    let start = Instant::now();
    *schedule.lock().expect("not poisoned") = Some((start, start + plan.duration, start + plan.duration + plan.drain));
    go.wait();
    let out = driver(&progress, epoch, start);
    progress.driver_done.store(true, Ordering::Relaxed);
    let mut held_sample = Ok(None);
    if holds {
        held.wait();
        held_sample = plan.server_pid.map(crate::target::sample).transpose();
        released.wait();
    }
    let held_sample = held_sample?;
    let mut tallies = Vec::new();
    for handle in handles {
        tallies.push(handle.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))??);
    }
    let after = plan.server_pid.map(crate::target::sample).transpose()?;
    Ok(Driven {
        tallies,
        epoch,
        start,
        connect_secs,
        before,
        connected: connected_sample,
        after,
        held: held_sample,
        out: out?,
    })
}

/// What the receivers saw of one class of messages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub messages_sent: u64,
    pub receivers_per_message: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub delivery_latency_us: Percentiles,
    pub last_receiver_latency_us: Percentiles,
}

/// Merges the workers' tallies of message class `class`, `sent` messages
/// of `receivers` receivers each.
pub(crate) fn summarize(tallies: &[Tally], class: usize, sent: u64, receivers: u64) -> Summary {
    let mut latency = histogram();
    let mut messages: HashMap<(u32, u64), (u32, u64)> = HashMap::new();
    for tally in tallies {
        latency.add(&tally.latency[class]).expect("histograms share bounds");
        for (&key, &(count, max)) in tally.messages.iter().filter(|(k, _)| class_of(k.0) == class) {
            let entry = messages.entry(key).or_insert((0, 0));
            entry.0 += count;
            entry.1 = entry.1.max(max);
        }
    }
    let mut last = histogram();
    let (mut deliveries, mut duplicates) = (0u64, 0u64);
    for &(count, max) in messages.values() {
        let count = u64::from(count);
        deliveries += count.min(receivers);
        duplicates += count.saturating_sub(receivers);
        // Only a message that reached everyone has a last receiver.
        if count >= receivers {
            let _ = last.record(max);
        }
    }
    let expected = sent * receivers;
    Summary {
        messages_sent: sent,
        receivers_per_message: receivers,
        deliveries_expected: expected,
        deliveries,
        lost: expected.saturating_sub(deliveries),
        duplicates,
        delivery_latency_us: Percentiles::from(&latency),
        last_receiver_latency_us: Percentiles::from(&last),
    }
}

/// What every scenario's tallies share: handshakes, errors, order, timing.
pub(crate) struct Common {
    pub handshake: Histogram<u64>,
    pub errors: HashMap<String, u64>,
    pub out_of_order: u64,
    pub wrong_receivers: u64,
    pub last_delivery_ns: u64,
}

pub(crate) fn common(tallies: &[Tally]) -> Common {
    let mut c = Common {
        handshake: histogram(),
        errors: HashMap::new(),
        out_of_order: 0,
        wrong_receivers: 0,
        last_delivery_ns: 0,
    };
    for tally in tallies {
        c.handshake.add(&tally.handshake).expect("histograms share bounds");
        for (kind, n) in &tally.errors {
            *c.errors.entry(kind.clone()).or_default() += n;
        }
        c.out_of_order += tally.out_of_order;
        c.wrong_receivers += tally.wrong_receivers;
        c.last_delivery_ns = c.last_delivery_ns.max(tally.last_delivery_ns);
    }
    c
}

fn merge(plan: &Plan, run: Driven<()>) -> Report {
    let start_ns = (run.start - run.epoch).as_nanos() as u64;
    let Driven { tallies, connect_secs, before, connected, after, held, .. } = run;
    let sent = tallies.iter().map(|t| t.sent).sum();
    let summary = summarize(&tallies, 0, sent, plan.receivers_per_message());
    let c = common(&tallies);
    let publish_secs = plan.duration.as_secs_f64();
    let delivery_secs = (c.last_delivery_ns.saturating_sub(start_ns) as f64 / 1e9).max(1e-9);
    let deliveries = summary.deliveries;
    Report {
        rooms: plan.rooms,
        connections: plan.connections,
        publishers: plan.publishers,
        payload_bytes: if plan.text { plan.payload_bytes } else { plan.payload_bytes.max(HEADER_BYTES) },
        connect_secs,
        publish_secs,
        delivery_secs,
        messages_sent: sent,
        awareness_sent: tallies.iter().map(|t| t.awareness_sent).sum(),
        deliveries_expected: summary.deliveries_expected,
        deliveries,
        delivered_frames_per_sec: deliveries as f64 / delivery_secs,
        lost: summary.lost,
        duplicates: summary.duplicates,
        out_of_order: c.out_of_order,
        errors: c.errors,
        delivery_latency_us: summary.delivery_latency_us,
        last_receiver_latency_us: summary.last_receiver_latency_us,
        handshake_latency_us: Percentiles::from(&c.handshake),
        server_bytes_per_connection: before
            .zip(connected)
            .map(|(b, c)| c.rss_bytes.saturating_sub(b.rss_bytes) as f64 / plan.connections as f64),
        server_bytes_per_connection_held: before
            .zip(held)
            .map(|(b, h)| h.rss_bytes.saturating_sub(b.rss_bytes) as f64 / plan.connections as f64),
        server_held: held,
        server_cpu_us_per_delivery: connected
            .zip(after)
            .filter(|_| deliveries > 0)
            .map(|(c, a)| (a.cpu_secs - c.cpu_secs) * 1e6 / deliveries as f64),
        server_cpu_us_per_message_delivered: connected
            .zip(after)
            .filter(|_| deliveries > 0)
            .map(|(c, a)| (a.cpu_secs - c.cpu_secs) * 1e6 / deliveries as f64 * plan.receivers_per_message() as f64),
        server_before: before,
        server_connected: connected,
        server_after: after,
        text: plan.text,
        deflate: plan.deflate,
        wire_bytes_per_delivery: tallies.iter().map(|t| t.wire_bytes).sum::<u64>() as f64 / deliveries.max(1) as f64,
    }
}

/// What a `churn` run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChurnReport {
    pub connections_per_cycle: usize,
    /// Cycles of the busiest thread (threads cycle independently).
    pub cycles: usize,
    pub attempts: u64,
    pub handshakes: u64,
    pub elapsed_secs: f64,
    pub connects_per_sec: f64,
    pub handshake_latency_us: Percentiles,
    pub errors: HashMap<String, u64>,
}

/// The `churn` scenario: each thread opens its share of `connections`,
/// closes them all, and starts over, until `duration` has passed. Handshakes
/// run with a bounded number in flight per thread.
pub fn churn(plan: Plan) -> Result<ChurnReport> {
    let plan = Arc::new(plan);
    let epoch = Instant::now();
    let end = epoch + plan.duration;
    let progress = Arc::new(Progress::default());
    let _line = ProgressLine::start(progress.clone());
    let handles: Vec<_> = (0..plan.threads)
        .map(|index| {
            let (plan, progress) = (plan.clone(), progress.clone());
            std::thread::spawn(move || -> Result<(Tally, usize)> {
                let mut worker = Worker::new(plan, index, epoch, progress)?;
                while Instant::now() < end {
                    worker.connect_all()?;
                    worker.close_all(Duration::from_secs(5))?;
                    worker.cycle += 1;
                }
                Ok((worker.tally, worker.cycle))
            })
        })
        .collect();
    let mut handshake = histogram();
    let mut errors: HashMap<String, u64> = HashMap::new();
    let (mut cycles, mut attempts) = (0, 0);
    for handle in handles {
        let (tally, worker_cycles) = handle.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
        handshake.add(&tally.handshake).expect("histograms share bounds");
        attempts += tally.attempts;
        for (kind, n) in tally.errors {
            *errors.entry(kind).or_default() += n;
        }
        cycles = cycles.max(worker_cycles);
    }
    let elapsed_secs = epoch.elapsed().as_secs_f64();
    Ok(ChurnReport {
        connections_per_cycle: plan.connections,
        cycles,
        attempts,
        handshakes: handshake.len(),
        elapsed_secs,
        connects_per_sec: handshake.len() as f64 / elapsed_secs,
        handshake_latency_us: Percentiles::from(&handshake),
        errors,
    })
}
