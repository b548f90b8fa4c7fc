//! The core server through real sockets: routing, rooms, the Party API,
//! HTTP, and the WebSocket protocol rules, each with its status or close code.

mod common;

backend_tests!(
    two_clients_see_each_others_messages_and_rooms_are_isolated,
    http_reaches_the_room_and_state_persists_between_requests,
    keep_alive_and_chunked_bodies,
    unknown_party_and_unknown_paths_are_404,
    fetch_handler_serves_other_paths,
    pre_connect_hook_rejects_with_401_and_adds_headers,
    on_connect_runs_before_the_101_and_its_failure_closes_1011,
    sub_protocol_chosen_by_the_party_is_echoed,
    generated_ids_are_unique_when_no_pk_is_given,
    connection_state_is_kept_and_bounded,
    room_can_close_a_connection,
    oversized_message_closes_1009,
    unmasked_client_frame_closes_1002,
    invalid_utf8_text_closes_1007,
    bad_input_costs_only_that_connection,
    the_room_hears_errors_and_close_codes,
    the_binary_refuses_a_bad_config_with_exit_2_naming_the_key,
    a_panicking_party_costs_only_its_own_room,
    a_panicking_hook_or_fetch_handler_fails_only_its_request,
    malformed_http_is_400,
    oversized_head_is_431,
    oversized_body_is_413,
    bad_upgrade_requests_are_refused,
    silent_and_slow_peers_are_dropped_at_the_head_timeout,
    fragmented_message_is_reassembled_with_a_ping_between_fragments,
    ping_is_answered_with_pong,
    close_handshake_echoes_the_code_and_closes_tcp,
    duplicate_pk_replaces_the_old_socket_and_its_close_keeps_the_new_one,
    two_thousand_connections_receive_one_broadcast_exactly_once,
    every_way_of_ending_a_socket_frees_its_record,
);

use common::*;
use std::io::{BufReader, Write};

fn two_clients_see_each_others_messages_and_rooms_are_isolated() {
    let server = start("");
    let addr = server.local_addr();
    let mut a = Client::connect(addr, "/parties/main/room-1?_pk=a");
    let mut b = Client::connect(addr, "/party/room-1?_pk=b");
    let mut other = Client::connect(addr, "/parties/main/room-2?_pk=c");
    a.send_text("from a");
    assert_eq!(b.recv_text(), "from a");
    b.send_text("from b");
    assert_eq!(a.recv_text(), "from b");
    // The other room hears nothing: the next thing it gets is its own room's traffic.
    let mut other2 = Client::connect(addr, "/parties/main/room-2?_pk=d");
    other2.send_text("room 2 only");
    assert_eq!(other.recv_text(), "room 2 only");
}

fn http_reaches_the_room_and_state_persists_between_requests() {
    let server = start("");
    let addr = server.local_addr();
    assert_eq!(http(addr, "POST", "/parties/counter/c1", "", "5").text(), "5");
    assert_eq!(http(addr, "POST", "/parties/counter/c1", "", "3").text(), "8");
    let got = http(addr, "GET", "/parties/counter/c1/any/sub/path", "", "");
    assert_eq!((got.status, got.text().as_str()), (200, "c1:8"));
    assert_eq!(http(addr, "GET", "/parties/counter/c2", "", "").text(), "c2:0");
    assert_eq!(http(addr, "POST", "/parties/counter/c1", "", "x").status, 400);
    // Room ids are percent-decoded: both spellings reach the same room.
    http(addr, "POST", "/parties/counter/a%20b", "", "2");
    assert_eq!(http(addr, "GET", "/parties/counter/a%20b", "", "").text(), "a b:2");
}

fn keep_alive_and_chunked_bodies() {
    let server = start("");
    let mut stream = connect_tcp(server.local_addr());
    stream
        .write_all(b"POST /parties/counter/k HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n1\r\n4\r\n1;ext=1\r\n2\r\n0\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert_eq!(read_response(&mut reader).text(), "42");
    // Two pipelined requests on the same connection.
    stream
        .write_all(b"GET /parties/counter/k HTTP/1.1\r\nhost: t\r\n\r\nGET /parties/counter/k HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader).text(), "k:42");
    let last = read_response(&mut reader);
    assert_eq!(last.text(), "k:42");
    assert_eq!(last.header("connection"), Some("close"));
}

fn unknown_party_and_unknown_paths_are_404() {
    let server = start("");
    let addr = server.local_addr();
    let got = http(addr, "GET", "/parties/nope/room", "", "");
    assert_eq!((got.status, got.text().as_str()), (404, "Party nope not found"));
    let ws = Client::try_connect(addr, "/parties/nope/room", "");
    assert_eq!((ws.response.status, ws.response.text().as_str()), (404, "Party nope not found"));
    assert_eq!(http(addr, "GET", "/elsewhere", "", "").status, 404);
}

fn fetch_handler_serves_other_paths() {
    let server = dormouse::Server::new(config(""))
        .fetch(|request| dormouse::Response::text(200, format!("fetched {}", request.path())))
        .start()
        .unwrap();
    assert_eq!(http(server.local_addr(), "GET", "/health", "", "").text(), "fetched /health");
}

fn pre_connect_hook_rejects_with_401_and_adds_headers() {
    let server = start("");
    let addr = server.local_addr();
    let refused = Client::try_connect(addr, "/parties/guarded/r1", "");
    assert_eq!(refused.response.status, 401);
    assert_eq!(refused.response.text(), "missing token for room r1");
    let mut ok = Client::connect(addr, "/parties/guarded/r1?token=secret");
    assert_eq!(ok.recv_text(), "user:alice");
    assert_eq!(http(addr, "GET", "/parties/guarded/r1", "", "").status, 403);
    let allowed = http(addr, "GET", "/parties/guarded/r1", "authorization: Bearer secret\r\n", "");
    assert_eq!((allowed.status, allowed.text().as_str()), (200, "inside"));
}

fn on_connect_runs_before_the_101_and_its_failure_closes_1011() {
    let server = start("");
    let addr = server.local_addr();
    let mut client = Client::connect(addr, "/parties/probe/r?_pk=p1");
    // The greeting sent in on_connect is the first frame after the 101.
    assert_eq!(client.recv_text(), "welcome:p1");
    let mut failed = Client::try_connect(addr, "/parties/probe/r?_pk=fail-connect", "");
    assert_eq!(failed.response.status, 101);
    assert_eq!(failed.expect_close(), (1011, "probe refuses this connection".to_owned()));
    client.send_text("who");
    assert_eq!(client.recv_text(), "p1");
}

fn sub_protocol_chosen_by_the_party_is_echoed() {
    let server = start("");
    let client = Client::try_connect(server.local_addr(), "/parties/probe/r", "Sec-WebSocket-Protocol: v1, v2\r\n");
    assert_eq!(client.response.status, 101);
    assert_eq!(client.response.header("sec-websocket-protocol"), Some("v2"));
    let plain = Client::try_connect(server.local_addr(), "/parties/main/r", "Sec-WebSocket-Protocol: v1\r\n");
    assert_eq!(plain.response.header("sec-websocket-protocol"), None);
}

fn generated_ids_are_unique_when_no_pk_is_given() {
    let server = start("");
    let mut a = Client::connect(server.local_addr(), "/parties/probe/ids");
    let mut b = Client::connect(server.local_addr(), "/parties/probe/ids");
    let id_a = a.recv_text();
    let id_b = b.recv_text();
    assert_ne!(id_a, id_b);
    assert_eq!(id_a.len(), "welcome:".len() + 36, "a UUID: {id_a}");
}

fn connection_state_is_kept_and_bounded() {
    let server = start("[limits]\nmax_state_bytes = 8\n");
    let mut client = Client::connect(server.local_addr(), "/parties/probe/s?_pk=s");
    client.recv_text();
    client.send_text("state:12345678");
    assert_eq!(client.recv_text(), "12345678");
    client.send_text("state:123456789");
    assert_eq!(client.recv_text(), "error:connection state of 9 bytes exceeds the limit of 8 bytes");
}

fn room_can_close_a_connection() {
    let server = start("");
    let mut client = Client::connect(server.local_addr(), "/parties/probe/c?_pk=x");
    client.recv_text();
    client.send_text("close");
    assert_eq!(client.expect_close(), (4000, "closed by probe".to_owned()));
}

fn oversized_message_closes_1009() {
    let server = start("[limits]\nmax_message_bytes = 1000\n");
    let mut client = Client::connect(server.local_addr(), "/parties/echo/r");
    client.send_frame(true, 2, &[7; 1000], true);
    assert_eq!(client.recv().payload, vec![7; 1000], "a message at the limit is delivered");
    client.send_frame(true, 2, &[7; 1001], true);
    assert_eq!(client.expect_close().0, 1009);
    // Fragments that together pass the limit are refused too.
    let mut client = Client::connect(server.local_addr(), "/parties/echo/r");
    client.send_frame(false, 1, &[b'a'; 600], true);
    client.send_frame(true, 0, &[b'a'; 401], true);
    assert_eq!(client.expect_close().0, 1009);
}

fn unmasked_client_frame_closes_1002() {
    let server = start("");
    let mut client = Client::connect(server.local_addr(), "/parties/echo/r");
    client.send_frame(true, 1, b"not masked", false);
    assert_eq!(client.expect_close().0, 1002);
}

fn invalid_utf8_text_closes_1007() {
    let server = start("");
    let mut client = Client::connect(server.local_addr(), "/parties/echo/r");
    client.send_frame(true, 1, &[0x68, 0xff, 0x69], true);
    assert_eq!(client.expect_close().0, 1007);
}

fn bad_input_costs_only_that_connection() {
    let server = start("");
    let addr = server.local_addr();
    let mut good = Client::connect(addr, "/parties/main/shared?_pk=good");
    let mut talker = Client::connect(addr, "/parties/main/shared?_pk=talker");
    let mut bad = Client::connect(addr, "/parties/main/shared?_pk=bad");
    bad.send_frame(true, 1, b"x", false);
    assert_eq!(bad.expect_close().0, 1002);
    talker.send_text("still here");
    assert_eq!(good.recv_text(), "still here");
}

fn the_room_hears_errors_and_close_codes() {
    let server = start("");
    let addr = server.local_addr();
    let mut watcher = Client::connect(addr, "/parties/probe/codes?_pk=watcher");
    watcher.recv_text();
    let mut bad = Client::connect(addr, "/parties/probe/codes?_pk=bad");
    bad.recv_text();
    bad.send_frame(true, 1, &[0xff], true);
    assert_eq!(bad.expect_close().0, 1007);
    assert_eq!(watcher.recv_text(), "error:bad:invalid UTF-8 in text message");
    assert_eq!(watcher.recv_text(), "closed:bad:1007:invalid UTF-8 in text message");
    let mut polite = Client::connect(addr, "/parties/probe/codes?_pk=polite");
    polite.recv_text();
    let mut payload = 4001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"see you");
    polite.send_frame(true, 8, &payload, true);
    assert_eq!(polite.recv().close_code().0, 4001);
    assert_eq!(watcher.recv_text(), "closed:polite:4001:see you");
    let abrupt = Client::connect(addr, "/parties/probe/codes?_pk=abrupt");
    drop(abrupt);
    assert_eq!(watcher.recv_text(), "closed:abrupt:1006:");
}

fn the_binary_refuses_a_bad_config_with_exit_2_naming_the_key() {
    let path = std::env::temp_dir().join(format!("dormouse-bad-config-{}.toml", std::process::id()));
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\n[limits]\nmax_mesage_bytes = 5\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dormouse"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_mesage_bytes"));
}

fn a_panicking_party_costs_only_its_own_room() {
    let server = start("");
    let addr = server.local_addr();
    let mut a = Client::connect(addr, "/parties/panicky/r?_pk=a");
    let mut b = Client::connect(addr, "/parties/panicky/r?_pk=b");
    let mut elsewhere = Client::connect(addr, "/parties/panicky/other?_pk=c");
    a.send_text("count");
    assert_eq!(a.recv_text(), "1");
    a.send_text("boom");
    let reason = "room failed: the party code panicked".to_owned();
    assert_eq!(a.expect_close(), (1011, reason.clone()));
    assert_eq!(b.expect_close(), (1011, reason));
    // Another room, on whichever core, is untouched.
    elsewhere.send_text("count");
    assert_eq!(elsewhere.recv_text(), "1");
    // The failed room comes back, fresh, on its next event.
    let mut again = Client::connect(addr, "/parties/panicky/r?_pk=a");
    again.send_text("count");
    assert_eq!(again.recv_text(), "1");
    let got = http(addr, "GET", "/parties/panicky/r/boom", "", "");
    assert_eq!((got.status, got.text().as_str()), (500, "room failed: the party code panicked"));
    assert_eq!(again.expect_close().0, 1011, "the HTTP panic reset the room too");
}

fn a_panicking_hook_or_fetch_handler_fails_only_its_request() {
    let server = dormouse::Server::new(config(""))
        .party::<Panicky>("panicky")
        .fetch(|request| {
            assert_ne!(request.path(), "/boom", "the fetch handler asked to panic");
            dormouse::Response::text(200, "fetched")
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    let reason = "internal error: the server's handler panicked";
    // Sockets held before the panics: each must still be served after.
    let mut held: Vec<Client> =
        (0..16).map(|i| Client::connect(addr, &format!("/parties/panicky/r?_pk=h{i}"))).collect();
    // Keep-alive: the same socket, on the same core, is answered after a 500.
    let mut stream = connect_tcp(addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for (path, status, body) in [
        ("/parties/panicky/r/hookboom", 500, reason),
        ("/parties/panicky/r", 200, "0"),
        ("/boom", 500, reason),
        ("/health", 200, "fetched"),
    ] {
        stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes()).unwrap();
        let response = read_response(&mut reader);
        assert_eq!((response.status, response.text().as_str()), (status, body), "GET {path}");
    }
    for _ in 0..16 {
        let refused = Client::try_connect(addr, "/parties/panicky/r?hook=boom", "");
        assert_eq!((refused.response.status, refused.response.text().as_str()), (500, reason));
    }
    for (i, client) in held.iter_mut().enumerate() {
        client.send_text("count");
        assert_eq!(client.recv_text(), (i + 1).to_string(), "a socket held before the panics is served");
    }
    for i in 0..16 {
        Client::connect(addr, &format!("/parties/panicky/r?_pk=n{i}"));
    }
}

fn malformed_http_is_400() {
    let server = start("");
    let got = http_raw(server.local_addr(), b"GET / HTTP/1.1\r\nbad header line\r\n\r\n");
    assert_eq!(got.status, 400);
    let got = http_raw(server.local_addr(), b"\x01\x02 nonsense\r\n\r\n");
    assert_eq!(got.status, 400);
}

fn oversized_head_is_431() {
    let server = start("");
    let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(17 * 1024));
    assert_eq!(http_raw(server.local_addr(), big.as_bytes()).status, 431);
}

fn oversized_body_is_413() {
    let server = start("[limits]\nmax_body_bytes = 10\n");
    let got = http(server.local_addr(), "POST", "/parties/counter/c", "", "12345678901");
    assert_eq!(got.status, 413);
}

fn bad_upgrade_requests_are_refused() {
    let server = start("");
    let addr = server.local_addr();
    let request = "GET /parties/main/r HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(http_raw(addr, request.as_bytes()).status, 400, "missing key");
    let request = format!(
        "GET /parties/main/r HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let got = http_raw(addr, request.as_bytes());
    assert_eq!(got.status, 426);
    assert_eq!(got.header("sec-websocket-version"), Some("13"));
}

fn silent_and_slow_peers_are_dropped_at_the_head_timeout() {
    let server = start("[limits]\nhead_timeout_ms = 300\n");
    let mut silent = connect_tcp(server.local_addr());
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut silent, &mut rest).unwrap();
    assert!(rest.is_empty(), "a silent peer is simply closed");
    let mut slow = connect_tcp(server.local_addr());
    slow.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n").unwrap();
    assert_eq!(read_response(&mut BufReader::new(slow)).status, 408);
}

fn fragmented_message_is_reassembled_with_a_ping_between_fragments() {
    let server = start("");
    let mut client = Client::connect(server.local_addr(), "/parties/echo/r");
    client.send_frame(false, 1, "hel".as_bytes(), true);
    client.send_frame(true, 9, b"mid", true);
    // A code point split across fragments is fine.
    client.send_frame(false, 0, &"lo wörld".as_bytes()[..7], true);
    client.send_frame(true, 0, &"lo wörld".as_bytes()[7..], true);
    let pong = client.recv();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"mid"[..]));
    assert_eq!(client.recv_text(), "hello wörld");
}

fn ping_is_answered_with_pong() {
    let server = start("");
    let mut client = Client::connect(server.local_addr(), "/parties/main/r");
    client.send_frame(true, 9, b"are you there", true);
    let pong = client.recv();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"are you there"[..]));
}

fn close_handshake_echoes_the_code_and_closes_tcp() {
    let server = start("");
    let mut client = Client::connect(server.local_addr(), "/parties/main/r");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    client.send_frame(true, 8, &payload, true);
    let reply = client.recv();
    assert_eq!(reply.close_code().0, 1000);
    assert!(client.read_to_end().is_empty());
    // An invalid close code is a protocol error.
    let mut client = Client::connect(server.local_addr(), "/parties/main/r");
    client.send_frame(true, 8, &1005u16.to_be_bytes(), true);
    assert_eq!(client.expect_close().0, 1002);
}

fn duplicate_pk_replaces_the_old_socket_and_its_close_keeps_the_new_one() {
    let server = start("");
    let addr = server.local_addr();
    let mut old = Client::connect(addr, "/parties/probe/dup?_pk=same");
    assert_eq!(old.recv_text(), "welcome:same");
    let mut new = Client::connect(addr, "/parties/probe/dup?_pk=same");
    assert_eq!(new.recv_text(), "welcome:same");
    // The old socket is closed by the server...
    assert_eq!(old.expect_close().0, 1000);
    // ...and its close did not remove the new connection.
    let mut other = Client::connect(addr, "/parties/probe/dup?_pk=other");
    other.recv_text();
    other.send_text("who");
    assert_eq!(other.recv_text(), "other,same");
    new.send_text("still works");
    assert_eq!(new.recv_text(), "still works");
}

fn two_thousand_connections_receive_one_broadcast_exactly_once() {
    raise_fd_limit();
    let server = start("");
    let addr = server.local_addr();
    let mut receivers: Vec<Client> =
        (0..2000).map(|i| Client::connect(addr, &format!("/parties/main/big?_pk=r{i}"))).collect();
    let per_core = server.connections_per_core();
    assert!(per_core.iter().all(|&n| n > 0), "connections land on both cores: {per_core:?}");
    let mut sender = Client::connect(addr, "/parties/main/big?_pk=sender");
    sender.send_text("hello everyone");
    sender.send_text("end");
    for receiver in &mut receivers {
        assert_eq!(receiver.recv_text(), "hello everyone");
        // The next frame is the marker, so the broadcast came exactly once.
        assert_eq!(receiver.recv_text(), "end");
    }
}

/// Waits until the server reports no open sockets, or fails after GUARD.
fn wait_for_no_connections(server: &dormouse::ServerHandle) {
    let deadline = std::time::Instant::now() + GUARD;
    while server.connections_per_core().iter().sum::<u64>() > 0 {
        assert!(std::time::Instant::now() < deadline, "records still open: {:?}", server.connections_per_core());
        std::thread::yield_now();
    }
}

fn every_way_of_ending_a_socket_frees_its_record() {
    let server = start("[limits]\nhead_timeout_ms = 200\n");
    let addr = server.local_addr();
    // Clean close handshakes.
    for i in 0..20 {
        let mut client = Client::connect(addr, &format!("/parties/main/free?_pk=c{i}"));
        client.send_frame(true, 8, &1000u16.to_be_bytes(), true);
        assert_eq!(client.recv().close_code().0, 1000);
        assert!(client.read_to_end().is_empty());
    }
    // Abrupt drops of open WebSockets, HTTP with connection: close, protocol
    // errors, and a silent peer that the head timeout closes.
    let dropped: Vec<Client> =
        (0..20).map(|i| Client::connect(addr, &format!("/parties/main/free?_pk=d{i}"))).collect();
    drop(dropped);
    assert_eq!(http(addr, "GET", "/parties/counter/free", "", "").status, 200);
    let mut bad = Client::connect(addr, "/parties/main/free?_pk=bad");
    bad.send_frame(true, 1, b"x", false);
    assert_eq!(bad.expect_close().0, 1002);
    let mut silent = connect_tcp(addr);
    assert!(std::io::Read::read(&mut silent, &mut [0u8; 1]).unwrap() == 0);
    // The server lingers on a socket until its peer closes too: close ours.
    drop((bad, silent));
    wait_for_no_connections(&server);
    // The room saw everyone leave: a newcomer is alone.
    let mut last = Client::connect(addr, "/parties/probe/free?_pk=last");
    last.recv_text();
    last.send_text("who");
    assert_eq!(last.recv_text(), "last");
}

#[test]
fn a_second_server_on_the_same_address_or_data_dir_refuses_to_start() {
    let first = config("");
    let dir = first.data_dir.clone();
    let server = dormouse::Server::new(first).party::<dormouse::Relay>("main").start().unwrap();
    let serve = |args: &[&str]| {
        let output =
            std::process::Command::new(env!("CARGO_BIN_EXE_dormouse")).arg("serve").args(args).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let addr = server.local_addr().to_string();
    let other_dir = fresh_data_dir();
    let (code, stderr) = serve(&["--listen", &addr, "--data-dir", other_dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}: address in use")), "{stderr}");
    let (code, stderr) = serve(&["--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    let holder = format!("is in use by pid {}", std::process::id());
    assert!(stderr.contains(&holder), "{stderr}");
    // The first server was not disturbed, and its data directory is free
    // again once it stops.
    assert_eq!(http(server.local_addr(), "GET", "/parties/main/r", "", "").status, 404);
    drop(server);
    let mut again = config("");
    again.data_dir = dir;
    assert!(dormouse::Server::new(again).start().is_ok());
}

#[test]
fn the_connect_subcommand_talks_to_a_room_from_the_terminal() {
    use std::io::BufRead;
    let server = start("");
    let addr = server.local_addr();
    let mut other = Client::connect(addr, "/parties/main/term?_pk=other");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dormouse"))
        .args(["connect", &format!("ws://{addr}/parties/main/term?_pk=me")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("connected to ws://"), "{line}");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from the terminal\n").unwrap();
    assert_eq!(other.recv_text(), "hello from the terminal");
    other.send_text("hello back");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "hello back\n");
    // End of input closes the connection cleanly.
    drop(stdin);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert_eq!(rest.trim(), "closed by the server: 1000");
    // A refused upgrade is reported with the server's answer.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dormouse"))
        .args(["connect", &format!("ws://{addr}/parties/nope/r")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the server refused the upgrade: 404 Party nope not found"), "{stderr}");
}
