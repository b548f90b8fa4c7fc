//! Tags, tag-filtered broadcasts, the publish API and `/metrics`, through
//! real sockets on a two-core server, with members on both cores.

mod common;

backend_tests!(
    a_tag_broadcast_reaches_exactly_the_tagged_set_in_order_once,
    tags_are_readable_and_the_connection_id_is_a_tag,
    tags_over_the_limits_are_refused_after_the_upgrade,
    publish_reaches_the_tagged_set_without_waking_the_room,
    publish_refuses_bad_requests,
    without_a_token_publish_is_off_and_metrics_can_move_or_go,
    sliced_broadcasts_keep_each_members_order,
);

use common::{http, metric, start, Client, Frame};
use std::net::SocketAddr;

/// Connects `n` clients to `path_of(i)` and checks that both cores hold some.
fn connect_on_both_cores(server: &dormouse::ServerHandle, n: usize, path_of: impl Fn(usize) -> String) -> Vec<Client> {
    let addr = server.local_addr();
    let clients: Vec<Client> = (0..n).map(|i| Client::connect(addr, &path_of(i))).collect();
    let per_core = server.connections_per_core();
    assert!(per_core.iter().all(|&c| c > 0), "members on both cores: {per_core:?}");
    clients
}

/// Reads text frames until `end`, returning those before it.
fn read_until(client: &mut Client, end: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let text = client.recv_text();
        if text == end {
            return got;
        }
        got.push(text);
    }
}

fn is_red(i: usize) -> bool {
    i.is_multiple_of(4)
}

fn is_blue(i: usize) -> bool {
    i.is_multiple_of(3)
}

fn tagged_path(room: &str, i: usize) -> String {
    let mut path = format!("/parties/tagger/{room}?_pk=c{i}");
    if is_red(i) {
        path.push_str("&tag=red");
    }
    if is_blue(i) {
        path.push_str("&tag=blue");
    }
    path
}

fn a_tag_broadcast_reaches_exactly_the_tagged_set_in_order_once() {
    let server = start("");
    let addr = server.local_addr();
    // Another room with a member: its object must not hear of room A's traffic.
    let mut other = Client::connect(addr, "/parties/tagger/b?_pk=b0");
    let mut clients = connect_on_both_cores(&server, 40, |i| tagged_path("a", i));
    let mut sender = Client::connect(addr, "/parties/tagger/a?_pk=sender&tag=red");
    let created = metric(addr, "dormouse_rooms_created_total");
    let events = metric(addr, "dormouse_room_events_total");

    for k in 0..20 {
        sender.send_text(&format!("tag:red:m{k}"));
    }
    sender.send_text("all:end");
    let want: Vec<String> = (0..20).map(|k| format!("m{k}")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let got = read_until(client, "end");
        if is_red(i) {
            assert_eq!(got, want, "red member c{i} gets every tagged message once, in order");
        } else {
            assert!(got.is_empty(), "c{i} is not red and got {got:?}");
        }
    }
    // The sender carries the tag but is excluded, as asked.
    sender.send_text("tagged:red");
    let want_red: Vec<String> =
        (0..40).filter(|&i| is_red(i)).map(|i| format!("c{i}")).chain(["sender".into()]).collect();
    let mut want_red = want_red;
    want_red.sort();
    assert_eq!(sender.recv_text(), want_red.join(","));

    // Only room A's object ran: one event per message sent, no room created.
    assert_eq!(metric(addr, "dormouse_rooms_created_total"), created);
    assert_eq!(metric(addr, "dormouse_room_events_total"), events + 22);
    other.send_text("mytags");
    assert_eq!(other.recv_text(), "b0", "room B's member got nothing of room A's traffic");
}

fn tags_are_readable_and_the_connection_id_is_a_tag() {
    let server = start("");
    let addr = server.local_addr();
    let mut a = Client::connect(addr, "/parties/tagger/r?_pk=alice&tag=red&tag=blue&tag=red&tag=alice");
    let mut b = Client::connect(addr, "/parties/tagger/r?_pk=bob&tag=alice");
    a.send_text("mytags");
    let tags = a.recv_text();
    let mut tags: Vec<&str> = tags.split(',').collect();
    assert_eq!(tags.remove(0), "alice", "the id comes first");
    tags.sort_unstable();
    assert_eq!(tags, ["blue", "red"], "duplicates and the id count once");

    // "alice" is alice's id and bob's tag: both carry it, each is counted once.
    b.send_text("tagged:alice");
    assert_eq!(b.recv_text(), "alice,bob");
    b.send_text("tagged:nobody");
    assert_eq!(b.recv_text(), "");
    // A broadcast to a connection id reaches that connection.
    b.send_text("tag:alice:hello");
    b.send_text("direct:alice:after");
    assert_eq!(a.recv_text(), "hello");
    assert_eq!(a.recv_text(), "after");
}

fn tags_over_the_limits_are_refused_after_the_upgrade() {
    let server = start("");
    let addr = server.local_addr();
    let nine: String = (0..9).map(|i| format!("&tag=t{i}")).collect();
    let mut ok = Client::connect(addr, &format!("/parties/main/r?_pk=ok{nine}"));
    let mut too_many = Client::connect(addr, &format!("/parties/main/r?_pk=many{nine}&tag=t9"));
    let (code, reason) = too_many.expect_close();
    assert_eq!(code, 1011);
    assert!(reason.contains("11 connection tags exceed the limit of 10"), "{reason}");

    let long = "x".repeat(257);
    let mut too_long = Client::connect(addr, &format!("/parties/main/r?_pk=long&tag={long}"));
    let (code, reason) = too_long.expect_close();
    assert_eq!(code, 1011);
    assert!(reason.contains("257 bytes exceeds the limit of 256"), "{reason}");

    let fits = "x".repeat(256);
    let mut at_limit = Client::connect(addr, &format!("/parties/main/r?_pk=fits&tag={fits}"));
    ok.send_text("still here");
    assert_eq!(at_limit.recv_text(), "still here");
}

const TOKEN: &str = "test-token-0123456789";

fn publish(addr: SocketAddr, path: &str, headers: &str, body: &str) -> common::HttpResponse {
    http(addr, "POST", path, &format!("authorization: Bearer {TOKEN}\r\n{headers}"), body)
}

fn publish_reaches_the_tagged_set_without_waking_the_room() {
    let server = start(&format!("publish_token = \"{TOKEN}\"\n"));
    let addr = server.local_addr();
    let mut clients = connect_on_both_cores(&server, 30, |i| {
        let mut path = format!("/parties/main/pub?_pk=p{i}");
        if is_blue(i) {
            path.push_str("&tag=blue");
        }
        path
    });
    let created = metric(addr, "dormouse_rooms_created_total");
    let events = metric(addr, "dormouse_room_events_total");
    let resident = server.rooms_resident();

    let response = publish(addr, "/parties/main/pub/_publish?tag=blue", "", "to blue");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.text(), format!("{{\"delivered\":{}}}", (0..30).filter(|&i| is_blue(i)).count()));
    let response = publish(addr, "/parties/main/pub/_publish", "content-type: application/octet-stream\r\n", "all");
    assert_eq!(response.text(), "{\"delivered\":30}");
    for (i, client) in clients.iter_mut().enumerate() {
        if is_blue(i) {
            assert_eq!(client.recv_text(), "to blue");
        }
        let frame = client.recv();
        assert_eq!(
            frame,
            Frame { fin: true, rsv1: false, opcode: 2, payload: b"all".to_vec() },
            "c{i}: binary, after the tagged one"
        );
    }

    // A room nobody is in: nothing delivered, and no room object made.
    let response = publish(addr, "/parties/main/empty/_publish", "", "anyone?");
    assert_eq!(response.text(), "{\"delivered\":0}");
    let response = publish(addr, "/parties/main/pub/_publish?tag=nobody", "", "x");
    assert_eq!(response.text(), "{\"delivered\":0}");

    assert_eq!(metric(addr, "dormouse_rooms_created_total"), created);
    assert_eq!(metric(addr, "dormouse_room_events_total"), events, "no room object heard of a publish");
    assert_eq!(server.rooms_resident(), resident);
    assert_eq!(metric(addr, "dormouse_publishes_total"), 4);
}

fn publish_refuses_bad_requests() {
    let server = start(&format!("publish_token = \"{TOKEN}\"\n"));
    let addr = server.local_addr();
    let path = "/parties/main/r/_publish";
    let none = http(addr, "POST", path, "", "x");
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = http(addr, "POST", path, "authorization: Bearer test-token-0123456788\r\n", "x");
    assert_eq!(wrong.status, 401);
    let get = http(addr, "GET", path, &format!("authorization: Bearer {TOKEN}\r\n"), "");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
    let unknown = publish(addr, "/parties/nope/r/_publish", "", "x");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.text(), "Party nope not found");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    let bad_utf8 = common::http_raw(addr, &bytes);
    assert_eq!(bad_utf8.status, 400, "{}", bad_utf8.text());
}

fn without_a_token_publish_is_off_and_metrics_can_move_or_go() {
    let server = start("[metrics]\npath = \"/_stats\"\n");
    let addr = server.local_addr();
    let response = http(addr, "POST", "/parties/main/r/_publish", &format!("authorization: Bearer {TOKEN}\r\n"), "x");
    assert_eq!(response.status, 404);
    assert_eq!(http(addr, "GET", "/metrics", "", "").status, 404);
    let stats = http(addr, "GET", "/_stats", "", "");
    assert_eq!(stats.status, 200);
    assert!(stats.text().contains("# TYPE dormouse_connections_open gauge"));
    assert_eq!(http(addr, "POST", "/_stats", "", "").status, 405);

    let server = start("[metrics]\nenabled = false\n");
    assert_eq!(http(server.local_addr(), "GET", "/metrics", "", "").status, 404);
}

/// With a slice of two recipients, every broadcast to the room is written
/// over several turns while direct sends, tag broadcasts and a publish
/// arrive: each member still sees exactly its messages, once, in order.
fn sliced_broadcasts_keep_each_members_order() {
    let server = start(&format!("publish_token = \"{TOKEN}\"\n[limits]\nfanout_slice = 2\n"));
    let addr = server.local_addr();
    let mut clients = connect_on_both_cores(&server, 24, |i| tagged_path("s", i));
    let mut sender = Client::connect(addr, "/parties/tagger/s?_pk=sender");
    let mut want: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
    for k in 0..30 {
        let message = match k % 3 {
            0 => format!("all:a{k}"),
            1 => format!("tag:red:r{k}"),
            _ => format!("direct:c{}:d{k}", k % 24),
        };
        sender.send_text(&message);
        for (i, want) in want.iter_mut().enumerate() {
            match k % 3 {
                0 => want.push(format!("a{k}")),
                1 if is_red(i) => want.push(format!("r{k}")),
                2 if i == k % 24 => want.push(format!("d{k}")),
                _ => {}
            }
        }
    }
    sender.send_text("all:end");
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_until(client, "end"), want[i], "c{i}");
    }
    let response = publish(addr, "/parties/tagger/s/_publish?tag=blue", "", "p");
    assert_eq!(response.text(), format!("{{\"delivered\":{}}}", (0..24).filter(|&i| is_blue(i)).count()));
}
