//! The `yjs` kind on the owner core, without sockets.
//!
//! `cargo bench --bench yjs`
//!
//! - `yjs/update/64B`: one y-protocols update from a member (a 64-byte text
//!   insert, made by `yrs` as a client makes it): decoded, applied to the
//!   document, appended to room storage (handed to the writer, not waited
//!   for), the relay framed once; compaction every 512 updates included.
//!   The fan-out to sockets is the reactor's, measured in `fanout`.
//! - `yjs/wake/10MB`: a hibernated 10 MB document loaded again: the merged
//!   state read from LMDB (in parts), decoded and applied into a new `Doc`.
//!   The document is 10,000 inserts of 1 KiB at random places, with a
//!   delete of 64 characters after every tenth (so it carries tombstones).
//!   Also prints the p50/p99/max of 30 single cold loads, the number the
//!   target is about.
//!
//! With the server's allocator (mimalloc), as the `dormouse` binary runs.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use dormouse::bench::Hibernation;
use dormouse::YDoc;
use std::sync::Arc;
use std::time::Duration;
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

#[path = "common/evict_wake.rs"]
mod evict_wake;

/// The server binary's allocator: a document is many small allocations,
/// and what loading and dropping one costs depends on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A y-protocols sync update message carrying `update`.
fn update_message(update: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 2];
    out.write_buf(update);
    out
}

/// A deterministic random number generator (xorshift), so every run builds
/// the same document.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Fills the room with a document of about `bytes`, posted in updates of
/// about 1 MiB (the HTTP body limit); returns its encoded size.
fn fill(room: &mut Hibernation, bytes: usize) -> usize {
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("t");
    let chunk = "lorem ipsum dolor sit amet, ".repeat(37);
    let chunk = &chunk[..1024];
    let (mut random, mut written, mut sent) = (0x9e37_79b9_7f4a_7c15u64, 0usize, StateVector::default());
    let mut edits = 0;
    while written < bytes {
        let mut txn = doc.transact_mut();
        let len = text.len(&txn);
        let at = if len == 0 { 0 } else { (next(&mut random) % u64::from(len)) as u32 };
        text.insert(&mut txn, at, chunk);
        edits += 1;
        if edits % 10 == 0 {
            let len = text.len(&txn);
            text.remove_range(&mut txn, (next(&mut random) % u64::from(len - 64)) as u32, 64);
        }
        written += chunk.len();
        drop(txn);
        if edits % 1000 == 0 || written >= bytes {
            let txn = doc.transact();
            let update = txn.encode_state_as_update_v1(&sent);
            sent = txn.state_vector();
            let response = room.request("POST", update);
            assert_eq!(response.status, 200, "the update is applied");
            room.commit();
        }
    }
    let whole = doc.transact().encode_state_as_update_v1(&StateVector::default());
    let served = room.request("GET", Vec::new());
    let stored = yrs::Update::decode_v1(&served.body).expect("the room serves a Yjs update");
    assert_eq!(stored.state_vector(), yrs::Update::decode_v1(&whole).unwrap().state_vector(), "the room has it all");
    whole.len()
}

fn yjs(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(dormouse_hibernate::Store::open(dir.path(), Default::default()).expect("the store opens"));
    let mut group = c.benchmark_group("yjs");
    group.measurement_time(Duration::from_secs(4)).sample_size(30);

    let mut room = Hibernation::new::<YDoc>(store.clone(), "typing");
    room.join();
    let editor = Doc::with_client_id(7);
    let text = editor.get_or_insert_text("t");
    let insert = "x".repeat(64);
    let mut count = 0;
    group.bench_function("update/64B", |b| {
        b.iter_batched(
            || {
                let mut txn = editor.transact_mut();
                let end = text.len(&txn);
                text.insert(&mut txn, end, &insert);
                update_message(&txn.encode_update_v1())
            },
            |message| {
                room.binary(&message);
                count += 1;
                if count % 64 == 0 {
                    room.commit();
                }
            },
            BatchSize::SmallInput,
        )
    });
    room.commit();

    let mut big = Hibernation::new::<YDoc>(store.clone(), "big");
    let encoded = fill(&mut big, 10 << 20);
    eprintln!("yjs/wake/10MB: the document is {encoded} bytes encoded");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    evict_wake::bench(&mut group, "10MB", &mut big);
    group.finish();
    evict_wake::percentiles("yjs/wake/10MB", &mut big, 30);
    let served = big.request("GET", Vec::new());
    assert_eq!(served.body.len(), encoded, "the woken document is whole");
}

criterion_group!(benches, yjs);
criterion_main!(benches);
