//! permessage-deflate across a room: a broadcast is compressed once and the
//! same compressed frame reaches every member that negotiated it, while the
//! others get the plain frame; the publish API does the same. Negotiation
//! and single-connection cases are in `tests/conformance.rs`; Node's `ws`
//! client is in `tests/partysocket.rs`.

mod common;

backend_tests!(a_broadcast_is_compressed_once_for_the_members_that_negotiated_it,);

use common::*;
use std::io::Read;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// flate2's raw inflate of a compressed message, its tail put back.
fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(&input[..]).read_to_end(&mut out).ok();
    out
}

fn a_broadcast_is_compressed_once_for_the_members_that_negotiated_it() {
    let server = start("publish_token = \"a-long-enough-token\"\n");
    let addr = server.local_addr();
    let path = |id: &str| format!("/parties/main/zip?_pk={id}");
    let mut sender = Client::connect(addr, &path("sender"));
    let mut compressed: Vec<Client> = (0..20)
        .map(|i| {
            let client = Client::try_connect(addr, &path(&format!("z{i}")), OFFER);
            assert!(client.response.header("sec-websocket-extensions").is_some());
            client
        })
        .collect();
    let mut plain: Vec<Client> = (0..5).map(|i| Client::connect(addr, &path(&format!("p{i}")))).collect();
    let json = format!(r#"{{"type":"doc","text":"{}"}}"#, "lorem ipsum dolor sit amet ".repeat(80));
    let before = server.counter("broadcasts_compressed");
    for n in 0..5 {
        sender.send_text(&format!("{n}:{json}"));
    }
    let publish = format!(
        "POST /parties/main/zip/_publish HTTP/1.1\r\nhost: t\r\nauthorization: Bearer a-long-enough-token\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n5:{json}",
        json.len() + 2
    );
    assert_eq!(http_raw(addr, publish.as_bytes()).text(), r#"{"delivered":26}"#);
    // Five broadcasts and one publish, each compressed once for twenty members.
    assert_eq!(server.counter("broadcasts_compressed") - before, 6);
    // The publish and the relayed messages may arrive in either order.
    let number = |message: &[u8]| usize::from(message[0] - b'0');
    let mut wire = vec![Vec::new(); 6];
    for client in &mut compressed {
        for _ in 0..6 {
            let frame = client.recv();
            assert!(frame.rsv1, "a member with deflate gets the compressed frame");
            let message = inflate(&frame.payload);
            let n = number(&message);
            assert!(message == format!("{n}:{json}").as_bytes(), "message {n} inflates back");
            wire[n].push(frame.payload);
        }
    }
    // Every member got the same bytes for a message: one compression, shared.
    for (n, payloads) in wire.iter().enumerate() {
        assert_eq!(payloads.len(), 20, "message {n} reached every deflate member");
        assert!(payloads.iter().all(|payload| *payload == payloads[0]), "message {n} has one compressed form");
    }
    assert!(wire[0][0].len() * 10 < json.len(), "{} compressed bytes for {}", wire[0][0].len(), json.len());
    for client in &mut plain {
        for _ in 0..6 {
            let frame = client.recv();
            assert!(!frame.rsv1);
            let n = number(&frame.payload);
            assert!(frame.text() == format!("{n}:{json}"), "plain message {n}");
        }
    }
}
