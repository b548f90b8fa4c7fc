//! `dormouse-loadtest soak` against a real dormouse server started by the
//! test. Its own test binary with a single test, so the process whose
//! descriptors the soak counts runs this server and nothing else (the
//! scenario's flag checks are in `fanout.rs`).

use std::process::{Command, Output};

fn data_dir() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("loadtest-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.display().to_string()
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dormouse-loadtest")).args(args).output().expect("the loadtest binary runs")
}

#[test]
fn a_short_soak_cycles_rooms_through_hibernation_and_leaves_nothing_behind() {
    let dir = data_dir();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ncores = 2\ndata_dir = '{dir}'\n\
         [parties.chat]\nkind = \"chat\"\nhibernate = true\nidle_evict_ms = 100\n"
    );
    let server = dormouse::Server::new(dormouse::Config::from_toml(&toml).unwrap()).start().unwrap();
    let url = format!("ws://{}/parties/chat/{{room}}", server.local_addr());
    // The server runs in this process, so its RSS and descriptors are this process's.
    let pid = std::process::id().to_string();
    let json = std::env::temp_dir().join(format!("dormouse-soak-{}.json", std::process::id()));
    let args = [
        "soak",
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--connections",
        "40",
        "--rooms",
        "4",
        "--rate",
        "40",
        "--churn-per-sec",
        "5",
        "--phase-secs",
        "1",
        "--duration-secs",
        "4",
        "--sample-secs",
        "1",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = loadtest(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let r = &doc["report"];
    assert_eq!(doc["scenario"], "soak");
    // One room in four active per phase: every room but the first is
    // silent, evicted, then woken by its phase's messages.
    assert_eq!(r["active_rooms_per_phase"], 1);
    assert!(r["rooms_evicted"].as_u64().unwrap() > 0, "{r}");
    assert!(r["rooms_woken"].as_u64().unwrap() > 0, "{r}");
    let sent = r["messages_sent"].as_u64().unwrap();
    assert!(sent >= 100, "about 40 messages a second for 4 s, got {sent}");
    let (expected, delivered) = (r["deliveries_expected"].as_u64().unwrap(), r["deliveries"].as_u64().unwrap());
    assert!(expected > sent, "most messages are expected at several receivers: {r}");
    assert_eq!(delivered, expected, "{r}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicates"], 0);
    assert!(r["reconnects"].as_u64().unwrap() >= 10, "about 5 churns a second: {r}");
    assert!(r["history_frames"].as_u64().unwrap() > 0, "reconnects replay the history, which is not counted: {r}");
    assert_eq!(r["errors"], serde_json::json!({}), "no refusals, drops or unanswered closes");
    assert_eq!(r["handshake_errors"], 0);
    assert_eq!(r["unexpected_closes"], 0);
    assert_eq!(r["fds_back_to_start"], true, "{r}");
    assert_eq!(r["connections_back_to_start"], true, "{r}");
    let samples = r["samples"].as_array().unwrap();
    let stages: Vec<&str> = samples.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.first(), Some(&"start"));
    assert_eq!(stages.last(), Some(&"closed"));
    assert!(stages.contains(&"ramped") && stages.contains(&"end of traffic"), "{stages:?}");
    assert!(stages.iter().filter(|&&s| s == "traffic").count() >= 2, "a sample a second: {stages:?}");
    assert!(stdout.contains("verdict               "), "{stdout}");
    assert!(stdout.contains("fds back to start: yes"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
