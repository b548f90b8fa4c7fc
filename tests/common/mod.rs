//! Test harness: a real server on 127.0.0.1:0 with two cores, a raw
//! WebSocket client that can send any frame (masked or not, fragmented,
//! invalid), and small parties that make server behaviour observable.
//!
//! Reads block with a generous timeout; the timeout only turns a hang into a
//! failure, it never decides an outcome.
#![allow(dead_code)]

pub mod child;
pub mod nats;
pub mod upstream;

use dormouse::{
    Config, ConnectCtx, Connection, Lobby, Message, Party, Rejection, Request, RequestHead, Response, Room, Server,
    ServerHandle,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const GUARD: Duration = Duration::from_secs(20);

/// Raises the open-file soft limit to the hard limit: tests hold both ends of
/// thousands of sockets in one process.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

thread_local! {
    /// The I/O backend of the servers this test thread starts.
    static IO: std::cell::Cell<&'static str> = const { std::cell::Cell::new("auto") };
}

/// Runs `test` with servers on the I/O backend `io` (`uring` or `epoll`).
pub fn with_io(io: &'static str, test: fn()) {
    IO.set(io);
    test();
}

/// Runs each listed test once per I/O backend: `backend_tests!(a, b)` makes
/// `uring::a`, `epoll::a`, `uring::b`, `epoll::b`. The listed functions are
/// plain functions (no `#[test]`), so a test left off the list is dead code,
/// which the lints refuse.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { $crate::common::with_io("uring", super::$name) })*
        }
        mod epoll {
            $(#[test] fn $name() { $crate::common::with_io("epoll", super::$name) })*
        }
    };
}

/// A config with two cores on port 0, this thread's backend, a data
/// directory of its own and `extra_toml`.
pub fn config(extra_toml: &str) -> Config {
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ncores = 2\nio = \"{}\"\ndata_dir = '{}'\n{extra_toml}",
        IO.get(),
        fresh_data_dir().display()
    );
    Config::from_toml(&toml).expect("test config is valid")
}

/// A new, empty directory under cargo's scratch space for integration tests.
pub fn fresh_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "data-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the scratch directory is writable");
    dir
}

/// Starts a server with two cores, the given TOML (appended to a listen on
/// port 0) and the test parties registered.
pub fn start(extra_toml: &str) -> ServerHandle {
    let server = Server::new(config(extra_toml))
        .party::<dormouse::Relay>("main")
        .party::<dormouse::Echo>("echo")
        .party::<Probe>("probe")
        .party::<Counter>("counter")
        .party::<Guarded>("guarded")
        .party::<Panicky>("panicky")
        .party::<Tagger>("tagger")
        .party::<Durable>("durable")
        .start()
        .expect("server starts");
    if IO.get() != "auto" {
        let backend = if IO.get() == "uring" { "io_uring" } else { "epoll" };
        assert_eq!(server.backend(), backend, "the server runs the backend asked for");
    }
    server
}

/// Answers `who` with the sorted ids of the room's connections, `state:x`
/// by storing x as the connection state and answering with what it reads
/// back, `close` by closing the sender with 4000, `fail-connect` (as `_pk`)
/// by refusing in on_connect; echoes anything else. Tells the room about
/// every `on_error` (`error:<id>:<error>`) and `on_close`
/// (`closed:<id>:<code>:<reason>`). Chooses sub-protocol
/// `v2` when offered and greets each connection with `welcome:<id>` in
/// on_connect, so tests can see that on_connect ran before any message.
pub struct Probe;

impl Party for Probe {
    fn new(_room: &Room) -> Self {
        Probe
    }

    fn on_connect(&mut self, conn: &Connection<'_>, _room: &Room, ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        if conn.id().starts_with("fail-connect") {
            return Err("probe refuses this connection".into());
        }
        ctx.accept_protocol("v2");
        conn.send(format!("welcome:{}", conn.id()).as_str());
        Ok(())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        match message {
            Message::Text("who") => {
                let mut ids: Vec<&str> = room.connections().map(|c| c.id()).collect();
                ids.sort_unstable();
                sender.send(ids.join(",").as_str());
            }
            Message::Text("close") => sender.close(4000, "closed by probe"),
            Message::Text(text) if text.starts_with("state:") => {
                let answer = match sender.set_state(&text.as_bytes()["state:".len()..]) {
                    Ok(()) => String::from_utf8(sender.state().unwrap()).unwrap(),
                    Err(e) => format!("error:{e}"),
                };
                sender.send(answer.as_str());
            }
            other => sender.send(other),
        }
    }

    fn on_error(&mut self, conn: &Connection<'_>, error: &str, room: &Room) {
        room.broadcast(format!("error:{}:{error}", conn.id()).as_str(), &[conn.id()]);
    }

    fn on_close(&mut self, conn: &Connection<'_>, code: u16, reason: &str, room: &Room) {
        room.broadcast(format!("closed:{}:{code}:{reason}", conn.id()).as_str(), &[conn.id()]);
    }
}

/// A counter over HTTP: GET reads it, POST adds the body's number.
pub struct Counter(i64);

impl Party for Counter {
    fn new(_room: &Room) -> Self {
        Counter(0)
    }

    fn on_request(&mut self, request: &Request, room: &Room) -> Response {
        match request.method() {
            "GET" => Response::text(200, format!("{}:{}", room.id(), self.0)),
            "POST" => match std::str::from_utf8(&request.body).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
                Some(n) => {
                    self.0 += n;
                    Response::text(200, self.0.to_string())
                }
                None => Response::text(400, "body must be a number"),
            },
            _ => Response::text(405, "method not allowed"),
        }
    }
}

/// Admits only requests with `?token=secret`, and passes the caller's name
/// on as a header that on_connect reads back to the client.
pub struct Guarded;

impl Party for Guarded {
    fn new(_room: &Room) -> Self {
        Guarded
    }

    fn on_before_connect(request: &mut RequestHead, lobby: &Lobby<'_>) -> Result<(), Rejection> {
        if !request.query().contains("token=secret") {
            return Err(format!("missing token for room {}", lobby.room).into());
        }
        request.headers.push(dormouse::http::Header { name: "x-user".into(), value: b"alice".to_vec() });
        Ok(())
    }

    fn on_before_request(request: &mut Request, _lobby: &Lobby<'_>) -> Result<(), Rejection> {
        if request.header("authorization") != Some("Bearer secret") {
            return Err(Rejection::Response(Response::text(403, "forbidden")));
        }
        Ok(())
    }

    fn on_connect(&mut self, conn: &Connection<'_>, _room: &Room, ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        let user = ctx.request().header_str("x-user").unwrap_or("nobody").to_owned();
        conn.send(format!("user:{user}").as_str());
        Ok(())
    }

    fn on_request(&mut self, _request: &Request, _room: &Room) -> Response {
        Response::text(200, "inside")
    }
}

/// Counts `count` messages per room and answers with the count; panics on
/// `boom` and on HTTP requests to a path ending in `/boom`. Its hooks panic
/// too: `on_before_connect` for an upgrade with `?hook=boom`,
/// `on_before_request` for a path ending in `/hookboom`.
pub struct Panicky(u64);

impl Party for Panicky {
    fn new(_room: &Room) -> Self {
        Panicky(0)
    }

    fn on_before_connect(request: &mut RequestHead, _lobby: &Lobby<'_>) -> Result<(), Rejection> {
        assert!(!request.query().contains("hook=boom"), "the upgrade asked the hook to panic");
        Ok(())
    }

    fn on_before_request(request: &mut Request, _lobby: &Lobby<'_>) -> Result<(), Rejection> {
        assert!(!request.path().ends_with("/hookboom"), "the request asked the hook to panic");
        Ok(())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, _room: &Room) {
        match message {
            Message::Text("boom") => panic!("the party asked to panic"),
            _ => {
                self.0 += 1;
                sender.send(self.0.to_string().as_str());
            }
        }
    }

    fn on_request(&mut self, request: &Request, _room: &Room) -> Response {
        assert!(!request.path().ends_with("/boom"), "the request asked to panic");
        Response::text(200, self.0.to_string())
    }
}

/// A hibernating, storing room for the durability tests. Memory state: a
/// counter (`inc` answers `count:N`). Connection facts: `tags` (from
/// `?tag=`), `state` (set on connect to `s-<id>`). Storage: `put k v` (`ok
/// k`), `get k` (`value k v` or `none k`), `del k`, `list prefix`, `bigkey
/// n` and `bigvalue n` (a key or value of n bytes), and `count-keys`.
/// Alarms: `alarm d` sets one d ms ahead, `alarm-fail n d` one whose handler
/// fails n times first; when it runs, the room hears `alarm <party>/<room>
/// attempts:<n>`. HTTP GET answers `count:N`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Durable {
    count: u64,
    alarm_attempts: u32,
    alarm_fails_left: u32,
}

impl Party for Durable {
    fn new(_room: &Room) -> Self {
        Durable { count: 0, alarm_attempts: 0, alarm_fails_left: 0 }
    }

    fn connection_tags(&mut self, _conn: &Connection<'_>, ctx: &ConnectCtx<'_>) -> Vec<String> {
        let query = ctx.request().query().to_owned();
        query.split('&').filter_map(|p| p.strip_prefix("tag=")).map(str::to_owned).collect()
    }

    fn on_connect(&mut self, conn: &Connection<'_>, _room: &Room, _ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        conn.set_state(format!("s-{}", conn.id()).as_bytes()).map_err(|e| e.to_string())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        let Message::Text(text) = message else { return };
        let words: Vec<&str> = text.split(' ').collect();
        let storage = room.storage();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let answer = match words.as_slice() {
            ["inc"] => {
                self.count += 1;
                format!("count:{}", self.count)
            }
            ["tags"] => sender.tags().collect::<Vec<_>>().join(","),
            ["state"] => String::from_utf8(sender.state().unwrap_or_default()).unwrap(),
            ["put", key, value] => match storage.put(key, value) {
                Ok(()) => format!("ok {key}"),
                Err(e) => format!("error {e}"),
            },
            ["get", key] => match storage.get(key) {
                Ok(Some(value)) => format!("value {key} {}", String::from_utf8(value).unwrap()),
                Ok(None) => format!("none {key}"),
                Err(e) => format!("error {e}"),
            },
            ["del", key] => format!("deleted {key} {}", storage.delete(key).unwrap()),
            ["list", prefix] => {
                let options = dormouse::ListOptions { prefix: Some(prefix.as_bytes().to_vec()), ..Default::default() };
                let entries = storage.list(&options).unwrap();
                let entries: Vec<String> = entries
                    .into_iter()
                    .map(|(k, v)| format!("{}={}", String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
                    .collect();
                format!("list {}", entries.join(","))
            }
            ["count-keys"] => format!("keys {}", storage.list(&Default::default()).unwrap().len()),
            ["bigkey", n] => match storage.put("k".repeat(n.parse().unwrap()), "v") {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error {e}"),
            },
            ["bigvalue", n] => match storage.put("big", "v".repeat(n.parse().unwrap())) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error {e}"),
            },
            ["alarm", delay] => {
                room.set_alarm(now_ms + delay.parse::<u64>().unwrap());
                "alarm set".to_owned()
            }
            ["alarm-fail", fails, delay] => {
                self.alarm_fails_left = fails.parse().unwrap();
                self.alarm_attempts = 0;
                room.set_alarm(now_ms + delay.parse::<u64>().unwrap());
                "alarm set".to_owned()
            }
            _ => format!("unknown {text}"),
        };
        sender.send(answer.as_str());
    }

    fn on_alarm(&mut self, room: &Room) -> Result<(), String> {
        self.alarm_attempts += 1;
        if self.alarm_fails_left > 0 {
            self.alarm_fails_left -= 1;
            return Err("failing on purpose".to_owned());
        }
        room.broadcast(format!("alarm {}/{} attempts:{}", room.party(), room.id(), self.alarm_attempts).as_str(), &[]);
        Ok(())
    }

    fn on_request(&mut self, _request: &Request, _room: &Room) -> Response {
        Response::text(200, format!("count:{}", self.count))
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        dormouse::snapshot::encode(self)
    }

    fn restore(_room: &Room, bytes: &[u8]) -> Result<Self, String> {
        dormouse::snapshot::decode(bytes)
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the test server");
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads one HTTP response (head and Content-Length body) from `reader`.
pub fn read_response(reader: &mut impl BufRead) -> HttpResponse {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read status line");
    let status: u16 = line.split(' ').nth(1).unwrap_or_else(|| panic!("bad status line {line:?}")).parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header has a colon");
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = HttpResponse { status, headers, body: Vec::new() };
    if status != 101 {
        let len: usize = response.header("content-length").map_or(0, |v| v.parse().unwrap());
        response.body.resize(len, 0);
        reader.read_exact(&mut response.body).expect("read body");
    }
    response
}

/// Sends raw bytes and reads one response on a fresh connection.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = connect_tcp(addr);
    stream.write_all(request).unwrap();
    read_response(&mut BufReader::new(stream))
}

pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> HttpResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    http_raw(addr, request.as_bytes())
}

/// A WebSocket frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(&self) -> &str {
        assert_eq!(self.opcode, 1, "expected a text frame, got {self:?}");
        std::str::from_utf8(&self.payload).unwrap()
    }

    pub fn close_code(&self) -> (u16, String) {
        assert_eq!(self.opcode, 8, "expected a close frame, got {self:?}");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (code, String::from_utf8(self.payload[2..].to_vec()).unwrap())
    }
}

/// A raw WebSocket client over a blocking socket.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
    pub response: HttpResponse,
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl Client {
    /// Performs the opening handshake on `path`; panics unless the server answers 101.
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let client = Client::try_connect(addr, path, "");
        assert_eq!(
            client.response.status,
            101,
            "upgrade refused: {} {}",
            client.response.status,
            client.response.text()
        );
        client
    }

    /// Sends an upgrade request with `extra` headers and reads the response,
    /// whatever its status.
    pub fn try_connect(addr: SocketAddr, path: &str, extra: &str) -> Client {
        let stream = connect_tcp(addr);
        let mut writer = stream.try_clone().unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        writer.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader);
        Client { reader, writer, response }
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        self.writer.write_all(&encode_frame(fin, opcode, payload, masked)).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, 1, text.as_bytes(), true);
    }

    pub fn recv(&mut self) -> Frame {
        let mut head = [0u8; 2];
        self.reader.read_exact(&mut head).expect("read frame header");
        let fin = head[0] & 0x80 != 0;
        let rsv1 = head[0] & 0x40 != 0;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0; len];
        self.reader.read_exact(&mut payload).unwrap();
        Frame { fin, rsv1, opcode, payload }
    }

    pub fn recv_text(&mut self) -> String {
        self.recv().text().to_owned()
    }

    /// Reads until the server closes the TCP connection; returns what came.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("server closes the connection");
        rest
    }

    /// Expects a close frame, answers it, and expects the server to close TCP.
    pub fn expect_close(&mut self) -> (u16, String) {
        let frame = self.recv();
        let close = frame.close_code();
        self.send_frame(true, 8, &frame.payload[..2], true);
        assert!(self.read_to_end().is_empty(), "nothing follows the close handshake");
        close
    }
}

pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Tags each connection with its `tag` query parameters and drives the tag
/// API from messages: `tag:T:m` broadcasts m to tag T, `all:m` to everyone,
/// `direct:ID:m` sends m to connection ID (all without the sender);
/// `tagged:T` answers the sorted ids tagged T; `mytags` answers the sender's
/// tags.
pub struct Tagger;

impl Party for Tagger {
    fn new(_room: &Room) -> Self {
        Tagger
    }

    fn connection_tags(&mut self, _conn: &Connection<'_>, ctx: &ConnectCtx<'_>) -> Vec<String> {
        ctx.request().query().split('&').filter_map(|pair| pair.strip_prefix("tag=")).map(str::to_owned).collect()
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        let Message::Text(text) = message else { return };
        if let Some(rest) = text.strip_prefix("tag:") {
            let (tag, payload) = rest.split_once(':').unwrap();
            room.broadcast_tagged(tag, payload, &[sender.id()]);
        } else if let Some(payload) = text.strip_prefix("all:") {
            room.broadcast(payload, &[sender.id()]);
        } else if let Some(rest) = text.strip_prefix("direct:") {
            let (id, payload) = rest.split_once(':').unwrap();
            room.connection(id).unwrap().send(payload);
        } else if let Some(tag) = text.strip_prefix("tagged:") {
            let mut ids: Vec<&str> = room.connections_tagged(tag).map(|c| c.id()).collect();
            ids.sort_unstable();
            sender.send(ids.join(",").as_str());
        } else if text == "mytags" {
            sender.send(sender.tags().collect::<Vec<_>>().join(",").as_str());
        }
    }
}

/// The sum over cores of a metric from `GET /metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let response = http(addr, "GET", "/metrics", "", "");
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let prefix = format!("{name}{{");
    let values: Vec<u64> = text
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!values.is_empty(), "metric {name} is served");
    values.iter().sum()
}

/// `dir` (under the repository), with its npm packages installed from its
/// lockfile when one of `packages` is missing; once at a time per process.
#[allow(dead_code)]
pub fn npm_installed(dir: &str, packages: &[&str]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    static NPM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if packages.iter().any(|package| !dir.join("node_modules").join(package).exists()) {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node and npm are needed for this test)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    dir
}

/// Waits until `counter` reaches `at_least`, or fails after GUARD.
#[allow(dead_code)]
pub fn wait_for_counter(server: &ServerHandle, counter: &str, at_least: u64) {
    let deadline = std::time::Instant::now() + GUARD;
    while server.counter(counter) < at_least {
        assert!(std::time::Instant::now() < deadline, "{counter} stayed at {}", server.counter(counter));
        std::thread::yield_now();
    }
}
