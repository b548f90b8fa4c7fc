//! The inspector at `/_dormouse/` (on when `inspector_token` is set): one
//! page, shipped in the binary, showing live figures from the cores'
//! counters (the data `/metrics` serves) and their rooms.
//!
//! Every core writes a bounded summary of its rooms here once a second
//! (`CoreSummary`); core 0 then merges the summaries and the counters into
//! a `Snapshot`, keeps the last minutes of them, and broadcasts it as JSON
//! to the members of the feed room, the page's WebSocket at
//! `/_dormouse/live` (so
//! the page is pushed each second, never polls). The page's first request
//! (`/_dormouse/api/snapshot`) brings the history for its chart. Access is
//! by the token: a login form sets an `HttpOnly` cookie for `/_dormouse`
//! only (so no room's request carries it), or an API client sends
//! `Authorization: Bearer <token>`.
//!
//! One room's detail (`GET /_dormouse/api/room?party=P&room=R`) and the
//! admin's actions on it (`POST /_dormouse/api/evict?party=P&room=R`,
//! `POST /_dormouse/api/close?party=P&room=R&id=C`) are asked of the room's
//! owner core (`reactor/inspect.rs`), which answers from the room as it is;
//! the detail then passes the cores holding its listed connections, each
//! adding what it has queued for them, and the last one answers.

use crate::http::{RequestHead, Response};
use crate::metrics::CoreStats;
use crate::party::{ConnRef, Party, Request, Room};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// The party of the page's live feed; the reactor admits only inspectors.
pub const PARTY: &str = "_dormouse";
/// The feed's room.
pub const ROOM: &str = "live";
/// Where the page opens its WebSocket to the feed.
pub const LIVE_PATH: &str = "/_dormouse/live";
const COOKIE: &str = "dormouse_inspector";
const PAGE: &str = include_str!("page.html");
/// Busiest rooms each core reports, and the merged list shows.
pub const BUSIEST: usize = 10;
/// Seconds of history kept for the chart (5 minutes).
const HISTORY: usize = 300;
/// Recent room failures kept.
const ERRORS: usize = 50;

/// Storage entries read, at most, to size one room's storage.
pub const USAGE_ENTRIES: usize = 4096;
/// Connections one room's detail lists by default, and at most.
const DETAIL_MEMBERS: usize = 200;
const DETAIL_MEMBERS_MAX: usize = 2000;
/// The close an admin gives a connection.
pub const ADMIN_CLOSE: (u16, &str) = (1008, "closed by an administrator");

/// One room as the inspector lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    pub party: String,
    pub room: String,
    pub members: u64,
    /// Events handled in the last second.
    pub events_per_sec: u64,
    pub awake: bool,
    /// Committed storage (a floor when `storage_complete` is false) and
    /// snapshot bytes.
    pub storage_bytes: u64,
    pub storage_complete: bool,
    pub snapshot_bytes: u64,
}

/// What an admin asks of one room (it crosses nodes in a cluster).
#[derive(Debug, Serialize, Deserialize)]
pub enum Action {
    /// Its figures and (up to `limit` of) its connections.
    Detail { limit: usize },
    /// Evict its object to its snapshot now.
    Evict,
    /// Close its connection `id` (`ADMIN_CLOSE`).
    Close { id: String },
}

/// A request to the room API: which room, and what of it.
#[derive(Debug)]
pub struct RoomAsk {
    pub party: String,
    pub room: String,
    pub action: Action,
}

/// One room, as its detail shows it.
#[derive(Debug, Serialize)]
pub struct RoomDetail {
    pub party: String,
    pub room: String,
    /// Its object is in memory (else hibernated, or on disk only).
    pub awake: bool,
    /// Its owner core holds it (awake or hibernated with its members).
    pub hosted: bool,
    pub members_total: u64,
    pub members: Vec<MemberDetail>,
    pub storage_bytes: u64,
    pub storage_complete: bool,
    pub snapshot_bytes: u64,
    pub alarm_ms: Option<u64>,
    /// Cores still to add their connections' backlogs.
    #[serde(skip)]
    pub(crate) cores_left: Vec<u16>,
}

/// One connection of a room's detail.
#[derive(Debug, Serialize)]
pub struct MemberDetail {
    pub id: String,
    pub tags: Vec<String>,
    pub state_bytes: u64,
    pub core: u16,
    /// Bytes queued for it and not yet written; none for a socket of
    /// another room (which has no write queue).
    pub backlog_bytes: Option<u64>,
    /// It is another room's socket (`Room::connect_room`).
    pub room_socket: bool,
    /// It is a socket of another node of the cluster (its backlog is
    /// that node's; `core` is then this node's number for it).
    pub remote: bool,
    #[serde(skip)]
    pub(crate) conn: ConnRef,
}

impl RoomSummary {
    /// The busiest first: by events, then members.
    pub fn rank(&self) -> (std::cmp::Reverse<u64>, std::cmp::Reverse<u64>) {
        (std::cmp::Reverse(self.events_per_sec), std::cmp::Reverse(self.members))
    }
}

/// What one core reports each second.
#[derive(Debug, Default, Clone)]
pub struct CoreSummary {
    /// Rooms per party: (object in memory, hibernated with its members kept).
    pub parties: BTreeMap<String, (u64, u64)>,
    pub busiest: Vec<RoomSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorEntry {
    pub at_ms: u64,
    pub party: String,
    pub room: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
struct PartyRow {
    party: String,
    resident: u64,
    hibernated: u64,
}

/// One second of the server, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    at_ms: u64,
    connections: u64,
    rooms_resident: u64,
    messages_per_sec: u64,
    frames_out_per_sec: u64,
    totals: BTreeMap<&'static str, u64>,
    parties: Vec<PartyRow>,
    busiest: Vec<RoomSummary>,
    errors: Vec<ErrorEntry>,
}

/// A point of the chart.
#[derive(Debug, Clone, Copy, Serialize)]
struct Point {
    at_ms: u64,
    connections: u64,
    messages_per_sec: u64,
}

pub struct Inspector {
    token: String,
    summaries: Vec<Mutex<CoreSummary>>,
    errors: Mutex<VecDeque<ErrorEntry>>,
    history: Mutex<History>,
}

#[derive(Default)]
struct History {
    points: VecDeque<Point>,
    last: Option<Snapshot>,
    last_messages_in: u64,
    last_frames_out: u64,
}

/// Counters shown as totals on the page, by their `/metrics` names.
const TOTALS: &[&str] = &[
    "rooms_created",
    "rooms_woken",
    "rooms_evicted",
    "room_events",
    "messages_in",
    "frames_out",
    "broadcasts",
    "publishes",
    "slow_consumers_closed",
    "events_shed",
    "rate_limited_messages",
    "rate_limited_connects",
    "rate_limited_requests",
];

fn total(stats: &[CoreStats], name: &str) -> u64 {
    stats.iter().filter_map(|s| crate::metrics::stat(s, name)).map(|v| v.load(Ordering::Relaxed)).sum()
}

impl Inspector {
    pub fn new(token: String, cores: usize) -> Inspector {
        Inspector {
            token,
            summaries: (0..cores).map(|_| Mutex::default()).collect(),
            errors: Mutex::new(VecDeque::new()),
            history: Mutex::default(),
        }
    }

    /// Core `core`'s summary of the last second.
    pub fn report(&self, core: usize, summary: CoreSummary) {
        *lock(&self.summaries[core]) = summary;
    }

    /// A room failed (its object was reset).
    pub fn room_failed(&self, at_ms: u64, party: &str, room: &str, reason: &str) {
        let mut errors = lock(&self.errors);
        if errors.len() == ERRORS {
            errors.pop_front();
        }
        errors.push_back(ErrorEntry { at_ms, party: party.into(), room: room.into(), reason: reason.into() });
    }

    /// Merges the cores' latest summaries and counters into this second's
    /// snapshot (kept for the history) and returns it as JSON.
    pub fn snapshot(&self, stats: &[CoreStats], at_ms: u64) -> String {
        let mut parties: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut busiest = Vec::new();
        for summary in &self.summaries {
            let summary = lock(summary);
            for (party, (resident, hibernated)) in &summary.parties {
                let row = parties.entry(party.clone()).or_default();
                row.0 += resident;
                row.1 += hibernated;
            }
            busiest.extend(summary.busiest.iter().filter(|r| r.party != PARTY).cloned());
        }
        busiest.sort_by_key(RoomSummary::rank);
        busiest.truncate(BUSIEST);
        let mut history = lock(&self.history);
        let (messages_in, frames_out) = (total(stats, "messages_in"), total(stats, "frames_out"));
        let messages_per_sec = messages_in.saturating_sub(history.last_messages_in);
        let frames_out_per_sec = frames_out.saturating_sub(history.last_frames_out);
        (history.last_messages_in, history.last_frames_out) = (messages_in, frames_out);
        let snapshot = Snapshot {
            at_ms,
            connections: total(stats, "connections_open"),
            rooms_resident: total(stats, "rooms_resident"),
            messages_per_sec,
            frames_out_per_sec,
            totals: TOTALS.iter().map(|&name| (name, total(stats, name))).collect(),
            parties: parties
                .into_iter()
                .filter(|(party, _)| party != PARTY)
                .map(|(party, (resident, hibernated))| PartyRow { party, resident, hibernated })
                .collect(),
            busiest,
            errors: lock(&self.errors).iter().rev().cloned().collect(),
        };
        if history.points.len() == HISTORY {
            history.points.pop_front();
        }
        let point = Point { at_ms, connections: snapshot.connections, messages_per_sec };
        history.points.push_back(point);
        let json = serde_json::to_string(&snapshot).expect("a snapshot serialises");
        history.last = Some(snapshot);
        json
    }

    /// Whether `head` carries the token (cookie or bearer).
    pub fn authorized(&self, head: &RequestHead) -> bool {
        let bearer = head.header_str("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let cookie = head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value);
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|given| crate::http::constant_time_eq(given.as_bytes(), self.token.as_bytes()))
    }

    /// What a request to the room API asks (`None` for any other path),
    /// or the answer when it cannot be asked (no token, wrong method, no
    /// room named).
    pub fn room_ask(&self, request: &Request) -> Option<Result<RoomAsk, Response>> {
        let (method, what) = match request.path() {
            "/_dormouse/api/room" => ("GET", 0),
            "/_dormouse/api/evict" => ("POST", 1),
            "/_dormouse/api/close" => ("POST", 2),
            _ => return None,
        };
        Some(self.parse_ask(request, method, what))
    }

    fn parse_ask(&self, request: &Request, method: &str, what: u8) -> Result<RoomAsk, Response> {
        if !self.authorized(&request.head) {
            let refusal = Response::text(401, "the inspector token is required");
            return Err(refusal.with_header("www-authenticate", "Bearer"));
        }
        if request.method() != method {
            return Err(Response::text(405, format!("use {method}")).with_header("allow", method));
        }
        let query = request.query();
        let param = |name: &str| crate::route::query_param(query, name).map(std::borrow::Cow::into_owned);
        let (Some(party), Some(room)) = (param("party"), param("room")) else {
            return Err(Response::text(400, "name the room: ?party=P&room=R"));
        };
        let action = match what {
            0 => {
                let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(DETAIL_MEMBERS);
                Action::Detail { limit: limit.min(DETAIL_MEMBERS_MAX) }
            }
            1 => Action::Evict,
            _ => match param("id") {
                Some(id) => Action::Close { id },
                None => return Err(Response::text(400, "name the connection: &id=C")),
            },
        };
        Ok(RoomAsk { party, room, action })
    }

    /// Answers a request under `/_dormouse`.
    pub fn respond(&self, request: &Request) -> Response {
        match (request.method(), request.path()) {
            ("GET" | "HEAD", "/_dormouse" | "/_dormouse/") => {
                Response::html(200, PAGE).with_header("cache-control", "no-store").with_header(
                    "content-security-policy",
                    "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
                )
            }
            ("POST", "/_dormouse/login") => {
                let given =
                    form_urlencoded::parse(&request.body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
                match given {
                    Some(token) if crate::http::constant_time_eq(token.as_bytes(), self.token.as_bytes()) => {
                        Response::new(303).with_header("location", "/_dormouse/").with_header(
                            "set-cookie",
                            format!("{COOKIE}={token}; Path=/_dormouse; HttpOnly; SameSite=Strict"),
                        )
                    }
                    _ => Response::text(401, "wrong token"),
                }
            }
            (_, "/_dormouse/login") => Response::text(405, "log in with POST").with_header("allow", "POST"),
            (_, "/_dormouse/api/snapshot") if !self.authorized(&request.head) => {
                Response::text(401, "the inspector token is required").with_header("www-authenticate", "Bearer")
            }
            ("GET", "/_dormouse/api/snapshot") => {
                let history = lock(&self.history);
                let points: Vec<Point> = history.points.iter().copied().collect();
                let body = serde_json::json!({ "snapshot": history.last, "history": points });
                Response::json(200, body.to_string()).with_header("cache-control", "no-store")
            }
            _ => Response::text(404, "Not found"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while a summary was written leaves a summary: still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The party of the live feed: its members are inspector pages, which send
/// nothing the room needs; the snapshots reach them as broadcasts.
pub struct Feed;

impl Party for Feed {
    fn new(_room: &Room) -> Self {
        Feed
    }
}
