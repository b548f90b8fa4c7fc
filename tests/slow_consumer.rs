//! A client that never reads is closed with 1008 by the slow-consumer policy
//! while the room's other members keep receiving, and the process's memory
//! stays bounded while it happens; what it reads is whole frames, then the
//! close, or a reset when it did not read in time. Alone in its test binary,
//! so the RSS measured is this test's.

mod common;

backend_tests!(
    a_client_that_never_reads_is_closed_and_memory_stays_bounded,
    a_slow_client_that_reads_again_gets_whole_frames_then_the_1008_then_eof,
    a_slow_client_that_does_not_read_in_time_is_reset_not_left_with_a_cut_frame,
);

use common::{metric, read_response, start, Client, KEY};
use std::io::{BufReader, Read, Write};
use std::net::SocketAddr;

const MESSAGE_BYTES: usize = 1024;
/// A batch fits in the backlog bound, so the member that reads between
/// batches is never a slow consumer.
const BATCH: usize = 100;
/// Messages relayed after the slow client is dropped: 96 MiB through the
/// room, far more than the memory bound below, so an unbounded backlog would
/// show.
const AFTER_DROP: usize = 96 * 1024;

/// Held by each test here: the memory test reads the whole process's RSS,
/// which another test's flood running beside it would grow (48 MiB once,
/// under load).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

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
    let _alone = one_at_a_time();
    // No rate limit: the sender's 64 MiB must reach the room.
    let server = start(
        "[limits]\nmax_write_backlog_bytes = 262144\nclose_timeout_ms = 120000\n\
         [rate_limits]\nmessages_per_sec = 0\nbytes_per_sec = 0\n",
    );
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

/// Broadcast frames of 60 KB, as in the black-box report.
const BIG: usize = 60_000;

/// The floods here must reach the room, whatever the machine's speed: no
/// per-connection rate limit (a 6 MB flood passes the default 16 MiB/s).
const UNLIMITED: &str = "[rate_limits]\nmessages_per_sec = 0\nbytes_per_sec = 0\n";

/// Relays big messages from `sender` until the server gives up on a
/// member (the slow-consumer counter moves).
fn flood_until_slow_consumer(addr: SocketAddr, sender: &mut Client, frame_bytes: usize) {
    let payload = vec![b'x'; frame_bytes];
    let mut sent = 0;
    while metric(addr, "dormouse_slow_consumers_closed_total") == 0 {
        assert!(sent < 2000, "the slow client was never closed");
        for _ in 0..8 {
            sender.send_frame(true, 2, &payload, true);
        }
        sent += 8;
    }
}

/// A frame read whole: its opcode and payload.
type WholeFrame = (u8, Vec<u8>);

/// Reads frames to the end of the stream. Returns the whole frames' opcodes
/// and how the stream ended: `Ok(tail)` at EOF with `tail` bytes of a frame
/// left unfinished, or the read error.
fn read_frames_to_end(client: &mut Client) -> (Vec<WholeFrame>, std::io::Result<usize>) {
    let mut bytes = Vec::new();
    let end = client.reader.read_to_end(&mut bytes).map(|_| ());
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        if rest.len() < 2 {
            break;
        }
        let (len, head) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if rest.len() < head + len {
            break;
        }
        frames.push((rest[0] & 0x0f, rest[head..head + len].to_vec()));
        at += head + len;
    }
    (frames, end.map(|()| bytes.len() - at))
}

fn a_slow_client_that_reads_again_gets_whole_frames_then_the_1008_then_eof() {
    let _alone = one_at_a_time();
    // The client reads again well within the close timeout.
    let server = start(&format!("[limits]\nmax_write_backlog_bytes = 262144\nclose_timeout_ms = 20000\n{UNLIMITED}"));
    let addr = server.local_addr();
    let mut sender = Client::connect(addr, "/parties/main/big?_pk=sender");
    let mut slow = slow_client(addr, "/parties/main/big?_pk=slow");
    flood_until_slow_consumer(addr, &mut sender, BIG);
    let (frames, end) = read_frames_to_end(&mut slow);
    assert_eq!(end.expect("the stream ends with EOF"), 0, "no frame is cut");
    let (close, data) = frames.split_last().expect("frames arrived");
    assert_eq!(close.0, 8, "the last frame is the close");
    assert_eq!(&close.1[..2], &1008u16.to_be_bytes());
    assert_eq!(&close.1[2..], b"slow consumer: write backlog exceeded");
    assert!(
        data.iter().all(|(opcode, payload)| *opcode == 2 && payload.len() == BIG),
        "every frame before it is whole"
    );
}

fn a_slow_client_that_does_not_read_in_time_is_reset_not_left_with_a_cut_frame() {
    let _alone = one_at_a_time();
    // 60 KB frames (the rest of a cut one and the close then fit in the
    // kernel's buffers: whole frames, the close, EOF), and 6 MB ones (they
    // do not: a reset).
    for (frame_bytes, backlog) in [(BIG, 262_144), (6 << 20, 16 << 20)] {
        let limits = format!("max_write_backlog_bytes = {backlog}\nmax_message_bytes = {}\n", 8 << 20);
        let server = start(&format!("[limits]\n{limits}close_timeout_ms = 300\n{UNLIMITED}"));
        not_read_in_time(&server, frame_bytes);
    }
}

fn not_read_in_time(server: &dormouse::ServerHandle, frame_bytes: usize) {
    let addr = server.local_addr();
    let mut sender = Client::connect(addr, "/parties/main/big?_pk=sender");
    let mut slow = slow_client(addr, "/parties/main/big?_pk=slow");
    flood_until_slow_consumer(addr, &mut sender, frame_bytes);
    // The server gives up on it (the close timeout) while it reads nothing.
    let deadline = std::time::Instant::now() + common::GUARD;
    while server.connections_per_core().iter().sum::<u64>() > 1 {
        assert!(std::time::Instant::now() < deadline, "the slow client was never let go");
        std::thread::yield_now();
    }
    // Either everything reached the kernel in time (whole frames, the 1008,
    // EOF) or the server reset the connection: never a cut frame followed
    // by a clean end, which looks like a healthy, idle socket to a client.
    let (mut frames, end) = read_frames_to_end(&mut slow);
    let closed = frames.last().is_some_and(|(opcode, _)| *opcode == 8);
    if closed {
        let (_, close) = frames.pop().unwrap();
        assert_eq!(&close[..2], &1008u16.to_be_bytes());
    }
    assert!(frames.iter().all(|(opcode, payload)| *opcode == 2 && payload.len() == frame_bytes), "whole data frames");
    match end {
        Ok(0) if closed => {}
        Ok(tail) => panic!("EOF after {} whole frames and {tail} bytes of a cut one, closed: {closed}", frames.len()),
        Err(e) => assert_eq!((e.kind(), closed), (std::io::ErrorKind::ConnectionReset, false), "{e}"),
    }
}
