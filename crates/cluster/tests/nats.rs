//! Membership and leases against a real `nats-server` (Debian's, with
//! JetStream on, its store in a temporary directory), several nodes in
//! this process.

use dormouse_cluster::{Cluster, ClusterConfig, Delivered, LeaseOutcome, Owner};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on every wait for what NATS does on its own clock.
const GUARD: Duration = Duration::from_secs(20);

// The server's tests start their nats-server the same way (some of it
// only they use).
#[allow(dead_code)]
#[path = "../../../tests/common/nats.rs"]
mod nats_server;
use nats_server::NatsServer;

fn node(nats: &NatsServer, id: &str, lease_ms: u64) -> Cluster {
    Cluster::start(ClusterConfig {
        nats: vec![nats.url.clone()],
        node_id: id.to_owned(),
        replicas: 1,
        lease: Duration::from_millis(lease_ms),
        heartbeat: Duration::from_millis(200),
    })
    .expect("the node joins")
}

/// The outcome a command's callback gives, waited for.
fn answer<T: Send + 'static>(submit: impl FnOnce(Box<dyn FnOnce(T) + Send>)) -> T {
    let (tx, rx) = mpsc::channel();
    submit(Box::new(move |outcome| tx.send(outcome).unwrap()));
    rx.recv_timeout(GUARD).expect("the NATS thread answers")
}

fn acquire(node: &Cluster, room: &str) -> LeaseOutcome {
    answer(|reply| node.acquire("main", room, reply).unwrap())
}

/// Polls `check` until it holds (what NATS does on its own clock: a
/// heartbeat read, an entry ageing out), failing after GUARD.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        // A poll interval, not a synchronisation: the condition decides.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nodes_see_each_other_come_and_go_and_agree_on_preferred_owners() {
    let nats = NatsServer::start();
    let a = node(&nats, "node-a", 2000);
    let b = node(&nats, "node-b", 2000);
    eventually("a sees b", || a.nodes() == ["node-a", "node-b"]);
    eventually("b sees a", || b.nodes() == ["node-a", "node-b"]);
    for i in 0..100 {
        let room = format!("r{i}");
        assert_eq!(a.preferred_owner("main", &room), b.preferred_owner("main", &room), "{room}");
    }
    let c = node(&nats, "node-c", 2000);
    eventually("a sees c join", || a.nodes().len() == 3);
    // A node that leaves is gone from the others' view.
    drop(c);
    eventually("a sees c leave", || a.nodes() == ["node-a", "node-b"]);
}

#[test]
fn a_lease_is_held_by_one_node_renewed_at_its_revision_and_taken_over_once_it_expires() {
    let nats = NatsServer::start();
    let a = node(&nats, "lease-a", 1500);
    let b = node(&nats, "lease-b", 1500);
    let LeaseOutcome::Held(lease) = acquire(&a, "room-1") else { panic!("a takes the free lease") };
    assert!(lease.valid_until > Instant::now() && lease.valid_until < Instant::now() + Duration::from_millis(1500));
    assert_eq!(acquire(&b, "room-1"), LeaseOutcome::HeldBy("lease-a".into()));
    let owner: Result<Option<Owner>, String> = answer(|reply| b.owner("main", "room-1", reply).unwrap());
    assert_eq!(owner, Ok(Some(Owner { node: "lease-a".into(), revision: lease.revision })));
    // Renewal is compare-and-set: at the revision held, and only then.
    let renewed = answer(|reply| a.renew("main", "room-1", lease.revision, reply).unwrap());
    let LeaseOutcome::Held(renewed) = renewed else { panic!("a renews: {renewed:?}") };
    assert!(renewed.revision > lease.revision);
    assert_eq!(answer(|reply| b.renew("main", "room-1", lease.revision, reply).unwrap()), LeaseOutcome::Lost);
    assert_eq!(answer(|reply| a.renew("main", "room-1", lease.revision, reply).unwrap()), LeaseOutcome::Lost);
    // Not renewed, the lease ages out and b takes it; a's renewal then
    // finds it lost (no split brain).
    eventually("b takes the expired lease", || matches!(acquire(&b, "room-1"), LeaseOutcome::Held(_)));
    assert!(Instant::now() >= renewed.valid_until, "b got it only after a's lease could be valid no more");
    assert_eq!(answer(|reply| a.renew("main", "room-1", renewed.revision, reply).unwrap()), LeaseOutcome::Lost);
    // A release frees it at once, but only at the holder's revision.
    let LeaseOutcome::Held(held) = acquire(&a, "room-2") else { panic!("a takes room-2") };
    assert!(!answer(|reply| b.release("main", "room-2", held.revision + 1, reply).unwrap()));
    assert_eq!(acquire(&b, "room-2"), LeaseOutcome::HeldBy("lease-a".into()));
    assert!(answer(|reply| a.release("main", "room-2", held.revision, reply).unwrap()));
    assert!(matches!(acquire(&b, "room-2"), LeaseOutcome::Held(_)));
}

#[test]
fn bad_settings_and_an_unreachable_nats_are_refused_at_start() {
    let config = |id: &str, url: &str| ClusterConfig {
        nats: vec![url.to_owned()],
        node_id: id.to_owned(),
        replicas: 1,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(200),
    };
    let error = Cluster::start(config("bad id!", "nats://127.0.0.1:1")).unwrap_err();
    assert!(error.to_string().contains("node id"), "{error}");
    let mut short = config("n", "nats://127.0.0.1:1");
    short.lease = Duration::from_millis(500);
    assert!(Cluster::start(short).unwrap_err().to_string().contains("lease"));
    // Nothing listens on port 1: the start fails with a clear error.
    let error = Cluster::start(config("n", "nats://127.0.0.1:1")).unwrap_err();
    assert!(error.to_string().contains("cannot reach NATS"), "{error}");
}

#[test]
fn messages_to_a_node_arrive_at_its_callback_in_the_order_sent() {
    let nats = NatsServer::start();
    let (tx, rx) = mpsc::channel();
    let config = ClusterConfig {
        nats: vec![nats.url.clone()],
        node_id: "node-a".into(),
        replicas: 1,
        lease: Duration::from_millis(2000),
        heartbeat: Duration::from_millis(200),
    };
    let a = Cluster::start_with(config, move |delivered| {
        if let Delivered::Message(payload) = delivered {
            tx.send(payload).unwrap()
        }
    })
    .unwrap();
    let b = node(&nats, "node-b", 2000);
    for i in 0..500u32 {
        b.send(a.node_id(), bytes::Bytes::from(i.to_be_bytes().to_vec())).unwrap();
    }
    for i in 0..500u32 {
        let payload = rx.recv_timeout(GUARD).expect("every message arrives");
        assert_eq!(payload.as_ref(), i.to_be_bytes(), "in the order sent");
    }
    // What goes to other nodes (one that is not there, or b) is not a's:
    // the next message a hears is the next one sent to it.
    b.send("node-z", bytes::Bytes::from_static(b"lost")).unwrap();
    a.send("node-b", bytes::Bytes::from_static(b"to b")).unwrap();
    b.send("node-a", bytes::Bytes::from_static(b"last")).unwrap();
    assert_eq!(rx.recv_timeout(GUARD).unwrap().as_ref(), b"last");
}

#[test]
fn a_rooms_journal_reads_back_in_order_and_refuses_an_append_from_behind() {
    use dormouse_cluster::Appended;
    let nats = NatsServer::start();
    let (a, b) = (node(&nats, "node-a", 2000), node(&nats, "node-b", 2000));
    let append = |node: &Cluster, room: &str, expect: u64, text: &'static str| -> Appended {
        answer(|reply| node.append("main", room, expect, bytes::Bytes::from_static(text.as_bytes()), reply).unwrap())
    };
    let load = |node: &Cluster, room: &str| -> Vec<(u64, String)> {
        let entries = answer(|reply| node.load("main", room, reply).unwrap()).unwrap();
        entries.into_iter().map(|(seq, bytes)| (seq, String::from_utf8(bytes.to_vec()).unwrap())).collect()
    };
    assert_eq!(load(&a, "empty"), vec![]);
    // A journal with nothing in it takes an append naming 0.
    let Appended::At(first) = append(&a, "j", 0, "one") else { panic!("the first append is taken") };
    let Appended::At(second) = append(&a, "j", first, "two") else { panic!("the second append is taken") };
    // Another room's entries interleave in the stream, not in the room.
    let Appended::At(_) = append(&b, "other", 0, "elsewhere") else { panic!("taken") };
    assert_eq!(load(&b, "j"), vec![(first, "one".into()), (second, "two".into())]);
    // b takes the room over: its append names the last entry it read...
    let Appended::At(third) = append(&b, "j", second, "b took over") else { panic!("taken") };
    // ...and a, naming the one before, is fenced off.
    assert_eq!(append(&a, "j", second, "stale"), Appended::Fenced);
    assert_eq!(append(&a, "j", 0, "stale"), Appended::Fenced);
    // Compacted before the takeover, the room's journal starts there.
    assert_eq!(answer(|reply| a.compact("main", "j", third, reply).unwrap()), Ok(2));
    assert_eq!(load(&a, "j"), vec![(third, "b took over".into())]);
    assert_eq!(load(&a, "other").len(), 1);
}

#[test]
fn alarms_written_by_one_node_reach_every_watcher_in_order_and_from_the_start() {
    let nats = NatsServer::start();
    let config = |id: &str| ClusterConfig {
        nats: vec![nats.url.clone()],
        node_id: id.into(),
        replicas: 1,
        lease: Duration::from_millis(2000),
        heartbeat: Duration::from_millis(200),
    };
    let watcher = |id: &str| {
        let (tx, rx) = mpsc::channel();
        let node = Cluster::start_with(config(id), move |delivered| {
            if let Delivered::Alarm { party, room, at_ms } = delivered {
                let _ = tx.send((party, room, at_ms));
            }
        })
        .unwrap();
        (node, rx)
    };
    let (a, heard_by_a) = watcher("node-a");
    // The watch may start just after a's own first writes: what a hears
    // is each room's latest value, then changes; wait for the last.
    a.set_alarm("main", "r 1", Some(5)).unwrap();
    a.set_alarm("main", "r 1", Some(u64::MAX)).unwrap();
    a.set_alarm("main", "gone", Some(7)).unwrap();
    a.set_alarm("main", "gone", None).unwrap();
    a.set_alarm("main", "last", Some(1)).unwrap();
    let mut latest = std::collections::HashMap::new();
    while latest.get("last") != Some(&Some(1)) {
        let (party, room, at_ms) = heard_by_a.recv_timeout(GUARD).expect("a hears its own writes");
        assert_eq!(party, "main");
        latest.insert(room, at_ms);
    }
    assert_eq!(latest.get("r 1"), Some(&Some(u64::MAX)), "{latest:?}");
    assert_eq!(latest.get("gone").copied().flatten(), None, "{latest:?}");
    // A node starting later hears each room's latest value at once.
    let (_b, heard_by_b) = watcher("node-b");
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 3 {
        let (_, room, at_ms) = heard_by_b.recv_timeout(GUARD).expect("b hears the bucket");
        seen.insert(room, at_ms);
    }
    assert_eq!(seen.get("r 1"), Some(&Some(u64::MAX)));
    assert_eq!(seen.get("gone"), Some(&None));
    assert_eq!(seen.get("last"), Some(&Some(1)));
}
