//! Rooms calling rooms, in process: requests (`Room::request_room`,
//! `room.parties(p).get(id).fetch(..)`) reach the other room's `on_request`
//! and come back as an event, and sockets (`Room::connect_room`, `.socket(..)`)
//! are members of the other room; both across cores and through
//! hibernation. Driven by real clients of both rooms. (The JavaScript API
//! over the same is in `tests/js.rs`.)

mod common;

backend_tests!(
    a_room_request_reaches_a_room_on_another_core_through_its_hibernation,
    a_room_socket_is_a_member_of_the_other_room_across_cores,
    a_room_socket_closes_from_either_end_and_when_either_room_fails,
    refused_room_sockets_close_with_the_reason,
    a_room_socket_reaches_a_hibernating_room_and_keeps_its_own_room_in_memory,
);

use common::*;
use dormouse::{ConnectCtx, Connection, Message, Party, Request, Room, RoomSocketEvent, ServerHandle};

/// Drives its requests and sockets to other rooms from its members'
/// messages: `fetch P R` (a GET; every member hears `response N STATUS
/// BODY`), `open P R [PATH]` (answers `opening N`, or `too many`), `send N TEXT` (answers
/// `sent N true|false`), `close N` (code 4001), `boom` (panics). Tells
/// every member what its sockets bring: `open N`, `msg N TEXT`, `close N
/// CODE REASON`. Hibernates (with an empty snapshot) when let; `status`
/// answers `restored=true` once the object was restored from it.
struct Caller {
    restored: bool,
}

impl Party for Caller {
    fn new(_room: &Room) -> Self {
        Caller { restored: false }
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        let Message::Text(text) = message else { return };
        let limit = if text.starts_with("open ") { 4 } else { 3 };
        let words: Vec<&str> = text.splitn(limit, ' ').collect();
        match words.as_slice() {
            ["open", party, id, rest @ ..] => {
                let path = rest.first().copied().unwrap_or("");
                match room.parties(party).get(id).socket(path) {
                    Some(socket) => sender.send(format!("opening {socket}").as_str()),
                    None => sender.send("too many"),
                }
            }
            ["send", socket, text] => {
                let sent = room.socket_send(socket.parse().unwrap(), *text);
                sender.send(format!("sent {socket} {sent}").as_str());
            }
            ["close", socket] => room.socket_close(socket.parse().unwrap(), 4001, "caller done"),
            ["fetch", party, id] => {
                let head = dormouse::RequestHead {
                    method: "GET".to_owned(),
                    target: format!("/parties/{party}/{id}"),
                    minor_version: 1,
                    headers: Vec::new(),
                };
                let request = Request { head, body: Default::default() };
                let id = room.parties(party).get(id).fetch(request).expect("under the bound");
                sender.send(format!("fetching {id}").as_str());
            }
            ["boom"] => panic!("the caller asked to panic"),
            ["status"] => sender.send(format!("restored={}", self.restored).as_str()),
            _ => sender.send(format!("unknown {text}").as_str()),
        }
    }

    fn on_room_response(&mut self, id: u32, response: dormouse::Response, room: &Room) {
        let body = String::from_utf8_lossy(&response.body);
        room.broadcast(format!("response {id} {} {body}", response.status).as_str(), &[]);
    }

    fn on_room_socket(&mut self, socket: u32, event: RoomSocketEvent<'_>, room: &Room) {
        let told = match event {
            RoomSocketEvent::Open => format!("open {socket}"),
            RoomSocketEvent::Message(Message::Text(text)) => format!("msg {socket} {text}"),
            RoomSocketEvent::Message(Message::Binary(data)) => format!("msg {socket} {} bytes", data.len()),
            RoomSocketEvent::Close { code, reason } => format!("close {socket} {code} {reason}"),
        };
        room.broadcast(told.as_str(), &[]);
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }

    fn restore(_room: &Room, _snapshot: &[u8]) -> Result<Self, String> {
        Ok(Caller { restored: true })
    }
}

/// Admits a connection only when its path asks `please`.
struct Picky;

impl Party for Picky {
    fn new(_room: &Room) -> Self {
        Picky
    }

    fn on_connect(&mut self, _conn: &Connection<'_>, _room: &Room, ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        if ctx.request().query().contains("please") {
            Ok(())
        } else {
            Err("say please".to_owned())
        }
    }
}

fn serve(extra_toml: &str) -> ServerHandle {
    dormouse::Server::new(config(extra_toml))
        .party::<Caller>("caller")
        .party::<Tagger>("tagger")
        .party::<Probe>("probe")
        .party::<Picky>("picky")
        .party::<Panicky>("panicky")
        .party::<Durable>("durable")
        .start()
        .expect("server starts")
}

/// A room of `party` whose owner core is not the one of caller room `caller`.
fn elsewhere(server: &ServerHandle, caller: &str, party: &str) -> String {
    let home = server.owner_core("caller", caller);
    (0..64)
        .map(|i| format!("{party}-{i}"))
        .find(|id| server.owner_core(party, id) != home)
        .expect("some room is on the other core")
}

/// Opens a socket from `client`'s caller room and waits for it to open.
fn open(client: &mut Client, party: &str, room: &str, path: &str) -> u32 {
    client.send_text(&format!("open {party} {room} {path}"));
    let opening = client.recv_text();
    let socket = opening.strip_prefix("opening ").unwrap_or_else(|| panic!("not opening: {opening}")).to_owned();
    assert_eq!(client.recv_text(), format!("open {socket}"));
    socket.parse().unwrap()
}

fn a_room_request_reaches_a_room_on_another_core_through_its_hibernation() {
    let server = serve("[parties.durable]\nhibernate = true\nidle_evict_ms = 20\n");
    let addr = server.local_addr();
    let target = elsewhere(&server, "c1", "durable");
    let mut bob = Client::connect(addr, &format!("/parties/durable/{target}?_pk=bob"));
    bob.send_text("inc");
    assert_eq!(bob.recv_text(), "count:1");
    wait_for_counter(&server, "rooms_evicted", 1);
    // The request wakes the other room, which answers from its memory.
    let mut ann = Client::connect(addr, "/parties/caller/c1?_pk=ann");
    ann.send_text(&format!("fetch durable {target}"));
    assert_eq!(ann.recv_text(), "fetching 1");
    assert_eq!(ann.recv_text(), "response 1 200 count:1");
    assert_eq!(server.counter("rooms_woken"), 1);
    // A party that does not exist answers 404, as an event all the same.
    ann.send_text("fetch nope x");
    assert_eq!(ann.recv_text(), "fetching 2");
    assert_eq!(ann.recv_text(), r#"response 2 404 no party "nope""#);
}

fn a_room_socket_is_a_member_of_the_other_room_across_cores() {
    let server = serve("");
    let addr = server.local_addr();
    let target = elsewhere(&server, "c1", "tagger");
    let mut bob = Client::connect(addr, &format!("/parties/tagger/{target}?_pk=bob&tag=red"));
    let mut ann = Client::connect(addr, "/parties/caller/c1?_pk=ann");
    let socket = open(&mut ann, "tagger", &target, "?tag=red");
    // The socket is one of the room's members, with the tags its path gave.
    bob.send_text("tagged:red");
    let red = bob.recv_text();
    let ids: Vec<&str> = red.split(',').collect();
    assert_eq!(ids.len(), 2, "bob and the socket carry red: {red}");
    let link_id = ids.iter().find(|id| **id != "bob").unwrap().to_owned().to_owned();
    // Its messages reach the room's on_message, whose broadcast reaches bob.
    ann.send_text(&format!("send {socket} tag:red:hello"));
    assert_eq!(ann.recv_text(), format!("sent {socket} true"));
    assert_eq!(bob.recv_text(), "hello");
    // What the room sends it, broadcasts and tag broadcasts that match it
    // and direct sends, reach the caller, in order; others do not.
    bob.send_text("tag:red:to red");
    bob.send_text("tag:blue:to blue");
    bob.send_text("all:to all");
    bob.send_text(&format!("direct:{link_id}:to you"));
    for expected in ["to red", "to all", "to you"] {
        assert_eq!(ann.recv_text(), format!("msg {socket} {expected}"));
    }
    // A socket that is not open sends nothing.
    ann.send_text("send 99 nothing");
    assert_eq!(ann.recv_text(), "sent 99 false");
    // At most 64 sockets per room; the 65th is refused when asked.
    let more = elsewhere(&server, "c2", "tagger");
    let mut cat = Client::connect(addr, "/parties/caller/c2?_pk=cat");
    for _ in 0..65 {
        cat.send_text(&format!("open tagger {more}"));
    }
    let (mut openings, mut opened) = (Vec::new(), 0);
    loop {
        let text = cat.recv_text();
        match text.split_once(' ') {
            Some(("opening", n)) => openings.push(n.parse::<u32>().unwrap()),
            Some(("open", _)) => opened += 1,
            _ if text == "too many" => break,
            _ => panic!("unexpected {text}"),
        }
    }
    assert_eq!(openings, (1..=64).collect::<Vec<_>>());
    assert!(opened <= 64);
}

fn a_room_socket_closes_from_either_end_and_when_either_room_fails() {
    let server = serve("");
    let addr = server.local_addr();
    let target = elsewhere(&server, "c1", "probe");
    let mut bob = Client::connect(addr, &format!("/parties/probe/{target}?_pk=bob"));
    assert_eq!(bob.recv_text(), "welcome:bob");
    let mut ann = Client::connect(addr, "/parties/caller/c1?_pk=ann");
    // Probe greets every connection in on_connect: after the opening.
    let first = open(&mut ann, "probe", &target, "");
    let welcome = ann.recv_text();
    let link_id = welcome.strip_prefix(&format!("msg {first} welcome:")).expect("the probe's welcome").to_owned();
    // The caller closes it: the other room hears its code, the caller its close.
    ann.send_text(&format!("close {first}"));
    assert_eq!(ann.recv_text(), format!("close {first} 4001 caller done"));
    assert_eq!(bob.recv_text(), format!("closed:{link_id}:4001:caller done"));
    ann.send_text(&format!("send {first} late"));
    assert_eq!(ann.recv_text(), format!("sent {first} false"));
    // The other room closes it.
    let second = open(&mut ann, "probe", &target, "");
    let link_id = ann.recv_text().strip_prefix(&format!("msg {second} welcome:")).unwrap().to_owned();
    ann.send_text(&format!("send {second} close"));
    assert_eq!(ann.recv_text(), format!("sent {second} true"));
    assert_eq!(ann.recv_text(), format!("close {second} 4000 closed by probe"));
    assert_eq!(bob.recv_text(), format!("closed:{link_id}:4000:closed by probe"));
    // The other room fails: the caller hears 1011 and why.
    let broken = elsewhere(&server, "c1", "panicky");
    let third = open(&mut ann, "panicky", &broken, "");
    ann.send_text(&format!("send {third} boom"));
    assert_eq!(ann.recv_text(), format!("sent {third} true"));
    assert_eq!(ann.recv_text(), format!("close {third} 1011 room failed: the party code panicked"));
    // The caller fails: its sockets close, and the other room hears 1011.
    let fourth = open(&mut ann, "probe", &target, "");
    let link_id = ann.recv_text().strip_prefix(&format!("msg {fourth} welcome:")).unwrap().to_owned();
    ann.send_text("boom");
    assert_eq!(ann.expect_close().0, 1011);
    assert_eq!(bob.recv_text(), format!("closed:{link_id}:1011:room failed: the party code panicked"));
    // The room that failed starts fresh, and its sockets work again.
    let mut ann = Client::connect(addr, "/parties/caller/c1?_pk=ann");
    let fifth = open(&mut ann, "probe", &target, "");
    assert_eq!(fifth, 1, "a fresh room numbers its sockets anew");
    assert!(ann.recv_text().starts_with("msg 1 welcome:"));
}

fn refused_room_sockets_close_with_the_reason() {
    let server = serve("");
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/caller/c1?_pk=ann");
    let picky = elsewhere(&server, "c1", "picky");
    for (party, room, path, reason) in [
        ("nope", "x", "", r#"no party "nope""#.to_owned()),
        ("_dormouse", "live", "", r#"no party "_dormouse""#.to_owned()),
        ("picky", picky.as_str(), "", "say please".to_owned()),
        ("tagger", &"r".repeat(300), "", "the room id is empty or too long".to_owned()),
    ] {
        ann.send_text(&format!("open {party} {room} {path}"));
        let opening = ann.recv_text();
        let socket = opening.strip_prefix("opening ").expect("an opening");
        assert_eq!(ann.recv_text(), format!("close {socket} 1011 {reason}"), "opening {party}/{room}");
    }
    // Asked politely, the same room admits it.
    open(&mut ann, "picky", &picky, "?please");
}

fn a_room_socket_reaches_a_hibernating_room_and_keeps_its_own_room_in_memory() {
    let server =
        serve("[parties.durable]\nhibernate = true\nidle_evict_ms = 20\n[parties.caller]\nhibernate = true\nidle_evict_ms = 20\n");
    let addr = server.local_addr();
    let target = elsewhere(&server, "c1", "durable");
    let mut ann = Client::connect(addr, "/parties/caller/c1?_pk=ann");
    let socket = open(&mut ann, "durable", &target, "?tag=blue");
    ann.send_text(&format!("send {socket} inc"));
    assert_eq!(ann.recv_text(), format!("sent {socket} true"));
    assert_eq!(ann.recv_text(), format!("msg {socket} count:1"));
    // The other room hibernates with the socket a member; an HTTP request
    // wakes it, and it hibernates again. The caller, idle all that time
    // (past its idle time twice over), holds a socket: it was never evicted.
    wait_for_counter(&server, "rooms_evicted", 1);
    assert_eq!(http(addr, "GET", &format!("/parties/durable/{target}"), "", "").text(), "count:1");
    wait_for_counter(&server, "rooms_evicted", 2);
    assert_eq!(server.counter("rooms_woken"), 1);
    ann.send_text("status");
    assert_eq!(ann.recv_text(), "restored=false", "the caller stayed in memory");
    // The socket's messages wake the other room, which still knows its tags.
    ann.send_text(&format!("send {socket} inc"));
    assert_eq!(ann.recv_text(), format!("sent {socket} true"));
    assert_eq!(ann.recv_text(), format!("msg {socket} count:2"));
    ann.send_text(&format!("send {socket} tags"));
    assert_eq!(ann.recv_text(), format!("sent {socket} true"));
    let tags = ann.recv_text();
    assert!(tags.starts_with(&format!("msg {socket} ")) && tags.ends_with(",blue"), "{tags}");
    assert_eq!(server.counter("rooms_woken"), 2, "the other room woke twice, the caller never");
    assert_eq!(server.counter("rooms_evicted"), 2, "only the other room was evicted");
    // Once its socket is closed, the caller is evicted like any idle room.
    ann.send_text(&format!("close {socket}"));
    assert_eq!(ann.recv_text(), format!("close {socket} 4001 caller done"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.rooms_resident() > 0 {
        assert!(std::time::Instant::now() < deadline, "the caller stayed in memory");
        std::thread::yield_now();
    }
}
