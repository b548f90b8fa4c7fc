//! The `yjs` kind with the real clients: the npm `yjs`, `y-protocols`,
//! `y-websocket` and `y-partykit` packages (installed from the committed
//! lockfile in `tests/yjs`), driven by `tests/yjs/yjs.mjs`; raw sockets
//! where exact bytes matter (malformed messages). Restarts run the server in
//! a child process, stopped with SIGTERM or killed with SIGKILL.

mod common;

use common::child::ChildServer;
use common::*;
use dormouse::yjs::{YjsHooks, READ_ONLY_HEADER};
use dormouse::{Lobby, Rejection, RequestHead, Server, YDoc};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const PARTIES: &str = "[parties.docs]\nkind = \"yjs\"\n\
                       [parties.sleepy]\nkind = \"yjs\"\nidle_evict_ms = 300\n\
                       [parties.small]\nkind = \"yjs\"\nmax_document_bytes = 65536\n";

/// Lets in `?token=editor`, and `?token=viewer` read-only; refuses others.
struct Viewers;

impl YjsHooks for Viewers {
    fn on_before_connect(request: &mut RequestHead, _lobby: &Lobby<'_>) -> Result<(), Rejection> {
        match request.query().split('&').find_map(|pair| pair.strip_prefix("token=")) {
            Some("editor") => Ok(()),
            Some("viewer") => {
                request.headers.push(dormouse::http::Header { name: READ_ONLY_HEADER.into(), value: b"1".to_vec() });
                Ok(())
            }
            _ => Err("a token is needed".into()),
        }
    }

    /// Reading is open; changing the document over HTTP takes the editor's token.
    fn on_before_request(request: &mut dormouse::Request, _lobby: &Lobby<'_>) -> Result<(), Rejection> {
        let editor = request.query().split('&').any(|pair| pair == "token=editor");
        match request.method() {
            "GET" | "HEAD" => Ok(()),
            _ if editor => Ok(()),
            _ => Err("only editors may change the document".into()),
        }
    }
}

fn start() -> dormouse::ServerHandle {
    Server::new(config(PARTIES)).party::<YDoc<Viewers>>("private").start().expect("server starts")
}

/// The npm clients' folder, installed from its lockfile.
fn clients() -> std::path::PathBuf {
    npm_installed("tests/yjs", &["yjs", "y-protocols", "y-websocket", "y-partykit", "ws"])
}

/// Runs a scenario of `yjs.mjs` to its end; returns its standard output.
fn scenario(name: &str, addr: std::net::SocketAddr, party: &str, room: &str, args: &[&str]) -> String {
    let output = Command::new("node")
        .args(["yjs.mjs", name, &addr.to_string(), party, room])
        .args(args)
        .current_dir(clients())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// The document a provider joining alone gets.
fn joined_text(addr: std::net::SocketAddr, party: &str, room: &str) -> String {
    let out = scenario("join", addr, party, room, &[]);
    out.lines().find_map(|line| line.strip_prefix("text ")).unwrap_or("").to_owned()
}

#[test]
fn a_y_websocket_and_a_y_partykit_provider_converge_on_concurrent_edits() {
    let server = start();
    let out = scenario("converge", server.local_addr(), "docs", "pair", &[]);
    assert!(out.contains("ok: converged"), "{out}");
}

#[test]
fn a_provider_joining_after_everyone_left_gets_the_document() {
    let server = start();
    let addr = server.local_addr();
    scenario("write", addr, "docs", "alone", &["first;", "y-websocket"]);
    scenario("write", addr, "docs", "alone", &["second;", "y-partykit"]);
    assert_eq!(joined_text(addr, "docs", "alone"), "first;second;");
    assert_eq!(joined_text(addr, "docs", "alone"), "first;second;", "joining changes nothing");
}

#[test]
fn a_document_comes_back_after_its_room_hibernated() {
    let server = start();
    let addr = server.local_addr();
    scenario("write", addr, "sleepy", "nap", &["before-nap;"]);
    wait_for_counter(&server, "rooms_evicted", 1);
    let woken = server.counter("rooms_woken");
    assert_eq!(joined_text(addr, "sleepy", "nap"), "before-nap;");
    assert!(server.counter("rooms_woken") > woken, "the join woke the room from its snapshot");
}

#[test]
fn a_member_back_in_a_hibernated_room_gets_what_changed_while_it_was_away() {
    let server = start();
    let out = scenario("away", server.local_addr(), "sleepy", "away", &[]);
    assert!(out.contains("ok: a newcomer gets it all"), "{out}");
}

#[test]
fn awareness_reaches_a_newcomer_and_goes_when_its_owner_closes() {
    let server = start();
    let out = scenario("awareness", server.local_addr(), "docs", "presence", &[]);
    assert!(out.contains("ok: awareness goes with its owner's socket"), "{out}");
}

#[test]
fn awareness_traffic_and_closes_leave_a_hibernated_room_asleep() {
    let server = start();
    let out = scenario("asleep", server.local_addr(), "sleepy", "cursors", &[]);
    assert!(out.contains("ok: an edit wakes it"), "{out}");
}

#[test]
fn an_update_past_the_document_limit_closes_only_its_sender_with_1009() {
    let server = start();
    let out = scenario("oversized", server.local_addr(), "small", "big", &["100000"]);
    assert!(out.contains("close 1009 the document would exceed its limit of 65536 bytes"), "{out}");
    assert!(out.contains("ok: the others go on"), "{out}");
}

#[test]
fn a_y_partykit_message_over_1_mb_arrives_in_chunks_and_is_joined() {
    let server = start();
    let out = scenario("chunked", server.local_addr(), "docs", "big", &["1500000"]);
    assert!(out.contains("ok: a chunked message is joined"), "{out}");
}

#[test]
fn a_read_only_connection_by_query_or_by_hook_changes_nothing() {
    let server = start();
    let out = scenario("readonly", server.local_addr(), "docs", "view", &["--", "readonly=1"]);
    assert!(out.contains("ok: a read-only connection"), "{out}");
    // The hook's read-only cannot be undone by the query.
    let out = scenario(
        "readonly",
        server.local_addr(),
        "private",
        "view",
        &["token=editor", "--", "token=viewer", "readonly=0"],
    );
    assert!(out.contains("ok: a read-only connection"), "{out}");
}

#[test]
fn http_get_and_post_round_trip_a_document() {
    let server = start();
    let out = scenario("http", server.local_addr(), "docs", "backend", &[]);
    assert!(out.contains("bad post 400"), "{out}");
    assert!(out.contains("ok: HTTP round trip"), "{out}");
    // HTTP passes the pre-request hook like any party; a WebSocket without a token is refused.
    let addr = server.local_addr();
    assert_eq!(http(addr, "GET", "/parties/private/doc", "", "").status, 200, "reading is open");
    let update = "\u{0}\u{0}"; // an empty update: applies nothing
    let refused = http(addr, "POST", "/parties/private/doc", "", update);
    assert_eq!((refused.status, refused.text().as_str()), (401, "only editors may change the document"));
    assert_eq!(http(addr, "POST", "/parties/private/doc?token=editor", "", update).status, 200);
    let refused = Client::try_connect(addr, "/parties/private/doc", "");
    assert_eq!(refused.response.status, 401);
    assert_eq!(http(addr, "DELETE", "/parties/docs/backend", "", "").status, 405);
}

/// The y-protocols sync step 1 a server sends first, and the empty
/// document's state (an update with nothing in it).
const EMPTY_STEP_1: &[u8] = &[0, 0, 1, 0];
const EMPTY_DOC: &[u8] = &[0, 0];

#[test]
fn a_malformed_message_closes_only_its_sender_and_changes_nothing() {
    let server = start();
    let addr = server.local_addr();
    let mut bystander = Client::connect(addr, "/parties/docs/bad?_pk=bystander");
    assert_eq!(bystander.recv().payload, EMPTY_STEP_1);
    const HUGE_CLIENT: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    let mut huge_update = vec![0, 2, 11, 1, 1];
    huge_update.extend(HUGE_CLIENT);
    huge_update.push(0);
    let mut huge_vector = vec![0, 0, 10, 1];
    huge_vector.extend(HUGE_CLIENT);
    huge_vector.push(0);
    let mut cases: Vec<(u8, &[u8], u16, &str)> = vec![
        // A sync update whose update does not decode.
        (2, &[0, 2, 3, 0xff, 0xff, 0xff], 1007, "malformed Yjs update"),
        // Client ids past 53 bits, on which yrs debug-asserts (a debug
        // build is "rejected by the decoder", a release one reads on and
        // errs).
        (2, &huge_update, 1007, "malformed Yjs update: "),
        // A length past the end of the frame.
        (2, &[0, 2, 9, 1], 1007, "malformed y-protocols message"),
        (2, &[7, 0], 1003, "unknown y-protocols message type 7"),
        (2, &[1, 2, 1, 0xff], 1007, "malformed awareness update"),
        (1, b"hello", 1003, "a yjs room takes binary y-protocols messages"),
    ];
    if cfg!(debug_assertions) {
        // A release build of yrs takes such a state vector as it is.
        cases.push((2, &huge_vector, 1007, "malformed state vector: rejected by the decoder"));
    }
    for (i, (opcode, payload, code, reason)) in cases.into_iter().enumerate() {
        let mut client = Client::connect(addr, &format!("/parties/docs/bad?_pk=bad{i}"));
        assert_eq!(client.recv().payload, EMPTY_STEP_1);
        client.send_frame(true, opcode, payload, true);
        let (got, why) = client.expect_close();
        assert_eq!(got, code, "{why}");
        assert!(why.starts_with(reason), "{why}");
    }
    // Awareness past the connection's bound (16 KiB for this kind): 1009.
    let mut big = Client::connect(addr, "/parties/docs/bad?_pk=big");
    assert_eq!(big.recv().payload, EMPTY_STEP_1);
    let state = format!("{{\"name\":\"{}\"}}", "x".repeat(20_000));
    big.send_frame(true, 2, &awareness_message(42, &state), true);
    let (code, why) = big.expect_close();
    assert_eq!(code, 1009, "{why}");
    assert!(why.starts_with("awareness state of"), "{why}");
    let doc = http(addr, "GET", "/parties/docs/bad", "", "");
    assert_eq!(doc.body, EMPTY_DOC, "the document is unchanged");
    // The bystander is still there: its sync step 1 gets its step 2.
    bystander.send_frame(true, 2, &[0, 0, 1, 0], true);
    assert_eq!(bystander.recv().payload, [0, 1, 2, 0, 0]);
}

/// A y-protocols awareness message setting client `client`'s state to `json`.
fn awareness_message(client: u64, json: &str) -> Vec<u8> {
    awareness_message_clock(client, json, 1)
}

fn awareness_message_clock(client: u64, json: &str, clock: u32) -> Vec<u8> {
    use yrs::encoding::write::Write;
    use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
    use yrs::updates::encoder::Encode;
    let entry = AwarenessUpdateEntry { clock, json: json.into() };
    let update = AwarenessUpdate { clients: [(yrs::block::ClientID::new(client), entry)].into_iter().collect() };
    let mut message = vec![1];
    message.write_buf(update.encode_v1());
    message
}

const CHILD_DIR: &str = "DORMOUSE_TEST_YJS_DIR";

/// Not a test of its own: the server a test runs in a child process, with
/// the `docs` party on `DORMOUSE_TEST_YJS_DIR`, until SIGTERM.
#[test]
fn child_server() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let toml = format!("listen = \"127.0.0.1:0\"\ncores = 2\ndata_dir = '{dir}'\n{PARTIES}");
    let server = Server::new(dormouse::Config::from_toml(&toml).unwrap()).start().unwrap();
    server.stop_on_signals().unwrap();
    println!("LISTENING {}", server.local_addr());
    server.wait();
    println!("STOPPED");
    std::process::exit(0);
}

fn child(dir: &std::path::Path) -> ChildServer {
    ChildServer::start("child_server", &[(CHILD_DIR, dir.display().to_string())])
}

#[test]
fn a_document_survives_a_graceful_restart() {
    let dir = fresh_data_dir();
    let server = child(&dir);
    scenario("write", server.addr, "docs", "restart", &["kept;"]);
    assert!(server.terminate().success());
    let server = child(&dir);
    assert_eq!(joined_text(server.addr, "docs", "restart"), "kept;");
}

#[test]
fn every_update_a_client_received_survives_kill_9() {
    let dir = fresh_data_dir();
    let server = child(&dir);
    let mut stream = Command::new("node")
        .args(["yjs.mjs", "stream", &server.addr.to_string(), "docs", "crash"])
        .current_dir(clients())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(stream.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let line = lines.next().expect("the stream goes on until the kill").unwrap();
        if let Some(item) = line.strip_prefix("seen ") {
            seen.push(item.to_owned());
        }
    }
    server.kill_9();
    // What the watcher printed after the kill it had received before it.
    for line in lines {
        if let Some(item) = line.unwrap().strip_prefix("seen ") {
            seen.push(item.to_owned());
        }
    }
    assert!(stream.wait().unwrap().success());
    let server = child(&dir);
    let text = joined_text(server.addr, "docs", "crash");
    let stored: Vec<&str> = text.split(';').filter(|item| !item.is_empty()).collect();
    for item in &seen {
        assert!(stored.contains(&item.as_str()), "{item} was received before the kill but is not stored: {text}");
    }
}

#[test]
fn a_socket_that_ends_without_a_close_frame_has_its_awareness_removed() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::connect(addr, "/parties/docs/gone?_pk=a");
    assert_eq!(a.recv().payload, EMPTY_STEP_1);
    let mut b = Client::connect(addr, "/parties/docs/gone?_pk=b");
    assert_eq!(b.recv().payload, EMPTY_STEP_1);
    let set = awareness_message(42, r#"{"name":"a"}"#);
    a.send_frame(true, 2, &set, true);
    assert_eq!(b.recv().payload, set, "relayed to the other member");
    drop(a);
    assert_eq!(b.recv().payload, awareness_message_clock(42, "null", 2), "removed with the next clock");
}
