//! Hibernation on the owner core: snapshot-and-evict and rehydrate of a room
//! whose state is 1 KiB, 64 KiB and 1 MiB, through the real code path
//! (`Party::snapshot` with the serde helper, the lz4 envelope, the LMDB
//! store and its writer thread, `Party::restore`).
//!
//! `cargo bench --bench hibernate`
//!
//! - `evict`: serialise, compress, seal, hand to the writer, drop the
//!   object; the commit itself runs on the writer thread (the core does not
//!   wait for it). The writes are flushed between samples, untimed.
//! - `wake`: read the snapshot from LMDB (a short read transaction),
//!   check and decompress it, deserialise; as after a restart (no copy in
//!   memory).
//!
//! Criterion reports means; the target is a p99, so each `wake` size also
//! prints the p50/p99/max of 2,000 single wake-ups (300 for 1 MiB),
//! measured one by one.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dormouse::bench::Hibernation;
use dormouse::{Party, Room};
use std::sync::Arc;
use std::time::Duration;

#[path = "common/evict_wake.rs"]
mod evict_wake;

/// A room object with `bytes` of state: text that compresses about as well
/// as chat history or JSON documents do.
#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    entries: Vec<String>,
}

static STATE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Party for State {
    fn new(_room: &Room) -> Self {
        let bytes = STATE_BYTES.load(std::sync::atomic::Ordering::Relaxed);
        let mut entries = Vec::new();
        let mut total = 0;
        let mut i = 0u64;
        while total < bytes {
            let entry = format!(
                "{{\"id\":{i},\"user\":\"user-{}\",\"text\":\"message number {} with some words {:x}\"}}",
                i % 97,
                i * 7919 % 10007,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            );
            total += entry.len();
            entries.push(entry);
            i += 1;
        }
        State { entries }
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        dormouse::snapshot::encode(self)
    }

    fn restore(_room: &Room, bytes: &[u8]) -> Result<Self, String> {
        dormouse::snapshot::decode(bytes)
    }
}

fn sizes() -> [(&'static str, usize); 3] {
    [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)]
}

fn hibernate(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(dormouse_hibernate::Store::open(dir.path(), Default::default()).expect("the store opens"));
    let mut group = c.benchmark_group("hibernate");
    group.measurement_time(Duration::from_secs(4)).sample_size(30);
    for (name, bytes) in sizes() {
        STATE_BYTES.store(bytes, std::sync::atomic::Ordering::Relaxed);
        let mut room = Hibernation::new::<State>(store.clone(), name);
        group.throughput(Throughput::Bytes(bytes as u64));
        evict_wake::bench(&mut group, name, &mut room);
        let n = if bytes >= 1 << 20 { 300 } else { 2_000 };
        evict_wake::percentiles(&format!("hibernate/wake/{name}"), &mut room, n);
    }
    group.finish();
}

criterion_group!(benches, hibernate);
criterion_main!(benches);
