//! JavaScript rooms on the owner core, without sockets: the cost of one
//! event in a TypeScript party, and of evicting and waking one whose
//! fields hold 64 KiB.
//!
//! `cargo bench --bench js`
//!
//! - `js/message/echo`: one text message to `benches/js/echo.ts`, whose
//!   `onMessage` sends it back: entering the room's context, the call, the
//!   effect taken (not framed or sent). Compare with the fan-out and
//!   socket costs in `fanout` and `codec`.
//! - `js/evict/64KiB` and `js/wake/64KiB` for `benches/js/fields.ts`: the
//!   fields encoded (the storage encoding), the snapshot written and the
//!   context dropped; then a new context, the module from bytecode, the
//!   constructor, the fields decoded, `onStart`. A wake also prints the
//!   p50/p99/max of 1,000 single wake-ups. What this leaves out is the
//!   collection of dropped contexts, whose pause grows with every live JS
//!   room on the core (see the README).

use criterion::{criterion_group, criterion_main, Criterion};
use dormouse::bench::Hibernation;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[path = "common/evict_wake.rs"]
mod evict_wake;

fn module(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/js").join(name)
}

fn js(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(dormouse_hibernate::Store::open(dir.path(), Default::default()).expect("the store opens"));
    let mut group = c.benchmark_group("js");
    group.measurement_time(Duration::from_secs(4)).sample_size(30);

    let mut echo = Hibernation::javascript(store.clone(), "echo", &module("echo.ts"));
    group.bench_function("message/echo", |b| b.iter(|| echo.message("hello")));

    let mut room = Hibernation::javascript(store.clone(), "fields", &module("fields.ts"));
    assert_eq!(room.message("x"), 1, "the room answers");
    evict_wake::bench(&mut group, "64KiB", &mut room);
    evict_wake::percentiles("js/wake/64KiB", &mut room, 1_000);
    assert_eq!(room.message("x"), 1, "the woken room answers");
    group.finish();
}

criterion_group!(benches, js);
criterion_main!(benches);
