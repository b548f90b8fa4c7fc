//! Room storage against a `BTreeMap<(room, key), value>` model.
//!
//! Random sequences of puts, deletes, delete-alls, gets and lists (with
//! random prefix, start, end, direction and limit) over three rooms. Writes
//! are grouped into batches, recorded in the rooms' overlays and either
//! submitted at once or held back: a held batch is exactly what a reader sees
//! between submitting and the commit, deterministically. Reads are checked
//! while batches are pending, after `flush`, and after closing and reopening
//! the environment (midway through every sequence, and at random steps). Keys cluster around the layout's inline limit and up to
//! 2048 bytes, sharing long prefixes, so that exact-limit keys and buckets of
//! long keys are exercised.

use std::collections::BTreeMap;

use crossbeam_channel::{Receiver, Sender};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::report;
use crate::{Batch, ListOptions, Overlay, RoomKey, Store, StoreConfig, StoreError};

const ROOMS: usize = 3;
const MAX_KEY_BYTES: usize = 2048;

fn room_key(room: usize) -> RoomKey {
    [RoomKey::new("main", "a"), RoomKey::new("main", "b"), RoomKey::new("other", "a")][room].clone()
}

#[derive(Clone, Debug)]
enum Write {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    DeleteAll(usize),
}

#[derive(Clone, Debug)]
enum Step {
    /// One batch; `submit` false holds it (and every later one) back.
    Write {
        writes: Vec<Write>,
        submit: bool,
    },
    Get(usize, Vec<u8>),
    /// A get of a key written before (to any room, maybe since deleted),
    /// chosen by index into the history.
    GetWritten(usize, usize),
    List(usize, ListOptions),
    Flush,
    Reopen,
}

/// Keys made of a run of `p` of a length near the inline limit (or short,
/// or near the maximum), maybe with one byte changed near the end of the
/// run, then a few bytes from a small alphabet.
fn key(inline_limit: usize) -> impl Strategy<Value = Vec<u8>> {
    let mut lengths = vec![0, 1, 2, 3];
    for around in [inline_limit, MAX_KEY_BYTES - 3] {
        lengths.extend((around.saturating_sub(2)..=around + 1).filter(|len| *len <= MAX_KEY_BYTES));
    }
    lengths.sort_unstable();
    lengths.dedup();
    let byte = prop_oneof![Just(0u8), Just(b'a'), Just(b'p'), Just(0xff)];
    (
        proptest::sample::select(lengths),
        proptest::option::of((0usize..3, byte.clone())),
        proptest::collection::vec(byte, 0..4),
    )
        .prop_map(|(len, tweak, suffix)| {
            let mut key = vec![b'p'; len];
            if let Some((from_end, byte)) = tweak {
                if let Some(index) = len.checked_sub(1 + from_end) {
                    key[index] = byte;
                }
            }
            key.extend_from_slice(&suffix);
            key.truncate(MAX_KEY_BYTES);
            key
        })
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        6 => proptest::collection::vec(any::<u8>(), 1..8),
        1 => (any::<u8>(), 1000usize..5000).prop_map(|(byte, len)| vec![byte; len]),
    ]
}

fn list_options(inline_limit: usize) -> impl Strategy<Value = ListOptions> {
    let bound = move || proptest::option::weighted(0.3, key(inline_limit));
    let prefix = proptest::option::weighted(
        0.4,
        prop_oneof![key(inline_limit), key(inline_limit).prop_map(|key| key[..key.len() / 2].to_vec())],
    );
    (prefix, bound(), bound(), any::<bool>(), proptest::option::of(0usize..6))
        .prop_map(|(prefix, start, end, reverse, limit)| ListOptions { prefix, start, end, reverse, limit })
}

fn steps(inline_limit: usize) -> impl Strategy<Value = Vec<Step>> {
    let room = 0..ROOMS;
    let write = prop_oneof![
        8 => (room.clone(), key(inline_limit), value()).prop_map(|(room, key, value)| Write::Put(room, key, value)),
        3 => (room.clone(), key(inline_limit)).prop_map(|(room, key)| Write::Delete(room, key)),
        1 => room.clone().prop_map(Write::DeleteAll),
    ];
    let step = prop_oneof![
        10 => (proptest::collection::vec(write, 1..6), proptest::bool::weighted(0.6))
            .prop_map(|(writes, submit)| Step::Write { writes, submit }),
        2 => (room.clone(), key(inline_limit)).prop_map(|(room, key)| Step::Get(room, key)),
        4 => (room.clone(), any::<usize>()).prop_map(|(room, index)| Step::GetWritten(room, index)),
        6 => (room, list_options(inline_limit)).prop_map(|(room, options)| Step::List(room, options)),
        1 => Just(Step::Flush),
        1 => Just(Step::Reopen),
    ];
    proptest::collection::vec(step, 1..60)
}

type Model = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

fn model_list(model: &Model, room: usize, options: &ListOptions) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = model
        .iter()
        .filter(|((entry_room, key), _)| {
            *entry_room == room
                && options.prefix.as_ref().is_none_or(|prefix| key.starts_with(prefix))
                && options.start.as_ref().is_none_or(|start| key >= start)
                && options.end.as_ref().is_none_or(|end| key < end)
        })
        .map(|((_, key), value)| (key.clone(), value.clone()))
        .collect();
    if options.reverse {
        entries.reverse();
    }
    entries.truncate(options.limit.unwrap_or(usize::MAX));
    entries
}

struct Harness {
    dir: tempfile::TempDir,
    inline_limit: Option<usize>,
    store: Option<Store>,
    model: Model,
    /// Every key written, in order, for reads of keys that exist or did.
    history: Vec<Vec<u8>>,
    overlays: Vec<Overlay>,
    /// Batches recorded in the overlays but not yet submitted.
    held: Vec<(u64, Batch)>,
    seq: u64,
    done_sender: Sender<(u64, Result<(), StoreError>)>,
    done_receiver: Receiver<(u64, Result<(), StoreError>)>,
}

impl Harness {
    fn new(inline_limit: Option<usize>) -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open_with_layout(dir.path(), StoreConfig::default(), inline_limit).expect("store opens");
        let (done_sender, done_receiver) = crossbeam_channel::unbounded();
        Harness {
            dir,
            inline_limit,
            store: Some(store),
            model: Model::new(),
            history: Vec::new(),
            overlays: vec![Overlay::default(); ROOMS],
            held: Vec::new(),
            seq: 0,
            done_sender,
            done_receiver,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open between steps")
    }

    fn write(&mut self, writes: &[Write], submit: bool) {
        self.seq += 1;
        let seq = self.seq;
        let mut batch = Batch::default();
        for write in writes {
            if let Write::Put(_, key, _) | Write::Delete(_, key) = write {
                self.history.push(key.clone());
            }
            match write {
                Write::Put(room, key, value) => {
                    batch.put(&room_key(*room), key, value);
                    self.overlays[*room].put(seq, key, value);
                    self.model.insert((*room, key.clone()), value.clone());
                }
                Write::Delete(room, key) => {
                    batch.delete(&room_key(*room), key);
                    self.overlays[*room].delete(seq, key);
                    self.model.remove(&(*room, key.clone()));
                }
                Write::DeleteAll(room) => {
                    batch.delete_all(&room_key(*room));
                    self.overlays[*room].delete_all(seq);
                    self.model.retain(|(entry_room, _), _| entry_room != room);
                }
            }
        }
        self.held.push((seq, batch));
        if submit {
            self.submit_held();
        }
    }

    fn submit_held(&mut self) {
        for (seq, batch) in std::mem::take(&mut self.held) {
            let done = report(&self.done_sender, seq);
            self.store.as_ref().expect("the store is open").submit(batch, done).expect("a valid batch is accepted");
        }
    }

    /// Applies the commits reported so far to the overlays, as the server
    /// does when a batch's `done` reaches the room.
    fn apply_commits(&mut self) -> Result<(), TestCaseError> {
        while let Ok((seq, result)) = self.done_receiver.try_recv() {
            prop_assert!(result.is_ok(), "batch {} failed: {:?}", seq, result);
            for overlay in &mut self.overlays {
                overlay.committed(seq);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TestCaseError> {
        self.submit_held();
        self.store().flush().expect("flush");
        self.apply_commits()?;
        for (room, overlay) in self.overlays.iter().enumerate() {
            prop_assert!(overlay.is_empty(), "room {}'s overlay is not empty after a flush", room);
        }
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.submit_held();
        self.store.take().expect("the store is open").close().expect("close");
        self.apply_commits()?;
        for overlay in &self.overlays {
            prop_assert!(overlay.is_empty());
        }
        let store =
            Store::open_with_layout(self.dir.path(), StoreConfig::default(), self.inline_limit).expect("reopen");
        self.store = Some(store);
        self.check_everything()
    }

    fn check_get(&self, room: usize, key: &[u8]) -> Result<(), TestCaseError> {
        let found = self.store().get(&room_key(room), key, &self.overlays[room]).expect("get");
        prop_assert_eq!(found.as_ref(), self.model.get(&(room, key.to_vec())), "get {} of room {}", key.len(), room);
        Ok(())
    }

    fn check_list(&self, room: usize, options: &ListOptions) -> Result<(), TestCaseError> {
        let found = self.store().list(&room_key(room), options, &self.overlays[room]).expect("list");
        let expected = model_list(&self.model, room, options);
        prop_assert!(
            found == expected,
            "list of room {} with {:?}: got {:?}, expected {:?}",
            room,
            options,
            found,
            expected
        );
        Ok(())
    }

    fn check_everything(&self) -> Result<(), TestCaseError> {
        for room in 0..ROOMS {
            self.check_list(room, &ListOptions::default())?;
            self.check_list(room, &ListOptions { reverse: true, ..Default::default() })?;
            for key in &self.history {
                self.check_get(room, key)?;
            }
        }
        Ok(())
    }

    fn run(mut self, steps: &[Step]) -> Result<(), TestCaseError> {
        for (index, step) in steps.iter().enumerate() {
            if index == steps.len() / 2 {
                // Every sequence closes and reopens the environment midway,
                // with batches maybe still queued or held.
                self.reopen()?;
            }
            self.apply_commits()?;
            match step {
                Step::Write { writes, submit } => self.write(writes, *submit),
                Step::Get(room, key) => self.check_get(*room, key)?,
                Step::GetWritten(room, index) => {
                    if !self.history.is_empty() {
                        self.check_get(*room, &self.history[index % self.history.len()])?;
                    }
                }
                Step::List(room, options) => self.check_list(*room, options)?,
                Step::Flush => self.flush()?,
                Step::Reopen => self.reopen()?,
            }
        }
        // Pending, then committed: both must read the same.
        self.check_everything()?;
        self.flush()?;
        self.check_everything()?;
        self.store.take().expect("the store is open").close().expect("close");
        Ok(())
    }
}

fn run_model(inline_limit: Option<usize>, probe_limit: usize, cases: u32) {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&steps(probe_limit), |steps| Harness::new(inline_limit).run(&steps));
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// With the real layout: keys longer than LMDB's key limit go to buckets.
#[test]
fn storage_matches_model_with_long_keys() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("store opens");
    let inline_limit = store.inline_limit();
    store.close().expect("close");
    assert!(inline_limit < MAX_KEY_BYTES, "with 4 KiB pages, 2048-byte keys need buckets ({inline_limit})");
    run_model(None, inline_limit, 64);
}

/// With a tiny inline limit, so that most keys are exact-limit keys or in
/// buckets, and buckets hold many keys.
#[test]
fn storage_matches_model_with_a_tiny_inline_limit() {
    run_model(Some(3), 3, 96);
}
