//! Crashes and restarts: the server runs in a child process (this test
//! binary, re-run as `child_server` with the party under test), which the
//! tests kill with SIGKILL or stop with SIGTERM, then start again on the same
//! data directory.

mod common;

use common::child::ChildServer;
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

const CHILD_DIR: &str = "DORMOUSE_TEST_CHILD_DIR";
/// The `durable` party's `idle_evict_ms` in the child (default 100,000).
const CHILD_IDLE_MS: &str = "DORMOUSE_TEST_CHILD_IDLE_MS";

/// Not a test of its own: the server a test runs in a child process. With
/// `DORMOUSE_TEST_CHILD_DIR` set it serves the `durable` party (hibernating)
/// and a `chat` party on that data directory until SIGTERM.
#[test]
fn child_server() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let idle_evict_ms = std::env::var(CHILD_IDLE_MS).unwrap_or_else(|_| "100000".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ncores = 2\ndata_dir = '{dir}'\n\
         [parties.durable]\nhibernate = true\nidle_evict_ms = {idle_evict_ms}\n\
         [parties.chat]\nkind = \"chat\"\nhistory = 5000\n\
         [rate_limits]\nmessages_per_sec = 0\n"
    ); // The writers pipeline thousands of puts, far past a person's rate.
    let server =
        dormouse::Server::new(dormouse::Config::from_toml(&toml).unwrap()).party::<Durable>("durable").start().unwrap();
    server.stop_on_signals().unwrap();
    println!("LISTENING {}", server.local_addr());
    server.wait();
    println!("STOPPED");
    std::process::exit(0);
}

/// The child server on `dir`.
struct Child;

impl Child {
    fn start(dir: &std::path::Path) -> ChildServer {
        Child::start_with(dir, 100_000)
    }

    fn start_with(dir: &std::path::Path, idle_evict_ms: u64) -> ChildServer {
        let dir = dir.display().to_string();
        ChildServer::start("child_server", &[(CHILD_DIR, dir), (CHILD_IDLE_MS, idle_evict_ms.to_string())])
    }
}

/// The next text frame, or `None` once the connection is gone.
fn try_recv_text(reader: &mut impl Read) -> Option<String> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            reader.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => return None,
        n => n as usize,
    };
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload).ok()?;
    (head[0] & 0x0f == 1).then(|| String::from_utf8(payload).unwrap())
}

/// Sends `messages` as fast as the socket takes them, on a thread of its
/// own, while the caller reads.
fn pipeline(client: &Client, messages: Vec<String>) -> std::thread::JoinHandle<()> {
    let mut writer = client.writer.try_clone().unwrap();
    std::thread::spawn(move || {
        for message in messages {
            if std::io::Write::write_all(&mut writer, &encode_frame(true, 1, message.as_bytes(), true)).is_err() {
                return;
            }
        }
    })
}

#[test]
fn every_acknowledged_storage_write_survives_kill_9() {
    let dir = fresh_data_dir();
    for round in 0..3 {
        let child = Child::start(&dir);
        let mut client = Client::connect(child.addr, &format!("/parties/durable/kv?_pk=writer{round}"));
        let total = 20_000;
        let writer = pipeline(&client, (0..total).map(|i| format!("put r{round}k{i} v{i}")).collect());
        let mut acked = Vec::new();
        // Kill the server somewhere in the stream, at a different point each round.
        let kill_after = 200 + round * 700;
        while acked.len() < kill_after {
            let answer = try_recv_text(&mut client.reader).expect("the server answers until it is killed");
            acked.push(answer.strip_prefix("ok ").unwrap().to_owned());
        }
        child.kill_9();
        while let Some(answer) = try_recv_text(&mut client.reader) {
            acked.push(answer.strip_prefix("ok ").unwrap().to_owned());
        }
        writer.join().unwrap();
        assert!(acked.len() < total, "the kill came before the end of the stream");

        let child = Child::start(&dir);
        let mut reader = Client::connect(child.addr, "/parties/durable/kv?_pk=reader");
        reader.send_text(&format!("list r{round}k"));
        let listed = reader.recv_text();
        let stored: std::collections::HashMap<&str, &str> = listed
            .strip_prefix("list ")
            .unwrap()
            .split(',')
            .filter(|entry| !entry.is_empty())
            .map(|entry| entry.split_once('=').unwrap())
            .collect();
        for key in &acked {
            let value = format!("v{}", &key[key.find('k').unwrap() + 1..]);
            assert_eq!(stored.get(key.as_str()), Some(&value.as_str()), "{key} was acknowledged before the kill");
        }
        drop(child);
    }
}

/// A small deterministic generator (xorshift), so a failing seed reruns.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_at_random_points_of_writes_and_evictions_loses_nothing_acknowledged() {
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 7, 987_654_321] {
        let mut random = seed;
        let dir = fresh_data_dir();
        // Rooms are evicted after 1 ms idle, so snapshots are written all the
        // time between the storage writes, and rooms wake up constantly.
        let mut acked: Vec<(usize, String)> = Vec::new();
        for life in 0..3 {
            let child = Child::start_with(&dir, 1);
            let mut clients: Vec<Client> = (0..4)
                .map(|room| Client::connect(child.addr, &format!("/parties/durable/crash{room}?_pk=w{life}")))
                .collect();
            let kill_after = 20 + (next_random(&mut random) % 200) as usize;
            let mut writes = 0;
            'stream: loop {
                for (room, client) in clients.iter_mut().enumerate() {
                    let key = format!("l{life}n{writes}");
                    client.send_text(&format!("put {key} {seed}"));
                    client.send_text("inc");
                    match (try_recv_text(&mut client.reader), try_recv_text(&mut client.reader)) {
                        (Some(ok), Some(_count)) => {
                            assert_eq!(ok, format!("ok {key}"));
                            acked.push((room, key));
                        }
                        _ => panic!("the server answers until it is killed"),
                    }
                    writes += 1;
                    if writes == kill_after {
                        break 'stream;
                    }
                }
            }
            let metrics = http(child.addr, "GET", "/metrics", "", "").text();
            assert!(
                metrics.lines().any(|l| l.starts_with("dormouse_rooms_evicted_total{") && !l.ends_with(" 0")),
                "rooms were evicted during the stream"
            );
            child.kill_9();
        }
        // The environment opens cleanly after three kills, and every
        // acknowledged write is there.
        let child = Child::start(&dir);
        for room in 0..4 {
            let mut reader = Client::connect(child.addr, &format!("/parties/durable/crash{room}?_pk=check"));
            reader.send_text("list l");
            let listed = reader.recv_text();
            let stored: std::collections::HashSet<&str> = listed.strip_prefix("list ").unwrap().split(',').collect();
            for (_, key) in acked.iter().filter(|(r, _)| *r == room) {
                let entry = format!("{key}={seed}");
                assert!(stored.contains(entry.as_str()), "seed {seed}: {key} of crash{room} was acknowledged");
            }
        }
        drop(child);
    }
}

#[test]
fn every_chat_message_a_client_received_is_in_the_history_after_kill_9() {
    let dir = fresh_data_dir();
    let child = Child::start(&dir);
    let sender = Client::connect(child.addr, "/parties/chat/crash?_pk=sender");
    let mut watcher = Client::connect(child.addr, "/parties/chat/crash?_pk=watcher");
    let writer = pipeline(&sender, (0..4_000).map(|i| format!("message {i}")).collect());
    let mut seen = Vec::new();
    while seen.len() < 500 {
        seen.push(try_recv_text(&mut watcher.reader).expect("the server relays until it is killed"));
    }
    child.kill_9();
    while let Some(message) = try_recv_text(&mut watcher.reader) {
        seen.push(message);
    }
    writer.join().unwrap();

    let child = Child::start(&dir);
    let mut newcomer = Client::connect(child.addr, "/parties/chat/crash?_pk=newcomer");
    // The history comes first, oldest first; a marker ends it.
    let mut marker = Client::connect(child.addr, "/parties/chat/crash?_pk=marker");
    marker.send_text("end of history");
    let mut history = Vec::new();
    loop {
        let message = newcomer.recv_text();
        if message == "end of history" {
            break;
        }
        history.push(message);
    }
    assert!(history.len() >= seen.len(), "{} in history, {} seen", history.len(), seen.len());
    assert_eq!(&history[..seen.len()], &seen[..], "everything seen, in order");
}

#[test]
fn a_graceful_restart_keeps_room_state_and_closes_with_1001() {
    let dir = fresh_data_dir();
    let child = Child::start(&dir);
    let mut ann = Client::connect(child.addr, "/parties/durable/keep?_pk=ann");
    for n in 1..=3 {
        ann.send_text("inc");
        assert_eq!(ann.recv_text(), format!("count:{n}"));
    }
    child.sigterm();
    assert_eq!(ann.expect_close(), (1001, "server shutting down".to_owned()));
    drop(ann);
    let status = child.wait_stopped();
    assert!(status.success(), "{status}");

    let child = Child::start(&dir);
    let mut ann = Client::connect(child.addr, "/parties/durable/keep?_pk=ann");
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:4", "the room came back from its snapshot");
}

#[test]
fn an_alarm_set_before_a_restart_fires_after_it() {
    let dir = fresh_data_dir();
    let child = Child::start(&dir);
    let mut ann = Client::connect(child.addr, "/parties/durable/later?_pk=ann");
    ann.send_text("alarm 1500");
    // Strict durability: the answer comes once the alarm is on disk.
    assert_eq!(ann.recv_text(), "alarm set");
    child.kill_9();

    let child = Child::start(&dir);
    let mut ann = Client::connect(child.addr, "/parties/durable/later?_pk=ann");
    ann.reader.get_ref().set_read_timeout(Some(GUARD)).unwrap();
    assert_eq!(ann.recv_text(), "alarm durable/later attempts:1");
    drop(child);
}

#[test]
fn a_corrupt_snapshot_starts_the_room_fresh_and_is_kept_aside() {
    let dir = fresh_data_dir();
    let child = Child::start(&dir);
    let mut ann = Client::connect(child.addr, "/parties/durable/bad?_pk=ann");
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:1");
    drop(ann);
    assert!(child.terminate().success());

    // Damage the snapshot the shutdown wrote: flip one byte.
    let store = dormouse_hibernate::Store::open(&dir, Default::default()).unwrap();
    let key = dormouse_hibernate::RoomKey::new("durable", "bad");
    let mut snapshot = store.snapshot(&key).unwrap().expect("the shutdown wrote a snapshot");
    let last = snapshot.len() - 1;
    snapshot[last] ^= 0x40;
    let mut batch = dormouse_hibernate::Batch::default();
    batch.put_snapshot(&key, snapshot.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    store.submit(batch, Box::new(move |result| tx.send(result.is_ok()).unwrap())).unwrap();
    assert!(rx.recv().unwrap());
    store.close().unwrap();

    let child = Child::start(&dir);
    let mut ann = Client::connect(child.addr, "/parties/durable/bad?_pk=ann");
    ann.send_text("inc");
    assert_eq!(ann.recv_text(), "count:1", "the room started fresh");
    assert_eq!(metric(child.addr, "dormouse_snapshots_corrupt_total"), 1);
    // Other rooms are served as before.
    let mut bob = Client::connect(child.addr, "/parties/durable/good?_pk=bob");
    bob.send_text("inc");
    assert_eq!(bob.recv_text(), "count:1");
    drop((ann, bob));
    let (status, log) = child.terminate_with_log();
    assert!(status.success());
    assert!(log.contains("the room's snapshot does not restore"), "the corruption is logged: {log}");

    let store = dormouse_hibernate::Store::open(&dir, Default::default()).unwrap();
    let kept = store.quarantined().unwrap();
    assert!(kept.iter().any(|(room, _, bytes)| *room == key && *bytes == snapshot), "the bad bytes are kept");
}

/// The `dormouse` binary with its embedded config on `dir`; killed (by its
/// PID) when dropped.
struct Binary {
    process: std::process::Child,
    log: BufReader<std::process::ChildStderr>,
    addr: SocketAddr,
}

impl Binary {
    fn start(dir: &std::path::Path) -> Binary {
        Binary::start_with(dir, &[])
    }

    fn start_with(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> Binary {
        let mut process = Command::new(env!("CARGO_BIN_EXE_dormouse"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = BufReader::new(process.stderr.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(log.read_line(&mut line).unwrap() > 0, "the server ended before listening");
            if let Some((_, rest)) = line.split_once("addr=") {
                break rest.split(' ').next().unwrap().parse().unwrap();
            }
        };
        Binary { process, log, addr }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn a_room_whose_storage_is_behind_sheds_new_messages_and_keeps_what_it_took() {
    let dir = fresh_data_dir();
    let config = dir.join("behind.toml");
    let toml = "[parties.chat]\nkind = \"chat\"\n[parties.loose]\nkind = \"chat\"\ndurability = \"relaxed\"\n\
                [parties.main]\nkind = \"relay\"\n[limits]\nmax_pending_events_per_room = 4\n";
    std::fs::write(&config, toml).unwrap();
    let server = Binary::start_with(&dir, &["--config".as_ref(), config.as_os_str()]);
    let mut ann = Client::connect(server.addr, "/parties/chat/slow?_pk=ann");
    let mut bob = Client::connect(server.addr, "/parties/chat/slow?_pk=bob");
    let mut x = Client::connect(server.addr, "/parties/main/fast?_pk=x");
    let mut y = Client::connect(server.addr, "/parties/main/fast?_pk=y");
    let mut dan = Client::connect(server.addr, "/parties/loose/slow?_pk=dan");
    let mut eve = Client::connect(server.addr, "/parties/loose/slow?_pk=eve");

    // Take LMDB's write lock from this process: the server's writer waits
    // for it, as it would behind a stalled disk, and no batch commits.
    // SAFETY: heed's contract for `open` is that the files are changed only
    // through LMDB while mapped; this process and the server both use LMDB,
    // coordinated by its lock file, and this one writes nothing.
    #[allow(unsafe_code)]
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(16).open(&dir) }.unwrap();
    let stall = env.write_txn().unwrap();

    // The chat room stores each message before relaying it (strict
    // durability): four wait for their commits, the fifth is refused.
    for i in 1..=5 {
        ann.send_text(&format!("m{i}"));
    }
    let reason = "try again later: the room's storage is behind".to_owned();
    assert_eq!(ann.expect_close(), (1013, reason.clone()));
    let got = http(server.addr, "GET", "/parties/chat/slow", "", "");
    assert_eq!((got.status, got.text()), (503, reason.clone()));
    assert_eq!(got.header("retry-after"), Some("1"));
    // Under relaxed durability the messages go out at once, and the bound
    // counts the batches the writer has not committed.
    for i in 1..=5 {
        dan.send_text(&format!("r{i}"));
    }
    for i in 1..=4 {
        assert_eq!(eve.recv_text(), format!("r{i}"));
    }
    assert_eq!(dan.expect_close(), (1013, reason.clone()));
    // A room that does not write is not held up.
    x.send_text("unaffected");
    assert_eq!(y.recv_text(), "unaffected");

    // The disk catches up: what the room took is committed and relayed, in
    // order; the refused message never was.
    drop(stall);
    for i in 1..=4 {
        assert_eq!(bob.recv_text(), format!("m{i}"));
    }
    let mut carl = Client::connect(server.addr, "/parties/chat/slow?_pk=carl");
    for i in 1..=4 {
        assert_eq!(carl.recv_text(), format!("m{i}"), "the history holds what was taken");
    }
    bob.send_text("after");
    assert_eq!(carl.recv_text(), "after", "the room takes messages again");
    assert_eq!(metric(server.addr, "dormouse_events_shed_total"), 3, "the two fifth messages and the request");
}

/// The kernel's view of the server's transparent-huge-page switch.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("THP_enabled:")).expect("the kernel reports THP_enabled");
    line["THP_enabled:".len()..].trim().to_owned()
}

#[test]
fn the_binary_turns_transparent_huge_pages_off_unless_configured() {
    let dir = fresh_data_dir();
    let server = Binary::start(&dir);
    assert_eq!(thp_enabled(server.process.id()), "0", "the default config runs without huge pages");
    drop(server);
    let config = dir.join("huge.toml");
    std::fs::write(&config, "huge_pages = true\n[parties.main]\nkind = \"relay\"\n").unwrap();
    let server = Binary::start_with(&dir, &["--config".as_ref(), config.as_os_str()]);
    assert_eq!(thp_enabled(server.process.id()), "1", "huge_pages = true leaves them on");
}

#[test]
fn the_binary_shuts_down_gracefully_on_sigterm() {
    let dir = fresh_data_dir();
    let mut server = Binary::start(&dir);
    // The embedded config's chat party keeps history on disk.
    let mut ann = Client::connect(server.addr, "/parties/chat/lobby?_pk=ann");
    let mut bob = Client::connect(server.addr, "/parties/chat/lobby?_pk=bob");
    ann.send_text("before the restart");
    assert_eq!(bob.recv_text(), "before the restart");
    // SAFETY: kill has no memory-safety preconditions; the PID is our
    // child's, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(server.process.id() as i32, libc::SIGTERM) }, 0);
    for client in [&mut ann, &mut bob] {
        assert_eq!(client.expect_close(), (1001, "server shutting down".to_owned()));
    }
    drop((ann, bob));
    let mut rest = String::new();
    server.log.read_to_string(&mut rest).unwrap();
    let status = server.process.wait().unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains("dormouse stopped"), "{rest}");

    let server = Binary::start(&dir);
    let mut cat = Client::connect(server.addr, "/parties/chat/lobby?_pk=cat");
    assert_eq!(cat.recv_text(), "before the restart");
}
