//! `dormouse-loadtest`: drives dormouse, or any WebSocket relay server, from
//! the same machine and reports what it measured.
//!
//! Scenarios: `fanout` (one room, N connections, P publishers: delivered
//! frames/s, per-delivery and last-receiver latency, losses, duplicates and
//! order) and `idle` (N idle connections: the server's memory per
//! connection), `churn` (a connect/disconnect storm: connects/s and handshake
//! latency), `rooms` (many small rooms woken at a low rate) and `tags`
//! (publishes to a tagged subset against publishes to the whole room, through
//! dormouse's publish API), `hibernated` (N rooms touched over HTTP and left
//! to hibernate: the server's memory per hibernated room), `soak` (minutes
//! of mixed traffic over many hibernating chat rooms, with churn: the
//! server's memory and descriptors over time); `compare` prints
//! several runs' JSON reports side by side. Any server works that follows the
//! relay convention (each message a client sends goes to every other client
//! of the room); `tags`, `hibernated` and `soak` need dormouse.

mod compare;
mod fanout;
mod hibernated;
mod soak;
mod socket;
mod svg;
mod tags;
mod target;
mod yjs;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use target::Target;

#[derive(Parser)]
#[command(name = "dormouse-loadtest", version, about = "Load tests for dormouse and other WebSocket relay servers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Where and how to connect; shared by the scenarios that open many sockets.
#[derive(Args)]
struct Connect {
    /// Server URL; `{room}` is replaced by the room name. E.g. ws://127.0.0.1:1999/parties/main/{room}.
    /// Several, comma-separated (nodes of a cluster): the connections are spread over them in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    url: Vec<String>,
    /// Room name; with several rooms, room i is `<room>-<i>`.
    #[arg(long, default_value = "loadtest")]
    room: String,
    #[arg(long, default_value_t = 30.0)]
    connect_timeout_secs: f64,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Loopback addresses to connect from, e.g. 127.0.0.2-127.0.0.9 (past ~28,000 connections per address).
    #[arg(long)]
    source_ips: Option<String>,
    /// Write every figure, with the machine, to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How long to publish and what to sample; shared by fanout and rooms.
#[derive(Args)]
struct Publish {
    /// Seconds of publishing.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Seconds to wait after the last send for outstanding deliveries.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// PID of the server, to sample its RSS and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Exit non-zero when more deliveries than this are lost.
    #[arg(long, default_value_t = 0)]
    max_loss: u64,
    /// Draw the latency percentile curves to this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// N connections in one room, P publishers sending numbered, timestamped
    /// messages at a fixed total rate; every delivery is checked and timed.
    Fanout {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        publish: Publish,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Messages per second over all publishers.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// As fast as delivered: instead of --rate, keep about this many
        /// messages in flight (sent, not yet at every receiver).
        #[arg(long, conflicts_with = "rate")]
        in_flight: Option<u64>,
        /// Message size in bytes (at least 24: the header with sequence and timestamp).
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        /// JSON text messages (the stamp in their first field, at least 48
        /// bytes) instead of binary ones.
        #[arg(long)]
        text: bool,
        /// Offer permessage-deflate (implies --text: servers compress text);
        /// receivers inflate compressed frames as far as the stamp.
        #[arg(long)]
        deflate: bool,
    },
    /// Editors of Yjs documents: `--docs` documents of `--editors` each,
    /// `--editing` of them per document sending y-protocols updates (small
    /// text inserts, stamped) at `--rate` each; every relayed update is
    /// checked and timed, and the server's CPU per update reported. Any
    /// y-protocols server (dormouse's `yjs` kind, y-websocket's), or
    /// Hocuspocus with `--protocol hocuspocus`.
    Yjs {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        publish: Publish,
        #[arg(long, default_value_t = 1)]
        docs: usize,
        /// Editors per document.
        #[arg(long, default_value_t = 100)]
        editors: usize,
        /// Editors per document that edit (default: all).
        #[arg(long)]
        editing: Option<usize>,
        /// Updates per second per editing editor.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Bytes of text one update inserts (at least 48: the stamp).
        #[arg(long, default_value_t = 64)]
        insert_bytes: usize,
        #[arg(long, value_enum, default_value_t = yjs::Protocol::YProtocols)]
        protocol: yjs::Protocol,
        /// Awareness updates per second per editing editor (a moving
        /// cursor), besides its document updates: load, not timed.
        #[arg(long, default_value_t = 0.0)]
        awareness_rate: f64,
        /// After the drain, keep the editors connected and silent this long,
        /// then sample the server's memory (with --server-pid): for a
        /// hibernating party, longer than its idle_evict_ms.
        #[arg(long, default_value_t = 0.0)]
        hold_secs: f64,
    },
    /// N connections in one room, every K-th tagged `hot` (`?tag=hot`, the
    /// others `?tag=cold`); publishes to the hot tag, then to the whole room,
    /// through dormouse's publish API. Checks that only tagged connections
    /// receive and reports the cost of a tag publish against a full one.
    Tags {
        #[command(flatten)]
        connect: Connect,
        /// --duration-secs is per phase.
        #[command(flatten)]
        publish: Publish,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Every K-th connection carries the hot tag.
        #[arg(long, default_value_t = 100)]
        tag_every: usize,
        /// Publishes per second in each phase.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        /// The server's `publish_token`.
        #[arg(long)]
        publish_token: String,
    },
    /// M rooms of k connections, mostly idle; one member of each room wakes it
    /// in turn at a low total rate. Reports the server's memory per room and
    /// per connection, and the wake latency the room's members see.
    Rooms {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        publish: Publish,
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
        /// Connections per room (at least 2).
        #[arg(long, default_value_t = 2)]
        per_room: usize,
        /// Wakes per second over all rooms.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// A connect/disconnect storm: open N connections, close them all with a
    /// close handshake, repeat until the time is up.
    Churn {
        #[command(flatten)]
        connect: Connect,
        /// Connections per cycle.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 5.0)]
        duration_secs: f64,
    },
    /// Print the figures of several --json reports side by side, with ratios to the first.
    Compare {
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
    },
    /// Touch N distinct rooms of a hibernating party with one HTTP GET each
    /// (room i is `h<i>`), wait until the server's /metrics reports every room
    /// evicted, and report the server's resident memory per hibernated room.
    Hibernated {
        /// Server URL; `{room}` is replaced by the room name. E.g. http://127.0.0.1:1999/parties/chat/{room}
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1_000_000)]
        rooms: u64,
        /// PID of the server, to read its RSS from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Keep-alive connections, each with up to 32 requests in flight.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Longest wait, after the last response, for every room to leave
        /// memory (evicted, or dropped when its party does not hibernate).
        #[arg(long, default_value_t = 300.0)]
        timeout_secs: f64,
        /// Write every figure, with the machine, to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// N connections spread over M rooms of a hibernating chat party (room i
    /// is `s<i>`), traffic in phases (a different share of the rooms active
    /// in each, the others silent long enough to be evicted, then woken) and
    /// connections closing and reconnecting throughout; samples the server's
    /// RSS, open descriptors and room counters, and reports growth, leaks,
    /// losses and errors.
    Soak {
        /// Server URL; `{room}` is replaced by the room name. E.g. ws://127.0.0.1:1999/parties/chat/{room}
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 15_000)]
        connections: usize,
        /// Connection g joins room g % rooms; at most 128 connections per room.
        #[arg(long, default_value_t = 300)]
        rooms: usize,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 600.0)]
        duration_secs: f64,
        /// PID of the server, to read its RSS and descriptors from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Share of the rooms active in each phase.
        #[arg(long, default_value_t = 0.2)]
        active_fraction: f64,
        /// Seconds per phase; a room is silent for the phases it is not active in.
        #[arg(long, default_value_t = 30.0)]
        phase_secs: f64,
        /// Messages per second over all active rooms (64-byte text messages).
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Connections of active rooms closed (close handshake) and reconnected per second.
        #[arg(long, default_value_t = 20.0)]
        churn_per_sec: f64,
        /// Seconds between samples of the server.
        #[arg(long, default_value_t = 10.0)]
        sample_secs: f64,
        /// Seconds to wait after the traffic for outstanding deliveries.
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
        /// Exit non-zero when more deliveries than this are lost.
        #[arg(long, default_value_t = 0)]
        max_loss: u64,
        /// RSS growth (from the warmed-up sample, once every room has been active, to the end of traffic, in percent) the verdict calls no growth.
        #[arg(long, default_value_t = 10.0)]
        rss_tolerance_pct: f64,
        #[arg(long, default_value_t = 60.0)]
        connect_timeout_secs: f64,
        /// Client threads (each owns whole rooms).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Loopback addresses to connect from, e.g. 127.0.0.2-127.0.0.9 (past ~28,000 connections per address).
        #[arg(long)]
        source_ips: Option<String>,
        /// Write every figure and sample, with the machine, to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Open N idle WebSocket connections to one room and report the server's
    /// resident memory per connection.
    Idle {
        /// Server URL, e.g. ws://127.0.0.1:1999/parties/main/lobby
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// PID of the server, to read its RSS from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// How long to hold the connections before closing them.
        #[arg(long, default_value_t = 1.0)]
        hold_secs: f64,
    },
}

/// The shape of a run, before the shared flags are checked.
struct Shape {
    rooms: usize,
    connections: usize,
    publishers: usize,
    rate: f64,
    in_flight: Option<u64>,
    tag_every: Option<usize>,
    payload_bytes: usize,
}

/// Checks the flags and builds the plan; a bad value is a usage error.
fn plan(connect: &Connect, publish: Option<&Publish>, duration_secs: f64, shape: Shape) -> Result<fanout::Plan> {
    if connect.threads == 0 || connect.threads > 64 {
        return Err(usage("--threads must be between 1 and 64".into()));
    }
    if shape.connections == 0 || shape.connections > 1_000_000 {
        return Err(usage("the run must open between 1 and 1,000,000 connections".into()));
    }
    if !(shape.rate.is_finite() && shape.rate > 0.0) {
        return Err(usage("--rate must be a positive number".into()));
    }
    Ok(fanout::Plan {
        target: Target::parse(&connect.url[0]).map_err(|e| usage(e.to_string()))?,
        others: connect.url[1..]
            .iter()
            .map(|url| Target::parse(url))
            .collect::<Result<_, _>>()
            .map_err(|e| usage(e.to_string()))?,
        room: connect.room.clone(),
        rooms: shape.rooms,
        connections: shape.connections,
        publishers: shape.publishers,
        rate: shape.rate,
        in_flight: shape.in_flight,
        tag_every: shape.tag_every,
        payload_bytes: shape.payload_bytes,
        text: false,
        deflate: false,
        yjs: None,
        awareness_rate: 0.0,
        duration: seconds("duration-secs", duration_secs)?,
        drain: seconds("drain-secs", publish.map_or(0.0, |p| p.drain_secs))?,
        hold: Duration::ZERO,
        connect_timeout: seconds("connect-timeout-secs", connect.connect_timeout_secs)?,
        threads: connect.threads,
        source_ips: match &connect.source_ips {
            Some(spec) => target::parse_source_ips(spec).map_err(|e| usage(e.to_string()))?,
            None => Vec::new(),
        },
        server_pid: publish.and_then(|p| p.server_pid),
    })
}

/// Writes a report with the scenario, URL and machine to `--json`, if asked.
fn write_json(connect: &Connect, scenario: &str, report: &impl serde::Serialize) -> Result<()> {
    write_json_to(connect.json.as_deref(), &connect.url.join(","), scenario, report)
}

fn write_json_to(path: Option<&Path>, url: &str, scenario: &str, report: &impl serde::Serialize) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let doc = serde_json::json!({ "scenario": scenario, "url": url, "machine": target::machine(), "report": report });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?).with_context(|| format!("write {}", path.display()))
}

/// The shared end of fanout and rooms: JSON, SVG, and the loss check.
fn finish(connect: &Connect, publish: &Publish, scenario: &str, report: &fanout::Report) -> Result<()> {
    write_json(connect, scenario, report)?;
    if let Some(path) = &publish.svg {
        let title = format!("{scenario}: {} connections, {} B messages", report.connections, report.payload_bytes);
        let curves = [("delivery", &report.delivery_latency_us), ("last receiver", &report.last_receiver_latency_us)];
        svg::percentile_plot(path, &title, &curves)?;
    }
    if report.lost > publish.max_loss {
        bail!("{} deliveries lost (--max-loss {})", report.lost, publish.max_loss);
    }
    Ok(())
}

fn run(scenario: Scenario) -> Result<()> {
    match scenario {
        Scenario::Fanout {
            connect,
            publish,
            connections,
            publishers,
            rate,
            in_flight,
            payload_bytes,
            text,
            deflate,
        } => {
            let text = text || deflate;
            check_payload(payload_bytes)?;
            if text && payload_bytes < fanout::TEXT_HEADER_BYTES {
                return Err(usage(format!("--text needs --payload-bytes of at least {}", fanout::TEXT_HEADER_BYTES)));
            }
            if connections < 2 || publishers == 0 || publishers > connections {
                return Err(usage("need --connections >= 2 and 1 <= --publishers <= --connections".into()));
            }
            if in_flight == Some(0) {
                return Err(usage("--in-flight must be at least 1".into()));
            }
            let shape = Shape { rooms: 1, connections, publishers, rate, in_flight, tag_every: None, payload_bytes };
            let mut plan = plan(&connect, Some(&publish), publish.duration_secs, shape)?;
            (plan.text, plan.deflate) = (text, deflate);
            let report = fanout::run(plan)?;
            print_fanout(&report);
            finish(&connect, &publish, "fanout", &report)
        }
        Scenario::Yjs {
            connect,
            publish,
            docs,
            editors,
            editing,
            rate,
            insert_bytes,
            protocol,
            awareness_rate,
            hold_secs,
        } => {
            let editing = editing.unwrap_or(editors);
            if docs == 0 || editors < 2 || editing == 0 || editing > editors {
                return Err(usage("need --docs >= 1, --editors >= 2 and 1 <= --editing <= --editors".into()));
            }
            if insert_bytes < fanout::TEXT_HEADER_BYTES {
                return Err(usage(format!("--insert-bytes must be at least {}", fanout::TEXT_HEADER_BYTES)));
            }
            let connections = docs.checked_mul(editors).ok_or_else(|| usage("too many editors".into()))?;
            let shape = Shape {
                rooms: docs,
                connections,
                publishers: docs * editing,
                rate: rate * (docs * editing) as f64,
                in_flight: None,
                tag_every: None,
                payload_bytes: insert_bytes,
            };
            let mut plan = plan(&connect, Some(&publish), publish.duration_secs, shape)?;
            plan.yjs = Some(protocol);
            plan.hold = seconds("hold-secs", hold_secs)?;
            if !(awareness_rate.is_finite() && awareness_rate >= 0.0) {
                return Err(usage("--awareness-rate must be 0 or more".into()));
            }
            plan.awareness_rate = awareness_rate;
            let report = fanout::run(plan)?;
            println!("documents             {docs} x {editors} editors ({editing} editing, {rate} updates/s each)");
            print_fanout(&report);
            if report.awareness_sent > 0 {
                println!("awareness sent        {} updates (relayed, not timed)", report.awareness_sent);
            }
            if let Some(c) = report.server_cpu_us_per_message_delivered {
                println!(
                    "server CPU            {c:.1} us per update delivered to its document's {} other editors",
                    editors - 1
                );
            }
            if let Some(b) = report.server_bytes_per_connection_held {
                println!(
                    "server memory held    {:.0} B per document with its {editors} editors, after {hold_secs} s idle",
                    b * editors as f64
                );
            }
            finish(&connect, &publish, "yjs", &report)
        }
        Scenario::Rooms { connect, publish, rooms, per_room, rate } => {
            if rooms == 0 || per_room < 2 || rooms.checked_mul(per_room).is_none() {
                return Err(usage("need --rooms >= 1 and --per-room >= 2".into()));
            }
            let shape = Shape {
                rooms,
                connections: rooms * per_room,
                publishers: rooms,
                rate,
                in_flight: None,
                tag_every: None,
                payload_bytes: fanout::HEADER_BYTES,
            };
            let report = fanout::run(plan(&connect, Some(&publish), publish.duration_secs, shape)?)?;
            println!("rooms                 {} x {} connections", report.rooms, report.connections / report.rooms);
            println!("wakes                 {} in {:.1} s", report.messages_sent, report.publish_secs);
            println!("deliveries            {} of {} expected", report.deliveries, report.deliveries_expected);
            println!("lost / dup / reorder  {} / {} / {}", report.lost, report.duplicates, report.out_of_order);
            print_percentiles("wake, first members", &report.delivery_latency_us);
            print_percentiles("wake, whole room", &report.last_receiver_latency_us);
            if let Some(b) = report.server_bytes_per_connection {
                let per_room = b * (report.connections / report.rooms) as f64;
                println!("server memory         {per_room:.0} B per room, {b:.0} B per connection");
            }
            print_errors(&report.errors);
            finish(&connect, &publish, "rooms", &report)
        }
        Scenario::Churn { connect, connections, duration_secs } => {
            let shape = Shape {
                rooms: 1,
                connections,
                publishers: 1,
                rate: 1.0,
                in_flight: None,
                tag_every: None,
                payload_bytes: fanout::HEADER_BYTES,
            };
            let report = fanout::churn(plan(&connect, None, duration_secs, shape)?)?;
            println!("connections/cycle     {} ({} cycles)", report.connections_per_cycle, report.cycles);
            println!(
                "handshakes            {} of {} attempted in {:.1} s ({:.0} connects/s)",
                report.handshakes, report.attempts, report.elapsed_secs, report.connects_per_sec
            );
            print_percentiles("handshake latency", &report.handshake_latency_us);
            print_errors(&report.errors);
            write_json(&connect, "churn", &report)
        }
        Scenario::Tags { connect, publish, connections, tag_every, rate, payload_bytes, publish_token } => {
            check_payload(payload_bytes)?;
            if tag_every == 0 || tag_every > connections {
                return Err(usage("--tag-every must be between 1 and --connections".into()));
            }
            let shape = Shape {
                rooms: 1,
                connections,
                publishers: 0,
                rate,
                in_flight: None,
                tag_every: Some(tag_every),
                payload_bytes,
            };
            // The workers only read; the publishing is the driver's, per phase.
            let mut plan = plan(&connect, Some(&publish), 0.0, shape)?;
            let phase = seconds("duration-secs", publish.duration_secs)?;
            plan.duration = phase;
            let report = tags::run(plan, &publish_token, rate)?;
            print_tags(&report);
            write_json(&connect, "tags", &report)?;
            let lost: u64 = report.phases.iter().map(|p| p.summary.lost).sum();
            if lost > publish.max_loss {
                bail!("{lost} deliveries lost (--max-loss {})", publish.max_loss);
            }
            if report.wrong_receivers > 0 || report.delivered_count_mismatches > 0 {
                bail!(
                    "{} tag deliveries reached untagged connections, {} publish counts were wrong",
                    report.wrong_receivers,
                    report.delivered_count_mismatches
                );
            }
            Ok(())
        }
        Scenario::Hibernated { url, rooms, server_pid, connections, timeout_secs, json } => {
            let target = Target::parse_http(&url).map_err(|e| usage(e.to_string()))?;
            if target.path.matches("{room}").count() != 1 {
                return Err(usage("the URL path must hold {room} once: each request touches its own room".into()));
            }
            if rooms == 0 || rooms > 100_000_000 {
                return Err(usage("--rooms must be between 1 and 100,000,000".into()));
            }
            if connections == 0 || connections > 1024 {
                return Err(usage("--connections must be between 1 and 1024".into()));
            }
            let timeout = seconds("timeout-secs", timeout_secs)?;
            let report = hibernated::run(&hibernated::Plan { target, rooms, connections, timeout, server_pid })?;
            print_hibernated(&report);
            write_json_to(json.as_deref(), &url, "hibernated", &report)?;
            if !report.all_hibernated {
                bail!(
                    "after {timeout_secs} s, {} rooms were still resident and {} of {rooms} evicted or dropped",
                    report.rooms_resident_after,
                    report.rooms_evicted + report.rooms_dropped
                );
            }
            Ok(())
        }
        Scenario::Soak {
            url,
            connections,
            rooms,
            duration_secs,
            server_pid,
            active_fraction,
            phase_secs,
            rate,
            churn_per_sec,
            sample_secs,
            drain_secs,
            max_loss,
            rss_tolerance_pct,
            connect_timeout_secs,
            threads,
            source_ips,
            json,
        } => {
            let target = Target::parse(&url).map_err(|e| usage(e.to_string()))?;
            if target.path.matches("{room}").count() != 1 {
                return Err(usage("the URL path must hold {room} once: the connections go to many rooms".into()));
            }
            if rooms == 0 || connections > 1_000_000 || connections < 2 * rooms {
                return Err(usage("need --rooms >= 1 and 2 x --rooms <= --connections <= 1,000,000".into()));
            }
            if connections.div_ceil(rooms) > soak::MAX_MEMBERS_PER_ROOM {
                let most = soak::MAX_MEMBERS_PER_ROOM;
                return Err(usage(format!("at most {most} connections per room: raise --rooms")));
            }
            if !(active_fraction.is_finite() && active_fraction > 0.0 && active_fraction <= 1.0) {
                return Err(usage("--active-fraction must be greater than 0 and at most 1".into()));
            }
            if !(rate.is_finite() && rate > 0.0) {
                return Err(usage("--rate must be a positive number".into()));
            }
            if !(churn_per_sec.is_finite() && (0.0..=100_000.0).contains(&churn_per_sec)) {
                return Err(usage("--churn-per-sec must be between 0 and 100000".into()));
            }
            if !(rss_tolerance_pct.is_finite() && rss_tolerance_pct >= 0.0) {
                return Err(usage("--rss-tolerance-pct must be a number >= 0".into()));
            }
            if threads == 0 || threads > 64 {
                return Err(usage("--threads must be between 1 and 64".into()));
            }
            let (phase, duration) = (seconds("phase-secs", phase_secs)?, seconds("duration-secs", duration_secs)?);
            if phase.is_zero() || duration.is_zero() {
                return Err(usage("--phase-secs and --duration-secs must be greater than 0".into()));
            }
            let sample_every = seconds("sample-secs", sample_secs)?;
            if sample_every < Duration::from_millis(100) {
                return Err(usage("--sample-secs must be between 0.1 and 3600 seconds".into()));
            }
            let plan = soak::Plan {
                target,
                connections,
                rooms,
                active_rooms: ((active_fraction * rooms as f64).round() as usize).clamp(1, rooms),
                active_fraction,
                phase,
                duration,
                rate,
                churn_per_sec,
                sample_every,
                drain: seconds("drain-secs", drain_secs)?,
                connect_timeout: seconds("connect-timeout-secs", connect_timeout_secs)?,
                // Each thread owns whole rooms.
                threads: threads.min(rooms),
                source_ips: match &source_ips {
                    Some(spec) => target::parse_source_ips(spec).map_err(|e| usage(e.to_string()))?,
                    None => Vec::new(),
                },
                server_pid,
                rss_tolerance_pct,
            };
            let report = soak::run(plan)?;
            print_soak(&report);
            write_json_to(json.as_deref(), &url, "soak", &report)?;
            if report.error_count > 0 || report.lost > max_loss {
                bail!("{} errors, {} deliveries lost (--max-loss {max_loss})", report.error_count, report.lost);
            }
            Ok(())
        }
        Scenario::Compare { files } => compare::run(&files).map(|table| print!("{table}")),
        Scenario::Idle { url, connections, server_pid, hold_secs } => idle(&url, connections, server_pid, hold_secs),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().scenario) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Usage>() => {
            eprintln!("dormouse-loadtest: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("dormouse-loadtest: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A bad flag value: exit 2, like clap's own usage errors.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(message: String) -> anyhow::Error {
    Usage(message).into()
}

/// A duration flag: 0 to 3600 seconds, else a usage error.
fn seconds(name: &str, value: f64) -> Result<Duration> {
    if (0.0..=3600.0).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(usage(format!("--{name} must be between 0 and 3600 seconds")))
    }
}

fn print_percentiles(name: &str, p: &fanout::Percentiles) {
    println!(
        "{name:<21} p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us  (n={})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count
    );
}

fn print_errors(errors: &std::collections::HashMap<String, u64>) {
    let mut errors: Vec<_> = errors.iter().collect();
    errors.sort();
    for (kind, n) in errors {
        println!("error                 {kind}: {n}");
    }
}

fn check_payload(payload_bytes: usize) -> Result<()> {
    if (fanout::HEADER_BYTES..=16 << 20).contains(&payload_bytes) {
        Ok(())
    } else {
        Err(usage(format!("--payload-bytes must be between {} and 16777216", fanout::HEADER_BYTES)))
    }
}

fn print_tags(r: &tags::TagsReport) {
    println!(
        "connections           {} ({} tagged hot: every {}th; {} B messages)",
        r.connections, r.tagged_connections, r.tag_every, r.payload_bytes
    );
    println!("connect time          {:.2} s", r.connect_secs);
    for p in &r.phases {
        let s = &p.summary;
        println!("-- {} publishes ({} receivers each)", p.name, s.receivers_per_message);
        println!("messages sent         {} in {:.1} s", s.messages_sent, p.secs);
        println!("deliveries            {} of {} expected", s.deliveries, s.deliveries_expected);
        println!("lost / dup            {} / {}", s.lost, s.duplicates);
        print_percentiles("publish latency", &p.publish_latency_us);
        print_percentiles("last receiver", &s.last_receiver_latency_us);
        if let Some(c) = p.server_cpu_us_per_message {
            println!("server CPU            {c:.1} us per message");
        }
    }
    println!("wrong receivers       {} (tag publishes at untagged connections)", r.wrong_receivers);
    println!("out of order          {}", r.out_of_order);
    println!(
        "count mismatches      {} (publish responses with an unexpected delivered count)",
        r.delivered_count_mismatches
    );
    if let Some(ratio) = r.cpu_ratio_tag_to_full {
        println!("tag vs full           {:.1}% of the server CPU per message", ratio * 100.0);
    }
    println!("tag vs full           {:.1}% of the median publish latency", r.publish_p50_ratio_tag_to_full * 100.0);
    print_errors(&r.errors);
}

fn print_hibernated(r: &hibernated::Report) {
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let rss = |name: &str, s: &target::ProcSample| {
        println!(
            "{name:<21} {:.1} MiB (anon {:.1}, file {:.1})",
            mib(s.rss_bytes),
            mib(s.rss_anon_bytes),
            mib(s.rss_file_bytes)
        );
    };
    println!(
        "rooms                 {} over {} connections ({} requests in flight each)",
        r.rooms, r.connections, r.requests_in_flight_per_connection
    );
    println!(
        "requests              {} answered in {:.1} s ({:.0} requests/s)",
        r.responses, r.request_secs, r.requests_per_sec
    );
    for (status, n) in &r.statuses {
        println!("status {status}            {n}");
    }
    println!("rooms created/woken   {} / {}", r.rooms_created, r.rooms_woken);
    if r.all_hibernated {
        println!("time to hibernate all {:.1} s after the last response", r.hibernate_secs);
    } else {
        println!("time to hibernate all not within {:.1} s (the timeout)", r.hibernate_secs);
    }
    println!(
        "rooms evicted         {} (and {} dropped; {} still resident)",
        r.rooms_evicted, r.rooms_dropped, r.rooms_resident_after
    );
    rss("server RSS before", &r.server_before);
    rss("server RSS touched", &r.server_touched);
    rss("server RSS after", &r.server_after);
    println!(
        "RSS delta             {:.1} B per hibernated room (anon {:.1} B)",
        r.rss_delta_bytes_per_room, r.rss_anon_delta_bytes_per_room
    );
    let met = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "bounds                RSS {:.1} of {:.0} MiB: {}; {:.1} of {:.0} B per room: {}",
        mib(r.server_after.rss_bytes),
        mib(hibernated::RSS_BOUND_BYTES),
        met(r.rss_bound_met),
        r.rss_delta_bytes_per_room,
        hibernated::BYTES_PER_ROOM_BOUND,
        met(r.bytes_per_room_bound_met)
    );
}

fn print_soak(r: &soak::Report) {
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    println!(
        "connections           {} in {} rooms (up to {} each), ramp-up {:.1} s",
        r.connections, r.rooms, r.members_per_room, r.connect_secs
    );
    println!(
        "phases                {:.0} s each, {} of {} rooms active ({}), {} messages/s, {} reconnects/s, {:.0} s",
        r.phase_secs, r.active_rooms_per_phase, r.rooms, r.active_fraction, r.rate, r.churn_per_sec, r.duration_secs
    );
    println!(
        "messages sent         {} ({} B text, run {}; {} sends skipped: no open member)",
        r.messages_sent, r.message_bytes, r.run_id, r.sends_skipped
    );
    println!("deliveries            {} of {} expected", r.deliveries, r.deliveries_expected);
    println!("lost / dup            {} / {}", r.lost, r.duplicates);
    println!(
        "not counted           {} before the sender confirmed the receiver, {} history replays, {} other frames",
        r.unconfirmed_deliveries, r.history_frames, r.foreign_frames
    );
    print_percentiles("delivery latency", &r.delivery_latency_us);
    print_percentiles("handshake latency", &r.handshake_latency_us);
    println!("reconnects            {} ({} churns skipped: no open member)", r.reconnects, r.churn_skipped);
    println!("handshake errors      {}", r.handshake_errors);
    println!("unexpected closes     {}", r.unexpected_closes);
    println!("rooms evicted / woken {} / {} ({} created)", r.rooms_evicted, r.rooms_woken, r.rooms_created);
    let yes = |b: bool| if b { "yes" } else { "NO" };
    println!("server fds            {} at start, {} ramped up, {} after closing", r.fds_start, r.fds_ramped, r.fds_end);
    println!(
        "server connections    {} at start, {} after closing (the /metrics request included)",
        r.connections_open_start, r.connections_open_end
    );
    println!(
        "server RSS            {:.1} MiB ramped up, {:.1} MiB at {:.0} s (warmed up), {:.1} MiB at end of traffic: {:+.1} MiB ({:+.1}%) since warm-up",
        mib(r.rss_ramped_bytes),
        mib(r.rss_baseline_bytes),
        r.rss_baseline_secs,
        mib(r.rss_end_of_traffic_bytes),
        r.rss_growth_bytes as f64 / 1048576.0,
        r.rss_growth_pct
    );
    println!(
        "                      min {:.1}, max {:.1} MiB during traffic; trend since warm-up {:+.2} MiB/min; {:.1} MiB after closing",
        mib(r.rss_min_bytes),
        mib(r.rss_max_bytes),
        r.rss_trend_mib_per_min,
        mib(r.rss_closed_bytes)
    );
    print_errors(&r.errors);
    let growth = if r.rss_within_tolerance {
        format!("no growth: RSS within {}% ({:+.1}%)", r.rss_tolerance_pct, r.rss_growth_pct)
    } else {
        format!("GROWTH: RSS {:+.1}%, more than {}%", r.rss_growth_pct, r.rss_tolerance_pct)
    };
    println!(
        "verdict               {growth}; fds back to start: {} ({} -> {}); connections back to start: {}; lost {}; errors {}",
        yes(r.fds_back_to_start),
        r.fds_start,
        r.fds_end,
        yes(r.connections_back_to_start),
        r.lost,
        r.error_count
    );
}

fn print_fanout(r: &fanout::Report) {
    println!("connections           {} ({} publishers, {} B messages)", r.connections, r.publishers, r.payload_bytes);
    println!("connect time          {:.2} s", r.connect_secs);
    println!("messages sent         {} in {:.1} s", r.messages_sent, r.publish_secs);
    println!("deliveries            {} of {} expected", r.deliveries, r.deliveries_expected);
    println!(
        "delivered frames/s    {:.0} (over {:.2} s, first send to last delivery)",
        r.delivered_frames_per_sec, r.delivery_secs
    );
    println!("lost / dup / reorder  {} / {} / {}", r.lost, r.duplicates, r.out_of_order);
    print_percentiles("delivery latency", &r.delivery_latency_us);
    print_percentiles("last receiver", &r.last_receiver_latency_us);
    print_percentiles("handshake latency", &r.handshake_latency_us);
    if let Some(b) = r.server_bytes_per_connection {
        println!("server memory         {b:.0} B per connection (RSS delta while connecting)");
    }
    if let Some(c) = r.server_cpu_us_per_delivery {
        println!("server CPU            {c:.3} us per delivered frame");
    }
    let form = match (r.text, r.deflate) {
        (_, true) => "text, permessage-deflate offered",
        (true, false) => "text",
        (false, false) => "binary",
    };
    println!("on the wire           {:.0} B per delivered frame ({form})", r.wire_bytes_per_delivery);
    print_errors(&r.errors);
}

fn handshake(target: &Target, id: usize) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(target.addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = socket::upgrade_request(&target.request_target("idle", &format!("idle-{id}")), target.addr, false);
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("server closed during the handshake");
        }
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            bail!("handshake response head too large");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&head).lines().next().unwrap_or(""));
    }
    Ok(stream)
}

fn idle(url: &str, connections: usize, server_pid: Option<u32>, hold_secs: f64) -> Result<()> {
    let target = Target::parse(url).map_err(|e| usage(e.to_string()))?;
    if connections == 0 {
        return Err(usage("--connections must be at least 1".into()));
    }
    if !(hold_secs.is_finite() && (0.0..=3600.0).contains(&hold_secs)) {
        return Err(usage("--hold-secs must be between 0 and 3600".into()));
    }
    let before = server_pid.map(target::sample).transpose()?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(connections);
    for id in 0..connections {
        sockets.push(handshake(&target, id).with_context(|| format!("connection {id}"))?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Holding is the scenario: the connections stay idle this long.
    std::thread::sleep(Duration::from_secs_f64(hold_secs));
    let after = server_pid.map(target::sample).transpose()?;
    println!("connections        {connections}");
    println!("connect time       {connect_secs:.2} s ({:.0} handshakes/s)", connections as f64 / connect_secs);
    if let (Some(before), Some(after)) = (before, after) {
        let delta = after.rss_bytes.saturating_sub(before.rss_bytes);
        println!("server RSS before  {:.1} MiB", before.rss_bytes as f64 / 1048576.0);
        println!("server RSS after   {:.1} MiB", after.rss_bytes as f64 / 1048576.0);
        println!("bytes/connection   {:.0}", delta as f64 / connections as f64);
    }
    for mut socket in sockets {
        // A masked close frame with code 1000, then the socket is dropped.
        let _ = socket.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    }
    Ok(())
}
