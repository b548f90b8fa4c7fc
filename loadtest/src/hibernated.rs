//! The `hibernated` scenario: touch N distinct rooms with one HTTP request
//! each, wait until the server reports every room object gone from memory
//! (evicted to its snapshot, for a hibernating party; dropped once idle and
//! empty, for one without hibernation), and read the server's resident
//! memory before and after.
//!
//! A hibernated room with no connections should cost the server no memory:
//! the figures are the RSS after against the RSS before, per room, next to
//! the bounds the design promises (the whole server within 256 MiB at a
//! million rooms, at most 128 bytes per room). The requests go over a few
//! keep-alive connections, pipelined, so the loader is not what limits the
//! request rate. Whether every room was evicted is read from the server's
//! own counters (`/metrics`), not guessed from a sleep.

use crate::target::{self, ProcSample, Target};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Requests in flight per connection: enough to hide the round trip.
pub const WINDOW: u64 = 32;
/// How often the server's counters are read while waiting for evictions.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// A stalled server fails the run after this long without a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A response (head and body) larger than this fails the run.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The design's bounds, printed next to what was measured.
pub const RSS_BOUND_BYTES: u64 = 256 << 20;
pub const BYTES_PER_ROOM_BOUND: f64 = 128.0;

#[derive(Debug, Clone)]
pub struct Plan {
    /// An `http://` URL whose path holds `{room}`; room `i` is `h<i>`.
    pub target: Target,
    pub rooms: u64,
    pub connections: usize,
    /// Longest wait for the server to evict every room.
    pub timeout: Duration,
    pub server_pid: u32,
}

/// What a `hibernated` run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub rooms: u64,
    pub connections: usize,
    pub requests_in_flight_per_connection: u64,
    pub responses: u64,
    /// Responses by status code (any status counts: the request is what
    /// creates the room object).
    pub statuses: BTreeMap<u16, u64>,
    pub request_secs: f64,
    pub requests_per_sec: f64,
    /// Whether the server reported no room resident and every room evicted
    /// or dropped within the timeout.
    pub all_hibernated: bool,
    /// From the last response until the server reported that (to within the
    /// 200 ms polling interval), or until the timeout.
    pub hibernate_secs: f64,
    /// The server's counters at the end, summed over its cores; the counters
    /// are differences over the run.
    pub rooms_resident_after: u64,
    pub rooms_evicted: u64,
    pub rooms_dropped: u64,
    pub rooms_created: u64,
    pub rooms_woken: u64,
    pub server_before: ProcSample,
    /// Right after the last response, before the waiting.
    pub server_touched: ProcSample,
    pub server_after: ProcSample,
    /// RSS after minus RSS before, per room; negative when the server
    /// returned more memory than the rooms took.
    pub rss_delta_bytes_per_room: f64,
    pub rss_anon_delta_bytes_per_room: f64,
    pub rss_bound_met: bool,
    pub bytes_per_room_bound_met: bool,
}

pub fn run(plan: &Plan) -> Result<Report> {
    let (prefix, suffix) = plan.target.path.split_once("{room}").context("the URL path holds {room}")?;
    let counts_before = room_counts(plan.target.addr)?;
    let server_before = target::sample(plan.server_pid)?;

    let started = Instant::now();
    let tallies = touch_all(plan, prefix, suffix)?;
    let request_secs = started.elapsed().as_secs_f64();
    let server_touched = target::sample(plan.server_pid)?;

    let mut responses = 0;
    let mut statuses = BTreeMap::new();
    for tally in tallies {
        responses += tally.responses;
        for (status, n) in tally.statuses {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    assert_eq!(responses, plan.rooms, "touch_all returns only when every request is answered");

    let waiting = Instant::now();
    let deadline = waiting + plan.timeout;
    let (counts, all_hibernated) = loop {
        let counts = room_counts(plan.target.addr)?;
        let evicted = counts.evicted.saturating_sub(counts_before.evicted);
        let dropped = counts.dropped.saturating_sub(counts_before.dropped);
        if counts.resident == 0 && evicted + dropped >= plan.rooms {
            break (counts, true);
        }
        if Instant::now() >= deadline {
            break (counts, false);
        }
        // Polling is the scenario: the server evicts on its own clock.
        std::thread::sleep(POLL_EVERY);
    };
    let hibernate_secs = waiting.elapsed().as_secs_f64();
    let server_after = target::sample(plan.server_pid)?;

    let per_room = |after: u64, before: u64| (after as f64 - before as f64) / plan.rooms as f64;
    let rss_delta_bytes_per_room = per_room(server_after.rss_bytes, server_before.rss_bytes);
    Ok(Report {
        rooms: plan.rooms,
        connections: plan.connections,
        requests_in_flight_per_connection: WINDOW,
        responses,
        statuses,
        request_secs,
        requests_per_sec: responses as f64 / request_secs.max(f64::MIN_POSITIVE),
        all_hibernated,
        hibernate_secs,
        rooms_resident_after: counts.resident,
        rooms_evicted: counts.evicted.saturating_sub(counts_before.evicted),
        rooms_dropped: counts.dropped.saturating_sub(counts_before.dropped),
        rooms_created: counts.created.saturating_sub(counts_before.created),
        rooms_woken: counts.woken.saturating_sub(counts_before.woken),
        server_before,
        server_touched,
        server_after,
        rss_delta_bytes_per_room,
        rss_anon_delta_bytes_per_room: per_room(server_after.rss_anon_bytes, server_before.rss_anon_bytes),
        rss_bound_met: server_after.rss_bytes <= RSS_BOUND_BYTES,
        bytes_per_room_bound_met: rss_delta_bytes_per_room <= BYTES_PER_ROOM_BOUND,
    })
}

/// One connection's count of answered requests.
#[derive(Debug, Default)]
struct Tally {
    responses: u64,
    statuses: BTreeMap<u16, u64>,
}

/// Sends every request, each connection its contiguous share of the rooms;
/// the first connection to fail stops the others and fails the run.
fn touch_all(plan: &Plan, prefix: &str, suffix: &str) -> Result<Vec<Tally>> {
    let connections = (plan.connections as u64).min(plan.rooms);
    let stop = AtomicBool::new(false);
    let results: Vec<Result<Tally>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|c| {
                let share = c * plan.rooms / connections..(c + 1) * plan.rooms / connections;
                let stop = &stop;
                scope.spawn(move || {
                    let result =
                        touch(plan.target.addr, prefix, suffix, share, stop).with_context(|| format!("connection {c}"));
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a connection thread does not panic")).collect()
    });
    // Only a failing connection sets `stop`, so a stopped run is an error here.
    results.into_iter().collect()
}

/// `GET`s the rooms `h<i>` for `i` in `rooms` over one keep-alive
/// connection, with up to `WINDOW` requests in flight.
fn touch(addr: SocketAddr, prefix: &str, suffix: &str, rooms: Range<u64>, stop: &AtomicBool) -> Result<Tally> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let total = rooms.end - rooms.start;
    let mut next = rooms.start;
    let mut tally = Tally::default();
    let mut requests = Vec::with_capacity(WINDOW as usize * (prefix.len() + suffix.len() + 64));
    let mut buf = vec![0u8; 64 << 10];
    let mut filled = 0;
    while tally.responses < total {
        if stop.load(Ordering::Relaxed) {
            return Ok(tally);
        }
        requests.clear();
        while next < rooms.end && (next - rooms.start) - tally.responses < WINDOW {
            write!(requests, "GET {prefix}h{next}{suffix} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                .expect("writing to a Vec cannot fail");
            next += 1;
        }
        if !requests.is_empty() {
            stream
                .write_all(&requests)
                .with_context(|| format!("send requests after {} of {total} responses", tally.responses))?;
        }
        if filled == buf.len() {
            if buf.len() >= MAX_RESPONSE_BYTES {
                bail!("a response is larger than {MAX_RESPONSE_BYTES} bytes");
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => bail!("the server closed the connection after {} of {total} responses", tally.responses),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("no response for {READ_TIMEOUT:?} after {} of {total} responses", tally.responses)
            }
            Err(e) => return Err(e).context(format!("read after {} of {total} responses", tally.responses)),
        };
        filled += n;
        let mut start = 0;
        while let Some((len, status)) = response(&buf[start..filled])? {
            start += len;
            tally.responses += 1;
            *tally.statuses.entry(status).or_insert(0) += 1;
        }
        if tally.responses > next - rooms.start {
            bail!("more responses than requests");
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
    if filled > 0 {
        bail!("{filled} bytes after the last response");
    }
    Ok(tally)
}

/// The length and status of the complete response at the start of `buf`,
/// or `None` while it is incomplete.
fn response(buf: &[u8]) -> Result<Option<(usize, u16)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head = match parsed.parse(buf).context("a malformed response")? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(head) => head,
    };
    let status = parsed.code.context("a response without a status")?;
    let mut length = None;
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().with_context(|| format!("content-length {value:?}"))?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a response with transfer-encoding {value:?}: only content-length bodies are read");
        } else if header.name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            bail!("the server answered {status} with connection: close, dropping the requests behind it");
        }
    }
    let length = match (status, length) {
        (_, Some(length)) => length,
        (100..=199 | 204 | 304, None) => 0,
        (_, None) => bail!("a {status} response without content-length"),
    };
    Ok((buf.len() >= head + length).then_some((head + length, status)))
}

/// The server's room counters, summed over its cores.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoomCounts {
    pub(crate) resident: u64,
    pub(crate) evicted: u64,
    /// Objects without snapshots dropped (idle and empty, or making way).
    pub(crate) dropped: u64,
    pub(crate) created: u64,
    pub(crate) woken: u64,
    /// Open sockets, HTTP and WebSocket (the `/metrics` request's own included).
    pub(crate) connections_open: u64,
}

/// Reads `GET /metrics` from the server.
pub(crate) fn room_counts(addr: SocketAddr) -> Result<RoomCounts> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr} for /metrics"))?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = Vec::new();
    stream.take(MAX_RESPONSE_BYTES as u64).read_to_end(&mut text).context("read /metrics")?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head = match parsed.parse(&text).context("a malformed /metrics response")? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => bail!("the /metrics response ended in its head"),
    };
    match parsed.code {
        Some(200) => parse_metrics(&String::from_utf8_lossy(&text[head..])),
        code => bail!("GET /metrics answered {code:?}: is the server dormouse with metrics enabled?"),
    }
}

/// Sums the per-core samples of the room metrics in Prometheus text.
fn parse_metrics(text: &str) -> Result<RoomCounts> {
    let mut counts = RoomCounts::default();
    let (mut resident_seen, mut evicted_seen) = (false, false);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.trim_end().rsplit_once(' ') else { continue };
        let name = series.split('{').next().unwrap_or(series);
        let sum = match name {
            "dormouse_rooms_resident" => {
                resident_seen = true;
                &mut counts.resident
            }
            "dormouse_rooms_evicted_total" => {
                evicted_seen = true;
                &mut counts.evicted
            }
            "dormouse_rooms_dropped_total" => &mut counts.dropped,
            "dormouse_rooms_created_total" => &mut counts.created,
            "dormouse_rooms_woken_total" => &mut counts.woken,
            "dormouse_connections_open" => &mut counts.connections_open,
            _ => continue,
        };
        *sum += value.parse::<u64>().with_context(|| format!("metric line {line:?}"))?;
    }
    if !(resident_seen && evicted_seen) {
        bail!("/metrics has no dormouse_rooms_resident or dormouse_rooms_evicted_total: is the server dormouse?");
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_cores() {
        let text = "# HELP dormouse_rooms_resident Room objects in memory.\n\
                    # TYPE dormouse_rooms_resident gauge\n\
                    dormouse_rooms_resident{core=\"0\"} 3\n\
                    dormouse_rooms_resident{core=\"1\"} 4\n\
                    dormouse_rooms_evicted_total{core=\"0\"} 10\n\
                    dormouse_rooms_evicted_total{core=\"1\"} 20\n\
                    dormouse_rooms_created_total{core=\"0\"} 30\n\
                    dormouse_rooms_residents{core=\"0\"} 99\n\
                    dormouse_connections_open{core=\"0\"} 5\n\
                    dormouse_connections_open{core=\"1\"} 6\n";
        let counts = parse_metrics(text).unwrap();
        assert_eq!(
            counts,
            RoomCounts { resident: 7, evicted: 30, dropped: 0, created: 30, woken: 0, connections_open: 11 }
        );
        assert!(parse_metrics("dormouse_rooms_resident 1\n").is_err(), "the evicted counter is required");
        assert!(parse_metrics("dormouse_rooms_resident x\ndormouse_rooms_evicted_total 1\n").is_err());
    }

    #[test]
    fn pipelined_responses_are_split_at_their_lengths() {
        let one = b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope.";
        let two = [&one[..], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"].concat();
        assert_eq!(response(&two).unwrap(), Some((one.len(), 404)));
        assert_eq!(response(&two[one.len()..]).unwrap(), Some((two.len() - one.len(), 200)));
        for cut in 0..one.len() {
            assert_eq!(response(&one[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(response(b"HTTP/1.1 200 OK\r\n\r\n").is_err(), "no length");
        assert!(response(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").is_err());
        assert!(response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(response(b"garbage\r\n\r\n").is_err());
    }
}
