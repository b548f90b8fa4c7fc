//! The inspector's room API, as the page and an API client use it, over
//! real sockets with the bearer token: one room's detail (its connections
//! with their tags, state and backlog, its storage and snapshot sizes),
//! evicting it, closing one of its connections, and the sizes in the
//! busiest list. The page itself is driven in `tests/browser.rs`.

mod common;

backend_tests!(
    a_rooms_detail_shows_its_connections_and_sizes_and_an_admin_evicts_it_and_closes_one,
    the_room_api_refuses_what_it_cannot_do,
);

use common::*;
use serde_json::Value;
use std::net::SocketAddr;

const TOKEN: &str = "inspector-token-for-the-api";
const AUTH: &str = "authorization: Bearer inspector-token-for-the-api\r\n";

fn serve() -> dormouse::ServerHandle {
    start(&format!("inspector_token = \"{TOKEN}\"\n[parties.durable]\nhibernate = true\n"))
}

fn detail(addr: SocketAddr, party: &str, room: &str) -> Value {
    let response = http(addr, "GET", &format!("/_dormouse/api/room?party={party}&room={room}"), AUTH, "");
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).unwrap()
}

/// Asks for the room's detail until `done` holds of it (what an admin
/// action started, a commit or a close handshake, settles on its own).
fn detail_until(addr: SocketAddr, room: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let detail = detail(addr, "durable", room);
        if done(&detail) {
            return detail;
        }
        assert!(std::time::Instant::now() < deadline, "the detail never settled: {detail}");
        std::thread::yield_now();
    }
}

fn a_rooms_detail_shows_its_connections_and_sizes_and_an_admin_evicts_it_and_closes_one() {
    let server = serve();
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/durable/board?_pk=ann&tag=red&tag=blue");
    let mut bob = Client::connect(addr, "/parties/durable/board?_pk=bob");
    ann.send_text("put k value");
    assert_eq!(ann.recv_text(), "ok k");
    // The write commits on its own time; the detail reads what committed.
    let d = detail_until(addr, "board", |d| d["storage_bytes"] == 6);
    assert_eq!((d["awake"].clone(), d["hosted"].clone()), (Value::Bool(true), Value::Bool(true)));
    assert_eq!(d["members_total"], 2);
    assert_eq!(d["snapshot_bytes"], 0);
    let mut members = d["members"].as_array().unwrap().clone();
    members.sort_by_key(|m| m["id"].as_str().unwrap().to_owned());
    assert_eq!(members[0]["id"], "ann");
    let mut tags: Vec<&str> = members[0]["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    tags.sort_unstable();
    assert_eq!(tags, ["blue", "red"]);
    assert_eq!(members[0]["state_bytes"], "s-ann".len());
    assert_eq!(members[1]["id"], "bob");
    for member in &members {
        // Each socket's core told what it has queued for it: nothing now.
        assert_eq!(member["backlog_bytes"], 0, "{member}");
        assert_eq!(member["room_socket"], false);
    }
    // The busiest list sizes the rooms it shows.
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let snapshot = http(addr, "GET", "/_dormouse/api/snapshot", AUTH, "");
        let snapshot: Value = serde_json::from_slice(&snapshot.body).unwrap();
        let busiest = snapshot["snapshot"]["busiest"].as_array().cloned().unwrap_or_default();
        if busiest.iter().any(|r| r["room"] == "board" && r["storage_bytes"] == 6) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the busiest list never sized the room: {snapshot}");
        std::thread::yield_now();
    }
    // The admin evicts it: its snapshot is written, its members stay.
    let evicted = http(addr, "POST", "/_dormouse/api/evict?party=durable&room=board", AUTH, "");
    assert_eq!((evicted.status, evicted.text()), (200, r#"{"evicted":true,"hibernated":true}"#.to_owned()));
    assert_eq!(server.counter("rooms_evicted"), 1);
    let d = detail_until(addr, "board", |d| d["snapshot_bytes"].as_u64() > Some(0));
    assert_eq!((d["awake"].clone(), d["members_total"].clone()), (Value::Bool(false), Value::from(2)));
    let again = http(addr, "POST", "/_dormouse/api/evict?party=durable&room=board", AUTH, "");
    assert_eq!(again.text(), r#"{"evicted":false,"hibernated":true}"#);
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:1");
    assert_eq!(server.counter("rooms_woken"), 1);
    // The admin closes bob; the room hears it.
    let closed = http(addr, "POST", "/_dormouse/api/close?party=durable&room=board&id=bob", AUTH, "");
    assert_eq!((closed.status, closed.text()), (200, r#"{"closed":"bob"}"#.to_owned()));
    assert_eq!(bob.expect_close(), (1008, "closed by an administrator".to_owned()));
    let d = detail_until(addr, "board", |d| d["members_total"] == 1);
    assert_eq!(d["members"][0]["id"], "ann");
}

fn the_room_api_refuses_what_it_cannot_do() {
    let server = serve();
    let addr = server.local_addr();
    let ask = |method: &str, path: &str, headers: &str| {
        let response = http(addr, method, path, headers, "");
        (response.status, response.text())
    };
    assert_eq!(ask("GET", "/_dormouse/api/room?party=echo&room=r", "").0, 401);
    assert_eq!(ask("POST", "/_dormouse/api/evict?party=echo&room=r", "authorization: Bearer wrong\r\n").0, 401);
    assert_eq!(ask("GET", "/_dormouse/api/evict?party=echo&room=r", AUTH), (405, "use POST".to_owned()));
    assert_eq!(ask("GET", "/_dormouse/api/room?party=echo", AUTH).0, 400);
    assert_eq!(ask("GET", "/_dormouse/api/room?party=nope&room=r", AUTH), (404, "Party nope not found".to_owned()));
    assert_eq!(ask("GET", "/_dormouse/api/room?party=_dormouse&room=live", AUTH).0, 404);
    assert_eq!(ask("POST", "/_dormouse/api/close?party=echo&room=r", AUTH).0, 400);
    // A room that is nowhere in memory: its detail says so, and it cannot
    // be evicted or have connections closed.
    let d = detail(addr, "echo", "quiet");
    assert_eq!((d["hosted"].clone(), d["members_total"].clone()), (Value::Bool(false), Value::from(0)));
    assert_eq!(ask("POST", "/_dormouse/api/evict?party=echo&room=quiet", AUTH).0, 404);
    // A room of a party that keeps its objects in memory is not evicted.
    let mut ann = Client::connect(addr, "/parties/echo/loud?_pk=ann");
    ann.send_text("hi");
    assert_eq!(ann.recv_text(), "hi");
    let (status, reason) = ask("POST", "/_dormouse/api/evict?party=echo&room=loud", AUTH);
    assert_eq!((status, reason.as_str()), (409, "party echo does not hibernate (hibernate = false)"));
    assert_eq!(ask("POST", "/_dormouse/api/close?party=echo&room=loud&id=bob", AUTH).0, 404);
    ann.send_text("still here");
    assert_eq!(ann.recv_text(), "still here");
}
