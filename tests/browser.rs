//! A real browser against dormouse: headless Chromium opens a page the
//! server serves, whose script talks to a room over WebSocket and reports
//! what it saw back over HTTP. Browsers always offer permessage-deflate, so
//! this is where compression meets the client most users have; and what a
//! browser sees for an oversized message. And CORS as a browser enforces
//! it: a page on one server calling rooms on another.
//!
//! Chromium comes from Debian's package (`apt-get install chromium`), which
//! the test installs when it is missing, as `.ci/run` does.

mod common;

backend_tests!(
    chromium_negotiates_deflate_round_trips_compressed_messages_and_sees_1009,
    a_page_on_another_origin_reads_rooms_that_allow_it_and_no_others,
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
