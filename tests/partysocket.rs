//! Real npm clients against dormouse: the unmodified `partysocket` client
//! (connect, send, receive, and reconnect with the same id after the server
//! drops it), and Node's `ws` client where a peer library's view of a close
//! matters.
//!
//! The client's dependencies are installed from the committed lockfile with
//! `npm ci` when they are missing, so this test needs Node and the npm registry.

mod common;

backend_tests!(
    partysocket_connects_sends_receives_and_reconnects_with_the_same_id,
    node_ws_sending_an_oversized_message_sees_the_1009,
    node_ws_negotiates_permessage_deflate_and_round_trips_compressed_messages,
    partysocket_talks_to_a_javascript_party_as_to_a_rust_one,
    partysocket_chats_through_the_partykit_example,
);

use dormouse::{Connection, Message, Party, Room};
use std::path::Path;
use std::process::Command;

/// Greets with `hello:<id>`, closes on `drop` with 1012, echoes anything else
/// as `echo:<text>`.
struct E2e;

impl Party for E2e {
    fn new(_room: &Room) -> Self {
        E2e
    }

    fn on_connect(
        &mut self,
        conn: &Connection<'_>,
        _room: &Room,
        _ctx: &mut dormouse::ConnectCtx<'_>,
    ) -> Result<(), String> {
        conn.send(format!("hello:{}", conn.id()).as_str());
        Ok(())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, _room: &Room) {
        match message {
            Message::Text("drop") => sender.close(1012, "drop requested"),
            Message::Text(text) => sender.send(format!("echo:{text}").as_str()),
            Message::Binary(_) => sender.close(1003, "text only"),
        }
    }
}

/// The npm clients' folder, installed from its lockfile.
fn npm_clients() -> std::path::PathBuf {
    common::npm_installed("tests/partysocket", &["partysocket", "ws"])
}

/// Runs `script` from the npm clients' folder with `args`; returns its
/// standard output once it has exited 0.
fn node_script(script: &str, args: &[&str]) -> String {
    let output = Command::new("node").arg(script).args(args).current_dir(npm_clients()).output().expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

fn node_ws_sending_an_oversized_message_sees_the_1009() {
    let server = common::start("");
    let addr = server.local_addr().to_string();
    let stdout = node_script("oversized.mjs", &[&addr, "/parties/echo/big", &(2 << 20).to_string()]);
    assert_eq!(stdout.trim(), "close 1009 message too big");
}

fn node_ws_negotiates_permessage_deflate_and_round_trips_compressed_messages() {
    let server = common::start("");
    let stdout = node_script("deflate.mjs", &[&server.local_addr().to_string(), "/parties/echo/zip"]);
    assert!(stdout.contains("ok: negotiated permessage-deflate"), "{stdout}");
    assert!(stdout.contains("deflate passed (close 1000)"), "{stdout}");
}

fn partysocket_connects_sends_receives_and_reconnects_with_the_same_id() {
    let server = dormouse::Server::new(common::config("")).party::<E2e>("e2e").start().unwrap();
    partysocket_e2e(&server);
}

/// The same client run against the protocol written as a JavaScript party
/// (`tests/js/e2e.js`).
fn partysocket_talks_to_a_javascript_party_as_to_a_rust_one() {
    let module = format!("{}/tests/js/e2e.js", env!("CARGO_MANIFEST_DIR"));
    let server = dormouse::Server::new(common::config(&format!("[parties.e2e]\nmain = '{module}'\n"))).start().unwrap();
    partysocket_e2e(&server);
}

/// partysocket against `examples/partykit-chat`, a PartyKit TypeScript
/// project served with `partykit = ...` (as `--partykit` does).
fn partysocket_chats_through_the_partykit_example() {
    let mut config = common::config("");
    config.partykit = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/partykit-chat/partykit.json"));
    let server = dormouse::Server::new(config).start().expect("the example starts");
    let stdout = node_script("chat.mjs", &[&server.local_addr().to_string(), "ps-room"]);
    for step in [
        "ok: a message reaches everyone",
        "ok: a tagged note reaches the moderator",
        "ok: a newcomer gets the history",
        "chat passed",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing from:\n{stdout}");
    }
}

/// Runs `e2e.mjs` against the `e2e` party of `server` and checks each step.
fn partysocket_e2e(server: &dormouse::ServerHandle) {
    let stdout = node_script("e2e.mjs", &[&server.local_addr().to_string(), "e2e", "room-1"]);
    for step in [
        "ok: echo:one",
        "ok: closed by server with 1012",
        "ok: reconnected with the same id",
        "ok: echo:queued",
        "ok: echo:two",
        "e2e passed",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing from:\n{stdout}");
    }
}
