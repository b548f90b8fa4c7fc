//! Slow and hostile peers cost only themselves: slowloris is dropped at the
//! head timeout, a connection flood past the limit is refused with 503, a
//! ping flood does not starve anyone, and everyone else keeps being served
//! meanwhile. (A client that never reads is in `tests/slow_consumer.rs`.)

mod common;

backend_tests!(
    slowloris_is_dropped_at_the_head_timeout_while_others_are_served,
    a_connection_flood_past_the_limit_gets_503_and_existing_clients_carry_on,
    a_ping_flood_does_not_starve_other_clients,
);

use common::*;
use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

fn slowloris_is_dropped_at_the_head_timeout_while_others_are_served() {
    let server = start("[limits]\nhead_timeout_ms = 400\n");
    let addr = server.local_addr();
    let mut bystander = Client::connect(addr, "/parties/echo/by?_pk=bystander");
    let mut loris = connect_tcp(addr);
    // A head that never ends, a byte every 10 ms: each byte arrives well
    // within the timeout, but the head as a whole does not.
    let head = format!("GET /parties/main/r HTTP/1.1\r\nhost: t\r\nx-padding: {}", "a".repeat(10_000));
    let started = Instant::now();
    let mut sent = 0;
    let mut peek = [0u8; 1];
    for byte in head.bytes() {
        // Until the server answers (or cuts the connection).
        loris.set_nonblocking(true).unwrap();
        let answered = !matches!(loris.peek(&mut peek), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        loris.set_nonblocking(false).unwrap();
        if answered || loris.write_all(&[byte]).is_err() {
            break;
        }
        sent += 1;
        // The bystander is served while the loris dribbles.
        if sent % 10 == 0 {
            bystander.send_text("still here");
            assert_eq!(bystander.recv_text(), "still here");
        }
        std::thread::sleep(Duration::from_millis(10));
        assert!(started.elapsed() < GUARD, "the loris was never dropped");
    }
    assert!(started.elapsed() >= Duration::from_millis(400), "not before the head timeout");
    assert!(sent < head.len(), "dropped before the head was complete ({sent} bytes sent)");
    let response = read_response(&mut BufReader::new(loris));
    assert_eq!(response.status, 408, "slowloris gets 408 and is closed");
}

fn a_connection_flood_past_the_limit_gets_503_and_existing_clients_carry_on() {
    // 2 cores × 10 sockets.
    let server = start("[limits]\nmax_connections_per_core = 10\n");
    let addr = server.local_addr();
    let mut first = Client::connect(addr, "/parties/echo/flood?_pk=first");
    // Every socket asks something: an admitted one is answered by the room
    // (404: echo has no HTTP handler) and stays open; a refused one gets 503.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let mut stream = connect_tcp(addr);
        stream.write_all(b"GET /parties/echo/flood HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader);
        match response.status {
            404 => held.push(reader),
            503 => {
                assert_eq!(response.text(), "Server at connection capacity");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused >= 20, "past the limit sockets are refused");
    assert!(held.len() < 20, "at most 20 sockets admitted, the first client included: {}", held.len());
    assert_eq!(held.len() + refused, 60);
    // The client admitted before the flood is served as before.
    for i in 0..20 {
        first.send_text(&format!("echo {i}"));
        assert_eq!(first.recv_text(), format!("echo {i}"));
    }
    // Once the flood goes, new clients are admitted again.
    drop(held);
    let deadline = Instant::now() + GUARD;
    loop {
        let client = Client::try_connect(addr, "/parties/echo/flood?_pk=later", "");
        if client.response.status == 101 {
            break;
        }
        assert_eq!(client.response.status, 503);
        assert!(Instant::now() < deadline, "capacity never came back");
        std::thread::yield_now();
    }
}

fn a_ping_flood_does_not_starve_other_clients() {
    let server = start("");
    let addr = server.local_addr();
    let flooder = Client::connect(addr, "/parties/echo/pings?_pk=flooder");
    let mut writer = flooder.writer.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Pings in large writes, as fast as the socket takes them.
            let burst: Vec<u8> = (0..1000).flat_map(|_| encode_frame(true, 9, b"ping!", true)).collect();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if writer.write_all(&burst).is_err() {
                    break;
                }
                sent += 1000;
            }
            sent
        })
    };
    let mut reader = flooder.reader;
    let reading = std::thread::spawn(move || {
        let (mut total, mut buf) = (0, [0u8; 65536]);
        while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
            total += n;
        }
        total
    });
    // Another client's round trips go through while the flood runs.
    let mut other = Client::connect(addr, "/parties/echo/other?_pk=other");
    for i in 0..300 {
        other.send_text(&format!("round trip {i}"));
        assert_eq!(other.recv_text(), format!("round trip {i}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooding.join().unwrap();
    assert!(sent >= 1000, "the flood ran");
    // The flooder got pongs, or (reading slower than it pings) was closed
    // as a slow consumer; either way the server carries on.
    let _ = flooder.writer.shutdown(std::net::Shutdown::Both);
    reading.join().unwrap();
    other.send_text("after the flood");
    assert_eq!(other.recv_text(), "after the flood");
}
