//! The core's counters: plain integers on its own thread, stored into its
//! [`CoreStats`] for `/metrics` and the server handle once per turn.

use super::State;
use crate::metrics::CoreStats;
use std::sync::atomic::Ordering;

/// Monotonic counters a core keeps in plain integers on its own thread and
/// stores into its [`CoreStats`] at the end of each turn.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Room objects created.
    pub(super) rooms_created: u64,
    /// Room objects brought back from a snapshot (hibernation).
    pub(super) rooms_woken: u64,
    /// Messages a hibernating room handled without waking
    /// (`Party::on_message_asleep`).
    pub(super) messages_asleep: u64,
    /// Room objects evicted to a snapshot.
    pub(super) rooms_evicted: u64,
    /// Room objects without snapshots dropped from memory (idle and empty,
    /// or making way under `max_resident_rooms`).
    pub(super) rooms_dropped: u64,
    /// Snapshots that did not restore (kept aside; the room started fresh).
    pub(super) snapshots_corrupt: u64,
    /// Events delivered to room objects (connect, message, close, request).
    pub(super) room_events: u64,
    /// Room alarms run (each try).
    pub(super) alarms_run: u64,
    /// WebSocket messages received.
    pub(super) messages_in: u64,
    /// WebSocket frames queued to sockets by sends and broadcasts.
    pub(super) frames_out: u64,
    /// Bytes written to sockets.
    pub(super) bytes_out: u64,
    /// Broadcasts this core carried out for its local members.
    pub(super) broadcasts: u64,
    /// Broadcasts and publishes compressed (once each) for members with
    /// permessage-deflate, by the core that made them.
    pub(super) broadcasts_compressed: u64,
    /// Publish API requests accepted on this core.
    pub(super) publishes: u64,
    /// Connections closed by the slow-consumer policy.
    pub(super) slow_consumers_closed: u64,
    /// Frames not queued to a slow consumer under the `drop` policy.
    pub(super) frames_dropped: u64,
    /// Messages, connects, requests and publishes refused because their
    /// room's storage, or a core, was behind.
    pub(super) events_shed: u64,
    /// WebSocket messages over their connection's rate limit (dropped, or
    /// the one that closed it).
    pub(super) rate_limited_messages: u64,
    /// Connections closed with 1008 for their rate.
    pub(super) rate_limited_closes: u64,
    /// Upgrades refused with 429 for their client IP's rate.
    pub(super) rate_limited_connects: u64,
    /// HTTP requests refused with 429 for their client IP's rate.
    pub(super) rate_limited_requests: u64,
    /// Requests let through untracked because the IP table was full.
    pub(super) rate_untracked_ips: u64,
}

impl Counters {
    pub(super) fn store(&self, stats: &CoreStats) {
        let pairs = [
            (&stats.rooms_created, self.rooms_created),
            (&stats.rooms_woken, self.rooms_woken),
            (&stats.messages_asleep, self.messages_asleep),
            (&stats.rooms_evicted, self.rooms_evicted),
            (&stats.rooms_dropped, self.rooms_dropped),
            (&stats.snapshots_corrupt, self.snapshots_corrupt),
            (&stats.room_events, self.room_events),
            (&stats.alarms_run, self.alarms_run),
            (&stats.messages_in, self.messages_in),
            (&stats.frames_out, self.frames_out),
            (&stats.bytes_out, self.bytes_out),
            (&stats.broadcasts, self.broadcasts),
            (&stats.broadcasts_compressed, self.broadcasts_compressed),
            (&stats.publishes, self.publishes),
            (&stats.slow_consumers_closed, self.slow_consumers_closed),
            (&stats.frames_dropped, self.frames_dropped),
            (&stats.events_shed, self.events_shed),
            (&stats.rate_limited_messages, self.rate_limited_messages),
            (&stats.rate_limited_closes, self.rate_limited_closes),
            (&stats.rate_limited_connects, self.rate_limited_connects),
            (&stats.rate_limited_requests, self.rate_limited_requests),
            (&stats.rate_untracked_ips, self.rate_untracked_ips),
        ];
        for (stat, value) in pairs {
            stat.store(value, Ordering::Relaxed);
        }
    }
}

impl State {
    pub(super) fn stats(&self) -> &CoreStats {
        &self.shared.stats[usize::from(self.index)]
    }
}
