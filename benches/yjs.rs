//! The `yjs` kind on the owner core, without sockets.
//!
//! `cargo bench --bench yjs`
//!
//! - `yjs/update/64B`: one y-protocols update from a member (a 64-byte text
//!   insert, made by `yrs` as a client makes it): decoded, applied to the
//!   document, appended to room storage (handed to the writer, not waited
//!   for), the relay framed once; compaction every 512 updates included.
//!   The fan-out to sockets is the reactor's, measured in `fanout`.
//! - `yjs/load/10MB`: the cold load of a hibernated 10 MB document: the room
//!   woken (its merged state read from LMDB, in parts) and a newcomer's
//!   step 1 answered with the whole document (the step 2 message built;
//!   sending it is the reactor's). The document is 10,000 inserts of 1 KiB
//!   at random places, with a delete of 64 characters after every tenth (so
//!   it carries tombstones).
//! - `yjs/first-write/10MB`: the same room woken and a 64-byte update
//!   applied: this builds the yrs `Doc` from the stored state (decoded,
//!   integrated), what every load cost before readers were served from
//!   the stored state.
//! - Both also print the p50/p99/max of 30 single ones (criterion reports
//!   means; the target is a p99).
//!
//! With the server's allocator (mimalloc), as the `dormouse` binary runs.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion};
use dormouse::bench::Hibernation;
use dormouse::YDoc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

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

/// A step 1 of a client with nothing: answered with the whole document.
fn newcomer_step_1() -> Vec<u8> {
    let mut out = vec![0, 0];
    out.write_buf(StateVector::default().encode_v1());
    out
}

/// Times `what` right after a cold wake of `room` (evicted, its writes
/// committed, untimed): `cold/<name>` in criterion, then `n` single ones
/// one by one with their p50, p99 and max printed.
fn cold(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    room: &mut Hibernation,
    n: usize,
    mut what: impl FnMut(&mut Hibernation),
) {
    let mut once = |room: &mut Hibernation| {
        room.evict();
        room.settle();
        let start = Instant::now();
        room.wake();
        what(room);
        start.elapsed()
    };
    group.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| once(room)).sum()));
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("valid precision");
    for _ in 0..n {
        histogram.record(once(room).as_nanos() as u64).expect("in range");
    }
    eprintln!(
        "yjs/{name}: one by one, n={n}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        histogram.value_at_quantile(0.5) as f64 / 1e6,
        histogram.value_at_quantile(0.99) as f64 / 1e6,
        histogram.max() as f64 / 1e6
    );
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
    big.join();
    let encoded = fill(&mut big, 10 << 20);
    eprintln!("yjs/load/10MB: the document is {encoded} bytes encoded");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    let step_1 = newcomer_step_1();
    cold(&mut group, "load/10MB", &mut big, 30, |room| {
        assert_eq!(room.binary(&step_1), 1, "the newcomer is sent its step 2");
    });
    let served = big.request("GET", Vec::new());
    assert_eq!(served.body.len(), encoded, "the woken document is whole");

    let writer = Doc::with_client_id(8);
    let text = writer.get_or_insert_text("w");
    cold(&mut group, "first-write/10MB", &mut big, 30, |room| {
        let mut txn = writer.transact_mut();
        text.insert(&mut txn, 0, &insert);
        room.binary(&update_message(&txn.encode_update_v1()));
    });
    group.finish();
}

criterion_group!(benches, yjs);
criterion_main!(benches);
