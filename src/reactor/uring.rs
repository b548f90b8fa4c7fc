//! The io_uring backend: the only code in dormouse that talks to the kernel's
//! ring, and the only module with `unsafe`.
//!
//! One `Uring` per core. It arms a multishot accept on the core's listener, a
//! multishot receive per socket that draws from a provided-buffer ring (so an
//! idle socket pins no receive buffer), a read on the core's wake eventfd, and
//! sends. Each send owns clones of the `Bytes` it writes until its completion
//! arrives, so the kernel never reads freed memory, whatever the caller does
//! with its queue in the meantime. Completions become [`Event`]s; received
//! data is lent to the event callback straight from the provided buffer, which
//! goes back to the kernel when the callback returns.
#![allow(unsafe_code)]

use super::backend::{Backend, Event, Received, MAX_SEND_FRAMES};
use crate::config::Limits;
use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// The buffer group id of the core's provided-buffer ring.
const BUF_GROUP: u16 = 0;

/// What a completion was for, encoded in the low byte of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept,
    Wake,
    Recv,
    Send,
}

impl Op {
    fn code(self) -> u64 {
        match self {
            Op::Accept => 1,
            Op::Wake => 2,
            Op::Recv => 3,
            Op::Send => 4,
        }
    }

    fn from_code(code: u64) -> Op {
        match code {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Recv,
            4 => Op::Send,
            _ => unreachable!("user data is only ever built by Uring::user_data"),
        }
    }
}

/// User data layout: op in bits 0..8, socket slot in bits 8..32, the send's
/// `in_flight` id (when the op is a send) in bits 32..64.
fn user_data(op: Op, slot: u32, batch: u32) -> u64 {
    debug_assert!(slot < (1 << 24), "slots fit in 24 bits (max_connections_per_core is validated)");
    op.code() | (u64::from(slot) << 8) | (u64::from(batch) << 32)
}

/// One completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy)]
struct Completion {
    op: Op,
    slot: u32,
    result: i32,
    flags: u32,
    batch: u32,
}

impl Completion {
    /// More completions will follow from the same multishot operation.
    fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The socket an accept completion delivered, now owned by the caller.
    fn accepted(&self) -> Option<OwnedFd> {
        debug_assert_eq!(self.op, Op::Accept);
        // SAFETY: a successful accept's result is a new file descriptor that
        // nothing else in the process refers to; each completion is handled
        // once, so ownership is taken exactly once.
        (self.result >= 0).then(|| unsafe { OwnedFd::from_raw_fd(self.result) })
    }

    /// The provided buffer holding a receive's data.
    fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// What the kernel may still read for one send, kept until its completion: a
/// clone of every frame it writes (so nothing the caller does with its queue
/// can free them early) and, for a vectored send, the header and iovecs.
/// Sized to the send: a one-frame send, the common case in a fan-out, holds
/// one `Bytes` and allocates nothing.
enum InFlight {
    // Never read: holding it is the point.
    One(#[allow(dead_code)] Bytes),
    Many(Box<MsgBatch>),
}

/// The kernel-visible state of a vectored send.
struct MsgBatch {
    msg: libc::msghdr,
    iov: Vec<libc::iovec>,
    // Read only by the kernel, through `iov`.
    held: Vec<Bytes>,
}

/// Vectored-send batches kept for reuse; past this many, a finished batch is
/// freed, so a burst of concurrent sends leaves no peak-sized pool behind.
const SPARE_BATCHES: usize = 32;

pub(crate) struct Uring {
    ring: IoUring,
    bufs: BufRing,
    wake_fd: RawFd,
    wake_buf: Box<u64>,
    /// In-flight sends, by id. A vectored send's batch is boxed so the
    /// kernel's pointers into it stay valid while the slab grows.
    in_flight: slab::Slab<InFlight>,
    /// Boxed because a spare batch moves into `in_flight`, where the kernel
    /// holds pointers into it: it must not move again.
    #[allow(clippy::vec_box)]
    spare_batches: Vec<Box<MsgBatch>>,
    /// Submissions that did not fit in the submission queue yet.
    backlog: VecDeque<squeue::Entry>,
    completions: Vec<Completion>,
    /// The completions being handed out (kept for its capacity).
    scratch: Vec<Completion>,
}

impl Backend for Uring {
    const NAME: &'static str = "io_uring";

    fn new(wake_fd: RawFd, limits: &Limits) -> io::Result<Uring> {
        let buffers = u16::try_from(limits.recv_buffers_per_core).expect("buffer count is validated to fit in u16");
        let mut uring = Uring::create(wake_fd, buffers, limits.recv_buffer_bytes)?;
        uring.arm_wake();
        Ok(uring)
    }

    fn arm_accept(&mut self, listener: RawFd) {
        self.push(opcode::AcceptMulti::new(types::Fd(listener)).build().user_data(user_data(Op::Accept, 0, 0)));
    }

    fn arm_recv(&mut self, slot: u32, fd: RawFd) {
        let entry = opcode::RecvMulti::new(types::Fd(fd), BUF_GROUP).build();
        self.push(entry.user_data(user_data(Op::Recv, slot, 0)));
    }

    #[inline]
    fn send<'a>(&mut self, slot: u32, fd: RawFd, frames: impl Iterator<Item = &'a Bytes>, offset: usize) {
        self.start_send(slot, fd, frames, offset);
    }

    fn complete(&mut self, mut on: impl FnMut(Event<'_>)) {
        let mut completions = std::mem::take(&mut self.scratch);
        self.take_completions(&mut completions);
        for c in &completions {
            match c.op {
                Op::Accept => {
                    match c.accepted() {
                        Some(socket) => on(Event::Accepted(socket)),
                        None => on(Event::AcceptError(io::Error::from_raw_os_error(-c.result))),
                    }
                    if !c.more() {
                        on(Event::AcceptStopped { after_error: c.result < 0 });
                    }
                }
                Op::Wake => self.arm_wake(),
                Op::Recv => {
                    let (slot, armed) = (c.slot, c.more());
                    match c.result {
                        n if n > 0 => {
                            let id = c.buffer().expect("a successful provided-buffer receive names its buffer");
                            on(Event::Recv { slot, armed, outcome: Received::Data(self.bufs.get(id, n as usize)) });
                            self.bufs.add(id);
                        }
                        0 => on(Event::Recv { slot, armed, outcome: Received::Eof }),
                        e if -e == libc::ENOBUFS => on(Event::Recv { slot, armed, outcome: Received::NoBuffers }),
                        _ => on(Event::Recv { slot, armed, outcome: Received::Error }),
                    }
                }
                Op::Send => on(Event::Sent { slot: c.slot, result: c.result }),
            }
        }
        self.bufs.publish();
        self.scratch = completions;
    }

    fn wait(&mut self, block: bool, timeout: Duration) -> io::Result<()> {
        self.submit_and_wait(block, timeout)
    }
}

impl Uring {
    /// Sets up a ring and its provided-buffer ring. Fails with the kernel's
    /// error when io_uring, or a feature this backend needs, is unavailable.
    fn create(wake_fd: RawFd, buffer_count: u16, buffer_bytes: usize) -> io::Result<Uring> {
        let ring = IoUring::builder().setup_cqsize(16 * 1024).setup_single_issuer().build(4096)?;
        if !ring.params().is_feature_nodrop() || !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "kernel lacks IORING_FEAT_NODROP or EXT_ARG"));
        }
        let bufs = BufRing::new(&ring, buffer_count, buffer_bytes)?;
        Ok(Uring {
            ring,
            bufs,
            wake_fd,
            wake_buf: Box::new(0),
            in_flight: slab::Slab::new(),
            spare_batches: Vec::new(),
            backlog: VecDeque::new(),
            completions: Vec::with_capacity(4096),
            scratch: Vec::with_capacity(4096),
        })
    }

    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: every entry built in this module points only at memory
            // that outlives the operation: the listener and socket fds stay open
            // until their operations complete (the reactor closes a socket only
            // when it has no operation in flight), `wake_buf` lives as long as
            // the ring, and what a send reads (its frames, and a vectored
            // send's header and iovecs) is kept in `in_flight` until its
            // completion arrives.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    fn arm_wake(&mut self) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(self.wake_fd), buf.cast(), 8).build();
        self.push(entry.user_data(user_data(Op::Wake, 0, 0)));
    }

    /// Starts one send of the queued `frames` (at most `MAX_SEND_FRAMES`),
    /// skipping the first `offset` bytes of the first frame. The frames are
    /// held until the send completes.
    fn start_send<'a>(&mut self, slot: u32, fd: RawFd, frames: impl Iterator<Item = &'a Bytes>, offset: usize) {
        let mut frames = frames.take(MAX_SEND_FRAMES).peekable();
        let first = frames.next().expect("send is only started for a non-empty queue");
        debug_assert!(offset < first.len(), "a partially sent frame has bytes left");
        let (entry, in_flight) = if frames.peek().is_none() {
            let data = &first[offset..];
            let entry = opcode::Send::new(types::Fd(fd), data.as_ptr(), data.len() as u32).flags(libc::MSG_NOSIGNAL);
            (entry.build(), InFlight::One(first.clone()))
        } else {
            let mut batch = self.spare_batches.pop().unwrap_or_else(|| {
                Box::new(MsgBatch {
                    // SAFETY: msghdr is a plain C struct for which all zeroes
                    // (null pointers, zero lengths) is a valid value.
                    msg: unsafe { std::mem::zeroed() },
                    iov: Vec::new(),
                    held: Vec::new(),
                })
            });
            debug_assert!(batch.held.is_empty() && batch.iov.is_empty(), "a spare batch holds no frames");
            for (i, frame) in std::iter::once(first).chain(frames).enumerate() {
                let data = &frame[if i == 0 { offset } else { 0 }..];
                batch.iov.push(libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() });
                batch.held.push(frame.clone());
            }
            // The iovecs are complete: their buffer no longer moves.
            batch.msg.msg_iov = batch.iov.as_mut_ptr();
            batch.msg.msg_iovlen = batch.iov.len() as _;
            let entry = opcode::SendMsg::new(types::Fd(fd), &batch.msg).flags(libc::MSG_NOSIGNAL as u32);
            (entry.build(), InFlight::Many(batch))
        };
        let id = self.in_flight.insert(in_flight) as u32;
        self.push(entry.user_data(user_data(Op::Send, slot, id)));
    }

    /// Submits pending operations and waits for at least one completion, or
    /// until `timeout`, or not at all when `block` is false.
    fn submit_and_wait(&mut self, block: bool, timeout: Duration) -> io::Result<()> {
        loop {
            while let Some(entry) = self.backlog.pop_front() {
                // SAFETY: as in `push`.
                if unsafe { self.ring.submission().push(&entry) }.is_err() {
                    self.backlog.push_front(entry);
                    break;
                }
            }
            if self.backlog.is_empty() && self.backlog.capacity() > 1024 {
                // A fan-out burst overflowed the submission queue; give the
                // peak's slots back.
                self.backlog = VecDeque::new();
            }
            let result = if !block || !self.backlog.is_empty() {
                self.ring.submit()
            } else {
                let ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            };
            match result {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                // The completion queue is full: the caller must reap first.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
            if self.backlog.is_empty() || !self.ring.completion().is_empty() {
                return Ok(());
            }
        }
    }

    /// Moves the ready completions out of the ring. Send batches are released
    /// here: the kernel is done with them.
    fn take_completions(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        std::mem::swap(out, &mut self.completions);
        for cqe in self.ring.completion() {
            let data = cqe.user_data();
            let op = Op::from_code(data & 0xff);
            let completion = Completion {
                op,
                slot: ((data >> 8) & 0xff_ffff) as u32,
                batch: (data >> 32) as u32,
                result: cqe.result(),
                flags: cqe.flags(),
            };
            if op == Op::Send {
                if let InFlight::Many(mut batch) = self.in_flight.remove(completion.batch as usize) {
                    if self.spare_batches.len() < SPARE_BATCHES {
                        batch.held.clear();
                        batch.iov.clear();
                        self.spare_batches.push(batch);
                    }
                }
            }
            out.push(completion);
        }
    }
}

/// A ring of provided receive buffers shared by all sockets of one core.
struct BufRing {
    entries: *mut types::BufRingEntry,
    entries_layout: Layout,
    count: u16,
    tail: u16,
    data: *mut u8,
    data_layout: Layout,
    buffer_bytes: usize,
}

impl BufRing {
    fn new(ring: &IoUring, count: u16, buffer_bytes: usize) -> io::Result<BufRing> {
        assert!(count.is_power_of_two(), "buffer count is validated to be a power of two");
        let entries_layout = Layout::from_size_align(usize::from(count) * size_of::<types::BufRingEntry>(), 4096)
            .expect("buffer ring layout is valid");
        let data_layout =
            Layout::from_size_align(usize::from(count) * buffer_bytes, 4096).expect("buffer layout is valid");
        // SAFETY: both layouts have non-zero size (count and buffer_bytes are
        // validated to be positive).
        let (entries, data) = unsafe { (alloc::alloc_zeroed(entries_layout), alloc::alloc(data_layout)) };
        if entries.is_null() || data.is_null() {
            alloc::handle_alloc_error(entries_layout);
        }
        // Fault the buffers in now: they are a fixed per-core cost, paid at
        // start rather than as the first connections happen to touch them.
        // SAFETY: `data` is a fresh allocation of exactly this many bytes.
        unsafe { std::ptr::write_bytes(data, 0, data_layout.size()) };
        let mut bufs =
            BufRing { entries: entries.cast(), entries_layout, count, tail: 0, data, data_layout, buffer_bytes };
        // SAFETY: `entries` is a page-aligned, zeroed array of `count` entries
        // that lives until `Drop`, which unregisters it before freeing.
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.entries as u64, count, BUF_GROUP, 0)? };
        for id in 0..count {
            bufs.add(id);
        }
        bufs.publish();
        Ok(bufs)
    }

    fn add(&mut self, id: u16) {
        assert!(id < self.count, "buffer ids come from this ring");
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, so the entry is inside the allocation; the
        // kernel reads an entry only once the tail is published past it, and
        // the entry at `tail` has been consumed by the kernel (at most `count`
        // buffers are ever outstanding, since each id is added once per use).
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: `id < count`, so the buffer lies inside the data allocation.
        entry.set_addr(unsafe { self.data.add(usize::from(id) * self.buffer_bytes) } as u64);
        entry.set_len(self.buffer_bytes as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `entries` is the ring's first entry; the tail field overlaps
        // its reserved field and is a naturally aligned u16 that the kernel reads
        // with acquire ordering, so a release store publishes the entries above.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    fn get(&mut self, id: u16, len: usize) -> &mut [u8] {
        assert!(id < self.count && len <= self.buffer_bytes, "a completion names a buffer of this ring");
        // SAFETY: the range lies inside the data allocation; the kernel wrote
        // it before posting the completion and will not touch it again until
        // the id is recycled, and `&mut self` keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(usize::from(id) * self.buffer_bytes), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // The ring itself is torn down after this (field order in `Uring`), and
        // tearing down a ring releases its buffer registrations, so the kernel
        // no longer refers to this memory when it is freed below.
        // SAFETY: both pointers were allocated with these layouts in `new`.
        unsafe {
            alloc::dealloc(self.entries.cast(), self.entries_layout);
            alloc::dealloc(self.data, self.data_layout);
        }
    }
}

/// Checks that io_uring works here with every feature this backend uses: a
/// ring, a provided-buffer ring, and multishot accept and receive on a real
/// loopback connection. The error names the step and the kernel's answer.
pub(crate) fn probe() -> Result<(), String> {
    // On a thread of its own: tearing down a ring with operations still
    // armed queues kernel task work to the thread that submitted them, which
    // would interrupt that thread's next blocking socket call (EINTR).
    std::thread::Builder::new()
        .name("io_uring-probe".into())
        .spawn(probe_here)
        .map_err(|e| format!("probe thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("probe: panicked".to_owned()))
}

fn probe_here() -> Result<(), String> {
    let ring = IoUring::builder().setup_single_issuer().build(8).map_err(|e| explain("io_uring_setup", &e))?;
    let bufs = BufRing::new(&ring, 2, 64).map_err(|e| explain("provided buffer ring", &e))?;
    let result = probe_multishot(ring);
    // The ring (and with it the kernel's use of the buffers) is gone by now.
    drop(bufs);
    result
}

fn probe_multishot(mut ring: IoUring) -> Result<(), String> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let local = |e: io::Error| format!("probe socket: {e}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(local)?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd())).build().user_data(1);
    // SAFETY: the listener outlives the ring (the ring is dropped at the end
    // of this function, before the listener).
    unsafe { ring.submission().push(&accept) }.map_err(|_| "probe: submission queue full".to_owned())?;
    let mut client = std::net::TcpStream::connect(listener.local_addr().map_err(local)?).map_err(local)?;
    let (result, flags) = next_completion(&mut ring).map_err(|e| explain("multishot accept", &e))?;
    if result < 0 {
        return Err(explain("multishot accept", &io::Error::from_raw_os_error(-result)));
    }
    // SAFETY: a successful accept's result is a new fd owned by nobody else.
    let accepted = unsafe { OwnedFd::from_raw_fd(result) };
    if !cqueue::more(flags) {
        return Err("multishot accept: ended after one connection (kernel older than 5.19?)".to_owned());
    }
    let recv = opcode::RecvMulti::new(types::Fd(accepted.as_raw_fd()), BUF_GROUP).build().user_data(2);
    // SAFETY: `accepted` outlives the ring, as above; the buffer ring is
    // registered and outlives it too (see `probe`).
    unsafe { ring.submission().push(&recv) }.map_err(|_| "probe: submission queue full".to_owned())?;
    client.write_all(b"x").map_err(local)?;
    let (result, flags) = next_completion(&mut ring).map_err(|e| explain("multishot receive", &e))?;
    if result != 1 || !cqueue::more(flags) {
        let error = if result < 0 { io::Error::from_raw_os_error(-result) } else { io::Error::other("ended early") };
        return Err(explain("multishot receive", &error));
    }
    drop(ring);
    Ok(())
}

/// Submits and waits (at most a second) for one completion.
fn next_completion(ring: &mut IoUring) -> io::Result<(i32, u32)> {
    let ts = types::Timespec::new().sec(1);
    let args = types::SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
        Err(e) => return Err(e),
    }
    let cqe = ring.completion().next().ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no completion"))?;
    Ok((cqe.result(), cqe.flags()))
}

/// A failed step with the errno's name and its usual cause here.
fn explain(step: &str, error: &io::Error) -> String {
    let why = match error.raw_os_error() {
        Some(libc::EPERM) => "EPERM (blocked by seccomp or kernel.io_uring_disabled?)".to_owned(),
        Some(libc::EACCES) => "EACCES (blocked by a security policy?)".to_owned(),
        Some(libc::ENOSYS) => "ENOSYS (no io_uring in this kernel or sandbox, e.g. gVisor?)".to_owned(),
        Some(libc::EINVAL) => "EINVAL (kernel too old for this feature?)".to_owned(),
        Some(libc::ENOMEM) => "ENOMEM (locked memory limit too low?)".to_owned(),
        _ => error.to_string(),
    };
    format!("{step}: {why}")
}
