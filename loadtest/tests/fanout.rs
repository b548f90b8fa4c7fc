//! `dormouse-loadtest` against a real dormouse server started by the test.

use std::process::{Command, Output};

const TOKEN: &str = "loadtest-token-0123456789";

/// A fresh data directory: one LMDB environment per directory per process.
fn data_dir() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("loadtest-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.display().to_string()
}

fn server() -> dormouse::ServerHandle {
    let toml =
        format!("listen = \"127.0.0.1:0\"\ncores = 2\npublish_token = \"{TOKEN}\"\ndata_dir = '{}'\n", data_dir());
    let config = dormouse::Config::from_toml(&toml).unwrap();
    dormouse::Server::new(config)
        .party::<dormouse::Relay>("main")
        .party::<dormouse::Echo>("echo")
        .party::<dormouse::YDoc>("docs")
        .start()
        .unwrap()
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dormouse-loadtest")).args(args).output().expect("the loadtest binary runs")
}

/// Runs a scenario that must succeed, with `--json`, and returns its report
/// document and standard output.
fn loadtest_json(name: &str, args: &[&str]) -> (serde_json::Value, String) {
    let json = std::env::temp_dir().join(format!("dormouse-{name}-{}.json", std::process::id()));
    let mut args = args.to_vec();
    args.extend(["--json", json.to_str().unwrap()]);
    let out = loadtest(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let doc = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    (doc, stdout)
}

#[test]
fn fanout_delivers_every_message_exactly_once_and_reports_it() {
    let server = server();
    let url = format!("ws://{}/parties/main/{{room}}", server.local_addr());
    let svg = std::env::temp_dir().join(format!("dormouse-fanout-{}.svg", std::process::id()));
    let svg_path = svg.to_str().unwrap();
    let args = [
        "fanout",
        "--url",
        &url,
        "--connections",
        "60",
        "--publishers",
        "3",
        "--rate",
        "150",
        "--duration-secs",
        "1",
        "--threads",
        "2",
        "--svg",
        svg_path,
    ];
    let (doc, stdout) = loadtest_json("fanout", &args);
    let r = &doc["report"];
    let sent = r["messages_sent"].as_u64().unwrap();
    assert!(sent >= 100, "about 150 messages are sent in one second, got {sent}");
    assert_eq!(r["deliveries"].as_u64().unwrap(), sent * 59, "each message reaches the 59 others");
    assert_eq!(r["deliveries_expected"].as_u64().unwrap(), sent * 59);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["out_of_order"], 0);
    assert_eq!(r["last_receiver_latency_us"]["count"].as_u64().unwrap(), sent);
    assert!(doc["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(stdout.contains("lost / dup / reorder  0 / 0 / 0"), "{stdout}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_file(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("last receiver") && plot.contains("<polyline"), "{plot:.200}");
}

#[test]
fn fanout_of_json_text_with_and_without_deflate_reports_the_bytes_on_the_wire() {
    let server = server();
    let url = format!("ws://{}/parties/main/{{room}}", server.local_addr());
    let mut wire = Vec::new();
    for mode in ["--text", "--deflate"] {
        let args = [
            "fanout",
            "--url",
            &url,
            "--connections",
            "20",
            "--rate",
            "50",
            "--duration-secs",
            "1",
            "--payload-bytes",
            "2048",
            mode,
        ];
        let (doc, stdout) = loadtest_json("fanout-text", &args);
        let r = &doc["report"];
        let sent = r["messages_sent"].as_u64().unwrap();
        assert_eq!(r["deliveries"].as_u64().unwrap(), sent * 19, "{mode}: every message reaches the 19 others");
        assert_eq!((r["lost"].as_u64(), r["out_of_order"].as_u64()), (Some(0), Some(0)), "{mode}");
        assert_eq!(r["deflate"], mode == "--deflate");
        assert!(stdout.contains("on the wire"), "{stdout}");
        wire.push(r["wire_bytes_per_delivery"].as_f64().unwrap());
    }
    // 2048 bytes of text and a 4-byte header, then the compressed form.
    assert_eq!(wire[0], 2052.0);
    assert!(wire[1] * 2.0 < wire[0], "compressed: {} B per delivery", wire[1]);
}

#[test]
fn losses_past_max_loss_fail_the_run() {
    // The echo party sends each message back to its sender only, so every
    // other receiver misses it.
    let server = server();
    let url = format!("ws://{}/parties/echo/{{room}}", server.local_addr());
    let out = loadtest(&[
        "fanout",
        "--url",
        &url,
        "--connections",
        "5",
        "--rate",
        "20",
        "--duration-secs",
        "0.5",
        "--drain-secs",
        "0.5",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deliveries lost"));
}

#[test]
fn impossible_values_exit_2_with_a_message() {
    for (args, message) in [
        (vec!["fanout", "--url", "ws://10.0.0.1:1/x"], "loopback"),
        (vec!["fanout", "--url", "ws://127.0.0.1:1/x", "--publishers", "0"], "--publishers"),
        (vec!["fanout", "--url", "ws://127.0.0.1:1/x", "--payload-bytes", "3"], "--payload-bytes"),
        (vec!["fanout", "--url", "ws://127.0.0.1:1/x", "--rate", "0"], "--rate"),
        (vec!["fanout", "--url", "http://127.0.0.1:1/x"], "ws://"),
        (vec!["fanout", "--bogus-flag"], "--bogus-flag"),
        (vec!["fanout", "--url", "ws://127.0.0.1:1/x", "--in-flight", "0"], "--in-flight"),
        (vec!["fanout", "--url", "ws://127.0.0.1:1/x", "--in-flight", "2", "--rate", "3"], "--rate"),
        (vec!["tags", "--url", "ws://127.0.0.1:1/x", "--publish-token", "t", "--tag-every", "0"], "--tag-every"),
        (vec!["tags", "--url", "ws://127.0.0.1:1/x"], "--publish-token"),
        (vec!["hibernated", "--url", "http://127.0.0.1:1/p/{room}"], "--server-pid"),
        (vec!["hibernated", "--url", "ws://127.0.0.1:1/p/{room}", "--server-pid", "1"], "http://"),
        (vec!["hibernated", "--url", "http://10.0.0.1:1/p/{room}", "--server-pid", "1"], "loopback"),
        (vec!["hibernated", "--url", "http://127.0.0.1:1/p/lobby", "--server-pid", "1"], "{room}"),
        (vec!["hibernated", "--url", "http://127.0.0.1:1/p/{room}", "--server-pid", "1", "--rooms", "0"], "--rooms"),
        (
            vec!["hibernated", "--url", "http://127.0.0.1:1/p/{room}", "--server-pid", "1", "--connections", "0"],
            "--connections",
        ),
        (
            vec!["hibernated", "--url", "http://127.0.0.1:1/p/{room}", "--server-pid", "1", "--timeout-secs", "4000"],
            "--timeout-secs",
        ),
    ] {
        let out = loadtest(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn churn_opens_and_closes_cleanly_and_leaves_nothing_open() {
    let server = server();
    let url = format!("ws://{}/parties/main/{{room}}", server.local_addr());
    let (doc, _) = loadtest_json("churn", &["churn", "--url", &url, "--connections", "50", "--duration-secs", "0.5"]);
    let r = &doc["report"];
    assert!(r["cycles"].as_u64().unwrap() >= 1);
    let attempts = r["attempts"].as_u64().unwrap();
    assert!(attempts >= 50);
    assert_eq!(r["handshakes"].as_u64().unwrap(), attempts, "every connection of every cycle opened");
    assert_eq!(r["errors"], serde_json::json!({}), "no refusals, drops or unanswered closes");
    // Every close was a handshake: once the last FINs are read, the server
    // holds no socket. Wait for that (bounded), not for a fixed time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.connections_per_core().iter().sum::<u64>() > 0 {
        assert!(std::time::Instant::now() < deadline, "sockets left open: {:?}", server.connections_per_core());
        std::thread::yield_now();
    }
}

#[test]
fn rooms_are_woken_separately_and_each_wake_reaches_its_room_only() {
    let server = server();
    let url = format!("ws://{}/parties/main/{{room}}", server.local_addr());
    let args = ["rooms", "--url", &url, "--rooms", "20", "--per-room", "3", "--rate", "40", "--duration-secs", "1"];
    let (doc, _) = loadtest_json("rooms", &args);
    let r = &doc["report"];
    let wakes = r["messages_sent"].as_u64().unwrap();
    assert!((30..=50).contains(&wakes), "about 40 wakes in one second at an even rate, got {wakes}");
    // Each wake reaches the 2 other members of its room and nobody else
    // (a leak into other rooms would show as duplicates).
    assert_eq!(r["deliveries"].as_u64().unwrap(), wakes * 2);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["rooms"], 20);
}

#[test]
fn fanout_as_fast_as_delivered_keeps_the_window_and_loses_nothing() {
    let server = server();
    let url = format!("ws://{}/parties/main/{{room}}", server.local_addr());
    let args = ["fanout", "--url", &url, "--connections", "40", "--in-flight", "4", "--duration-secs", "0.5"];
    let (doc, _) = loadtest_json("in-flight", &args);
    let r = &doc["report"];
    let sent = r["messages_sent"].as_u64().unwrap();
    assert!(sent > 4, "more than one window is sent as deliveries complete, got {sent}");
    assert_eq!(r["deliveries"].as_u64().unwrap(), sent * 39);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["out_of_order"], 0);
}

#[test]
fn tags_reach_exactly_the_tagged_set_and_cost_is_reported() {
    let server = server();
    let url = format!("ws://{}/parties/main/{{room}}", server.local_addr());
    let args = [
        "tags",
        "--url",
        &url,
        "--connections",
        "60",
        "--tag-every",
        "7",
        "--rate",
        "40",
        "--duration-secs",
        "0.5",
        "--publish-token",
        TOKEN,
    ];
    let (doc, stdout) = loadtest_json("tags", &args);
    let r = &doc["report"];
    // Connections 0, 7, ..., 56 carry the hot tag.
    assert_eq!(r["tagged_connections"], 9);
    assert_eq!(r["wrong_receivers"], 0, "no untagged connection got a tag publish");
    assert_eq!(r["delivered_count_mismatches"], 0, "the server's counts match the tagged set");
    assert_eq!(r["out_of_order"], 0);
    let (tag, full) = (&r["phases"][0], &r["phases"][1]);
    assert_eq!((tag["name"].as_str(), full["name"].as_str()), (Some("tag"), Some("full")));
    for (phase, receivers) in [(tag, 9), (full, 60)] {
        let sent = phase["messages_sent"].as_u64().unwrap();
        assert!(sent >= 10, "about 20 publishes per phase, got {sent}");
        assert_eq!(phase["receivers_per_message"], receivers);
        assert_eq!(phase["deliveries"].as_u64().unwrap(), sent * receivers, "each reaches its set once");
        assert_eq!(phase["lost"], 0);
        assert_eq!(phase["duplicates"], 0);
    }
    assert!(r["publish_p50_ratio_tag_to_full"].as_f64().unwrap() > 0.0);
    assert!(stdout.contains("wrong receivers       0"), "{stdout}");
}

#[test]
fn tags_against_a_server_without_the_publish_api_fail_clearly() {
    let toml = format!("listen = \"127.0.0.1:0\"\ncores = 1\ndata_dir = '{}'\n", data_dir());
    let config = dormouse::Config::from_toml(&toml).unwrap();
    let server = dormouse::Server::new(config).party::<dormouse::Relay>("main").start().unwrap();
    let url = format!("ws://{}/parties/main/{{room}}", server.local_addr());
    let args = ["tags", "--url", &url, "--connections", "4", "--tag-every", "2", "--duration-secs", "0.2"];
    let out = loadtest(&[&args[..], &["--publish-token", TOKEN]].concat());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("publish answered 404"), "{stderr}");
}

#[test]
fn hibernated_rooms_are_all_evicted_and_their_memory_reported() {
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ncores = 2\ndata_dir = '{}'\n\
         [parties.chat]\nkind = \"chat\"\nhibernate = true\nidle_evict_ms = 50\n",
        data_dir()
    );
    let config = dormouse::Config::from_toml(&toml).unwrap();
    let server = dormouse::Server::new(config).start().unwrap();
    let url = format!("http://{}/parties/chat/{{room}}", server.local_addr());
    // The server runs in this process, so its RSS is this process's.
    let pid = std::process::id().to_string();
    let args = ["hibernated", "--url", &url, "--rooms", "2000", "--connections", "4", "--server-pid", &pid];
    let (doc, stdout) = loadtest_json("hibernated", &args);
    let r = &doc["report"];
    assert_eq!(r["rooms"], 2000);
    assert_eq!(r["responses"], 2000, "every request answered");
    let statuses: u64 = r["statuses"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(statuses, 2000, "every response counted by its status");
    assert_eq!(r["all_hibernated"], true);
    assert_eq!(r["rooms_resident_after"], 0);
    assert!(r["rooms_evicted"].as_u64().unwrap() >= 2000, "{r}");
    assert_eq!(r["rooms_created"], 2000, "each request made its own room");
    assert_eq!(server.rooms_resident(), 0, "the server agrees that no room is resident");
    for sample in ["server_before", "server_touched", "server_after"] {
        assert!(r[sample]["rss_bytes"].as_u64().unwrap() > 0, "{sample}");
        assert!(r[sample]["rss_anon_bytes"].as_u64().is_some(), "{sample}");
        assert!(r[sample]["rss_file_bytes"].as_u64().is_some(), "{sample}");
    }
    assert!(r["rss_delta_bytes_per_room"].as_f64().is_some());
    assert!(stdout.contains("rooms evicted         "), "{stdout}");
    assert!(stdout.contains("B per hibernated room"), "{stdout}");
}

#[test]
fn impossible_soak_values_exit_2_with_a_message() {
    let base = ["soak", "--url", "ws://127.0.0.1:1/p/{room}", "--server-pid", "1"];
    for (extra, message) in [
        (vec!["--rooms", "0"], "--rooms"),
        (vec!["--connections", "10", "--rooms", "6"], "--rooms"),
        (vec!["--connections", "1000", "--rooms", "5"], "connections per room"),
        (vec!["--active-fraction", "0"], "--active-fraction"),
        (vec!["--active-fraction", "1.5"], "--active-fraction"),
        (vec!["--rate", "0"], "--rate"),
        (vec!["--churn-per-sec=-1"], "--churn-per-sec"),
        (vec!["--phase-secs", "0"], "--phase-secs"),
        (vec!["--duration-secs", "4000"], "--duration-secs"),
        (vec!["--sample-secs", "0.01"], "--sample-secs"),
        (vec!["--threads", "0"], "--threads"),
        (vec!["--source-ips", "10.0.0.1"], "loopback"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let out = loadtest(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    for (url, message) in [("ws://127.0.0.1:1/p/lobby", "{room}"), ("http://127.0.0.1:1/p/{room}", "ws://")] {
        let out = loadtest(&["soak", "--url", url, "--server-pid", "1"]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{url}");
    }
}

#[test]
fn yjs_editors_updates_reach_every_other_editor_of_their_document() {
    let server = server();
    let url = format!("ws://{}/parties/docs/{{room}}", server.local_addr());
    let args = [
        "yjs",
        "--url",
        &url,
        "--docs",
        "3",
        "--editors",
        "5",
        "--editing",
        "2",
        "--rate",
        "20",
        "--duration-secs",
        "1",
        "--drain-secs",
        "5",
        "--awareness-rate",
        "10",
        "--room",
        "lt-yjs",
    ];
    let (doc, stdout) = loadtest_json("yjs", &args);
    let report = &doc["report"];
    // 3 documents x 2 editing editors x 20 updates/s for 1 s, each to the 4 other editors.
    let sent = report["messages_sent"].as_u64().unwrap();
    assert!(sent >= 100, "{stdout}");
    assert_eq!(report["deliveries"].as_u64().unwrap(), sent * 4, "{stdout}");
    assert_eq!(report["lost"].as_u64().unwrap(), 0, "{stdout}");
    assert_eq!(report["duplicates"].as_u64().unwrap(), 0, "{stdout}");
    assert!(report["awareness_sent"].as_u64().unwrap() >= 50, "{stdout}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "awareness closed nobody: {stdout}");
    // The server stored them: each document has its editors' texts.
    let response = http_get(server.local_addr(), "/parties/docs/lt-yjs-0");
    assert!(response.windows(6).any(|w| w == br#"{"m":""#), "the stored document holds the stamped inserts");
}

/// The body of `GET path` (the server closes after it with `Connection: close`).
fn http_get(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let body = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(all.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&all[..body]));
    all[body..].to_vec()
}

#[test]
fn connections_are_spread_over_several_urls_in_turn() {
    // Two servers that are not a cluster: with two rooms, connection g
    // goes to server g % 2 and room g % 2, so each room lives whole on one
    // server and every delivery still happens.
    let (a, b) = (server(), server());
    let url = |s: &dormouse::ServerHandle| format!("ws://{}/parties/main/{{room}}", s.local_addr());
    let urls = format!("{},{}", url(&a), url(&b));
    let args = ["rooms", "--url", &urls, "--rooms", "2", "--per-room", "20", "--rate", "100", "--duration-secs", "0.5"];
    let (doc, _) = loadtest_json("fanout-urls", &args);
    let r = &doc["report"];
    let sent = r["messages_sent"].as_u64().unwrap();
    assert_eq!(r["deliveries"].as_u64().unwrap(), sent * 19, "each message reaches the 19 others of its room");
    assert_eq!(r["lost"], 0);
    assert_eq!(doc["url"], urls);
    for server in [&a, &b] {
        assert_eq!(server.counter("rooms_created"), 1, "each server held one of the rooms");
    }
}
