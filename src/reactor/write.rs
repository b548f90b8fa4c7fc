//! Frames out: each socket's write queue, the slow-consumer policy past its
//! backlog bound, the sends a turn starts and their completions.

use super::backend::MAX_SEND_FRAMES;
use super::conn::{live, mark_dirty, Phase};
use super::{Backend, Core, State, SLOW_CONSUMER};
use crate::config::SlowConsumerPolicy;
use crate::ws;
use bytes::Bytes;
use std::os::fd::AsRawFd;

impl State {
    /// Queues a frame for the socket. Past the write backlog bound an open
    /// socket is a slow consumer, handled by the configured policy.
    #[inline]
    pub(super) fn enqueue(&mut self, slot: u32, frame: Bytes) {
        let max = self.shared.limits.max_write_backlog_bytes;
        let Some(conn) = live(&mut self.conns, slot) else { return };
        if !conn.out.fits(frame.len(), max) && conn.phase == Phase::Open {
            return self.slow_consumer(slot);
        }
        conn.out.push(frame);
        mark_dirty(conn, slot, &mut self.dirty);
    }

    /// An open socket's backlog is full. Under `close`, what it has not been
    /// sent is discarded but for the rest of a frame the kernel has part of
    /// (so every frame the peer gets is whole), a 1008 close follows, and it
    /// has the close timeout to read them; past it, it is reset (`abort`).
    /// Under `drop`, the frame that did not fit is dropped.
    pub(super) fn slow_consumer(&mut self, slot: u32) {
        let Some(conn) = live(&mut self.conns, slot) else { return };
        if conn.phase != Phase::Open {
            return;
        }
        if self.shared.limits.slow_consumer == SlowConsumerPolicy::Drop {
            self.counters.frames_dropped += 1;
            return;
        }
        if conn.sending {
            // The send in flight may write any part of its frames: they stay
            // until it completes, and `on_sent` trims then.
            conn.out.keep_front(MAX_SEND_FRAMES);
            conn.close_after_send = true;
        } else {
            conn.out.keep_front(usize::from(conn.out.front_started()));
            conn.out.push(ws::close_frame(Some(1008), SLOW_CONSUMER));
            mark_dirty(conn, slot, &mut self.dirty);
        }
        self.counters.slow_consumers_closed += 1;
        self.leave(slot, 1008, SLOW_CONSUMER, Some(SLOW_CONSUMER));
        self.drain_then_close(slot);
    }

    #[inline]
    pub(super) fn on_sent(&mut self, slot: u32, result: i32) {
        let conn = &mut self.conns[slot as usize];
        conn.sending = false;
        if conn.phase == Phase::Dead {
            return self.release_if_done(slot);
        }
        if result < 0 {
            self.abort(slot);
            return self.release_if_done(slot);
        }
        self.counters.bytes_out += result as u64;
        conn.out.advance(result as usize);
        if std::mem::take(&mut conn.close_after_send) {
            conn.out.keep_front(usize::from(conn.out.front_started()));
            conn.out.push(ws::close_frame(Some(1008), SLOW_CONSUMER));
        }
        if !conn.out.is_empty() {
            mark_dirty(conn, slot, &mut self.dirty);
        } else if conn.phase == Phase::Draining {
            self.linger(slot);
        }
    }
}
impl<B: Backend> Core<B> {
    /// Starts one send per socket with queued frames and none in flight.
    #[inline]
    pub(super) fn flush_sends(&mut self) {
        for slot in self.st.dirty.drain(..) {
            let Some(conn) = self.st.conns.get_mut(slot as usize) else { continue };
            conn.in_dirty = false;
            if conn.sending || conn.out.is_empty() || conn.phase == Phase::Dead {
                continue;
            }
            conn.sending = true;
            let (frames, offset) = conn.out.unsent();
            self.io.send(slot, conn.fd.as_raw_fd(), frames, offset);
        }
    }
}
