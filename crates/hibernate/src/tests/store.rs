//! Snapshots, alarms, quarantine, map growth, group commit and the writer's
//! failure handling.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::report;
use crate::{envelope, Batch, ListOptions, Overlay, RoomKey, Store, StoreConfig, StoreError};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), StoreConfig::default()).expect("store opens")
}

/// Submits `batch` and waits for its outcome.
fn commit(store: &Store, batch: Batch) -> Result<(), StoreError> {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    store.submit(batch, report(&sender, 0))?;
    receiver.recv().expect("done is called").1
}

#[test]
fn snapshots_alarms_and_quarantine_survive_reopen() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (a, b, c) = (RoomKey::new("main", "a"), RoomKey::new("main", "b"), RoomKey::new("docs", "a"));
    let state_a = b"{\"count\":1}".repeat(100);
    let state_b = b"{\"count\":2}".repeat(10);
    {
        let store = open(&dir);
        assert_eq!(store.snapshot(&a).expect("read"), None);
        assert_eq!(store.alarm(&a).expect("read"), None);
        assert_eq!(store.snapshot_count().expect("count"), 0);

        let mut batch = Batch::default();
        batch.put_snapshot(&a, envelope::encode(1, &state_a));
        batch.put_snapshot(&b, envelope::encode(2, &state_b));
        batch.set_alarm(&a, 1_000);
        batch.set_alarm(&c, 5);
        batch.set_alarm(&c, 7);
        batch.quarantine(&b, 42, b"not an envelope".to_vec());
        batch.quarantine(&b, 43, Vec::new());
        assert_eq!(batch.len(), 7);
        commit(&store, batch).expect("commit");

        assert_eq!(store.snapshot_count().expect("count"), 2);
        assert_eq!(envelope::decode(&store.snapshot(&a).expect("read").expect("present")), Ok((1, state_a.clone())));
        assert_eq!(store.alarm(&c).expect("read"), Some(7), "a later alarm replaces the earlier one");

        let mut batch = Batch::default();
        batch.delete_snapshot(&a);
        batch.delete_alarm(&a);
        batch.delete_alarm(&b);
        batch.delete_snapshot(&c);
        commit(&store, batch).expect("commit");
        store.close().expect("close");
    }
    let store = open(&dir);
    assert_eq!(store.snapshot(&a).expect("read"), None);
    assert_eq!(envelope::decode(&store.snapshot(&b).expect("read").expect("present")), Ok((2, state_b)));
    assert_eq!(store.snapshot_count().expect("count"), 1);
    assert_eq!(store.alarm(&a).expect("read"), None);
    assert_eq!(store.alarms().expect("alarms"), vec![(c.clone(), 7)]);
    assert_eq!(
        store.quarantined().expect("quarantined"),
        vec![(b.clone(), 42, b"not an envelope".to_vec()), (b.clone(), 43, Vec::new())]
    );

    let mut batch = Batch::default();
    for (index, room) in ["x", "y", "z"].into_iter().enumerate() {
        batch.set_alarm(&RoomKey::new("main", room), index as u64);
    }
    commit(&store, batch).expect("commit");
    let mut alarms = store.alarms().expect("alarms");
    alarms.sort_by_key(|(_, at_ms)| *at_ms);
    let rooms: Vec<_> = alarms.iter().map(|(room, at_ms)| (room.room(), *at_ms)).collect();
    assert_eq!(rooms, vec![("x", 0), ("y", 1), ("z", 2), ("a", 7)]);
}

#[test]
fn the_map_grows_when_full() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = StoreConfig { map_size_bytes: 1 << 20, ..Default::default() };
    let store = Arc::new(Store::open(dir.path(), config).expect("store opens"));
    let initial = store.map_size_bytes();
    let room = RoomKey::new("main", "big");

    // A reader keeps reading while the writer grows the map under it.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (store, stop, reads, room) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&reads), room.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                store.get(&room, b"key-0000", &Overlay::default()).expect("reads succeed during growth");
                store
                    .list(&room, &ListOptions { limit: Some(3), ..Default::default() }, &Overlay::default())
                    .expect("list");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let value = |index: usize| format!("{{\"index\":{index},\"payload\":\"{}\"}}", "x".repeat(32 * 1024)).into_bytes();
    let (sender, receiver) = crossbeam_channel::unbounded();
    for chunk in 0..40 {
        let mut batch = Batch::default();
        for index in chunk * 8..chunk * 8 + 8 {
            batch.put(&room, format!("key-{index:04}").as_bytes(), &value(index));
        }
        batch.put_snapshot(&RoomKey::new("main", &format!("snap-{chunk}")), vec![chunk as u8; 64 * 1024]);
        store.submit(batch, report(&sender, chunk as u64)).expect("submit");
    }
    store.flush().expect("flush");
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader thread does not panic");
    for _ in 0..40 {
        let (chunk, result) = receiver.try_recv().expect("every batch reported before flush returned");
        result.unwrap_or_else(|error| panic!("batch {chunk} failed: {error}"));
    }

    assert!(store.map_size_bytes() > 10 * initial, "{} -> {}", initial, store.map_size_bytes());
    assert!(reads.load(Ordering::Relaxed) > 0);
    let all = store.list(&room, &ListOptions::default(), &Overlay::default()).expect("list");
    assert_eq!(all.len(), 320);
    for (index, (key, found)) in all.iter().enumerate() {
        assert_eq!(key, format!("key-{index:04}").as_bytes());
        assert_eq!(found, &value(index));
    }
    assert_eq!(store.snapshot_count().expect("count"), 40);
    let store = Arc::into_inner(store).expect("the reader is gone");
    store.close().expect("close");
    let store = Store::open(dir.path(), StoreConfig { map_size_bytes: 1 << 20, ..Default::default() }).expect("reopen");
    assert_eq!(store.get(&room, b"key-0319", &Overlay::default()).expect("get"), Some(value(319)));
}

#[test]
fn group_commit_reports_every_batch_once_in_order() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(open(&dir));
    let seen: Arc<Vec<Mutex<Vec<usize>>>> = Arc::new((0..THREADS).map(|_| Mutex::new(Vec::new())).collect());
    let calls = Arc::new(AtomicUsize::new(0));

    let submitters: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (store, seen, calls) = (Arc::clone(&store), Arc::clone(&seen), Arc::clone(&calls));
            std::thread::spawn(move || {
                let room = RoomKey::new("main", &format!("room-{thread}"));
                for index in 0..PER_THREAD {
                    let mut batch = Batch::default();
                    batch.put(&room, format!("{index:05}").as_bytes(), &index.to_le_bytes());
                    let (seen, calls) = (Arc::clone(&seen), Arc::clone(&calls));
                    let done = Box::new(move |result: Result<(), StoreError>| {
                        result.expect("every batch commits");
                        calls.fetch_add(1, Ordering::SeqCst);
                        seen[thread].lock().expect("not poisoned").push(index);
                    });
                    store.submit(batch, done).expect("submit");
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.join().expect("a submitter does not panic");
    }
    store.flush().expect("flush");

    assert_eq!(calls.load(Ordering::SeqCst), THREADS * PER_THREAD);
    for (thread, seen) in seen.iter().enumerate() {
        let seen = seen.lock().expect("not poisoned");
        assert_eq!(*seen, (0..PER_THREAD).collect::<Vec<_>>(), "thread {thread}");
        let room = RoomKey::new("main", &format!("room-{thread}"));
        let listed = store.list(&room, &ListOptions::default(), &Overlay::default()).expect("list");
        assert_eq!(listed.len(), PER_THREAD);
    }
}

#[test]
fn a_failing_batch_fails_alone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir);
    let room = RoomKey::new("main", "a");
    let (sender, receiver) = crossbeam_channel::unbounded();
    // Queued back to back, most of these share a group commit with the
    // failing one.
    for index in 0..60u64 {
        let mut batch = Batch::default();
        batch.put(&room, &index.to_be_bytes(), b"v");
        if index == 30 {
            batch.fail_for_test();
        }
        store.submit(batch, report(&sender, index)).expect("submit");
    }
    store.flush().expect("flush");
    for index in 0..60u64 {
        let (tag, result) = receiver.try_recv().expect("every batch reported");
        assert_eq!(tag, index, "reported in submission order");
        assert_eq!(result.is_err(), index == 30, "batch {index}: {result:?}");
        let found = store.get(&room, &index.to_be_bytes(), &Overlay::default()).expect("get");
        assert_eq!(found.is_some(), index != 30, "batch {index} is all or nothing");
    }
}

#[test]
fn try_submit_hands_the_batch_back_when_the_queue_is_full() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path(), StoreConfig { queue_capacity: 1, ..Default::default() }).expect("opens");
    let room = RoomKey::new("main", "a");
    // Hold the writer inside the first batch's callback.
    let (release, released) = crossbeam_channel::bounded::<()>(0);
    let (entered, entered_receiver) = crossbeam_channel::bounded::<()>(1);
    let mut first = Batch::default();
    first.put(&room, b"1", b"");
    store
        .submit(
            first,
            Box::new(move |result| {
                result.expect("commits");
                entered.send(()).expect("the test waits");
                released.recv().expect("the test releases");
            }),
        )
        .expect("submit");
    entered_receiver.recv().expect("the writer runs the first callback");

    let (sender, receiver) = crossbeam_channel::unbounded();
    let mut second = Batch::default();
    second.put(&room, b"2", b"");
    assert!(store.try_submit(second, report(&sender, 2)).is_ok(), "one batch fits in the queue");
    let mut third = Batch::default();
    third.put(&room, b"3", b"");
    let (third, done) = store.try_submit(third, report(&sender, 3)).expect_err("the queue is full");
    assert_eq!(third.len(), 1);

    // An invalid batch is refused through its callback, at once.
    let mut invalid = Batch::default();
    invalid.put(&room, &vec![0; 2049], b"");
    assert!(store.try_submit(invalid, report(&sender, 4)).is_ok());
    let (tag, result) = receiver.try_recv().expect("reported synchronously");
    assert_eq!(tag, 4);
    assert!(matches!(result, Err(StoreError::KeyTooLarge { len: 2049, max: 2048 })), "{result:?}");

    release.send(()).expect("the writer waits");
    store.submit(third, done).expect("room again once the writer moves on");
    store.flush().expect("flush");
    assert_eq!(
        receiver.try_iter().map(|(tag, result)| (tag, result.is_ok())).collect::<Vec<_>>(),
        [(2, true), (3, true)]
    );
}

#[test]
fn limits_are_enforced_on_submit_and_read() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir);
    let room = RoomKey::new("main", "a");
    let overlay = Overlay::default();
    let (sender, _receiver) = crossbeam_channel::unbounded();

    let mut batch = Batch::default();
    batch.put(&room, &vec![b'k'; 2048], &vec![0; 128 * 1024]);
    commit(&store, batch).expect("a key and a value at the limits are stored");
    assert_eq!(store.get(&room, &vec![b'k'; 2048], &overlay).expect("get").map(|value| value.len()), Some(128 * 1024));

    let mut batch = Batch::default();
    batch.put(&room, b"k", &vec![0; 128 * 1024 + 1]);
    let error = store.submit(batch, report(&sender, 0)).expect_err("an oversized value is refused");
    assert!(matches!(error, StoreError::ValueTooLarge { len: 131073, max: 131072 }), "{error}");
    let mut batch = Batch::default();
    batch.delete(&room, &vec![b'k'; 2049]);
    assert!(matches!(store.submit(batch, report(&sender, 0)), Err(StoreError::KeyTooLarge { .. })));
    assert!(matches!(store.get(&room, &vec![b'k'; 2049], &overlay), Err(StoreError::KeyTooLarge { .. })));

    let max = store.max_room_key_bytes();
    let longest = RoomKey::new("p", &"r".repeat(max - 3));
    assert_eq!(longest.as_bytes().len(), max);
    let mut batch = Batch::default();
    batch.put(&longest, b"k", b"v");
    batch.put_snapshot(&longest, Vec::new());
    batch.set_alarm(&longest, 1);
    batch.quarantine(&longest, u64::MAX, Vec::new());
    commit(&store, batch).expect("the longest room key is stored");
    assert_eq!(store.get(&longest, b"k", &overlay).expect("get"), Some(b"v".to_vec()));
    assert_eq!(store.quarantined().expect("quarantined"), vec![(longest, u64::MAX, Vec::new())]);

    let too_long = RoomKey::new("p", &"r".repeat(max - 2));
    let mut batch = Batch::default();
    batch.set_alarm(&too_long, 1);
    let error = store.submit(batch, report(&sender, 0)).expect_err("a room key past the limit is refused");
    assert!(matches!(error, StoreError::RoomKeyTooLarge { .. }), "{error}");
    assert!(matches!(store.snapshot(&too_long), Err(StoreError::RoomKeyTooLarge { .. })));
}

#[test]
fn one_environment_per_directory_per_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir);
    let error = Store::open(dir.path(), StoreConfig::default()).err().expect("a second open of the same path fails");
    assert!(matches!(error, StoreError::AlreadyOpen(_)), "{error}");
    let room = RoomKey::new("main", "a");
    let mut batch = Batch::default();
    batch.put(&room, b"k", b"v");
    // Dropping (rather than closing) also commits what was queued.
    store.submit(batch, Box::new(|result| result.expect("commits"))).expect("submit");
    drop(store);
    let store = open(&dir);
    assert_eq!(store.get(&room, b"k", &Overlay::default()).expect("get"), Some(b"v".to_vec()));
}

#[test]
fn deleted_rooms_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir);
    let (a, b) = (RoomKey::new("main", "a"), RoomKey::new("main", "b"));
    let mut batch = Batch::default();
    for key in [&b"x"[..], b"y", &[b'z'; 2048]] {
        batch.put(&a, key, b"a");
        batch.put(&b, key, b"b");
    }
    batch.put_snapshot(&a, b"snapshot".to_vec());
    batch.delete_all(&a);
    batch.put(&a, b"after", b"kept");
    assert!(!batch.is_empty());
    commit(&store, batch).expect("commit");
    let overlay = Overlay::default();
    assert_eq!(
        store.list(&a, &ListOptions::default(), &overlay).expect("list"),
        vec![(b"after".to_vec(), b"kept".to_vec())]
    );
    assert_eq!(store.list(&b, &ListOptions::default(), &overlay).expect("list").len(), 3);
    assert_eq!(store.snapshot(&a).expect("read"), Some(b"snapshot".to_vec()), "delete_all keeps the snapshot");

    let mut batch = Batch::default();
    batch.delete_all(&a);
    commit(&store, batch).expect("commit");
    store
        .read(|txn| {
            assert_eq!(crate::store::room_number(&store.shared.dbs, txn, &a)?, None, "an emptied room has no number");
            assert_eq!(store.shared.dbs.storage.len(txn)?, 3, "only room b's three entries are left");
            Ok(())
        })
        .expect("read");
}

#[test]
fn usage_counts_a_rooms_storage_and_snapshot_and_stops_where_told() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir);
    let (a, b) = (RoomKey::new("main", "a"), RoomKey::new("main", "b"));
    let empty = store.usage(&a, 100).expect("usage");
    assert_eq!(empty, crate::Usage { storage_bytes: 0, complete: true, snapshot_bytes: 0 });
    let mut batch = Batch::default();
    for i in 0..10u8 {
        batch.put(&a, &[b'k', i], &[i; 100]);
    }
    batch.put(&b, b"other", &[0; 5000]);
    batch.put_snapshot(&a, envelope::encode(1, &[7; 300]));
    commit(&store, batch).expect("the batch commits");
    let usage = store.usage(&a, 100).expect("usage");
    assert_eq!(usage.storage_bytes, 10 * (2 + 100), "ten keys of 2 bytes and values of 100, not room b's");
    assert!(usage.complete);
    assert_eq!(usage.snapshot_bytes as usize, envelope::encode(1, &[7; 300]).len());
    let partial = store.usage(&a, 4).expect("usage");
    assert_eq!((partial.storage_bytes, partial.complete), (4 * 102, false));
    assert_eq!(store.usage(&b, 100).expect("usage").storage_bytes, 5 + 5000);
}
