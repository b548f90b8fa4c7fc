//! Outbound requests from many rooms at once: `--rooms` rooms (1,000), one
//! WebSocket client each, every client asking its room to fetch from a
//! local upstream and waiting for the answer, again and again for
//! `--secs` (10); prints completions per second and the round trip's
//! p50/p99 (client → room → fetch thread → upstream → room → client).
//!
//! `cargo bench --bench fetch -- [--rooms N] [--secs S] [--idle] [--every-ms M]`
//!
//! `--every-ms M` paces each client: its next request goes M ms after the
//! previous one was sent (or at once if the answer took longer), so the
//! rooms fetch at a set rate (1,000 rooms, 200 ms: 5,000/s) instead of as
//! fast as the machine allows.
//!
//! The server listens on 127.0.0.1:1999 and also serves `main` (a relay),
//! so `dormouse-loadtest fanout` can run against it at the same time: its
//! frames/s with the fetch load running, against the same with `--idle`
//! (the server and its rooms, no fetches), show what the fetches cost the
//! rest of the core.

use dormouse::{Config, FetchError, FetchRequest, Message, Party, Response, Room, Server};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static UPSTREAM: OnceLock<String> = OnceLock::new();

/// Each message fetches the upstream; each outcome goes back to the room.
struct Fetcher;

impl Party for Fetcher {
    fn new(_room: &Room) -> Self {
        Fetcher
    }

    fn on_message(&mut self, _message: Message<'_>, _sender: &dormouse::Connection<'_>, room: &Room) {
        let url = UPSTREAM.get().expect("the upstream runs before the server");
        if room.fetch(FetchRequest::get(url.as_str())).is_none() {
            room.broadcast("refused", &[]);
        }
    }

    fn on_fetch_response(&mut self, _id: u32, outcome: Result<Response, FetchError>, room: &Room) {
        match outcome {
            Ok(response) => room.broadcast(format!("{}", response.status).as_str(), &[]),
            Err(error) => room.broadcast(format!("error {error}").as_str(), &[]),
        }
    }
}

/// A keep-alive HTTP/1.1 server answering every request with `ok`.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" && writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81, 0x80 | payload.len() as u8, 1, 2, 3, 4];
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
    out
}

fn read_frame(reader: &mut impl Read) -> Vec<u8> {
    let mut head = [0; 2];
    reader.read_exact(&mut head).unwrap();
    let mut payload = vec![0; usize::from(head[1] & 0x7f)];
    reader.read_exact(&mut payload).unwrap();
    payload
}

fn client(
    addr: SocketAddr,
    room: usize,
    every: Duration,
    stop: &AtomicBool,
    latencies: &Mutex<hdrhistogram::Histogram<u64>>,
) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let upgrade = format!(
        "GET /parties/fetcher/r{room} HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    writer.write_all(upgrade.as_bytes()).unwrap();
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let mut local = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let go = frame(b"go");
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        writer.write_all(&go).unwrap();
        let answer = read_frame(&mut reader);
        assert_eq!(answer, b"200", "{}", String::from_utf8_lossy(&answer));
        local.record(sent.elapsed().as_micros() as u64).unwrap();
        // Pacing, not synchronisation: the next request's time.
        if let Some(wait) = every.checked_sub(sent.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    latencies.lock().unwrap().add(&local).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().unwrap())
    };
    let rooms = value("--rooms", 1000) as usize;
    let secs = value("--secs", 10);
    let idle = args.iter().any(|a| a == "--idle");
    let every = Duration::from_millis(value("--every-ms", 0));
    UPSTREAM.set(format!("http://{}/", upstream())).unwrap();
    let data = std::env::temp_dir().join(format!("dormouse-fetch-bench-{}", std::process::id()));
    let toml = format!(
        "listen = \"127.0.0.1:1999\"\ndata_dir = '{}'\nfetch_allow = [\"127.0.0.1\"]\n\
         [limits]\nmax_fetches_per_core = 4096\n[parties.main]\nkind = \"relay\"\n",
        data.display()
    );
    let server = Server::new(Config::from_toml(&toml).unwrap()).party::<Fetcher>("fetcher").start().unwrap();
    let addr = server.local_addr();
    eprintln!("serving on {addr}; {rooms} rooms, {} for {secs} s", if idle { "idle" } else { "fetching" });
    let stop = Arc::new(AtomicBool::new(idle));
    let latencies = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3).unwrap()));
    let clients: Vec<_> = (0..rooms)
        .map(|room| {
            let (stop, latencies) = (stop.clone(), latencies.clone());
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || client(addr, room, every, &stop, &latencies))
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = latencies.lock().unwrap();
    if !idle {
        println!(
            "fetch/{rooms}-rooms  {:.0} completions/s  p50 {} us  p99 {} us  max {} us  (n={})",
            h.len() as f64 / elapsed,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            h.len()
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
