//! A real browser against dormouse: headless Chromium opens a page the
//! server serves, whose script talks to a room over WebSocket and reports
//! what it saw back over HTTP. Browsers always offer permessage-deflate, so
//! this is where compression meets the client most users have; and what a
//! browser sees for an oversized message.
//!
//! Chromium comes from Debian's package (`apt-get install chromium`), which
//! the test installs when it is missing, as `.ci/run` does.

mod common;

backend_tests!(chromium_negotiates_deflate_round_trips_compressed_messages_and_sees_1009,);

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

fn chromium_negotiates_deflate_round_trips_compressed_messages_and_sees_1009() {
    let browser = chromium();
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    let server = dormouse::Server::new(common::config(""))
        .party::<dormouse::Echo>("echo")
        .fetch(move |request| match (request.method(), request.path()) {
            ("GET", "/page") => dormouse::Response::html(200, PAGE),
            ("POST", "/report") => {
                let _ = tx.lock().unwrap().send(String::from_utf8_lossy(&request.body).into_owned());
                dormouse::Response::text(200, "thanks")
            }
            _ => dormouse::Response::text(404, "Not found"),
        })
        .start()
        .unwrap();
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
        .arg(format!("http://{}/page", server.local_addr()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reports = Vec::new();
    while reports.len() < 2 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(report) => reports.push(report),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
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
