//! A real browser against dormouse: headless Chromium opens a page the
//! server serves, whose script talks to a room over WebSocket and reports
//! what it saw back over HTTP. Browsers always offer permessage-deflate, so
//! this is where compression meets the client most users have; and what a
//! browser sees for an oversized message. And CORS as a browser enforces
//! it: a page on one server calling rooms on another. And the inspector
//! page, driven over the DevTools protocol: log in, watch a room appear,
//! and a screenshot for the README. And two pages that dormouse serves
//! itself, chatting through the unmodified `partysocket` bundle.
//!
//! Chromium comes from Debian's package (`apt-get install chromium`), which
//! the test installs when it is missing, as `.ci/run` does.

mod common;

backend_tests!(
    chromium_negotiates_deflate_round_trips_compressed_messages_and_sees_1009,
    a_page_on_another_origin_reads_rooms_that_allow_it_and_no_others,
    the_inspector_logs_in_and_shows_a_room_appear,
    two_pages_served_by_dormouse_chat_through_the_unmodified_partysocket_bundle,
);

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page: compressible JSON to the echo room and back, then a message
/// over the limit (random bytes, which deflate cannot shrink) on a second
/// socket. Each outcome is POSTed to /report.
const PAGE: &str = r#"<!doctype html>
<title>dormouse</title>
<script>
const report = (line) => fetch("/report", { method: "POST", body: line });
const room = `ws://${location.host}/parties/echo/browser`;
const ws = new WebSocket(`${room}?_pk=chromium`);
const text = JSON.stringify({ type: "doc", body: "all work and no play ".repeat(5000) });
ws.onopen = () => ws.send(text);
ws.onmessage = (event) => {
  report(`echo extensions=[${ws.extensions}] same=${event.data === text} length=${event.data.length}`);
  ws.close(1000);
  const big = new WebSocket(`${room}?_pk=big`);
  big.binaryType = "arraybuffer";
  big.onopen = () => {
    const bytes = new Uint8Array(2 << 20);
    for (let at = 0; at < bytes.length; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
    big.send(bytes);
  };
  big.onclose = (event) => report(`big close=${event.code} reason=${event.reason}`);
};
ws.onerror = () => report("error");
</script>
"#;

fn chromium() -> &'static Path {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _installing = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !Path::new(CHROMIUM).exists() {
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get runs (this test needs Debian's chromium package)");
        assert!(status.success(), "apt-get install chromium failed");
    }
    Path::new(CHROMIUM)
}

/// A server (with the echo party) answering `GET /page` with `page()` and
/// passing on each `POST /report` body.
fn page_server(page: impl Fn() -> String + Send + Sync + 'static) -> (dormouse::ServerHandle, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    let server = dormouse::Server::new(common::config(""))
        .party::<dormouse::Echo>("echo")
        .fetch(move |request| match (request.method(), request.path()) {
            ("GET", "/page") => dormouse::Response::html(200, page()),
            ("POST", "/report") => {
                let _ = tx.lock().unwrap().send(String::from_utf8_lossy(&request.body).into_owned());
                dormouse::Response::text(200, "thanks")
            }
            _ => dormouse::Response::text(404, "Not found"),
        })
        .start()
        .unwrap();
    (server, rx)
}

/// Opens `url` in headless Chromium and returns the first `n` reports its
/// page sent (fewer if it stops sending for 30 s).
fn browse(browser: &Path, url: &str, reports: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let profile = common::fresh_data_dir();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    while got.len() < n {
        match reports.recv_timeout(Duration::from_secs(30)) {
            Ok(report) => got.push(report),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got
}

fn chromium_negotiates_deflate_round_trips_compressed_messages_and_sees_1009() {
    let browser = chromium();
    let (server, rx) = page_server(|| PAGE.to_owned());
    let reports = browse(browser, &format!("http://{}/page", server.local_addr()), &rx, 2);
    let accepted = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    assert_eq!(
        reports.first().map(String::as_str),
        Some(format!("echo extensions=[{accepted}] same=true length=105024").as_str()),
        "{reports:?}"
    );
    assert_eq!(reports.get(1).map(String::as_str), Some("big close=1009 reason=message too big"), "{reports:?}");
    // The echo went out compressed: far fewer bytes than the 105 KB text.
    assert!(server.counter("bytes_out") < 20_000, "{} bytes out", server.counter("bytes_out"));
}

/// The page on the first server: a POST that needs a preflight to a room
/// whose party allows this origin, a GET to one whose party does not say,
/// and WebSockets to a party that lets this origin in and one that does
/// not. `ROOMS` is the second server.
const CORS_PAGE: &str = r#"<!doctype html>
<title>cors</title>
<script>
const report = (line) => fetch("/report", { method: "POST", body: line });
const socket = (path) => new Promise((done) => {
  const ws = new WebSocket(`ws://ROOMS${path}`);
  ws.onopen = () => { ws.close(); done("open"); };
  ws.onerror = () => done("refused");
});
(async () => {
  try {
    const r = await fetch("http://ROOMS/parties/counter/c", {
      method: "POST", headers: { "content-type": "application/json" }, body: "7",
    });
    await report(`allowed ${r.status} ${await r.text()}`);
  } catch (e) { await report(`allowed blocked ${e.name}`); }
  try {
    const r = await fetch("http://ROOMS/parties/echo/c");
    await report(`silent ${r.status}`);
  } catch (e) { await report(`silent blocked ${e.name}`); }
  await report(`ws allowed ${await socket("/parties/main/r")}`);
  await report(`ws other ${await socket("/parties/echo/r")}`);
})();
</script>
"#;

fn a_page_on_another_origin_reads_rooms_that_allow_it_and_no_others() {
    let browser = chromium();
    let rooms_at = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let page_rooms = rooms_at.clone();
    let (pages, rx) = page_server(move || CORS_PAGE.replace("ROOMS", page_rooms.get().expect("set before")));
    let origin = format!("http://{}", pages.local_addr());
    let rooms = common::start(&format!(
        "[parties.counter]\ncors = {{ origins = [\"{origin}\"] }}\n\
         [parties.main]\nws_origins = [\"{origin}\"]\n\
         [parties.echo]\nws_origins = [\"https://elsewhere.example\"]\n"
    ));
    rooms_at.set(rooms.local_addr().to_string()).unwrap();
    let reports = browse(browser, &format!("{origin}/page"), &rx, 4);
    assert_eq!(
        reports,
        ["allowed 200 7", "silent blocked TypeError", "ws allowed open", "ws other refused"],
        "the page on {origin}"
    );
    // The POST ran once, after its preflight; the blocked GET ran too (only
    // the browser hid its answer).
    assert_eq!(rooms.counter("rooms_created"), 3, "counter, echo and main rooms");
}

/// A browser in a process group of its own, all of which ends when this
/// is dropped (also when a test fails while it starts): killing only the
/// main process was seen to leave one running.
struct Browser(std::process::Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Headless Chromium driven over the DevTools protocol (one page).
struct DevTools {
    _browser: Browser,
    socket: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
}

impl DevTools {
    fn open(browser: &Path, url: &str) -> DevTools {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let profile = common::fresh_data_dir();
        let mut child = Browser(
            Command::new(browser)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1280,900"])
                .args(["--remote-debugging-port=0", "--disable-background-networking", "--disable-component-update"])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(url)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
        let port = loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "Chromium ended before its DevTools listened");
            if let Some(rest) = line.trim().strip_prefix("DevTools listening on ws://127.0.0.1:") {
                break rest.split('/').next().unwrap().parse::<u16>().unwrap();
            }
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        // DevTools answers only a Host that is an address or localhost.
        let request = format!("GET /json/list HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
        let list = common::http_raw(([127, 0, 0, 1], port).into(), request.as_bytes());
        let targets: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
        let page = targets.as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page target");
        let ws_url = page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (socket, _) = tungstenite::client(ws_url.as_str(), stream).expect("DevTools WebSocket");
        DevTools { _browser: child, socket, next_id: 0 }
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = serde_json::json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(tungstenite::Message::text(message)).unwrap();
        loop {
            let tungstenite::Message::Text(text) = self.socket.read().unwrap() else { continue };
            let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let params = serde_json::json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        self.call("Runtime.evaluate", params)["result"]["value"].clone()
    }

    /// Waits (30 s at most) until `expression` is true in the page.
    fn until(&mut self, expression: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.eval(expression) != serde_json::Value::Bool(true) {
            assert!(std::time::Instant::now() < deadline, "the page never showed {expression}");
            // The page updates each second: asking 20 times a second is plenty.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn the_inspector_logs_in_and_shows_a_room_appear() {
    let browser = chromium();
    let token = "inspector-token-for-the-test";
    let server = common::start(&format!("inspector_token = \"{token}\"\n[parties.durable]\nhibernate = true\n"));
    let addr = server.local_addr();
    let mut page = DevTools::open(browser, &format!("http://{addr}/_dormouse/"));
    // Not logged in: the form, and nothing else.
    page.until("!!document.querySelector('#login:not(.hidden)') && !!document.querySelector('#board.hidden')");
    page.eval(&format!("document.querySelector('input[name=token]').value = '{token}'; document.getElementById('login').submit(); true"));
    page.until("document.getElementById('status').textContent === 'live'");
    // A room appears, with its member, among the busiest.
    let mut member = common::Client::connect(addr, "/parties/echo/visible-room?_pk=ann");
    member.send_text("hello");
    assert_eq!(member.recv_text(), "hello");
    page.until("[...document.querySelectorAll('#busiest tr')].some((tr) => tr.textContent.includes('visible-room'))");
    page.until("[...document.querySelectorAll('#parties tr')].some((tr) => tr.textContent.startsWith('echo'))");
    page.until("Number(document.getElementById('connections').textContent) >= 1");
    // The room's detail lists its connection, with the action to close it.
    let row = "[...document.querySelectorAll('#busiest tr')].find((tr) => tr.textContent.includes('visible-room'))";
    page.eval(&format!("{row}.querySelector('button').click(); true"));
    page.until("document.getElementById('detail-name').textContent === 'echo/visible-room'");
    page.until("[...document.querySelectorAll('#members tr')].some((tr) => tr.textContent.startsWith('ann'))");
    page.until("document.getElementById('detail-figures').textContent.startsWith('in memory · 1 connections')");
    let shot = page.call("Page.captureScreenshot", serde_json::json!({ "format": "png" }));
    let png =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, shot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/inspector.png");
    std::fs::write(&path, png).unwrap();
    // Closing it from the page closes the client's socket.
    page.eval("[...document.querySelectorAll('#members tr')].find((tr) => tr.textContent.startsWith('ann')).querySelector('button').click(); true");
    assert_eq!(member.expect_close(), (1008, "closed by an administrator".to_owned()));
    // The page refreshed the detail when the close was sent, which may be
    // before the room heard the socket go: refreshed again, as a person
    // would, until it shows the room without it.
    page.until(
        "(document.getElementById('detail-refresh').click(), \
         document.getElementById('detail-figures').textContent.startsWith('in memory · 0 connections'))",
    );
    // Any room by name, evicted from the page to its snapshot.
    let mut cat = common::Client::connect(addr, "/parties/durable/kept?_pk=cat");
    cat.send_text("inc");
    assert_eq!(cat.recv_text(), "count:1");
    page.eval("document.getElementById('find-party').value = 'durable'; document.getElementById('find-room').value = 'kept'; document.getElementById('find').requestSubmit(); true");
    page.until("document.getElementById('detail-figures').textContent.startsWith('in memory · 1 connections')");
    page.eval("document.getElementById('detail-evict').click(); true");
    page.until("document.getElementById('detail-figures').textContent.startsWith('hibernated · 1 connections')");
    assert_eq!(server.counter("rooms_evicted"), 1);
    cat.send_text("inc");
    assert_eq!(cat.recv_text(), "count:2", "woken with its memory");
    // Without the cookie, the feed and the API refuse.
    let refused = common::Client::try_connect(addr, "/_dormouse/live", "");
    assert_eq!(refused.response.status, 401);
    assert_eq!(common::http(addr, "GET", "/_dormouse/api/snapshot", "", "").status, 401);
    assert_eq!(common::http(addr, "GET", "/parties/_dormouse/live", "", "").status, 404);
}

/// A page that joins room `browser-chat` of `main` (the relay) with the
/// unmodified `partysocket` ES module bundle, as its id the page's `name`
/// query parameter, and keeps what it hears.
const PARTYSOCKET_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>partysocket in a browser</title>
<script type="module">
import PartySocket from "/partysocket/index.js";
const name = new URLSearchParams(location.search).get("name");
window.heard = [];
window.opened = false;
const socket = new PartySocket({ host: location.host, room: "browser-chat", id: name });
socket.addEventListener("open", () => { window.opened = true; });
socket.addEventListener("message", (event) => window.heard.push(event.data));
window.say = (text) => socket.send(text);
window.socketId = socket.id;
</script>
"#;

fn two_pages_served_by_dormouse_chat_through_the_unmodified_partysocket_bundle() {
    let browser = chromium();
    // dormouse serves the page and the package's own files, as they are.
    let package = common::npm_installed("tests/partysocket", &["partysocket"]).join("node_modules/partysocket/dist");
    let site = common::fresh_data_dir().join("site");
    std::fs::create_dir_all(site.join("partysocket")).unwrap();
    std::fs::write(site.join("index.html"), PARTYSOCKET_PAGE).unwrap();
    for file in ["index.js", "ws.js"] {
        std::fs::copy(package.join(file), site.join("partysocket").join(file)).unwrap();
    }
    let server = common::start(&format!("serve = '{}'\n", site.display()));
    let addr = server.local_addr();
    let mut ann = DevTools::open(browser, &format!("http://{addr}/?name=ann"));
    let mut bob = DevTools::open(browser, &format!("http://{addr}/?name=bob"));
    for page in [&mut ann, &mut bob] {
        page.until("window.opened === true");
    }
    assert_eq!(ann.eval("window.socketId"), "ann");
    // Each page's message reaches the other (the relay sends to everyone but
    // the sender), in order.
    ann.eval("say('hello from ann'); say('how are you?'); true");
    bob.until("JSON.stringify(window.heard) === JSON.stringify(['hello from ann', 'how are you?'])");
    bob.eval("say('fine, ann'); true");
    ann.until("JSON.stringify(window.heard) === JSON.stringify(['fine, ann'])");
    assert_eq!(server.counter("rooms_created"), 1, "one room, the pages' chat");
}
