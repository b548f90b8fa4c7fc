//! Rate limits, kept by the reactor with no room involved: a connection's
//! messages and bytes per second (close 1008 "rate limit", or drop), a
//! client IP's upgrades and requests per second (429 with `Retry-After`),
//! the client IP taken from `X-Forwarded-For` only from a trusted proxy,
//! and each counted in `/metrics`.
//!
//! A bucket holds a second of its rate, and each test spends it within one
//! write or a few quick requests, far inside the second it would take to
//! refill.

mod common;

use common::{encode_frame, http, http_raw, metric, read_response, start, wait_for_counter, Client};
use std::io::{BufReader, Write};

backend_tests!(
    a_connection_over_its_message_rate_is_closed_with_1008,
    under_drop_a_message_over_the_byte_rate_is_dropped_and_the_connection_stays,
    upgrades_over_an_ips_rate_get_429_with_retry_after,
    requests_over_an_ips_rate_get_429_without_reaching_the_room,
    forwarded_for_names_the_client_only_from_a_trusted_proxy,
);

fn a_connection_over_its_message_rate_is_closed_with_1008() {
    let server = start("[rate_limits]\nmessages_per_sec = 5\n");
    let addr = server.local_addr();
    let mut observer = Client::connect(addr, "/parties/main/r");
    let mut client = Client::connect(addr, "/parties/main/r");
    let burst: Vec<u8> = (0..25).flat_map(|i| encode_frame(true, 1, format!("m{i}").as_bytes(), true)).collect();
    client.writer.write_all(&burst).unwrap();
    assert_eq!(client.expect_close(), (1008, "rate limit".to_owned()));
    // The room relayed what was within the limit, in order, and nothing
    // after: a later member's message marks the end.
    let mut marker = Client::connect(addr, "/parties/main/r");
    marker.send_text("mark");
    let mut relayed = Vec::new();
    loop {
        let text = observer.recv_text();
        if text == "mark" {
            break;
        }
        relayed.push(text);
    }
    assert!((5..25).contains(&relayed.len()), "a second's worth (5) passed, not the flood: {relayed:?}");
    let expected: Vec<String> = (0..relayed.len()).map(|i| format!("m{i}")).collect();
    assert_eq!(relayed, expected);
    wait_for_counter(&server, "rate_limited_closes", 1);
    assert_eq!(server.counter("rate_limited_messages"), 1, "the message that closed it");
    assert_eq!(metric(addr, "dormouse_rate_limited_closes_total"), 1);
    // Another connection, in the same room, has a bucket of its own.
    let mut other = Client::connect(addr, "/parties/echo/r");
    other.send_text("hi");
    assert_eq!(other.recv_text(), "hi");
}

fn under_drop_a_message_over_the_byte_rate_is_dropped_and_the_connection_stays() {
    let toml = "[limits]\nmax_message_bytes = 1000\n[rate_limits]\nbytes_per_sec = 1000\naction = \"drop\"\n";
    let server = start(toml);
    let mut client = Client::connect(server.local_addr(), "/parties/echo/r");
    let (a, b) = ("a".repeat(600), "b".repeat(600));
    let mut burst = encode_frame(true, 1, a.as_bytes(), true);
    burst.extend(encode_frame(true, 1, b.as_bytes(), true));
    burst.extend(encode_frame(true, 1, b"c", true));
    client.writer.write_all(&burst).unwrap();
    // 600 + 600 bytes is past the second's 1,000: b is dropped; c fits.
    assert_eq!(client.recv_text(), a);
    assert_eq!(client.recv_text(), "c");
    wait_for_counter(&server, "rate_limited_messages", 1);
    assert_eq!(server.counter("rate_limited_closes"), 0);
    // The socket stays open: once the bucket refills, a message passes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    client.reader.get_ref().set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    loop {
        client.send_text(&"d".repeat(900));
        let mut frame = [0u8; 2];
        match std::io::Read::read_exact(&mut client.reader, &mut frame) {
            Ok(()) => {
                assert_eq!(frame[0], 0x81, "a text frame, not a close");
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                assert!(std::time::Instant::now() < deadline, "the bucket never refilled");
            }
            Err(e) => panic!("the connection stays open: {e}"),
        }
    }
}

fn upgrades_over_an_ips_rate_get_429_with_retry_after() {
    let server = start("[rate_limits]\nconnections_per_ip_per_sec = 2\n");
    let addr = server.local_addr();
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    for _ in 0..8 {
        let client = Client::try_connect(addr, "/parties/echo/r", "");
        statuses.push(client.response.status);
        if client.response.status == 429 {
            let retry: u64 = client.response.header("retry-after").expect("429 says when").parse().unwrap();
            assert_eq!(retry, 1, "within a second");
            assert_eq!(client.response.text(), "Too many requests from your address");
        }
        open.push(client);
    }
    assert_eq!(&statuses[..2], &[101, 101], "a second's worth at once: {statuses:?}");
    assert!(statuses.contains(&429), "then 429: {statuses:?}");
    assert_eq!(server.counter("rate_limited_connects") as usize, statuses.iter().filter(|&&s| s == 429).count());
    // Plain requests are not upgrades: no requests limit is set.
    assert_eq!(http(addr, "GET", "/parties/counter/c", "", "").status, 200);
    assert_eq!(server.counter("rate_limited_requests"), 0);
    // The admitted sockets work.
    open[0].send_text("still here");
    assert_eq!(open[0].recv_text(), "still here");
}

fn requests_over_an_ips_rate_get_429_without_reaching_the_room() {
    let server = start("[rate_limits]\nrequests_per_ip_per_sec = 3\n");
    let addr = server.local_addr();
    let one = "POST /parties/counter/c HTTP/1.1\r\nhost: test\r\ncontent-length: 1\r\n\r\n1";
    let mut stream = common::connect_tcp(addr);
    stream.write_all(one.repeat(5).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    for expected in ["1", "2", "3"] {
        let response = read_response(&mut reader);
        assert_eq!((response.status, response.text()), (200, expected.to_owned()));
    }
    let limited = read_response(&mut reader);
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("connection"), Some("close"));
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    assert!(rest.is_empty(), "the socket closes after the 429");
    wait_for_counter(&server, "rate_limited_requests", 1);
    wait_for_counter(&server, "room_events", 3);
    assert_eq!(server.counter("room_events"), 3, "the room saw only the three within the limit");
}

fn forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let limits = "[rate_limits]\nrequests_per_ip_per_sec = 1\n";
    let get = |addr: std::net::SocketAddr, xff: &str| {
        let headers = if xff.is_empty() { String::new() } else { format!("x-forwarded-for: {xff}\r\n") };
        http(addr, "GET", "/parties/counter/c", &headers, "").status
    };
    let proxied = start(&format!("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n{limits}"));
    let addr = proxied.local_addr();
    assert_eq!(get(addr, "203.0.113.1"), 200);
    assert_eq!(get(addr, "203.0.113.1"), 429, "the same client behind the proxy");
    assert_eq!(get(addr, "203.0.113.2"), 200, "another client behind the same proxy");
    assert_eq!(get(addr, "198.51.100.9, 203.0.113.3, 10.1.1.1"), 200, "counted as 203.0.113.3");
    assert_eq!(get(addr, "203.0.113.3"), 429);
    assert_eq!(get(addr, ""), 200, "the proxy's own requests are its own");
    // Without trusted proxies the header is the client's say-so: ignored.
    let direct = start(limits);
    let addr = direct.local_addr();
    assert_eq!(get(addr, "203.0.113.1"), 200);
    assert_eq!(get(addr, "203.0.113.2"), 429, "one peer, whatever it claims");
    let raw = http_raw(addr, b"GET /parties/counter/c HTTP/1.1\r\nhost: t\r\nforwarded: for=192.0.2.1\r\n\r\n");
    assert_eq!(raw.status, 429);
}
