//! The event loop of a core: [`Core::run`] is one turn after another, each
//! the same steps in the same order, and [`Core::drain_step`] the graceful
//! shutdown that runs inside it. The clock is read once per turn.

use super::backend::Event;
use super::{Backend, Core, Inbox, Shared, State};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most messages taken from the inbox in one turn, so sockets keep being
/// served while another core floods this one.
pub(super) const INBOX_BATCH: usize = 4096;

/// Where a core is in a graceful shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drain {
    Serving,
    Closing { deadline_ms: u64 },
    Closed,
    Flushing,
}

impl<B: Backend> Core<B> {
    pub fn new(index: usize, shared: Arc<Shared>, inbox: Inbox, listener: OwnedFd) -> std::io::Result<Core<B>> {
        let io = B::new(shared.wake_fds[index].as_raw_fd(), &shared.limits)?;
        let st = State::new(index, shared)?;
        Ok(Core { io, inbox: inbox.messages, commits: inbox.commits, listener, st })
    }

    /// Runs turns until the server stops. A turn: drain completions
    /// (accepts, receives, sends, wake-ups), drain the store's commit
    /// reports and messages from other cores, advance sliced broadcasts,
    /// expire deadlines, alarms and timers, evict idle rooms, hand storage
    /// writes to the writer, re-arm receives, store the counters, start the
    /// sends queued this turn (one submission for many sockets), pass
    /// messages to other cores, then wait.
    pub fn run(mut self) {
        self.io.arm_accept(self.listener.as_raw_fd());
        self.st.load_alarms();
        let mut accept_retry_ms: Option<u64> = None;
        let mut drain = Drain::Serving;
        loop {
            self.st.now_ms = self.st.epoch.elapsed().as_millis() as u64;
            // A full inbox: other cores are queueing for this one.
            self.st.behind = self.inbox.len() >= self.st.shared.limits.core_channel_capacity;
            self.complete(&mut accept_retry_ms);
            self.take_messages();
            self.st.run_fanout_jobs();
            self.st.expire_timers();
            self.st.expire_remote_requests();
            self.st.run_due_alarms();
            self.st.run_due_timers();
            self.st.evict_idle();
            self.st.inspect();
            self.st.submit_pending();
            self.rearm_receives();
            // Counters first: whatever a client sees as a result of this
            // turn (and may then ask /metrics about) is already counted.
            self.st.counters.store(self.st.stats());
            self.flush_sends();
            let pending_elsewhere = self.st.flush_outboxes();

            if self.st.shared.stopping.load(Ordering::Acquire) {
                break;
            }
            if self.st.shared.draining.load(Ordering::Acquire) && self.drain_step(&mut drain, pending_elsewhere) {
                break;
            }
            let (block, wait) = self.wait_time(pending_elsewhere, drain, accept_retry_ms);
            if let Err(e) = self.io.wait(block, wait) {
                tracing::error!(core = self.st.index, backend = B::NAME, error = %e, "waiting for I/O failed; core stopping");
                break;
            }
        }
        // Dropping the records closes every socket this core holds.
        self.st.conns.clear();
    }

    /// Handles the backend's completions, and re-arms the accept when its
    /// back-off is over.
    fn complete(&mut self, accept_retry_ms: &mut Option<u64>) {
        let st = &mut self.st;
        self.io.complete(|event| match event {
            Event::Accepted(socket) => st.on_accept(socket),
            Event::AcceptError(error) => tracing::warn!(core = st.index, %error, "accept failed; retrying"),
            // Out of file descriptors (or a similar operating fault):
            // back off a little, then accept again.
            Event::AcceptStopped { after_error } => {
                *accept_retry_ms = Some(st.now_ms + if after_error { 100 } else { 0 });
            }
            Event::Recv { slot, armed, outcome } => st.on_recv(slot, armed, outcome),
            Event::Sent { slot, result } => st.on_sent(slot, result),
        });
        if accept_retry_ms.is_some_and(|at| at <= self.st.now_ms) {
            *accept_retry_ms = None;
            self.io.arm_accept(self.listener.as_raw_fd());
        }
    }

    /// The store's commit reports, then other cores' messages (a bounded
    /// batch), then this core's own.
    fn take_messages(&mut self) {
        while let Ok(msg) = self.commits.try_recv() {
            self.st.on_core_msg(msg);
        }
        self.st.fanout_this_turn = 0;
        for _ in 0..INBOX_BATCH {
            // Past a channel's worth of backlog, the inbox waits (and
            // fills, so the cores feeding it refuse new input).
            if self.st.fanout_this_turn >= self.st.fanout_turn_budget()
                || self.st.backlogged >= self.st.shared.limits.core_channel_capacity
            {
                break;
            }
            match self.inbox.try_recv() {
                Ok(msg) => self.st.on_core_msg(msg),
                Err(_) => break,
            }
        }
        self.st.deliver_local();
    }

    /// Arms the receive of every socket that asked this turn and has none.
    fn rearm_receives(&mut self) {
        for (slot, gen) in self.st.rearm.drain(..) {
            if let Some(conn) = self.st.conns.get_mut(slot as usize) {
                if conn.gen == gen && conn.phase != super::conn::Phase::Dead && !conn.recv_armed {
                    conn.recv_armed = true;
                    self.io.arm_recv(slot, conn.fd.as_raw_fd());
                }
            }
        }
    }

    /// Whether the wait may block, and for how long at most: until the next
    /// deadline, briefly while messages or writes wait for room elsewhere
    /// or the core shuts down, and not at all with work in hand.
    fn wait_time(&self, pending_elsewhere: bool, drain: Drain, accept_retry_ms: Option<u64>) -> (bool, Duration) {
        let st = &self.st;
        let busy = !self.inbox.is_empty()
            || !self.commits.is_empty()
            || !st.outboxes[usize::from(st.index)].is_empty()
            || !st.busy_rooms.is_empty();
        let wait = st.next_deadline_wait().min(if pending_elsewhere {
            Duration::from_millis(1)
        } else {
            super::timers::IDLE_WAIT
        });
        let wait = if st.submissions.is_empty() { wait } else { wait.min(Duration::from_millis(1)) };
        let wait = if drain == Drain::Serving { wait } else { wait.min(Duration::from_millis(10)) };
        let wait = match accept_retry_ms {
            Some(at) => wait.min(Duration::from_millis(at.saturating_sub(st.now_ms))),
            None => wait,
        };
        (!busy, wait)
    }

    /// One step of a graceful shutdown; true once the core may stop. Every
    /// core closes its sockets (1001) and reports when they are gone; once
    /// all have, the rooms have heard every close, so each core snapshots
    /// its hibernating rooms and stops when its writes have committed.
    fn drain_step(&mut self, drain: &mut Drain, pending_elsewhere: bool) -> bool {
        let st = &mut self.st;
        match *drain {
            Drain::Serving => {
                tracing::debug!(core = st.index, sockets = st.conns.len(), "shutdown: closing sockets");
                st.close_all_sockets();
                *drain = Drain::Closing { deadline_ms: st.now_ms + st.shared.limits.close_timeout_ms };
            }
            Drain::Closing { deadline_ms } => {
                if st.conns.is_empty() && !pending_elsewhere && st.outboxes.iter().all(VecDeque::is_empty) {
                    st.shared.cores_closed.fetch_add(1, Ordering::AcqRel);
                    tracing::debug!(core = st.index, "shutdown: sockets closed");
                    *drain = Drain::Closed;
                } else if st.now_ms >= deadline_ms {
                    let slots: Vec<u32> = st.conns.iter().map(|(slot, _)| slot as u32).collect();
                    for slot in slots {
                        st.abort(slot);
                        st.release_if_done(slot);
                    }
                }
            }
            Drain::Closed => {
                if st.shared.cores_closed.load(Ordering::Acquire) == st.shared.cores {
                    while let Ok(msg) = self.inbox.try_recv() {
                        st.on_core_msg(msg);
                    }
                    st.deliver_local();
                    st.evict_all();
                    tracing::debug!(core = st.index, "shutdown: rooms saved; waiting for the writes");
                    *drain = Drain::Flushing;
                }
            }
            Drain::Flushing => return !st.writes_pending(),
        }
        false
    }
}
