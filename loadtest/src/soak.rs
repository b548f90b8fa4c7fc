//! The `soak` scenario: many connections over many rooms of a hibernating
//! chat party, minutes of mixed traffic with hibernation cycles and
//! connection churn, and the server's memory and file descriptors sampled
//! throughout, so that growth or a leak shows in the figures.
//!
//! Connection `g` joins room `s<g % rooms>` as member `g / rooms`. Traffic
//! runs in phases: in each, a different window of the rooms is active and
//! their members send small text messages; the other rooms are silent, long
//! enough for the server to evict them, and are woken when their turn comes
//! again. Meanwhile connections of active rooms close with a close handshake
//! and reconnect, so the server recycles connection records and descriptors.
//!
//! Every delivery is checked against a ledger of sent messages. All members
//! of a room live on one worker thread, so the worker knows each member's
//! state when a message is sent. A message is *expected* at a member only if
//! the member's current session has provably joined the room before the
//! message: the sender has already received something from that session (a
//! live message or a history frame), which the room processed after the
//! session's connect, and everything the sender sends afterwards the room
//! processes later still. A member that is about to leave stops being
//! expected, and closes only once everything expected of it has arrived (or
//! after a bounded wait, the rest then counting as lost). Frames the chat
//! kind replays to a new connection (its history) are recognised as messages
//! sent before the session started and are not deliveries; messages of
//! earlier runs carry another run id and are skipped the same way. A frame
//! that reached an unconfirmed session is counted apart, neither delivered
//! nor duplicate.

use crate::fanout::{client_frame, frame_head, histogram, now_ns, FrameHead, Percentiles};
use crate::hibernated::{room_counts, RoomCounts};
use crate::socket::{self, Connected, Received};
use crate::target::{self, ProcSample, Target};
use anyhow::Result;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Every message is one text frame of this size: magic, run, sender slot,
/// session, ledger id and send time, in fixed-width hex.
pub const MESSAGE_BYTES: usize = 64;
const MAGIC: &[u8; 4] = b"DMSK";
/// A message's expected and delivered receivers are bit sets of members.
pub const MAX_MEMBERS_PER_ROOM: usize = 128;
/// Handshakes in flight per thread while ramping up.
const HANDSHAKES_IN_FLIGHT: usize = 256;
/// How long a leaving member waits for the messages still expected of it.
const LEAVE_WAIT: Duration = Duration::from_secs(5);
/// How long a close handshake may take before it counts as an error.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long, after the last close, the server may take to report its
/// connection count back at the start value.
const SETTLE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Plan {
    /// A `ws://` URL whose path holds `{room}`; room `i` is `s<i>`.
    pub target: Target,
    pub connections: usize,
    pub rooms: usize,
    /// Rooms active in each phase (at least 1, at most `rooms`).
    pub active_rooms: usize,
    pub active_fraction: f64,
    pub phase: Duration,
    pub duration: Duration,
    /// Messages per second over all active rooms.
    pub rate: f64,
    /// Close-and-reconnects per second, in active rooms.
    pub churn_per_sec: f64,
    pub sample_every: Duration,
    /// How long to wait after the traffic for outstanding deliveries.
    pub drain: Duration,
    pub connect_timeout: Duration,
    pub threads: usize,
    pub source_ips: Vec<IpAddr>,
    pub server_pid: u32,
    /// RSS growth, in percent, the verdict still calls "no growth".
    pub rss_tolerance_pct: f64,
}

impl Plan {
    fn room_of(&self, slot: usize) -> usize {
        slot % self.rooms
    }

    fn member_of(&self, slot: usize) -> usize {
        slot / self.rooms
    }

    fn worker_of_room(&self, room: usize) -> usize {
        room % self.threads
    }

    /// The largest room's membership.
    pub fn members_per_room(&self) -> usize {
        self.connections.div_ceil(self.rooms)
    }

    /// Phase `phase` activates rooms `phase * A .. phase * A + A` (mod the
    /// room count); the position of `room` in that window, if it is active.
    fn active_index(&self, room: usize, phase: u64) -> Option<usize> {
        let offset = (phase % self.rooms as u64) as usize * self.active_rooms % self.rooms;
        let index = (room + self.rooms - offset) % self.rooms;
        (index < self.active_rooms).then_some(index)
    }

    fn active_room(&self, phase: u64, index: usize) -> usize {
        ((phase % self.rooms as u64) as usize * self.active_rooms + index) % self.rooms
    }
}

/// The fixed-width text of a message.
fn encode(run: u32, slot: u32, session: u32, id: u64, sent_ns: u64) -> [u8; MESSAGE_BYTES] {
    let mut out = [0u8; MESSAGE_BYTES];
    let text = format!("DMSK{run:08x} {slot:08x} {session:08x} {id:016x} {sent_ns:016x}");
    assert_eq!(text.len(), MESSAGE_BYTES, "the fields are fixed width");
    out.copy_from_slice(text.as_bytes());
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    run: u32,
    slot: u32,
    session: u32,
    id: u64,
    sent_ns: u64,
}

/// A message of this scenario's format, or `None` for any other frame.
fn decode(payload: &[u8]) -> Option<Stamp> {
    if payload.len() != MESSAGE_BYTES || &payload[..4] != MAGIC {
        return None;
    }
    let field = |from: usize, len: usize| {
        let text = std::str::from_utf8(payload.get(from..from + len)?).ok()?;
        u64::from_str_radix(text, 16).ok()
    };
    Some(Stamp {
        run: field(4, 8)? as u32,
        slot: field(13, 8)? as u32,
        session: field(22, 8)? as u32,
        id: field(31, 16)?,
        sent_ns: field(48, 16)?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket: not yet connected, or closed.
    Closed,
    Connecting,
    Handshaking,
    Open,
    /// Open, but no longer a receiver of new messages: waiting for the
    /// messages still expected of it before closing.
    Leaving,
    /// Our close frame is sent; waiting for the server to close the TCP
    /// connection first (so TIME_WAIT lands on the server).
    Closing,
}

/// One member slot of a room and its current session.
struct Conn {
    stream: Option<TcpStream>,
    slot: usize,
    /// This worker's index of the member's room, and the member's index in it.
    room: usize,
    member: usize,
    /// Sessions so far; part of the connection id and of every message.
    session: u32,
    state: State,
    /// When the session started connecting (ns since the epoch): a message
    /// sent before that reaches it only as history.
    started_ns: u64,
    /// When the current state began, for its time limit.
    since: Instant,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Members whose current session this session has heard from.
    heard: u128,
    /// Messages expected at this session and not yet delivered.
    outstanding: u64,
    /// Whether this session has sent a message (new sessions send first, so
    /// the others confirm them soon).
    has_sent: bool,
    /// Whether to reconnect once closed.
    reconnect: bool,
}

/// A room of this worker: its members and its sending schedule.
struct RoomState {
    room: usize,
    members: Vec<usize>,
    /// The phase `sent_in_phase` counts for.
    phase: u64,
    sent_in_phase: u64,
    next_sender: usize,
    next_churn: usize,
}

/// A sent message, in the ledger of the worker that owns its room.
struct Sent {
    sender: u32,
    sent_ns: u64,
    expected: u128,
    delivered: u128,
}

/// Counts all workers share, read by the sampler.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    delivered: AtomicU64,
}

/// One worker's tallies.
struct Tally {
    sent: u64,
    deliveries_expected: u64,
    deliveries: u64,
    unconfirmed: u64,
    history_frames: u64,
    foreign_frames: u64,
    duplicates: u64,
    sends_skipped: u64,
    reconnects: u64,
    churn_skipped: u64,
    handshakes: u64,
    handshake_errors: u64,
    unexpected_closes: u64,
    errors: HashMap<String, u64>,
    latency: Histogram<u64>,
    handshake: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            sent: 0,
            deliveries_expected: 0,
            deliveries: 0,
            unconfirmed: 0,
            history_frames: 0,
            foreign_frames: 0,
            duplicates: 0,
            sends_skipped: 0,
            reconnects: 0,
            churn_skipped: 0,
            handshakes: 0,
            handshake_errors: 0,
            unexpected_closes: 0,
            errors: HashMap::new(),
            latency: histogram(),
            handshake: histogram(),
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

struct Worker {
    plan: Arc<Plan>,
    index: usize,
    run: u32,
    epoch: Instant,
    poll: Poll,
    conns: Vec<Conn>,
    rooms: Vec<RoomState>,
    ledger: Vec<Sent>,
    /// Sessions connecting, handshaking, leaving or closing: the ones with a
    /// time limit, checked every loop turn.
    transit: Vec<usize>,
    /// Messages expected at some session and not yet delivered.
    pending: u64,
    /// Churns of the whole run considered so far (see [`Worker::churn`]).
    churn_next: u64,
    tally: Tally,
    progress: Arc<Progress>,
    unreported_delivered: u64,
    unreported_sent: u64,
}

impl Worker {
    fn new(plan: Arc<Plan>, index: usize, run: u32, epoch: Instant, progress: Arc<Progress>) -> Result<Worker> {
        let mut conns = Vec::new();
        let mut rooms = Vec::new();
        for room in (index..plan.rooms).step_by(plan.threads) {
            let local = rooms.len();
            let mut members = Vec::new();
            for slot in (room..plan.connections).step_by(plan.rooms) {
                members.push(conns.len());
                conns.push(Conn {
                    stream: None,
                    slot,
                    room: local,
                    member: plan.member_of(slot),
                    session: 0,
                    state: State::Closed,
                    started_ns: 0,
                    since: epoch,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    heard: 0,
                    outstanding: 0,
                    has_sent: false,
                    reconnect: false,
                });
            }
            rooms.push(RoomState { room, members, phase: u64::MAX, sent_in_phase: 0, next_sender: 0, next_churn: 0 });
        }
        Ok(Worker {
            plan,
            index,
            run,
            epoch,
            poll: Poll::new()?,
            conns,
            rooms,
            ledger: Vec::new(),
            transit: Vec::new(),
            pending: 0,
            churn_next: 0,
            tally: Tally::new(),
            progress,
            unreported_delivered: 0,
            unreported_sent: 0,
        })
    }

    /// The connection of `slot`, which must be in one of this worker's rooms.
    fn conn_of(&self, slot: usize) -> usize {
        let room = self.plan.room_of(slot);
        debug_assert_eq!(self.plan.worker_of_room(room), self.index);
        self.rooms[room / self.plan.threads].members[self.plan.member_of(slot)]
    }

    /// Starts a new session for member `i`.
    fn connect(&mut self, i: usize) -> Result<()> {
        let plan = self.plan.clone();
        let sources = &plan.source_ips;
        let source = (!sources.is_empty()).then(|| sources[self.conns[i].slot % sources.len()]);
        // A new session: nobody has heard from it yet.
        let bit = 1u128 << self.conns[i].member;
        for &m in &self.rooms[self.conns[i].room].members {
            self.conns[m].heard &= !bit;
        }
        let conn = &mut self.conns[i];
        conn.session += 1;
        conn.started_ns = now_ns(self.epoch);
        conn.since = Instant::now();
        conn.rbuf.clear();
        conn.wbuf.clear();
        conn.heard = 0;
        conn.outstanding = 0;
        conn.has_sent = false;
        conn.reconnect = false;
        match socket::connect(plan.target.addr, source) {
            Ok(mut stream) => {
                self.poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
                conn.stream = Some(stream);
                conn.state = State::Connecting;
                self.transit.push(i);
            }
            Err(e) => {
                conn.state = State::Closed;
                self.tally.handshake_errors += 1;
                self.tally.error(format!("connect: {}", e.kind()));
            }
        }
        Ok(())
    }

    /// Drops member `i`'s socket; what was still expected of it stays
    /// undelivered in the ledger.
    fn drop_session(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.state = State::Closed;
        self.pending -= conn.outstanding;
        conn.outstanding = 0;
    }

    /// Opens every member's first session, a bounded number of handshakes
    /// at a time, until all are open, failed, or the connect timeout passed.
    fn connect_all(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.plan.connect_timeout;
        let mut next = 0;
        let mut events = Events::with_capacity(1024);
        loop {
            self.transit.retain(|&i| matches!(self.conns[i].state, State::Connecting | State::Handshaking));
            while next < self.conns.len() && self.transit.len() < HANDSHAKES_IN_FLIGHT {
                self.connect(next)?;
                next += 1;
            }
            if self.transit.is_empty() && next == self.conns.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                for i in std::mem::take(&mut self.transit) {
                    self.tally.handshake_errors += 1;
                    self.tally.error("handshake timeout");
                    self.drop_session(i);
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
        let Some(stream) = &conn.stream else { return };
        if conn.state == State::Connecting {
            match socket::connected(stream) {
                Connected::Yes => {
                    let room = format!("s{}", self.plan.room_of(conn.slot));
                    let id = format!("soak-{:08x}-{}-{}", self.run, conn.slot, conn.session);
                    let target = self.plan.target.request_target(&room, &id);
                    conn.wbuf
                        .extend_from_slice(socket::upgrade_request(&target, self.plan.target.addr, false).as_bytes());
                    conn.state = State::Handshaking;
                }
                Connected::NotYet => return,
                Connected::Failed(error) => {
                    self.tally.handshake_errors += 1;
                    self.tally.error(error);
                    self.drop_session(i);
                    return;
                }
            }
        }
        self.flush(i);
        self.read(i);
    }

    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if matches!(conn.state, State::Closed | State::Connecting) {
            return;
        }
        let stream = conn.stream.as_mut().expect("a session past connecting has a socket");
        if let Err(error) = socket::flush(stream, &mut conn.wbuf) {
            self.unexpected_close(i, error);
        }
    }

    /// The server ended a session we did not close: an error; the member
    /// reconnects, so the load stays what the plan says.
    fn unexpected_close(&mut self, i: usize, kind: String) {
        self.tally.unexpected_closes += 1;
        self.tally.error(kind);
        self.drop_session(i);
        self.conns[i].reconnect = true;
        self.transit.push(i);
    }

    fn read(&mut self, i: usize) {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let conn = &mut self.conns[i];
            if matches!(conn.state, State::Closed | State::Connecting) {
                return;
            }
            let stream = conn.stream.as_mut().expect("a session past connecting has a socket");
            match socket::read_some(stream, &mut conn.rbuf, &mut chunk) {
                Received::Data => self.parse(i),
                Received::WouldBlock => return,
                Received::Eof if conn.state == State::Closing => {
                    // The server closed first, as asked: the close is complete.
                    self.drop_session(i);
                    return;
                }
                Received::Eof => {
                    let kind = if conn.state == State::Handshaking {
                        self.tally.handshake_errors += 1;
                        "closed by server during the handshake"
                    } else {
                        "closed by server without a close frame"
                    };
                    self.unexpected_close(i, kind.to_owned());
                    return;
                }
                Received::Failed(error) => {
                    self.unexpected_close(i, error);
                    return;
                }
            }
        }
    }

    fn parse(&mut self, i: usize) {
        let mut rbuf = std::mem::take(&mut self.conns[i].rbuf);
        let mut used = 0;
        if self.conns[i].state == State::Handshaking {
            let Some(end) = rbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                self.conns[i].rbuf = rbuf;
                return;
            };
            if !rbuf.starts_with(b"HTTP/1.1 101") {
                let status = String::from_utf8_lossy(&rbuf[..rbuf.len().min(12)]).into_owned();
                self.tally.handshake_errors += 1;
                self.tally.error(format!("handshake refused: {status}"));
                self.drop_session(i);
                return;
            }
            let conn = &mut self.conns[i];
            conn.state = State::Open;
            conn.since = Instant::now();
            self.tally.handshakes += 1;
            let _ = self.tally.handshake.record(now_ns(self.epoch).saturating_sub(conn.started_ns).max(1));
            used = end + 4;
        }
        let mut pong = Vec::new();
        loop {
            let buf = &rbuf[used..];
            let Some(FrameHead { fin, opcode, header, len }) = frame_head(buf) else { break };
            let payload = &buf[header..header + len];
            match opcode {
                1 | 2 if fin => self.on_message(i, payload),
                9 => client_frame(10, payload, &mut pong),
                8 if self.conns[i].state == State::Closing => {}
                8 => {
                    let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    self.unexpected_close(i, format!("closed by server with {code}"));
                    return;
                }
                _ => self.tally.foreign_frames += 1,
            }
            used += header + len;
        }
        rbuf.drain(..used);
        let conn = &mut self.conns[i];
        conn.rbuf = rbuf;
        if !pong.is_empty() {
            conn.wbuf.extend_from_slice(&pong);
            self.flush(i);
        }
    }

    /// A text or binary message reached member `i`: account for it.
    fn on_message(&mut self, i: usize, payload: &[u8]) {
        let Some(stamp) = decode(payload).filter(|s| s.run == self.run) else {
            // Another client's message, or history from an earlier run.
            self.tally.foreign_frames += 1;
            return;
        };
        let slot = stamp.slot as usize;
        let (receiver_slot, member) = (self.conns[i].slot, self.conns[i].member);
        if slot >= self.plan.connections || self.plan.room_of(slot) != self.plan.room_of(receiver_slot) {
            self.tally.error("a message delivered to another room");
            return;
        }
        let sender = self.conn_of(slot);
        if self.conns[sender].session == stamp.session {
            self.conns[i].heard |= 1u128 << self.plan.member_of(slot);
        }
        let Some(sent) = self.ledger.get_mut(stamp.id as usize).filter(|s| s.sender == stamp.slot) else {
            self.tally.error("a message not in the ledger");
            return;
        };
        if sent.sent_ns != stamp.sent_ns {
            self.tally.error("a message not in the ledger");
            return;
        }
        let conn = &mut self.conns[i];
        if sent.sent_ns < conn.started_ns {
            // Sent before this session began: the chat history replayed on connect.
            self.tally.history_frames += 1;
            return;
        }
        if slot == receiver_slot {
            self.tally.error("a message echoed to its sender");
            return;
        }
        let bit = 1u128 << member;
        if sent.delivered & bit != 0 {
            self.tally.duplicates += 1;
            self.tally.error("duplicate delivery");
            return;
        }
        sent.delivered |= bit;
        if sent.expected & bit == 0 {
            self.tally.unconfirmed += 1;
            return;
        }
        conn.outstanding -= 1;
        self.pending -= 1;
        self.tally.deliveries += 1;
        self.unreported_delivered += 1;
        let _ = self.tally.latency.record(now_ns(self.epoch).saturating_sub(sent.sent_ns).max(1));
    }

    /// Sends one message from a member of room `r`: a session that has not
    /// sent yet if there is one, else the next open member in turn.
    fn send_one(&mut self, r: usize) {
        let members = &self.rooms[r].members;
        let open = |c: &Conn| c.state == State::Open;
        let sender = members.iter().copied().find(|&m| open(&self.conns[m]) && !self.conns[m].has_sent).or_else(|| {
            (0..members.len())
                .map(|k| members[(self.rooms[r].next_sender + k) % members.len()])
                .find(|&m| open(&self.conns[m]))
        });
        let Some(sender) = sender else {
            self.tally.sends_skipped += 1;
            return;
        };
        let n = members.len();
        self.rooms[r].next_sender = (self.conns[sender].member + 1) % n;
        let heard = self.conns[sender].heard;
        let mut expected = 0u128;
        for &m in &self.rooms[r].members {
            let bit = 1u128 << self.conns[m].member;
            if m != sender && open(&self.conns[m]) && heard & bit != 0 {
                expected |= bit;
                self.conns[m].outstanding += 1;
            }
        }
        let receivers = u64::from(expected.count_ones());
        self.pending += receivers;
        self.tally.deliveries_expected += receivers;
        let sent_ns = now_ns(self.epoch);
        let id = self.ledger.len() as u64;
        let conn = &mut self.conns[sender];
        self.ledger.push(Sent { sender: conn.slot as u32, sent_ns, expected, delivered: 0 });
        client_frame(1, &encode(self.run, conn.slot as u32, conn.session, id, sent_ns), &mut conn.wbuf);
        conn.has_sent = true;
        self.tally.sent += 1;
        self.unreported_sent += 1;
        self.flush(sender);
    }

    /// Sends what the active rooms of this worker are due by `now`: each
    /// active room `rate / A` messages a second, the rooms staggered over
    /// the first interval so the total rate is even.
    fn send_due(&mut self, phase: u64, in_phase: Duration) {
        let per_room = self.plan.rate / self.plan.active_rooms as f64;
        for r in 0..self.rooms.len() {
            let Some(index) = self.plan.active_index(self.rooms[r].room, phase) else { continue };
            if self.rooms[r].phase != phase {
                self.rooms[r].phase = phase;
                self.rooms[r].sent_in_phase = 0;
            }
            let stagger = index as f64 / self.plan.active_rooms as f64;
            let due = (in_phase.as_secs_f64() * per_room + stagger) as u64;
            while self.rooms[r].sent_in_phase < due {
                self.rooms[r].sent_in_phase += 1;
                self.send_one(r);
            }
        }
    }

    /// Starts the churns due by `elapsed` that fall to this worker. Churn
    /// `n` of the run goes to active room `n % A` of the current phase, so
    /// every worker walks the same sequence and takes its own rooms' share.
    fn churn(&mut self, phase: u64, elapsed: Duration) {
        let due = (elapsed.as_secs_f64() * self.plan.churn_per_sec) as u64;
        while self.churn_next < due {
            let room = self.plan.active_room(phase, (self.churn_next % self.plan.active_rooms as u64) as usize);
            self.churn_next += 1;
            if self.plan.worker_of_room(room) != self.index {
                continue;
            }
            let r = room / self.plan.threads;
            let members = &self.rooms[r].members;
            let start = self.rooms[r].next_churn;
            let pick = (0..members.len())
                .map(|k| members[(start + k) % members.len()])
                .find(|&m| self.conns[m].state == State::Open);
            let Some(i) = pick else {
                self.tally.churn_skipped += 1;
                continue;
            };
            let n = members.len();
            self.rooms[r].next_churn = (self.conns[i].member + 1) % n;
            let conn = &mut self.conns[i];
            conn.state = State::Leaving;
            conn.since = Instant::now();
            conn.reconnect = true;
            self.transit.push(i);
        }
    }

    /// Sends a close frame (code 1000) and waits for the server to close.
    fn close(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        client_frame(8, &1000u16.to_be_bytes(), &mut conn.wbuf);
        conn.state = State::Closing;
        conn.since = Instant::now();
        self.flush(i);
    }

    /// Moves every session with a time limit along: leaving ones close once
    /// nothing is expected of them, closed ones reconnect, and any state
    /// past its limit is an error.
    fn advance(&mut self, reconnect: bool) -> Result<()> {
        let now = Instant::now();
        let transit = std::mem::take(&mut self.transit);
        for &i in &transit {
            let (state, waited) = (self.conns[i].state, now.saturating_duration_since(self.conns[i].since));
            match state {
                State::Connecting | State::Handshaking if waited > self.plan.connect_timeout => {
                    self.tally.handshake_errors += 1;
                    self.tally.error("handshake timeout");
                    self.drop_session(i);
                }
                State::Leaving if self.conns[i].outstanding == 0 || waited > LEAVE_WAIT => self.close(i),
                State::Closing if waited > CLOSE_WAIT => {
                    self.tally.error("close not answered in time");
                    self.drop_session(i);
                    self.conns[i].reconnect = true;
                }
                _ => {}
            }
        }
        for i in transit {
            let conn = &self.conns[i];
            if conn.state == State::Closed && conn.reconnect && reconnect {
                self.tally.reconnects += 1;
                self.connect(i)?;
            } else if !matches!(conn.state, State::Open | State::Closed) {
                self.transit.push(i);
            }
        }
        self.transit.sort_unstable();
        self.transit.dedup();
        Ok(())
    }

    /// The traffic: phases of sends and churn until `end`, then a drain
    /// until every expected delivery has arrived and every session has
    /// settled, or `drain_end`.
    fn traffic(&mut self, start: Instant, end: Instant, drain_end: Instant) -> Result<()> {
        let mut events = Events::with_capacity(4096);
        loop {
            let now = Instant::now();
            if now < end {
                let elapsed = now - start;
                let phase = (elapsed.as_nanos() / self.plan.phase.as_nanos()) as u64;
                let in_phase = Duration::from_nanos((elapsed.as_nanos() % self.plan.phase.as_nanos()) as u64);
                self.send_due(phase, in_phase);
                self.churn(phase, elapsed);
            }
            self.advance(true)?;
            if now >= end && ((self.pending == 0 && self.transit.is_empty()) || now >= drain_end) {
                return Ok(());
            }
            let wait = if now < end { Duration::from_millis(1) } else { Duration::from_millis(10) };
            self.poll.poll(&mut events, Some(wait))?;
            for event in events.iter() {
                self.on_event(event.token().0);
            }
            self.progress.sent.fetch_add(std::mem::take(&mut self.unreported_sent), Ordering::Relaxed);
            self.progress.delivered.fetch_add(std::mem::take(&mut self.unreported_delivered), Ordering::Relaxed);
        }
    }

    /// Closes every session with a close handshake and waits (bounded) for
    /// the server to close each TCP connection.
    fn close_all(&mut self) -> Result<()> {
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Open | State::Leaving => self.close(i),
                State::Connecting | State::Handshaking => {
                    self.tally.handshake_errors += 1;
                    self.tally.error("handshake unfinished at the end");
                    self.drop_session(i);
                }
                State::Closing | State::Closed => {}
            }
            self.conns[i].reconnect = false;
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        let mut events = Events::with_capacity(1024);
        while self.conns.iter().any(|c| c.state == State::Closing) && Instant::now() < deadline {
            self.poll.poll(&mut events, Some(Duration::from_millis(50)))?;
            for event in events.iter() {
                self.on_event(event.token().0);
            }
        }
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Closing {
                self.tally.error("close not answered in time");
            }
            self.drop_session(i);
        }
        self.progress.delivered.fetch_add(std::mem::take(&mut self.unreported_delivered), Ordering::Relaxed);
        Ok(())
    }

    /// What the ledger says was not delivered.
    fn lost(&self) -> u64 {
        self.ledger.iter().map(|s| u64::from((s.expected & !s.delivered).count_ones())).sum()
    }
}

/// One look at the server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since the traffic started (negative before it).
    pub t_secs: f64,
    /// `start` (before connecting), `ramped`, `traffic`, `end of traffic`
    /// (after the drain, every connection still open), `closed` (after
    /// every connection closed).
    pub stage: &'static str,
    pub rss_bytes: u64,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub cpu_secs: f64,
    pub fds: u64,
    pub connections_open: u64,
    pub rooms_resident: u64,
    /// Counters since the start sample.
    pub rooms_evicted: u64,
    pub rooms_woken: u64,
    pub rooms_created: u64,
    /// Messages sent and expected deliveries made per second since the
    /// previous sample.
    pub sent_per_sec: f64,
    pub delivered_per_sec: f64,
}

/// What a `soak` run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub connections: usize,
    pub rooms: usize,
    pub members_per_room: usize,
    pub active_fraction: f64,
    pub active_rooms_per_phase: usize,
    pub phase_secs: f64,
    pub duration_secs: f64,
    pub rate: f64,
    pub churn_per_sec: f64,
    pub message_bytes: usize,
    pub run_id: String,
    pub connect_secs: f64,
    pub samples: Vec<Sample>,
    pub messages_sent: u64,
    /// Sends due in a room with no open member at the time.
    pub sends_skipped: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries to a session its sender had not yet confirmed (see the
    /// module documentation): not expected, not counted, not errors.
    pub unconfirmed_deliveries: u64,
    /// Frames replayed from the chat history to new sessions, of this run.
    pub history_frames: u64,
    /// Frames not of this run (earlier runs' history, other clients).
    pub foreign_frames: u64,
    pub handshakes: u64,
    pub reconnects: u64,
    pub churn_skipped: u64,
    pub handshake_errors: u64,
    pub unexpected_closes: u64,
    pub errors: HashMap<String, u64>,
    pub error_count: u64,
    pub rooms_evicted: u64,
    pub rooms_woken: u64,
    pub rooms_created: u64,
    pub fds_start: u64,
    pub fds_ramped: u64,
    pub fds_end: u64,
    pub fds_back_to_start: bool,
    pub connections_open_start: u64,
    pub connections_open_end: u64,
    pub connections_back_to_start: bool,
    /// RSS at the first sample after ramp-up and at the end of the traffic.
    pub rss_ramped_bytes: u64,
    /// The growth baseline: the first sample once every room has had an
    /// active phase (warm-up), or the ramped-up one in a shorter run.
    pub rss_baseline_secs: f64,
    pub rss_baseline_bytes: u64,
    pub rss_end_of_traffic_bytes: u64,
    pub rss_growth_bytes: i64,
    pub rss_growth_pct: f64,
    pub rss_min_bytes: u64,
    pub rss_max_bytes: u64,
    /// Least-squares slope of RSS over the samples from the baseline on.
    pub rss_trend_mib_per_min: f64,
    pub rss_tolerance_pct: f64,
    pub rss_within_tolerance: bool,
    pub rss_closed_bytes: u64,
    pub delivery_latency_us: Percentiles,
    pub handshake_latency_us: Percentiles,
}

/// Takes and prints one sample.
struct Sampler {
    pid: u32,
    addr: std::net::SocketAddr,
    start: Instant,
    base: RoomCounts,
    samples: Vec<Sample>,
    progress: Arc<Progress>,
    last: (Instant, u64, u64),
}

impl Sampler {
    fn take(&mut self, stage: &'static str) -> Result<()> {
        let mut counts = room_counts(self.addr)?;
        // The server may still be closing the previous /metrics request's
        // socket: the fewest descriptors, and the fewest open connections,
        // of a few reads 20 ms apart. A leaked one stays in every read.
        let mut fds = target::open_fds(self.pid)?;
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(20));
            fds = fds.min(target::open_fds(self.pid)?);
            counts.connections_open = counts.connections_open.min(room_counts(self.addr)?.connections_open);
        }
        let proc: ProcSample = target::sample(self.pid)?;
        let now = Instant::now();
        let (sent, delivered) =
            (self.progress.sent.load(Ordering::Relaxed), self.progress.delivered.load(Ordering::Relaxed));
        let secs = now.duration_since(self.last.0).as_secs_f64().max(1e-9);
        let per_sec = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
        let t_secs = if now >= self.start {
            now.duration_since(self.start).as_secs_f64()
        } else {
            -self.start.duration_since(now).as_secs_f64()
        };
        let sample = Sample {
            t_secs,
            stage,
            rss_bytes: proc.rss_bytes,
            rss_anon_bytes: proc.rss_anon_bytes,
            rss_file_bytes: proc.rss_file_bytes,
            cpu_secs: proc.cpu_secs,
            fds,
            connections_open: counts.connections_open,
            rooms_resident: counts.resident,
            rooms_evicted: counts.evicted.saturating_sub(self.base.evicted),
            rooms_woken: counts.woken.saturating_sub(self.base.woken),
            rooms_created: counts.created.saturating_sub(self.base.created),
            sent_per_sec: if self.samples.is_empty() { 0.0 } else { per_sec(sent, self.last.1) },
            delivered_per_sec: if self.samples.is_empty() { 0.0 } else { per_sec(delivered, self.last.2) },
        };
        self.last = (now, sent, delivered);
        print_sample(&sample);
        self.samples.push(sample);
        Ok(())
    }
}

pub fn print_sample_header() {
    println!(
        "{:>8}  {:<14} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8} {:>11}",
        "t (s)",
        "stage",
        "RSS MiB",
        "anon",
        "file",
        "fds",
        "conns",
        "resident",
        "evicted",
        "woken",
        "sent/s",
        "delivered/s"
    );
}

fn print_sample(s: &Sample) {
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "{:>8.1}  {:<14} {:>8.1} {:>7.1} {:>7.1} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8.0} {:>11.0}",
        s.t_secs,
        s.stage,
        mib(s.rss_bytes),
        mib(s.rss_anon_bytes),
        mib(s.rss_file_bytes),
        s.fds,
        s.connections_open,
        s.rooms_resident,
        s.rooms_evicted,
        s.rooms_woken,
        s.sent_per_sec,
        s.delivered_per_sec
    );
    let _ = std::io::stdout().flush();
}

/// A run id for the messages: different for every run, so history from an
/// earlier run against the same data directory is recognised.
fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

pub fn run(plan: Plan) -> Result<Report> {
    assert!(
        plan.rooms >= 1
            && plan.connections >= 2 * plan.rooms
            && plan.members_per_room() <= MAX_MEMBERS_PER_ROOM
            && (1..=plan.rooms).contains(&plan.active_rooms)
            && !plan.phase.is_zero()
            && !plan.sample_every.is_zero()
            && (1..=plan.rooms.min(64)).contains(&plan.threads),
        "the CLI validates the plan"
    );
    let plan = Arc::new(plan);
    let run = run_id();
    let epoch = Instant::now();
    let progress = Arc::new(Progress::default());
    let base = room_counts(plan.target.addr)?;
    let mut sampler = Sampler {
        pid: plan.server_pid,
        addr: plan.target.addr,
        start: epoch,
        base,
        samples: Vec::new(),
        progress: progress.clone(),
        last: (epoch, 0, 0),
    };
    print_sample_header();
    sampler.take("start")?;

    let threads = plan.threads;
    // Workers and this thread meet when all are connected, to start the
    // traffic, when the traffic and its drain are over (for the last sample
    // with every connection open), and to start closing.
    let [connected, go, drained, closing] = std::array::from_fn(|_| Arc::new(Barrier::new(threads + 1)));
    let schedule = Arc::new(Mutex::new(None::<(Instant, Instant, Instant)>));
    let mut handles = Vec::new();
    for index in 0..threads {
        let (plan, connected, go, drained, closing) =
            (plan.clone(), connected.clone(), go.clone(), drained.clone(), closing.clone());
        let (schedule, progress) = (schedule.clone(), progress.clone());
        handles.push(std::thread::spawn(move || -> Result<(Tally, u64)> {
            let mut worker = Worker::new(plan, index, run, epoch, progress)?;
            let result = worker.connect_all();
            connected.wait();
            go.wait();
            let result = result.and_then(|()| {
                let (start, end, drain_end) =
                    schedule.lock().expect("no worker panics holding the lock").expect("set before go");
                worker.traffic(start, end, drain_end)
            });
            // Even a failed worker meets the others, so none waits for it forever.
            drained.wait();
            closing.wait();
            result?;
            worker.close_all()?;
            let lost = worker.lost();
            Ok((worker.tally, lost))
        }));
    }
    let connect_started = Instant::now();
    connected.wait();
    let connect_secs = connect_started.elapsed().as_secs_f64();
    sampler.start = Instant::now();
    sampler.take("ramped")?;
    let start = Instant::now();
    sampler.start = start;
    let end = start + plan.duration;
    *schedule.lock().expect("not poisoned") = Some((start, end, end + plan.drain));
    go.wait();

    // Sampling is the scenario: the server is looked at on a fixed clock.
    let mut next = start + plan.sample_every;
    while next < end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        sampler.take("traffic")?;
        next += plan.sample_every;
    }
    drained.wait();
    sampler.take("end of traffic")?;
    closing.wait();
    let mut tallies = Vec::new();
    let mut lost = 0;
    for handle in handles {
        let (tally, worker_lost) = handle.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
        tallies.push(tally);
        lost += worker_lost;
    }

    // Every close was a handshake: wait (bounded) for the server to count
    // its sockets back down, then look once more.
    let start_open = sampler.samples[0].connections_open;
    let settle = Instant::now() + SETTLE_WAIT;
    while room_counts(plan.target.addr)?.connections_open > start_open && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
    }
    sampler.take("closed")?;
    Ok(report(&plan, run, connect_secs, sampler.samples, tallies, lost))
}

fn report(plan: &Plan, run: u32, connect_secs: f64, samples: Vec<Sample>, tallies: Vec<Tally>, lost: u64) -> Report {
    let mut t = Tally::new();
    for w in tallies {
        t.sent += w.sent;
        t.deliveries_expected += w.deliveries_expected;
        t.deliveries += w.deliveries;
        t.unconfirmed += w.unconfirmed;
        t.history_frames += w.history_frames;
        t.foreign_frames += w.foreign_frames;
        t.duplicates += w.duplicates;
        t.sends_skipped += w.sends_skipped;
        t.reconnects += w.reconnects;
        t.churn_skipped += w.churn_skipped;
        t.handshakes += w.handshakes;
        t.handshake_errors += w.handshake_errors;
        t.unexpected_closes += w.unexpected_closes;
        for (kind, n) in w.errors {
            *t.errors.entry(kind).or_default() += n;
        }
        t.latency.add(&w.latency).expect("histograms share bounds");
        t.handshake.add(&w.handshake).expect("histograms share bounds");
    }
    assert_eq!(t.deliveries + lost, t.deliveries_expected, "every expected delivery is made or lost");
    let at = |stage: &str| samples.iter().find(|s| s.stage == stage).expect("every stage is sampled");
    let (first, ramped, end, closed) = (at("start"), at("ramped"), at("end of traffic"), at("closed"));
    let traffic: Vec<&Sample> =
        samples.iter().filter(|s| matches!(s.stage, "ramped" | "traffic" | "end of traffic")).collect();
    // Warm-up: until every room has had its first active phase, rooms fill
    // their history and storage pages for the first time. Growth after that
    // is what a leak would show as; with a run too short for it, the
    // ramped-up sample is the baseline.
    let cycle_phases = plan.rooms.div_ceil(plan.active_rooms.max(1)) as f64;
    let warm_up_secs = cycle_phases * plan.phase.as_secs_f64();
    let baseline = traffic
        .iter()
        .copied()
        .find(|s| s.stage == "traffic" && s.t_secs >= warm_up_secs)
        .filter(|s| s.t_secs < end.t_secs)
        .unwrap_or(ramped);
    let steady: Vec<&Sample> = traffic.iter().copied().filter(|s| s.t_secs >= baseline.t_secs).collect();
    let rss_growth_bytes = end.rss_bytes as i64 - baseline.rss_bytes as i64;
    let rss_growth_pct = rss_growth_bytes as f64 * 100.0 / baseline.rss_bytes.max(1) as f64;
    Report {
        connections: plan.connections,
        rooms: plan.rooms,
        members_per_room: plan.members_per_room(),
        active_fraction: plan.active_fraction,
        active_rooms_per_phase: plan.active_rooms,
        phase_secs: plan.phase.as_secs_f64(),
        duration_secs: plan.duration.as_secs_f64(),
        rate: plan.rate,
        churn_per_sec: plan.churn_per_sec,
        message_bytes: MESSAGE_BYTES,
        run_id: format!("{run:08x}"),
        connect_secs,
        messages_sent: t.sent,
        sends_skipped: t.sends_skipped,
        deliveries_expected: t.deliveries_expected,
        deliveries: t.deliveries,
        lost,
        duplicates: t.duplicates,
        unconfirmed_deliveries: t.unconfirmed,
        history_frames: t.history_frames,
        foreign_frames: t.foreign_frames,
        handshakes: t.handshakes,
        reconnects: t.reconnects,
        churn_skipped: t.churn_skipped,
        handshake_errors: t.handshake_errors,
        unexpected_closes: t.unexpected_closes,
        error_count: t.errors.values().sum(),
        errors: t.errors,
        rooms_evicted: closed.rooms_evicted,
        rooms_woken: closed.rooms_woken,
        rooms_created: closed.rooms_created,
        fds_start: first.fds,
        fds_ramped: ramped.fds,
        fds_end: closed.fds,
        fds_back_to_start: closed.fds == first.fds,
        connections_open_start: first.connections_open,
        connections_open_end: closed.connections_open,
        connections_back_to_start: closed.connections_open <= first.connections_open,
        rss_ramped_bytes: ramped.rss_bytes,
        rss_baseline_secs: baseline.t_secs,
        rss_baseline_bytes: baseline.rss_bytes,
        rss_end_of_traffic_bytes: end.rss_bytes,
        rss_growth_bytes,
        rss_growth_pct,
        rss_min_bytes: traffic.iter().map(|s| s.rss_bytes).min().unwrap_or(0),
        rss_max_bytes: traffic.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
        rss_trend_mib_per_min: slope(&steady) * 60.0 / 1048576.0,
        rss_tolerance_pct: plan.rss_tolerance_pct,
        rss_within_tolerance: rss_growth_pct <= plan.rss_tolerance_pct,
        rss_closed_bytes: closed.rss_bytes,
        delivery_latency_us: Percentiles::from(&t.latency),
        handshake_latency_us: Percentiles::from(&t.handshake),
        samples,
    }
}

/// The least-squares slope of RSS (bytes) over time (seconds); 0 with
/// fewer than two samples.
fn slope(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.t_secs).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_bytes as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t_secs - mean_t) * (s.rss_bytes as f64 - mean_r);
        den += (s.t_secs - mean_t).powi(2);
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(connections: usize, rooms: usize, active_rooms: usize, threads: usize) -> Plan {
        Plan {
            target: Target::parse("ws://127.0.0.1:1/p/{room}").unwrap(),
            connections,
            rooms,
            active_rooms,
            active_fraction: active_rooms as f64 / rooms as f64,
            phase: Duration::from_secs(1),
            duration: Duration::from_secs(1),
            rate: 1.0,
            churn_per_sec: 0.0,
            sample_every: Duration::from_secs(1),
            drain: Duration::ZERO,
            connect_timeout: Duration::from_secs(1),
            threads,
            source_ips: Vec::new(),
            server_pid: 1,
            rss_tolerance_pct: 10.0,
        }
    }

    #[test]
    fn messages_round_trip_at_their_fixed_size() {
        let bytes = encode(0xdead_beef, 14_999, 7, 123_456_789, u64::MAX - 1);
        assert_eq!(bytes.len(), MESSAGE_BYTES);
        assert!(bytes.is_ascii());
        let stamp = decode(&bytes).unwrap();
        assert_eq!(stamp, Stamp { run: 0xdead_beef, slot: 14_999, session: 7, id: 123_456_789, sent_ns: u64::MAX - 1 });
        assert_eq!(decode(&bytes[..63]), None);
        assert_eq!(decode(&[b'x'; MESSAGE_BYTES]), None);
        let mut bad = bytes;
        bad[20] = b'g';
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn phases_rotate_the_active_window_over_every_room() {
        let p = plan(600, 300, 60, 2);
        for phase in 0..12 {
            let active: Vec<usize> = (0..300).filter(|&r| p.active_index(r, phase).is_some()).collect();
            assert_eq!(active.len(), 60, "phase {phase}");
            for index in 0..60 {
                let room = p.active_room(phase, index);
                assert_eq!(p.active_index(room, phase), Some(index));
            }
        }
        // Each room is active one phase in five, and silent for the other four.
        for room in 0..300 {
            let active = (0..5).filter(|&phase| p.active_index(room, phase).is_some()).count();
            assert_eq!(active, 1, "room {room}");
        }
        let all = plan(20, 4, 4, 1);
        assert!((0..4).all(|r| all.active_index(r, 3).is_some()));
    }

    #[test]
    fn members_of_a_room_share_a_worker() {
        let p = plan(30, 4, 1, 3);
        for slot in 0..30 {
            assert_eq!(p.room_of(slot), slot % 4);
            assert_eq!(p.member_of(slot), slot / 4);
        }
        assert_eq!(p.members_per_room(), 8);
        let workers: Vec<Worker> =
            (0..3).map(|w| Worker::new(Arc::new(p.clone()), w, 1, Instant::now(), Arc::default()).unwrap()).collect();
        let mut seen = [0; 30];
        for (w, worker) in workers.iter().enumerate() {
            for (i, conn) in worker.conns.iter().enumerate() {
                assert_eq!(p.worker_of_room(p.room_of(conn.slot)), w);
                assert_eq!(worker.conn_of(conn.slot), i);
                seen[conn.slot] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every slot belongs to exactly one worker");
    }
}
