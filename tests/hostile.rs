//! Slow and hostile peers cost only themselves: slowloris is dropped at the
//! head timeout, a connection flood past the limit is refused with 503, a
//! ping flood does not starve anyone, a core that falls behind costs new
//! input a 1013 instead of unbounded memory, and everyone else keeps being
//! served meanwhile. (A client that never reads is in `tests/slow_consumer.rs`.)

mod common;

backend_tests!(
    slowloris_is_dropped_at_the_head_timeout_while_others_are_served,
    a_connection_flood_past_the_limit_gets_503_and_existing_clients_carry_on,
    a_ping_flood_does_not_starve_other_clients,
    input_for_a_core_that_falls_behind_is_refused_with_1013_not_queued_without_bound,
    a_flood_into_a_room_busy_with_sliced_broadcasts_is_refused_not_backlogged,
);

use common::*;
use dormouse::{Connection, Message, Party, Room, Server};
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
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

/// Where a stalled room is: not yet blocked, blocked inside its callback,
/// or let go by the test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Open,
    Blocked,
    Released,
}

/// One stalled room's switch, shared by the room (on its core) and the test.
struct Gate {
    stage: Mutex<Stage>,
    changed: Condvar,
}

impl Gate {
    /// The gate of room `id` (each test run uses a room of its own).
    fn of(id: &str) -> Arc<Gate> {
        static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
        let mut gates = GATES.get_or_init(Default::default).lock().unwrap();
        let gate = gates.entry(id.to_owned());
        gate.or_insert_with(|| Arc::new(Gate { stage: Mutex::new(Stage::Open), changed: Condvar::new() })).clone()
    }

    fn set(&self, stage: Stage) {
        *self.stage.lock().unwrap() = stage;
        self.changed.notify_all();
    }

    fn wait_for(&self, stage: Stage) {
        let guard = self.stage.lock().unwrap();
        drop(self.changed.wait_while(guard, |s| *s != stage).unwrap());
    }
}

/// Lets a stalled room go even when the test fails, so the server can stop.
struct ReleaseOnDrop(Arc<Gate>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.set(Stage::Released);
    }
}

/// A room whose `block` message keeps its core busy until the test lets go,
/// as slow room code would; other messages are taken and ignored.
struct Stall;

impl Party for Stall {
    fn new(_room: &Room) -> Self {
        Stall
    }

    fn on_message(&mut self, message: Message<'_>, _sender: &Connection<'_>, room: &Room) {
        if let Message::Text("block") = message {
            let gate = Gate::of(room.id());
            gate.set(Stage::Blocked);
            gate.wait_for(Stage::Released);
        }
    }
}

/// Reads frames until the server's close frame (its code and reason), or
/// `None` if the connection ends otherwise.
fn close_of(client: &mut Client) -> Option<(u16, String)> {
    loop {
        let mut head = [0u8; 2];
        client.reader.read_exact(&mut head).ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                client.reader.read_exact(&mut b).ok()?;
                u16::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0; len];
        client.reader.read_exact(&mut payload).ok()?;
        if head[0] & 0x0f == 8 {
            return Some(Frame { fin: true, rsv1: false, opcode: 8, payload }.close_code());
        }
    }
}

fn input_for_a_core_that_falls_behind_is_refused_with_1013_not_queued_without_bound() {
    let server = Server::new(config("[limits]\ncore_channel_capacity = 16\n"))
        .party::<dormouse::Echo>("echo")
        .party::<Stall>("stall")
        .start()
        .expect("server starts");
    let addr = server.local_addr();
    let room = format!("stuck-{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let gate = Gate::of(&room);
    let _release = ReleaseOnDrop(gate.clone());
    let mut blocker = Client::connect(addr, &format!("/parties/stall/{room}?_pk=blocker"));
    // Sixteen flooders: the kernel spreads them over both cores, so some are
    // on the core that keeps running (all on one core: one chance in 2^15).
    let flooders: Vec<Client> =
        (0..16).map(|i| Client::connect(addr, &format!("/parties/stall/{room}?_pk=f{i}"))).collect();
    blocker.send_text("block");
    gate.wait_for(Stage::Blocked);

    // Each sends 200 messages for the stalled room. On the running core they
    // fill the channel (16) and then the outbox (16 more); past that the core
    // refuses them instead of queueing without bound.
    let (tx, rx) = std::sync::mpsc::channel();
    for mut flooder in flooders {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for n in 0..200 {
                let frame = encode_frame(true, 1, format!("m{n}").as_bytes(), true);
                if flooder.writer.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = tx.send(close_of(&mut flooder));
        });
    }
    let first = rx.recv().unwrap();
    assert_eq!(first, Some((1013, "try again later: the server is overloaded".to_owned())));

    // The stalled core catches up and everything is served again: until
    // the backed-up messages have gone over, a new connection may still be
    // told to come back (503), or its message refused (1013), and it comes
    // back, as a client would.
    gate.set(Stage::Released);
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < GUARD, "the server never caught up");
        let mut client = Client::try_connect(addr, "/parties/echo/after?_pk=x", "");
        if client.response.status != 101 {
            assert_eq!(client.response.status, 503, "{}", client.response.text());
            continue;
        }
        client.send_text("served");
        let frame = client.recv();
        if frame.opcode == 1 {
            assert_eq!(frame.text(), "served");
            break;
        }
        assert_eq!(frame.close_code(), (1013, "try again later: the server is overloaded".to_owned()));
    }
    assert!(metric(addr, "dormouse_events_shed_total") >= 1);
}

fn a_flood_into_a_room_busy_with_sliced_broadcasts_is_refused_not_backlogged() {
    // One core, so nothing crosses between cores and only the backlog can
    // refuse. Every broadcast to more than one member is written a few
    // members per turn, so the room's next messages wait in its backlog
    // meanwhile. Past a channel's worth (1,024) the core refuses new input,
    // from the next turn on, instead of backlogging the whole flood; the
    // flood is several turns' worth of reads.
    // No rate limit: the flood must reach the room, for the backlog to refuse it.
    let mut config =
        config("[limits]\nfanout_slice = 1\ncore_channel_capacity = 1024\n[rate_limits]\nmessages_per_sec = 0\n");
    config.cores = Some(1);
    let server = Server::new(config).party::<dormouse::Relay>("main").start().expect("server starts");
    let addr = server.local_addr();
    // Members that read nothing: what reaches them before the refusal stays
    // below their write backlog bound, so none is a slow consumer.
    let _members: Vec<Client> =
        (0..100).map(|i| Client::connect(addr, &format!("/parties/main/big?_pk=m{i}"))).collect();
    let mut flooder = Client::connect(addr, "/parties/main/big?_pk=flooder");
    let mut writer = flooder.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut chunk = Vec::new();
        for n in 0..200_000u32 {
            chunk.extend_from_slice(&encode_frame(true, 2, &n.to_le_bytes(), true));
            if chunk.len() >= 64 << 10 {
                if writer.write_all(&chunk).is_err() {
                    return;
                }
                chunk.clear();
            }
        }
        let _ = writer.write_all(&chunk);
    });
    let close = close_of(&mut flooder);
    assert_eq!(close, Some((1013, "try again later: the server is overloaded".to_owned())));
    drop(flooder);
    sender.join().unwrap();
    assert!(metric(addr, "dormouse_events_shed_total") >= 1);
}
