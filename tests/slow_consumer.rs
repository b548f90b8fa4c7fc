//! A client that never reads is closed with 1008 by the slow-consumer policy
//! while the room's other members keep receiving, and the process's memory
//! stays bounded while it happens. Alone in its test binary, so the RSS
//! measured is this test's.

mod common;

backend_tests!(a_client_that_never_reads_is_closed_and_memory_stays_bounded,);

use common::{metric, read_response, start, Client, KEY};
use std::io::{BufReader, Write};
use std::net::SocketAddr;

const MESSAGE_BYTES: usize = 1024;
/// A batch fits in the backlog bound, so the member that reads between
/// batches is never a slow consumer.
const BATCH: usize = 100;
/// Messages relayed after the slow client is dropped: 96 MiB through the
/// room, far more than the memory bound below, so an unbounded backlog would
/// show.
const AFTER_DROP: usize = 96 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    kib * 1024
}

/// A WebSocket client whose receive buffer is tiny, so the server's backlog
/// for it fills quickly once it stops reading.
fn slow_client(addr: SocketAddr, path: &str) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(common::GUARD)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    writer.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader);
    assert_eq!(response.status, 101);
    Client { reader, writer, response }
}

/// Sends a batch of numbered messages and checks the reader gets each once, in order.
fn relay_batch(sender: &mut Client, reader: &mut Client, next: &mut usize) {
    let pad = "x".repeat(MESSAGE_BYTES - 12);
    for k in *next..*next + BATCH {
        sender.send_text(&format!("{k:010}:{pad}"));
    }
    for k in *next..*next + BATCH {
        let text = reader.recv_text();
        assert_eq!(&text[..10], format!("{k:010}"), "the reading member gets every message once, in order");
    }
    *next += BATCH;
}

fn a_client_that_never_reads_is_closed_and_memory_stays_bounded() {
    let server = start("[limits]\nmax_write_backlog_bytes = 262144\nclose_timeout_ms = 120000\n");
    let addr = server.local_addr();
    let mut sender = Client::connect(addr, "/parties/main/slow?_pk=sender");
    let mut reader = Client::connect(addr, "/parties/main/slow?_pk=reader");
    let mut slow = slow_client(addr, "/parties/main/slow?_pk=slow");
    let mut next = 0;
    // Warm up allocator and buffers before measuring.
    relay_batch(&mut sender, &mut reader, &mut next);
    let rss_before = rss_bytes();

    // Until the server gives up on the slow client: its kernel buffers fill,
    // then its backlog does. 64 MiB of traffic is far more than that takes.
    while metric(addr, "dormouse_slow_consumers_closed_total") == 0 {
        assert!(next < 64 * 1024, "the slow client was never closed");
        relay_batch(&mut sender, &mut reader, &mut next);
    }
    let dropped_at = next;
    while next < dropped_at + AFTER_DROP {
        relay_batch(&mut sender, &mut reader, &mut next);
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    eprintln!("rss growth {} KiB over {} messages", growth >> 10, next);
    assert!(growth < 48 << 20, "memory grew by {} MiB while relaying {} MiB", growth >> 20, next >> 10);

    // The slow client finds what was in flight, then the 1008 close.
    let close = loop {
        let frame = slow.recv();
        if frame.opcode == 8 {
            break frame.close_code();
        }
        assert_eq!(frame.opcode, 1);
    };
    assert_eq!(close, (1008, "slow consumer: write backlog exceeded".to_owned()));
    assert_eq!(metric(addr, "dormouse_slow_consumers_closed_total"), 1);
}
