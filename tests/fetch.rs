//! Outbound HTTP from rooms (`Room::fetch`): requests to an upstream
//! server this test runs on loopback, the outcome back as the room's
//! `on_fetch_response` event. The deny-list refuses loopback by default
//! (and on a redirect), `fetch_allow` and `allow_private_fetch` lift it;
//! timeouts, the response size and the per-room bound fail the request,
//! not the room; a hibernating room waiting for a response stays in memory.

mod common;

use common::upstream::{upstream, upstream_tls};
use common::{config, wait_for_counter, Client};
use dormouse::{FetchError, FetchRequest, Message, Party, Response, Room, Server, ServerHandle};

backend_tests!(
    a_room_fetches_from_an_allowed_upstream_and_hears_the_response_as_an_event,
    loopback_is_refused_by_default_and_on_a_redirect,
    allow_private_fetch_lifts_the_deny_list,
    https_is_fetched_from_a_server_the_trusted_cas_vouch_for_and_refused_otherwise,
    timeouts_oversized_bodies_and_bad_urls_fail_the_request_not_the_room,
    a_room_has_at_most_its_share_of_requests_in_flight,
    a_hibernating_room_waiting_for_a_response_is_not_evicted,
);

/// `METHOD URL [BODY]` fetches (answering `sent <id>` or `refused`); each
/// outcome is broadcast as `<id> <status> <x-upstream> <body>` or
/// `<id> error <why>`. `count` answers how many outcomes it has heard,
/// from memory (so a room woken from a snapshot shows what it kept).
#[derive(serde::Serialize, serde::Deserialize)]
struct Fetcher {
    heard: u32,
}

impl Party for Fetcher {
    fn new(_room: &Room) -> Self {
        Fetcher { heard: 0 }
    }

    fn on_message(&mut self, message: Message<'_>, sender: &dormouse::Connection<'_>, room: &Room) {
        let Message::Text(text) = message else { return };
        if text == "count" {
            return sender.send(format!("count {}", self.heard).as_str());
        }
        let mut words = text.splitn(3, ' ');
        let (method, url) = (words.next().unwrap(), words.next().unwrap());
        let mut request = FetchRequest::new(method, url).with_header("x-room", room.id());
        if let Some(body) = words.next() {
            request = request.with_body(body.to_owned());
        }
        match room.fetch(request) {
            Some(id) => sender.send(format!("sent {id}").as_str()),
            None => sender.send("refused"),
        }
    }

    fn on_fetch_response(&mut self, id: u32, outcome: Result<Response, FetchError>, room: &Room) {
        self.heard += 1;
        let text = match outcome {
            Ok(response) => {
                let upstream = response.headers.iter().find(|(n, _)| n == "x-upstream").map_or("-", |(_, v)| v);
                format!("{id} {} {upstream} {}", response.status, String::from_utf8_lossy(&response.body))
            }
            Err(error) => format!("{id} error {error}"),
        };
        room.broadcast(text.as_str(), &[]);
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        dormouse::snapshot::encode(self)
    }

    fn restore(_room: &Room, bytes: &[u8]) -> Result<Self, String> {
        dormouse::snapshot::decode(bytes)
    }
}

/// A server with `top` keys, `limits`, and the fetcher party hibernating
/// after `idle_ms`.
fn start(top: &str, limits: &str, idle_ms: u64) -> ServerHandle {
    let toml = format!("{top}\n[limits]\n{limits}\n[parties.fetcher]\nhibernate = true\nidle_evict_ms = {idle_ms}\n");
    Server::new(config(&toml)).party::<Fetcher>("fetcher").start().expect("server starts")
}

const ALLOW_LOOPBACK: &str = "fetch_allow = [\"127.0.0.1\"]";

fn a_room_fetches_from_an_allowed_upstream_and_hears_the_response_as_an_event() {
    let up = upstream();
    let server = start(ALLOW_LOOPBACK, "", 10_000);
    let mut client = Client::connect(server.local_addr(), "/parties/fetcher/r1");
    client.send_text(&format!("GET http://{}/hello", up.addr));
    assert_eq!(client.recv_text(), "sent 1");
    assert_eq!(client.recv_text(), "1 200 yes hello");
    client.send_text(&format!("POST http://{}/echo the body", up.addr));
    assert_eq!(client.recv_text(), "sent 2");
    assert_eq!(client.recv_text(), "2 201 - POST r1 the body", "method, headers and body went out");
    // Rooms on either core fetch; each hears only its own outcomes.
    for room in ["r2", "r3", "r4"] {
        let mut other = Client::connect(server.local_addr(), &format!("/parties/fetcher/{room}"));
        other.send_text(&format!("PUT http://{}/echo {room}", up.addr));
        assert_eq!(other.recv_text(), "sent 1");
        assert_eq!(other.recv_text(), format!("1 201 - PUT {room} {room}"));
    }
    client.send_text("count");
    assert_eq!(client.recv_text(), "count 2");
}

fn loopback_is_refused_by_default_and_on_a_redirect() {
    let up = upstream();
    let server = start("", "", 10_000);
    let mut client = Client::connect(server.local_addr(), "/parties/fetcher/r");
    client.send_text(&format!("GET http://{}/hello", up.addr));
    assert_eq!(client.recv_text(), "sent 1");
    let refused = client.recv_text();
    assert!(refused.starts_with("1 error ") && refused.contains("private or local address"), "{refused}");
    client.send_text(&format!("GET http://localhost:{}/hello", up.addr.port()));
    assert_eq!(client.recv_text(), "sent 2");
    let refused = client.recv_text();
    assert!(refused.contains("private or local address"), "a name that resolves to loopback too: {refused}");
    // Allowed: 127.0.0.1 only. A redirect to 127.0.0.2 is refused as well.
    let allowed = start("fetch_allow = [\"127.0.0.1/32\"]", "", 10_000);
    let mut client = Client::connect(allowed.local_addr(), "/parties/fetcher/r");
    client.send_text(&format!("GET http://{}/redirect", up.addr));
    assert_eq!(client.recv_text(), "sent 1");
    let refused = client.recv_text();
    assert!(refused.contains("private or local address") && refused.contains("127.0.0.2"), "{refused}");
}

fn allow_private_fetch_lifts_the_deny_list() {
    let up = upstream();
    let server = start("allow_private_fetch = true", "", 10_000);
    let mut client = Client::connect(server.local_addr(), "/parties/fetcher/r");
    client.send_text(&format!("GET http://localhost:{}/hello", up.addr.port()));
    assert_eq!(client.recv_text(), "sent 1");
    assert_eq!(client.recv_text(), "1 200 yes hello");
}

fn https_is_fetched_from_a_server_the_trusted_cas_vouch_for_and_refused_otherwise() {
    let up = upstream_tls();
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/ca.pem");
    let trusting = start(&format!("{ALLOW_LOOPBACK}\nfetch_ca_file = '{}'", ca.display()), "", 10_000);
    let mut client = Client::connect(trusting.local_addr(), "/parties/fetcher/r");
    client.send_text(&format!("GET https://{}/hello", up.addr));
    assert_eq!(client.recv_text(), "sent 1");
    assert_eq!(client.recv_text(), "1 200 yes hello");
    client.send_text(&format!("POST https://{}/echo over tls", up.addr));
    assert_eq!(client.recv_text(), "sent 2");
    assert_eq!(client.recv_text(), "2 201 - POST r over tls");
    // Plain HTTP to a TLS server is no response, and the room goes on.
    client.send_text(&format!("GET http://{}/hello", up.addr));
    assert_eq!(client.recv_text(), "sent 3");
    assert!(client.recv_text().starts_with("3 error "));
    // With Mozilla's roots only, the test CA vouches for nothing.
    let default = start(ALLOW_LOOPBACK, "", 10_000);
    let mut client = Client::connect(default.local_addr(), "/parties/fetcher/r");
    client.send_text(&format!("GET https://{}/hello", up.addr));
    assert_eq!(client.recv_text(), "sent 1");
    let refused = client.recv_text();
    assert!(refused.starts_with("1 error ") && refused.to_lowercase().contains("certificate"), "{refused}");
    // A CA file that holds no certificate stops the server at start-up.
    let empty = common::fresh_data_dir().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let toml = format!("fetch_ca_file = '{}'\n", empty.display());
    let error = Server::new(config(&toml)).party::<Fetcher>("fetcher").start().err().expect("the server refuses");
    assert!(error.to_string().contains("no certificate"), "{error}");
}

fn timeouts_oversized_bodies_and_bad_urls_fail_the_request_not_the_room() {
    let up = upstream();
    let server = start(ALLOW_LOOPBACK, "fetch_timeout_ms = 300\nmax_fetch_response_bytes = 1000", 10_000);
    let mut client = Client::connect(server.local_addr(), "/parties/fetcher/r");
    client.send_text(&format!("GET http://{}/hold", up.addr));
    assert_eq!(client.recv_text(), "sent 1");
    assert_eq!(client.recv_text(), "1 error no response within 300 ms");
    client.send_text(&format!("GET http://{}/big", up.addr));
    assert_eq!(client.recv_text(), "sent 2");
    assert_eq!(client.recv_text(), "2 error the response body is over 1000 bytes");
    client.send_text("GET ftp://example.com/file");
    assert_eq!(client.recv_text(), "sent 3");
    assert_eq!(client.recv_text(), "3 error \"ftp://example.com/file\" is not an absolute http:// or https:// URL");
    client.send_text("GET /relative");
    assert_eq!(client.recv_text(), "sent 4");
    assert!(client.recv_text().starts_with("4 error "));
    // The room is the same object throughout.
    client.send_text(&format!("GET http://{}/hello", up.addr));
    assert_eq!(client.recv_text(), "sent 5");
    assert_eq!(client.recv_text(), "5 200 yes hello");
    client.send_text("count");
    assert_eq!(client.recv_text(), "count 5");
    drop(up.release);
}

fn a_room_has_at_most_its_share_of_requests_in_flight() {
    let up = upstream();
    let server = start(ALLOW_LOOPBACK, "max_fetches_per_room = 2", 10_000);
    let mut client = Client::connect(server.local_addr(), "/parties/fetcher/r");
    for expected in ["sent 1", "sent 2", "refused"] {
        client.send_text(&format!("GET http://{}/hold", up.addr));
        assert_eq!(client.recv_text(), expected);
    }
    // Another room has its own share.
    let mut other = Client::connect(server.local_addr(), "/parties/fetcher/other");
    other.send_text(&format!("GET http://{}/hello", up.addr));
    assert_eq!(other.recv_text(), "sent 1");
    assert_eq!(other.recv_text(), "1 200 yes hello");
    // Once one settles, the room may send again.
    up.release.send(()).unwrap();
    assert_eq!(client.recv_text().split_once(' ').unwrap().1, "200 - held");
    client.send_text(&format!("GET http://{}/hello", up.addr));
    assert_eq!(client.recv_text(), "sent 3");
    assert_eq!(client.recv_text(), "3 200 yes hello");
}

fn a_hibernating_room_waiting_for_a_response_is_not_evicted() {
    let up = upstream();
    let server = start(ALLOW_LOOPBACK, "", 300);
    let mut waiting = Client::connect(server.local_addr(), "/parties/fetcher/waiting");
    waiting.send_text(&format!("GET http://{}/hold", up.addr));
    assert_eq!(waiting.recv_text(), "sent 1");
    // A room idle since after the waiting one's last event: once it is
    // evicted, the waiting one is past its idle time too, and was passed by.
    let mut idle = Client::connect(server.local_addr(), "/parties/fetcher/idle");
    idle.send_text("count");
    assert_eq!(idle.recv_text(), "count 0");
    wait_for_counter(&server, "rooms_evicted", 1);
    assert_eq!(server.counter("rooms_evicted"), 1, "only the idle room");
    up.release.send(()).unwrap();
    assert_eq!(waiting.recv_text(), "1 200 - held");
    waiting.send_text("count");
    assert_eq!(waiting.recv_text(), "count 1", "the object that asked heard the answer");
    // Settled, it hibernates like any room, and wakes with what it kept.
    wait_for_counter(&server, "rooms_evicted", 2);
    waiting.send_text("count");
    assert_eq!(waiting.recv_text(), "count 1");
}
