//! Room objects in memory are bounded whatever the party: rooms that keep
//! their objects only in memory are dropped once empty and idle, and
//! `max_resident_rooms` holds for every party, with 503 when no room can make
//! way. Hibernating parties' eviction is in `tests/hibernate.rs`.

mod common;

backend_tests!(
    empty_idle_rooms_of_a_party_without_hibernation_are_dropped,
    max_resident_rooms_bounds_rooms_without_hibernation_and_refuses_when_all_are_in_use,
);

use common::*;
use std::io::{BufReader, Write};

/// Waits until `done` holds, or fails after GUARD with `what`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + GUARD;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

fn empty_idle_rooms_of_a_party_without_hibernation_are_dropped() {
    let server = start("[parties.counter]\nidle_drop_ms = 100\n");
    let addr = server.local_addr();
    // A room with a connection is kept however long it is idle.
    let kept = Client::connect(addr, "/parties/counter/kept?_pk=ann");
    assert_eq!(http(addr, "POST", "/parties/counter/kept", "", "7").text(), "7");
    // Many room ids over one keep-alive connection, as an attacker would.
    let mut stream = connect_tcp(addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for i in 0..500 {
        stream
            .write_all(
                format!("POST /parties/counter/room-{i} HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\n5").as_bytes(),
            )
            .unwrap();
        assert_eq!(read_response(&mut reader).text(), "5");
    }
    assert_eq!(server.counter("rooms_created"), 501);
    wait_until("the empty rooms are dropped", || server.rooms_resident() == 1);
    assert_eq!(server.counter("rooms_dropped"), 500);
    // The dropped rooms start afresh; the one in use kept its state.
    assert_eq!(http(addr, "GET", "/parties/counter/room-0", "", "").text(), "room-0:0");
    assert_eq!(http(addr, "GET", "/parties/counter/kept", "", "").text(), "kept:7");
    // Once its last connection is gone, it is dropped too.
    drop(kept);
    wait_until("the room is dropped once empty", || server.rooms_resident() == 0);
    assert_eq!(http(addr, "GET", "/parties/counter/kept", "", "").text(), "kept:0");
}

fn max_resident_rooms_bounds_rooms_without_hibernation_and_refuses_when_all_are_in_use() {
    // Two cores: two room objects each.
    let server = start("max_resident_rooms = 4\n");
    let addr = server.local_addr();
    // Empty rooms make way for new ones, least recently used first.
    for i in 0..20 {
        assert_eq!(http(addr, "POST", &format!("/parties/counter/r{i}"), "", "1").text(), "1");
        assert!(server.rooms_resident() <= 4, "{} rooms resident", server.rooms_resident());
    }
    assert!(server.counter("rooms_dropped") >= 16);
    // Rooms in use cannot make way: once a core holds two, a new room there is refused.
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..24 {
        let client = Client::try_connect(addr, &format!("/parties/counter/busy-{i}?_pk=c"), "");
        match client.response.status {
            101 => held.push((i, client)),
            status => {
                assert_eq!(status, 503, "{}", client.response.text());
                assert_eq!(client.response.header("retry-after"), Some("1"));
                assert_eq!(client.response.text(), "try again later: the server holds its maximum of rooms");
                refused += 1;
            }
        }
    }
    assert_eq!(held.len(), 4, "each core holds its share of rooms in use");
    assert_eq!(refused, 20);
    assert!(metric(addr, "dormouse_events_shed_total") >= 20);
    // Existing rooms are still served, and once the rooms are left, new ones fit again.
    let (i, _) = held[0];
    assert_eq!(http(addr, "POST", &format!("/parties/counter/busy-{i}"), "", "2").text(), "2");
    drop(held);
    wait_until("the rooms' members are gone", || server.connections_per_core().iter().sum::<u64>() == 0);
    for i in 0..12 {
        Client::connect(addr, &format!("/parties/counter/again-{i}?_pk=c"));
    }
}
