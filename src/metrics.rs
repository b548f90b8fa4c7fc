//! The Prometheus text exposition of the cores' counters, served at
//! `GET /metrics` (configurable) on the main listener.

use crate::http::Response;
use crate::party::Request;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters one core publishes for the server handle, `/metrics` and tests.
#[derive(Debug, Default)]
pub(crate) struct CoreStats {
    pub connections_open: AtomicU64,
    pub rooms_resident: AtomicU64,
    /// The counters below are kept by the core in plain integers and
    /// stored here once per turn.
    pub rooms_created: AtomicU64,
    pub rooms_woken: AtomicU64,
    pub messages_asleep: AtomicU64,
    pub rooms_evicted: AtomicU64,
    pub rooms_dropped: AtomicU64,
    pub snapshots_corrupt: AtomicU64,
    pub room_events: AtomicU64,
    pub alarms_run: AtomicU64,
    pub messages_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub broadcasts: AtomicU64,
    pub broadcasts_compressed: AtomicU64,
    pub publishes: AtomicU64,
    pub slow_consumers_closed: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub events_shed: AtomicU64,
    pub rate_limited_messages: AtomicU64,
    pub rate_limited_closes: AtomicU64,
    pub rate_limited_connects: AtomicU64,
    pub rate_limited_requests: AtomicU64,
    pub rate_untracked_ips: AtomicU64,
}

/// The counter named `name` (without the `dormouse_` prefix and `_total`
/// suffix) in one core's stats.
pub(crate) fn stat<'a>(stats: &'a CoreStats, name: &str) -> Option<&'a AtomicU64> {
    METRICS
        .iter()
        .find(|m| m.name.strip_prefix("dormouse_").map(|n| n.strip_suffix("_total").unwrap_or(n)) == Some(name))
        .map(|m| (m.value)(stats))
}

/// One metric: its name, kind, help text and where each core keeps it.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&CoreStats) -> &AtomicU64,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "dormouse_connections_open",
        kind: "gauge",
        help: "Open sockets (HTTP and WebSocket) held by the core.",
        value: |s| &s.connections_open,
    },
    Metric {
        name: "dormouse_rooms_resident",
        kind: "gauge",
        help: "Room objects in memory on their owner core.",
        value: |s| &s.rooms_resident,
    },
    Metric {
        name: "dormouse_rooms_created_total",
        kind: "counter",
        help: "Room objects created.",
        value: |s| &s.rooms_created,
    },
    Metric {
        name: "dormouse_rooms_woken_total",
        kind: "counter",
        help: "Room objects brought back from a hibernation snapshot.",
        value: |s| &s.rooms_woken,
    },
    Metric {
        name: "dormouse_messages_asleep_total",
        kind: "counter",
        help: "Messages a hibernating room handled without waking its object (yjs awareness, say).",
        value: |s| &s.messages_asleep,
    },
    Metric {
        name: "dormouse_alarms_run_total",
        kind: "counter",
        help: "Room alarms run (each try of one that failed counts).",
        value: |s| &s.alarms_run,
    },
    Metric {
        name: "dormouse_rooms_evicted_total",
        kind: "counter",
        help: "Room objects of hibernating parties evicted to a snapshot.",
        value: |s| &s.rooms_evicted,
    },
    Metric {
        name: "dormouse_rooms_dropped_total",
        kind: "counter",
        help: "Room objects without snapshots dropped from memory (idle and empty, or making way under max_resident_rooms).",
        value: |s| &s.rooms_dropped,
    },
    Metric {
        name: "dormouse_snapshots_corrupt_total",
        kind: "counter",
        help: "Snapshots that did not restore (kept aside; the room started fresh).",
        value: |s| &s.snapshots_corrupt,
    },
    Metric {
        name: "dormouse_room_events_total",
        kind: "counter",
        help: "Events delivered to room objects (connect, message, close, request).",
        value: |s| &s.room_events,
    },
    Metric {
        name: "dormouse_messages_in_total",
        kind: "counter",
        help: "WebSocket messages received.",
        value: |s| &s.messages_in,
    },
    Metric {
        name: "dormouse_frames_out_total",
        kind: "counter",
        help: "WebSocket frames queued to sockets by sends, broadcasts and publishes.",
        value: |s| &s.frames_out,
    },
    Metric {
        name: "dormouse_bytes_out_total",
        kind: "counter",
        help: "Bytes written to sockets.",
        value: |s| &s.bytes_out,
    },
    Metric {
        name: "dormouse_broadcasts_total",
        kind: "counter",
        help: "Broadcasts (including publishes) carried out for the core's members.",
        value: |s| &s.broadcasts,
    },
    Metric {
        name: "dormouse_broadcasts_compressed_total",
        kind: "counter",
        help: "Broadcasts and publishes compressed, once each, for members with permessage-deflate.",
        value: |s| &s.broadcasts_compressed,
    },
    Metric {
        name: "dormouse_publishes_total",
        kind: "counter",
        help: "Publish API requests accepted.",
        value: |s| &s.publishes,
    },
    Metric {
        name: "dormouse_slow_consumers_closed_total",
        kind: "counter",
        help: "Connections closed with 1008 because their write backlog was full.",
        value: |s| &s.slow_consumers_closed,
    },
    Metric {
        name: "dormouse_frames_dropped_total",
        kind: "counter",
        help: "Frames not queued to a slow consumer under the drop policy.",
        value: |s| &s.frames_dropped,
    },
    Metric {
        name: "dormouse_events_shed_total",
        kind: "counter",
        help: "Messages (closed 1013), connects, requests and publishes (503) refused while their room's storage, or a core, was behind.",
        value: |s| &s.events_shed,
    },
    Metric {
        name: "dormouse_rate_limited_messages_total",
        kind: "counter",
        help: "WebSocket messages over their connection's rate limit (dropped, or the one that closed it).",
        value: |s| &s.rate_limited_messages,
    },
    Metric {
        name: "dormouse_rate_limited_closes_total",
        kind: "counter",
        help: "Connections closed with 1008 for sending over their rate limit.",
        value: |s| &s.rate_limited_closes,
    },
    Metric {
        name: "dormouse_rate_limited_connects_total",
        kind: "counter",
        help: "WebSocket upgrades refused with 429 for their client IP's rate.",
        value: |s| &s.rate_limited_connects,
    },
    Metric {
        name: "dormouse_rate_limited_requests_total",
        kind: "counter",
        help: "HTTP requests refused with 429 for their client IP's rate.",
        value: |s| &s.rate_limited_requests,
    },
    Metric {
        name: "dormouse_rate_untracked_ips_total",
        kind: "counter",
        help: "Requests let through untracked because every tracked client IP was active (rate_limits.max_tracked_ips).",
        value: |s| &s.rate_untracked_ips,
    },
];

/// Renders every metric, one sample per core.
pub(crate) fn render(stats: &[CoreStats]) -> String {
    let mut out = String::with_capacity(4096);
    for metric in METRICS {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", metric.name, metric.help, metric.name, metric.kind);
        for (core, core_stats) in stats.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}{{core=\"{core}\"}} {}",
                metric.name,
                (metric.value)(core_stats).load(Ordering::Relaxed)
            );
        }
    }
    out
}

/// A cluster node's figures (read from the gateway's stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterFigures {
    pub nodes: u64,
    pub leases: u64,
    /// Lease renewals sent.
    pub renewals: u64,
    /// Leases given back, as NATS confirmed.
    pub released: u64,
    /// Journal checkpoints appended.
    pub checkpoints: u64,
    /// Journal entries read when taking rooms.
    pub entries_read: u64,
}

/// The node's figures in a cluster (unlabelled).
pub(crate) fn render_cluster(out: &mut String, figures: &ClusterFigures) {
    let ClusterFigures { nodes, leases, renewals, released, checkpoints, entries_read } = figures;
    let _ = writeln!(
        out,
        "# HELP dormouse_cluster_nodes Live nodes of the cluster as this node last read them (itself included).\n\
         # TYPE dormouse_cluster_nodes gauge\ndormouse_cluster_nodes {nodes}\n\
         # HELP dormouse_cluster_leases Room leases this node holds.\n\
         # TYPE dormouse_cluster_leases gauge\ndormouse_cluster_leases {leases}\n\
         # HELP dormouse_cluster_lease_renewals_total Lease renewals this node sent.\n\
         # TYPE dormouse_cluster_lease_renewals_total counter\ndormouse_cluster_lease_renewals_total {renewals}\n\
         # HELP dormouse_cluster_leases_released_total Leases this node gave back (confirmed by NATS).\n\
         # TYPE dormouse_cluster_leases_released_total counter\ndormouse_cluster_leases_released_total {released}\n\
         # HELP dormouse_cluster_journal_checkpoints_total Rooms' journals checkpointed (and compacted) by this node.\n\
         # TYPE dormouse_cluster_journal_checkpoints_total counter\ndormouse_cluster_journal_checkpoints_total {checkpoints}\n\
         # HELP dormouse_cluster_journal_entries_read_total Journal entries this node read to take rooms.\n\
         # TYPE dormouse_cluster_journal_entries_read_total counter\ndormouse_cluster_journal_entries_read_total {entries_read}"
    );
}

/// Answers a request to the metrics path; `cluster`: the live nodes and
/// the leases held, in a cluster.
pub(crate) fn respond(request: &Request, stats: &[CoreStats], cluster: Option<ClusterFigures>) -> Response {
    match request.method() {
        "GET" | "HEAD" => {
            let mut body = render(stats);
            if let Some(figures) = &cluster {
                render_cluster(&mut body, figures);
            }
            Response::new(200).with_header("content-type", "text/plain; version=0.0.4; charset=utf-8").with_body(body)
        }
        _ => Response::text(405, "Metrics are read with GET").with_header("Allow", "GET, HEAD"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_type_and_one_sample_per_core() {
        let stats = [CoreStats::default(), CoreStats::default()];
        stats[1].frames_out.store(7, Ordering::Relaxed);
        let text = render(&stats);
        for metric in METRICS {
            assert!(text.contains(&format!("# TYPE {} {}\n", metric.name, metric.kind)));
            assert!(text.contains(&format!("{}{{core=\"0\"}} ", metric.name)));
            assert!(text.contains(&format!("{}{{core=\"1\"}} ", metric.name)));
        }
        assert!(text.contains("dormouse_frames_out_total{core=\"1\"} 7\n"));
    }
}
