//! Hibernation, room storage and alarms on a running server, through real
//! sockets. Crashes and restarts are in `tests/durability.rs`.

mod common;

backend_tests!(
    an_idle_room_is_evicted_and_wakes_with_its_memory_tags_and_connection_state,
    pings_are_answered_without_waking_a_hibernated_room,
    past_max_resident_rooms_the_least_recently_used_room_is_evicted,
    storage_reads_its_own_writes_and_lists_in_order,
    storage_limits_are_refused_with_a_clear_error,
    an_alarm_runs_with_the_room_id_and_a_failing_one_is_retried,
    the_chat_kind_sends_its_history_to_newcomers,
);

use common::*;

const HIBERNATE: &str = "[parties.durable]\nhibernate = true\nidle_evict_ms = 20\n";

fn an_idle_room_is_evicted_and_wakes_with_its_memory_tags_and_connection_state() {
    let server = start(HIBERNATE);
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/durable/cycle?_pk=ann&tag=red&tag=blue");
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:1");
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:2");
    assert_eq!(server.counter("rooms_woken"), 0);
    wait_for_counter(&server, "rooms_evicted", 1);
    assert_eq!(server.rooms_resident(), 0, "the room object is gone from memory");
    // The next message wakes it with its memory intact.
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:3");
    assert_eq!(server.counter("rooms_woken"), 1);
    ann.send_text("tags");
    assert_eq!(ann.recv_text(), "ann,blue,red");
    ann.send_text("state");
    assert_eq!(ann.recv_text(), "s-ann");
    // Again, and with HTTP as the waking event.
    wait_for_counter(&server, "rooms_evicted", 2);
    assert_eq!(http(addr, "GET", "/parties/durable/cycle", "", "").text(), "count:3");
    assert_eq!(server.counter("rooms_woken"), 2);
    // A room whose members all left is forgotten entirely, and a new
    // connection finds it on disk.
    drop(ann);
    wait_for_counter(&server, "rooms_evicted", 3);
    let mut bob = Client::connect(addr, "/parties/durable/cycle?_pk=bob");
    bob.send_text("inc");
    assert_eq!(bob.recv_text(), "count:4");
}

fn pings_are_answered_without_waking_a_hibernated_room() {
    let server = start(HIBERNATE);
    let mut ann = Client::connect(server.local_addr(), "/parties/durable/quiet?_pk=ann");
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:1");
    wait_for_counter(&server, "rooms_evicted", 1);
    for i in 0..10u8 {
        ann.send_frame(true, 9, &[i], true);
        let pong = ann.recv();
        assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &[i][..]));
    }
    assert_eq!(server.counter("rooms_woken"), 0);
    assert_eq!(server.rooms_resident(), 0);
}

fn past_max_resident_rooms_the_least_recently_used_room_is_evicted() {
    // One room per core may stay; the idle timeout is far away.
    let server = start("max_resident_rooms = 2\n[parties.durable]\nhibernate = true\nidle_evict_ms = 600000\n");
    let addr = server.local_addr();
    for i in 0..20 {
        assert_eq!(http(addr, "GET", &format!("/parties/durable/r{i}"), "", "").text(), "count:0");
    }
    wait_for_counter(&server, "rooms_evicted", 18);
    assert!(server.rooms_resident() <= 2, "resident: {}", server.rooms_resident());
    // Every room is still there.
    let mut ann = Client::connect(addr, "/parties/durable/r0?_pk=ann");
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:1");
}

fn storage_reads_its_own_writes_and_lists_in_order() {
    let server = start("");
    let mut ann = Client::connect(server.local_addr(), "/parties/durable/kv?_pk=ann");
    for (key, value) in [("b", "2"), ("a", "1"), ("c", "3"), ("ab", "x")] {
        ann.send_text(&format!("put {key} {value}"));
        assert_eq!(ann.recv_text(), format!("ok {key}"));
    }
    ann.send_text("get a");
    assert_eq!(ann.recv_text(), "value a 1");
    ann.send_text("list a");
    assert_eq!(ann.recv_text(), "list a=1,ab=x");
    ann.send_text("del b");
    assert_eq!(ann.recv_text(), "deleted b true");
    ann.send_text("del b");
    assert_eq!(ann.recv_text(), "deleted b false");
    ann.send_text("list ");
    assert_eq!(ann.recv_text(), "list a=1,ab=x,c=3");
    // Another room has its own keys.
    let mut bob = Client::connect(server.local_addr(), "/parties/durable/other?_pk=bob");
    bob.send_text("get a");
    assert_eq!(bob.recv_text(), "none a");
}

fn storage_limits_are_refused_with_a_clear_error() {
    let server = start("");
    let mut ann = Client::connect(server.local_addr(), "/parties/durable/limits?_pk=ann");
    ann.send_text("bigkey 2048");
    assert_eq!(ann.recv_text(), "ok");
    ann.send_text("bigkey 2049");
    let answer = ann.recv_text();
    assert!(answer.starts_with("error") && answer.contains("2049") && answer.contains("2048"), "{answer}");
    ann.send_text(&format!("bigvalue {}", 128 * 1024));
    assert_eq!(ann.recv_text(), "ok");
    ann.send_text(&format!("bigvalue {}", 128 * 1024 + 1));
    let answer = ann.recv_text();
    assert!(answer.starts_with("error") && answer.contains("131072"), "{answer}");
    ann.send_text("count-keys");
    assert_eq!(ann.recv_text(), "keys 2");
}

fn an_alarm_runs_with_the_room_id_and_a_failing_one_is_retried() {
    let server = start(HIBERNATE);
    let mut ann = Client::connect(server.local_addr(), "/parties/durable/clock?_pk=ann");
    ann.send_text("alarm 30");
    assert_eq!(ann.recv_text(), "alarm set");
    assert_eq!(ann.recv_text(), "alarm durable/clock attempts:1");
    // Fails once, then runs again after the first back-off (1 s).
    ann.send_text("alarm-fail 1 10");
    assert_eq!(ann.recv_text(), "alarm set");
    assert_eq!(ann.recv_text(), "alarm durable/clock attempts:2");
}

fn the_chat_kind_sends_its_history_to_newcomers() {
    let server = dormouse::Server::new(config("[parties.chat]\nkind = \"chat\"\nhistory = 3\n")).start().unwrap();
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/chat/lobby?_pk=ann");
    let mut bob = Client::connect(addr, "/parties/chat/lobby?_pk=bob");
    for i in 1..=5 {
        ann.send_text(&format!("m{i}"));
        assert_eq!(bob.recv_text(), format!("m{i}"));
    }
    let mut cat = Client::connect(addr, "/parties/chat/lobby?_pk=cat");
    for i in 3..=5 {
        assert_eq!(cat.recv_text(), format!("m{i}"));
    }
    cat.send_text("hello");
    assert_eq!(ann.recv_text(), "hello");
}
