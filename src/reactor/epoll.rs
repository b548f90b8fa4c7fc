//! The epoll backend, for where io_uring is blocked (Docker's and
//! containerd's default seccomp profiles, gVisor, `kernel.io_uring_disabled`).
//!
//! Readiness comes from `mio` (epoll, edge-triggered); the reads, writes and
//! accepts are plain non-blocking system calls. All sockets of a core read
//! into one shared buffer, lent to the event callback, so an idle socket pins
//! no buffer here either. A send writes the frames at once with one
//! `sendmsg`; when the socket is full, it waits for the socket to become
//! writable and then reports zero bytes so the core tries again. Each socket's
//! registration carries a sequence number, so a stale event for a slot that
//! has since been reused is ignored.
#![allow(unsafe_code)]

use super::backend::{Backend, Event, Received, MAX_SEND_FRAMES};
use crate::config::Limits;
use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

const WAKE: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);
/// Bytes of the core's shared read buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Full buffers read from one socket per turn before the others get theirs.
const READ_BUDGET: usize = 4;
/// Connections accepted per turn before the sockets are served.
const ACCEPT_BUDGET: usize = 256;

/// A socket's registration.
#[derive(Debug, Clone, Copy, Default)]
struct Reg {
    fd: RawFd,
    seq: u32,
    live: bool,
    /// A send found the socket full and waits for it to become writable.
    send_blocked: bool,
}

pub(crate) struct Epoll {
    poll: Poll,
    events: Events,
    /// Readiness taken from `events`: (token, readable, writable).
    ready: Vec<(Token, bool, bool)>,
    wake_fd: RawFd,
    listener: Option<RawFd>,
    /// The listener may have more connections waiting.
    accept_more: bool,
    regs: Vec<Reg>,
    next_seq: u32,
    buf: Box<[u8]>,
    /// Sockets whose read budget ran out with data left: (slot, seq).
    more: Vec<(u32, u32)>,
    /// Sends that finished, to report: (slot, result).
    sent: Vec<(u32, i32)>,
    /// Sockets that could not be watched: their receive ends at once.
    failed: Vec<u32>,
}

fn token(slot: u32, seq: u32) -> Token {
    debug_assert!(slot < (1 << 24), "slots fit in 24 bits (max_connections_per_core is validated)");
    Token(((seq as usize) << 24) | slot as usize)
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

impl Backend for Epoll {
    const NAME: &'static str = "epoll";

    fn new(wake_fd: RawFd, _limits: &Limits) -> io::Result<Epoll> {
        let poll = Poll::new()?;
        poll.registry().register(&mut SourceFd(&wake_fd), WAKE, Interest::READABLE)?;
        Ok(Epoll {
            poll,
            events: Events::with_capacity(4096),
            ready: Vec::with_capacity(4096),
            wake_fd,
            listener: None,
            accept_more: false,
            regs: Vec::new(),
            next_seq: 0,
            buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            more: Vec::new(),
            sent: Vec::new(),
            failed: Vec::new(),
        })
    }

    fn arm_accept(&mut self, listener: RawFd) {
        // Accepting goes on until EAGAIN, so the listener must not block.
        // (Only here: io_uring's multishot accept ends on EAGAIN from a
        // non-blocking listener instead of waiting.)
        let mut on: libc::c_int = 1;
        // SAFETY: the listener fd is open for the core's lifetime, and
        // FIONBIO reads one int from the pointer.
        if unsafe { libc::ioctl(listener, libc::FIONBIO, &mut on) } != 0 {
            tracing::error!(error = %io::Error::last_os_error(), "cannot make the listener non-blocking");
            return;
        }
        match self.poll.registry().register(&mut SourceFd(&listener), LISTENER, Interest::READABLE) {
            Ok(()) => {
                self.listener = Some(listener);
                // Connections may be waiting already.
                self.accept_more = true;
            }
            Err(e) => tracing::error!(error = %e, "cannot watch the listener"),
        }
    }

    fn arm_recv(&mut self, slot: u32, fd: RawFd) {
        let index = slot as usize;
        if self.regs.len() <= index {
            self.regs.resize(index + 1, Reg::default());
        }
        self.next_seq = self.next_seq.wrapping_add(1) & 0xff_ffff;
        let seq = self.next_seq;
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self.poll.registry().register(&mut SourceFd(&fd), token(slot, seq), interest) {
            Ok(()) => {
                self.regs[index] = Reg { fd, seq, live: true, send_blocked: false };
                // Data may have arrived before the registration.
                self.more.push((slot, seq));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch a socket; closing it");
                self.regs[index] = Reg { fd, seq, live: false, send_blocked: false };
                self.failed.push(slot);
            }
        }
    }

    #[inline]
    fn send<'a>(&mut self, slot: u32, fd: RawFd, frames: impl Iterator<Item = &'a Bytes>, offset: usize) {
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_SEND_FRAMES];
        let mut count = 0;
        for (i, frame) in frames.take(MAX_SEND_FRAMES).enumerate() {
            let skip = if i == 0 { offset } else { 0 };
            iov[i] = libc::iovec { iov_base: frame[skip..].as_ptr() as *mut _, iov_len: frame.len() - skip };
            count += 1;
        }
        assert!(count > 0, "send is only started for a non-empty queue");
        // SAFETY: msghdr is a plain C struct for which all zeroes is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = count as _;
        // SAFETY: `msg` points at `count` iovecs, each into a live `Bytes`
        // that the caller holds for the duration of this call; the kernel
        // copies the data before returning. `fd` is an open socket (the core
        // closes a socket only once the backend reported its receive ended).
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            self.sent.push((slot, n as i32));
            return;
        }
        match last_errno() {
            libc::EAGAIN => match self.regs.get_mut(slot as usize).filter(|r| r.live && r.fd == fd) {
                Some(reg) => reg.send_blocked = true,
                None => self.sent.push((slot, -libc::EPIPE)),
            },
            libc::EINTR => self.sent.push((slot, 0)),
            errno => self.sent.push((slot, -errno)),
        }
    }

    fn complete(&mut self, mut on: impl FnMut(Event<'_>)) {
        for (slot, result) in std::mem::take(&mut self.sent) {
            on(Event::Sent { slot, result });
        }
        for slot in std::mem::take(&mut self.failed) {
            on(Event::Recv { slot, armed: false, outcome: Received::Error });
        }
        let ready = std::mem::take(&mut self.ready);
        for &(tok, readable, writable) in &ready {
            match tok {
                WAKE => self.drain_wake(),
                LISTENER => self.accept_more = true,
                Token(t) => {
                    let (slot, seq) = ((t & 0xff_ffff) as u32, (t >> 24) as u32);
                    let Some(reg) = self.regs.get_mut(slot as usize).filter(|r| r.live && r.seq == seq) else {
                        continue;
                    };
                    if writable && reg.send_blocked {
                        reg.send_blocked = false;
                        on(Event::Sent { slot, result: 0 });
                    }
                    if readable {
                        self.read(slot, &mut on);
                    }
                }
            }
        }
        self.ready = ready;
        for (slot, seq) in std::mem::take(&mut self.more) {
            if self.regs.get(slot as usize).is_some_and(|r| r.live && r.seq == seq) {
                self.read(slot, &mut on);
            }
        }
        if self.accept_more {
            self.accept(&mut on);
        }
    }

    fn wait(&mut self, block: bool, timeout: Duration) -> io::Result<()> {
        let pending = !self.more.is_empty() || !self.sent.is_empty() || !self.failed.is_empty() || self.accept_more;
        let timeout = if block && !pending { timeout } else { Duration::ZERO };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.ready.clear();
        for event in self.events.iter() {
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            self.ready.push((event.token(), readable, event.is_writable()));
        }
        Ok(())
    }
}

impl Epoll {
    /// Reads what the socket has, up to the budget, lending each chunk to `on`.
    fn read(&mut self, slot: u32, on: &mut impl FnMut(Event<'_>)) {
        let reg = self.regs[slot as usize];
        for _ in 0..READ_BUDGET {
            // SAFETY: `reg.fd` is open (it is registered and live, and the
            // core closes a socket only after its receive has ended), and the
            // buffer is valid for writes of its whole length.
            let n = unsafe { libc::recv(reg.fd, self.buf.as_mut_ptr().cast(), self.buf.len(), libc::MSG_DONTWAIT) };
            match n {
                n if n > 0 => {
                    let n = n as usize;
                    on(Event::Recv { slot, armed: true, outcome: Received::Data(&mut self.buf[..n]) });
                    if n < self.buf.len() {
                        // Drained for now; new data brings a new edge.
                        return;
                    }
                }
                0 => return self.end(slot, Received::Eof, on),
                _ => match last_errno() {
                    libc::EAGAIN => return,
                    libc::EINTR => {}
                    _ => return self.end(slot, Received::Error, on),
                },
            }
        }
        self.more.push((slot, reg.seq));
    }

    /// The socket's receive is over: stop watching it, settle a send still
    /// waiting, and tell the core, which may then close the socket.
    fn end(&mut self, slot: u32, outcome: Received<'_>, on: &mut impl FnMut(Event<'_>)) {
        let reg = &mut self.regs[slot as usize];
        reg.live = false;
        let _ = self.poll.registry().deregister(&mut SourceFd(&reg.fd));
        if std::mem::take(&mut reg.send_blocked) {
            on(Event::Sent { slot, result: -libc::EPIPE });
        }
        on(Event::Recv { slot, armed: false, outcome });
    }

    fn accept(&mut self, on: &mut impl FnMut(Event<'_>)) {
        let Some(listener) = self.listener else {
            self.accept_more = false;
            return;
        };
        for _ in 0..ACCEPT_BUDGET {
            // SAFETY: the listener fd is open for the core's lifetime; null
            // address pointers ask for no peer address.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: a successful accept4 returns a new fd owned by nobody else.
                on(Event::Accepted(unsafe { OwnedFd::from_raw_fd(fd) }));
                continue;
            }
            match last_errno() {
                libc::EAGAIN => {
                    self.accept_more = false;
                    return;
                }
                libc::EINTR | libc::ECONNABORTED | libc::EPROTO => {}
                errno @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    // Out of descriptors or memory: stop, and let the core
                    // arm accepting again after a pause.
                    let _ = self.poll.registry().deregister(&mut SourceFd(&listener));
                    self.listener = None;
                    self.accept_more = false;
                    on(Event::AcceptError(io::Error::from_raw_os_error(errno)));
                    on(Event::AcceptStopped { after_error: true });
                    return;
                }
                errno => on(Event::AcceptError(io::Error::from_raw_os_error(errno))),
            }
        }
    }

    fn drain_wake(&mut self) {
        let mut counter = 0u64;
        // SAFETY: the eventfd outlives the core, and `counter` is valid for
        // an 8-byte write. One read resets the counter; a failed read means
        // it is already zero.
        let _ = unsafe { libc::read(self.wake_fd, (&mut counter as *mut u64).cast(), 8) };
    }
}
