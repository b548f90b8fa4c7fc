//! Micro-benchmarks of the hibernation store: snapshot envelopes, durable
//! storage puts under group commit, and a snapshot round trip through LMDB.
//!
//! `cargo bench -p dormouse-hibernate --bench store`. The store benchmarks
//! write to a temporary directory and are bound by `fsync` on its file
//! system: record the machine and disk with the figures.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dormouse_hibernate::{envelope, Batch, RoomKey, Store, StoreConfig, StoreError};

/// A room state as JSON-like text: repetitive field names, varying values,
/// so it compresses about as much as a real one.
fn state(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0u64;
    while out.len() < len {
        let hash = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        out.extend_from_slice(
            format!(
                "{{\"id\":\"conn-{:08x}\",\"name\":\"user {}\",\"cursor\":{{\"x\":{},\"y\":{}}},\"typing\":{}}},",
                hash >> 32,
                hash % 10_000,
                (hash >> 8) % 1920,
                (hash >> 20) % 1080,
                hash.is_multiple_of(2)
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn envelopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    group.measurement_time(Duration::from_secs(3));
    for (name, len) in [("1KiB", 1024), ("64KiB", 64 * 1024), ("1MiB", 1 << 20)] {
        let raw = state(len);
        let encoded = envelope::encode(1, &raw);
        eprintln!(
            "envelope {name}: {} -> {} bytes ({:.1}%)",
            len,
            encoded.len(),
            100.0 * encoded.len() as f64 / len as f64
        );
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &raw, |b, raw| {
            b.iter(|| envelope::encode(1, black_box(raw)))
        });
        group.bench_with_input(BenchmarkId::new("decode", name), &encoded, |b, encoded| {
            b.iter(|| envelope::decode(black_box(encoded)).expect("the envelope is valid"))
        });
    }
    group.finish();
}

fn expect_ok(result: Result<(), StoreError>) {
    if let Err(error) = result {
        panic!("a benchmark write failed: {error}");
    }
}

/// Submits `batch` and waits until it is durable.
fn commit(store: &Store, batch: Batch) {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    store.submit(batch, Box::new(move |result| sender.send(result).expect("the bench waits"))).expect("submit");
    expect_ok(receiver.recv().expect("done is called"));
}

fn storage(c: &mut Criterion) {
    const THREADS: u64 = 8;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(Store::open(dir.path(), StoreConfig::default()).expect("store opens"));
    let next_key = AtomicU64::new(0);
    let value = state(100);

    let mut group = c.benchmark_group("store");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));

    // Eight submitters, one single-put batch each call, as eight rooms on
    // eight cores would: the writer commits whatever has queued up at once.
    group.bench_function("put_group_commit_8_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..THREADS {
                    let (store, next_key, value) = (&store, &next_key, &value);
                    scope.spawn(move || {
                        let room = RoomKey::new("bench", &format!("room-{thread}"));
                        for _ in (thread..iters).step_by(THREADS as usize) {
                            let key = next_key.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                            let mut batch = Batch::default();
                            batch.put(&room, &key, value);
                            store.submit(batch, Box::new(expect_ok)).expect("submit");
                        }
                    });
                }
            });
            store.flush().expect("flush");
            start.elapsed()
        })
    });

    // For comparison: one put per durable commit, waiting for each.
    group.bench_function("put_commit_each_1_thread", |b| {
        let room = RoomKey::new("bench", "serial");
        b.iter(|| {
            let key = next_key.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            let mut batch = Batch::default();
            batch.put(&room, &key, &value);
            commit(&store, batch);
        })
    });

    // Hibernate and wake one room with a 64 KiB state: encode, durable
    // write, read back, decode.
    let raw = state(64 * 1024);
    group.bench_function("snapshot_write_read_64KiB", |b| {
        let room = RoomKey::new("bench", "snapshot");
        b.iter(|| {
            let mut batch = Batch::default();
            batch.put_snapshot(&room, envelope::encode(1, &raw));
            commit(&store, batch);
            let stored = store.snapshot(&room).expect("read").expect("the snapshot was written");
            let (_, decoded) = envelope::decode(&stored).expect("the snapshot decodes");
            assert_eq!(decoded.len(), raw.len());
        })
    });
    group.finish();
    Arc::into_inner(store).expect("the benchmarks are done with the store").close().expect("close");
}

criterion_group!(benches, envelopes, storage);
criterion_main!(benches);
