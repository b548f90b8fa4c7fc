//! A socket's record and its phases: accepted, fed the bytes it receives
//! (the phase machine that hands them to the HTTP or WebSocket path),
//! closed (drained, lingering, or cut) and freed once no operation refers
//! to it.

use super::backend::Received;
use super::State;
use crate::http::{self, BodyDecoder, RequestHead, Response};
use crate::outq::WriteQueue;
use crate::party::ConnRef;
use crate::ws;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;
use thin_vec::ThinVec;

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
pub(super) struct HttpState {
    pub(super) head: RequestHead,
    pub(super) body: Option<BodyDecoder>,
    pub(super) keep_alive: bool,
    /// For an upgrade: the client's key, needed for the 101.
    pub(super) ws_key: Option<String>,
    /// For an upgrade: the `Sec-WebSocket-Extensions` answer when
    /// permessage-deflate was negotiated.
    pub(super) ws_deflate: Option<&'static str>,
    /// For a publish: cores yet to answer, and members reached so far.
    pub(super) publish: Option<(usize, u64)>,
    /// The CORS headers its response carries (the party's `cors`, for an
    /// allowed origin).
    pub(super) cors: Vec<(String, String)>,
}

/// One socket. Small, and allocation-free while idle: the read buffer holds
/// only a partial head or frame, the write queue only unsent frames.
pub(super) struct ConnRecord {
    pub(super) fd: OwnedFd,
    pub(super) gen: u32,
    pub(super) phase: Phase,
    pub(super) recv_armed: bool,
    pub(super) sending: bool,
    pub(super) in_dirty: bool,
    pub(super) joined: bool,
    /// The socket negotiated permessage-deflate: it gets broadcasts'
    /// compressed frames, and its compressed messages are inflated.
    pub(super) deflate: bool,
    /// A slow consumer's close waits for the send in flight: once it
    /// completes, what it did not start is discarded and the close queued.
    pub(super) close_after_send: bool,
    pub(super) deadline_ms: u64,
    pub(super) local_room: u32,
    /// The socket's key in its local room's tag index.
    pub(super) member_key: u32,
    pub(super) member: u32,
    /// The close code we sent, reported to the room if the peer never answers.
    pub(super) close_code: u16,
    /// A thin vector (one pointer): it is empty, and unallocated, unless a
    /// head or frame arrived in parts.
    pub(super) read_buf: ThinVec<u8>,
    pub(super) out: WriteQueue,
    pub(super) decoder: ws::Decoder,
    pub(super) http: Option<Box<HttpState>>,
}

/// The size of a socket's record, pinned here and reported in the docs.
pub const CONN_RECORD_BYTES: usize = size_of::<ConnRecord>();

const _: () = assert!(CONN_RECORD_BYTES <= 120, "a connection record stays compact");

pub(super) fn shutdown(fd: &OwnedFd, how: std::net::Shutdown) {
    // An error here means the socket is already gone, which is what we want.
    let _ = socket2::SockRef::from(fd).shutdown(how);
}

/// The record of a socket that is still being served.
#[inline]
pub(super) fn live(conns: &mut slab::Slab<ConnRecord>, slot: u32) -> Option<&mut ConnRecord> {
    conns.get_mut(slot as usize).filter(|c| c.phase != Phase::Dead)
}

#[inline]
pub(super) fn mark_dirty(conn: &mut ConnRecord, slot: u32, dirty: &mut Vec<u32>) {
    if !conn.in_dirty {
        conn.in_dirty = true;
        dirty.push(slot);
    }
}

impl State {
    pub(super) fn on_accept(&mut self, socket: OwnedFd) {
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
        self.reset_rates(slot);
        self.head_timers.push_back((deadline_ms, slot, self.next_gen));
        self.rearm.push((slot, self.next_gen));
        self.shared.stats[usize::from(self.index)].connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A receive's outcome for socket `slot`.
    #[inline]
    pub(super) fn on_recv(&mut self, slot: u32, armed: bool, outcome: Received<'_>) {
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

    /// Feeds received bytes (or, with `None`, only what is buffered) to the
    /// socket's current phase. Unconsumed bytes are kept in the record.
    pub(super) fn on_data(&mut self, slot: u32, data: Option<&mut [u8]>) {
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
    pub(super) fn process(&mut self, slot: u32, buf: &mut [u8]) -> usize {
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

    #[inline]
    pub(super) fn conn_ref(&self, slot: u32) -> ConnRef {
        ConnRef { core: self.index, slot, gen: self.conns[slot as usize].gen }
    }

    /// The slot of `conn` if it is still that socket and in `phase`.
    #[inline]
    pub(super) fn current(&self, conn: ConnRef, phase: Phase) -> Option<u32> {
        debug_assert_eq!(conn.core, self.index, "messages for a socket go to its core");
        self.conns.get(conn.slot as usize).filter(|c| c.gen == conn.gen && c.phase == phase).map(|_| conn.slot)
    }

    pub(super) fn drain_then_close(&mut self, slot: u32) {
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
    pub(super) fn linger(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::Lingering;
        shutdown(&conn.fd, std::net::Shutdown::Write);
    }

    /// The peer closed its side or the socket failed.
    pub(super) fn on_eof(&mut self, slot: u32) {
        self.abort(slot);
    }

    /// Ends the socket now: the room hears 1006 if it has not heard otherwise.
    /// With bytes still to write, the kernel may hold part of a frame: the
    /// peer is then reset when the socket closes, not sent a clean end after
    /// a cut frame (which would look to it like a healthy, idle socket).
    pub(super) fn abort(&mut self, slot: u32) {
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
    pub(super) fn release_if_done(&mut self, slot: u32) {
        let Some(conn) = self.conns.get(slot as usize) else { return };
        if conn.phase == Phase::Dead && !conn.recv_armed && !conn.sending {
            // Dropping the record closes the socket.
            self.conns.remove(slot as usize);
            self.shared.stats[usize::from(self.index)].connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Shutdown: open WebSockets get close 1001 (clients reconnect), the
    /// rest are cut.
    pub(super) fn close_all_sockets(&mut self) {
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
}
