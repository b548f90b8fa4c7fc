//! Socket deadlines (a head not read in time: 408 or cut; a close not
//! answered in time: cut) and how long a turn may wait for I/O before the
//! next deadline, eviction, alarm or room timer is due.

use super::conn::Phase;
use super::{rooms, State};
use crate::http::Response;
use std::time::Duration;

/// Longest wait for completions when no timer is due sooner.
pub(super) const IDLE_WAIT: Duration = Duration::from_secs(1);

impl State {
    /// Answers (408) or cuts the sockets whose head deadline passed, and
    /// cuts those whose close was not answered in time.
    pub(super) fn expire_timers(&mut self) {
        while let Some(&(deadline, slot, gen)) = self.head_timers.front() {
            if deadline > self.now_ms {
                break;
            }
            self.head_timers.pop_front();
            let Some(conn) = self.conns.get(slot as usize) else { continue };
            if conn.gen == gen && conn.deadline_ms == deadline && matches!(conn.phase, Phase::Head | Phase::Body) {
                let idle = conn.read_buf.is_empty() && conn.phase == Phase::Head;
                if idle {
                    // A keep-alive connection (or a silent one) that sent nothing.
                    self.abort(slot);
                    self.release_if_done(slot);
                } else {
                    let response = Response::text(408, "Request timeout: the request was not completed in time");
                    self.respond(slot, &response, false);
                }
            }
        }
        while let Some(&(deadline, slot, gen)) = self.close_timers.front() {
            if deadline > self.now_ms {
                break;
            }
            self.close_timers.pop_front();
            let Some(conn) = self.conns.get(slot as usize) else { continue };
            let closing = matches!(conn.phase, Phase::Closing | Phase::Draining | Phase::Lingering);
            if conn.gen == gen && conn.deadline_ms == deadline && closing {
                self.abort(slot);
                self.release_if_done(slot);
            }
        }
    }

    /// How long until the next deadline, eviction, alarm or room timer.
    pub(super) fn next_deadline_wait(&self) -> Duration {
        let next = [self.head_timers.front(), self.close_timers.front()]
            .into_iter()
            .flatten()
            .map(|&(deadline, _, _)| deadline)
            .chain(self.next_evict_ms())
            .chain(self.next_inspect_ms())
            .min();
        let wait = match next {
            Some(deadline) => Duration::from_millis(deadline.saturating_sub(self.now_ms)),
            None => IDLE_WAIT,
        };
        match self.next_alarm_ms().into_iter().chain(self.next_timer_ms()).min() {
            Some(at_ms) => wait.min(Duration::from_millis(at_ms.saturating_sub(rooms::wall_ms()))),
            None => wait,
        }
    }
}
