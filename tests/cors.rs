//! CORS and the WebSocket `Origin` allow-list, per party, answered by the
//! reactor: a preflight never reaches the room, a response to an allowed
//! origin carries the headers, an upgrade from an origin not allowed is
//! 403. (The browser's side of it is in `tests/browser.rs`.)

mod common;

use common::{http, start};

backend_tests!(
    a_preflight_is_answered_without_the_room,
    a_response_carries_the_headers_for_an_allowed_origin_only,
    cors_true_allows_any_origin_and_a_party_without_it_answers_options_itself,
    a_websocket_from_an_origin_not_allowed_is_refused_with_403,
);

const RULES: &str = "[parties.counter]\n\
                     cors = { origins = [\"https://app.example\"], headers = [\"content-type\"], max_age = 60 }\n";

const UPGRADE: &str = "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n\
                       sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn a_preflight_is_answered_without_the_room() {
    let server = start(RULES);
    let addr = server.local_addr();
    let asks = "origin: https://app.example\r\naccess-control-request-method: POST\r\n\
                access-control-request-headers: content-type\r\n";
    let preflight = http(addr, "OPTIONS", "/parties/counter/c", asks, "");
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(preflight.header("access-control-allow-methods"), Some("GET, HEAD, POST, PUT, PATCH, DELETE"));
    assert_eq!(preflight.header("access-control-allow-headers"), Some("content-type"));
    assert_eq!(preflight.header("access-control-max-age"), Some("60"));
    assert_eq!(preflight.header("vary"), Some("origin"));
    let other = "origin: https://evil.example\r\naccess-control-request-method: POST\r\n";
    let refused = http(addr, "OPTIONS", "/parties/counter/c", other, "");
    assert_eq!((refused.status, refused.text()), (403, "origin https://evil.example is not allowed".to_owned()));
    assert_eq!(refused.header("access-control-allow-origin"), None);
    // Neither reached the room (Counter answers OPTIONS with 405).
    assert_eq!(server.counter("room_events"), 0);
    assert_eq!(server.counter("rooms_created"), 0);
}

fn a_response_carries_the_headers_for_an_allowed_origin_only() {
    let server = start(RULES);
    let addr = server.local_addr();
    let posted = http(addr, "POST", "/parties/counter/c", "origin: https://APP.example\r\n", "5");
    assert_eq!((posted.status, posted.text()), (200, "5".to_owned()));
    assert_eq!(posted.header("access-control-allow-origin"), Some("https://APP.example"));
    assert_eq!(posted.header("vary"), Some("origin"));
    // Another origin's request still runs (only a browser enforces CORS),
    // without the headers that would let its page read the answer.
    let other = http(addr, "POST", "/parties/counter/c", "origin: https://evil.example\r\n", "1");
    assert_eq!((other.status, other.text()), (200, "6".to_owned()));
    assert_eq!(other.header("access-control-allow-origin"), None);
    let plain = http(addr, "GET", "/parties/counter/c", "", "");
    assert_eq!((plain.status, plain.header("access-control-allow-origin")), (200, None));
}

fn cors_true_allows_any_origin_and_a_party_without_it_answers_options_itself() {
    let server = start("[parties.counter]\ncors = true\n");
    let addr = server.local_addr();
    let got = http(addr, "GET", "/parties/counter/c", "origin: http://localhost:3000\r\n", "");
    assert_eq!(got.header("access-control-allow-origin"), Some("*"));
    assert_eq!(got.header("vary"), None, "the same answer for every origin");
    let asks = "origin: http://localhost:3000\r\naccess-control-request-method: PUT\r\n\
                access-control-request-headers: x-one, x-two\r\n";
    let preflight = http(addr, "OPTIONS", "/parties/counter/c", asks, "");
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-headers"), Some("x-one, x-two"), "what was asked for");
    // The echo party has no `cors`: OPTIONS is the room's business.
    let options = http(addr, "OPTIONS", "/parties/counter-less/c", asks, "");
    assert_eq!(options.status, 404, "no such party: {}", options.text());
    let own = http(start("").local_addr(), "OPTIONS", "/parties/counter/c", asks, "");
    assert_eq!((own.status, own.header("access-control-allow-origin")), (405, None));
}

fn a_websocket_from_an_origin_not_allowed_is_refused_with_403() {
    let server = start("[parties.main]\nws_origins = [\"https://app.example\"]\n");
    let addr = server.local_addr();
    let refused = http(addr, "GET", "/parties/main/r", &format!("{UPGRADE}origin: https://evil.example\r\n"), "");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.text(), "origin https://evil.example may not open a WebSocket to this party");
    let allowed = http(addr, "GET", "/parties/main/r", &format!("{UPGRADE}origin: https://app.example\r\n"), "");
    assert_eq!(allowed.status, 101);
    let no_origin = http(addr, "GET", "/parties/main/r", UPGRADE, "");
    assert_eq!(no_origin.status, 101, "a client that is not a browser sends none");
    assert_eq!(server.counter("rooms_created"), 1, "the refused upgrade made no room");
}
