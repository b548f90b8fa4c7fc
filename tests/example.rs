//! The `counter_chat` example party, run as written, through real sockets.

mod common;

backend_tests!(counter_chat_counts_over_http_and_chats_over_websocket,);

#[path = "../examples/counter_chat.rs"]
mod example;

use common::*;

fn counter_chat_counts_over_http_and_chats_over_websocket() {
    let server = dormouse::Server::new(config("")).party::<example::CounterChat>("counter").start().unwrap();
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/counter/r1?_pk=ann");
    assert_eq!(ann.recv_text(), "welcome ann, count is 0");
    assert_eq!(http(addr, "POST", "/parties/counter/r1", "", "5").text(), "5");
    assert_eq!(ann.recv_text(), "count is 5");
    let mut bob = Client::connect(addr, "/parties/counter/r1?_pk=bob");
    assert_eq!(bob.recv_text(), "welcome bob, count is 5");
    assert_eq!(ann.recv_text(), "bob joined");
    bob.send_text("hi ann");
    assert_eq!(ann.recv_text(), "bob: hi ann");
    assert_eq!(bob.recv_text(), "bob: hi ann");
    let state = http(addr, "GET", "/parties/counter/r1", "", "");
    assert_eq!(state.text(), r#"{"room":"r1","count":5,"online":2}"#);
    assert_eq!(state.header("content-type"), Some("application/json"));
    bob.send_frame(true, 8, &1000u16.to_be_bytes(), true);
    assert_eq!(ann.recv_text(), "bob left");
}

/// Not a test of its own: with `DORMOUSE_TEST_EXAMPLE_ARGS` set, this test
/// binary is the example's process, running its `main` with those arguments.
#[test]
fn child_example() {
    if let Ok(args) = std::env::var("DORMOUSE_TEST_EXAMPLE_ARGS") {
        example::serve(args.split(' ').map(str::to_owned));
    }
}

/// The example's `main` in a process of its own: `--listen`, logs without
/// colour codes when redirected, and a graceful stop on SIGTERM through
/// `stop_on_signals`.
#[test]
fn the_example_listens_where_asked_and_stops_gracefully_on_sigterm() {
    use std::io::BufRead;
    /// Kills the example (by its PID) if the test fails before it exits.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_example", "--exact", "--nocapture", "--test-threads=1"])
        .env("DORMOUSE_TEST_EXAMPLE_ARGS", "--listen 127.0.0.1:0")
        .current_dir(fresh_data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let addr: std::net::SocketAddr = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the example ended before listening");
        // The harness may have begun the line ("test child_example ... ").
        if let Some((_, addr)) = line.trim().split_once("listening on ") {
            break addr.parse().unwrap();
        }
    };
    let mut ann = Client::connect(addr, "/parties/counter/r1?_pk=ann");
    assert_eq!(ann.recv_text(), "welcome ann, count is 0");
    // SAFETY: kill has no memory-safety preconditions; the PID is our
    // child's, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(ann.expect_close(), (1001, "server shutting down".to_owned()));
    // The server lingers until its peer closes too.
    drop(ann);
    let status = child.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("dormouse stopped"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes in a redirected log: {stderr:?}");
}
