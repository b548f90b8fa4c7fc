//! The boundary between the reactor and the kernel: what a core needs from an
//! I/O backend (accept, receive, send of shared frames, wake-ups) and what a
//! backend reports. Everything above it (HTTP, WebSocket, rooms, tags) is the
//! same for every backend; closing is dropping the socket's `OwnedFd` once no
//! operation refers to it.

use crate::config::Limits;
use bytes::Bytes;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

/// Most frames written by one send.
pub(crate) const MAX_SEND_FRAMES: usize = 64;

/// What a backend reports to its core.
pub(crate) enum Event<'a> {
    /// A new connection, now owned by the core.
    Accepted(OwnedFd),
    /// An accept failed; accepting goes on unless `Stopped` follows.
    AcceptError(io::Error),
    /// Accepting stopped; the core arms it again (after a pause, when it
    /// stopped on an error such as running out of file descriptors).
    AcceptStopped { after_error: bool },
    /// A receive on socket `slot`. `armed` says whether the backend goes on
    /// receiving for it; when false, the core arms it again if it still
    /// wants data, and otherwise may release the socket.
    Recv { slot: u32, armed: bool, outcome: Received<'a> },
    /// A send on socket `slot` finished: bytes written, or a negated errno.
    /// Zero means "nothing written, try again now".
    Sent { slot: u32, result: i32 },
}

pub(crate) enum Received<'a> {
    /// Data, lent for the duration of the callback.
    Data(&'a mut [u8]),
    /// The peer closed its side.
    Eof,
    /// No receive buffer was free: arm again.
    NoBuffers,
    /// The socket failed.
    Error,
}

/// One core's I/O. A backend is created on its core's thread and stays there.
pub(crate) trait Backend: Sized {
    /// The name logged at start-up.
    const NAME: &'static str;

    fn new(wake_fd: RawFd, limits: &Limits) -> io::Result<Self>;

    /// Starts accepting on the core's listener.
    fn arm_accept(&mut self, listener: RawFd);

    /// Starts receiving on a socket. Its fd stays open until the backend has
    /// reported `armed: false` for it.
    fn arm_recv(&mut self, slot: u32, fd: RawFd);

    /// Writes up to `MAX_SEND_FRAMES` of `frames` to the socket, skipping the
    /// first `offset` bytes of the first; reports `Sent` once done. At most
    /// one send per socket is under way.
    fn send<'a>(&mut self, slot: u32, fd: RawFd, frames: impl Iterator<Item = &'a Bytes>, offset: usize);

    /// Hands every event that is ready to `on`, in order.
    fn complete(&mut self, on: impl FnMut(Event<'_>));

    /// Submits what was asked for and waits for events: at most `timeout`,
    /// and not at all unless `block`. A wake-up from another core (its
    /// eventfd) ends the wait.
    fn wait(&mut self, block: bool, timeout: Duration) -> io::Result<()>;
}
