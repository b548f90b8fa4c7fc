//! Micro-benchmarks of fan-out: the tag index at 100,000 members, and one
//! broadcast queued on 10,000 and 100,000 in-memory sinks.
//!
//! `cargo bench --bench fanout`
//!
//! A sink stands for a socket's record: it has the reactor's record size
//! (`CONN_RECORD_BYTES`, so memory traffic matches), the fields the fan-out
//! loop checks, and the reactor's own `WriteQueue`. One iteration frames the
//! message once and queues that one buffer on every recipient the index
//! yields; nothing is copied or allocated per recipient (queues keep their
//! capacity between iterations, as a socket's queue does between sends).
//! Throughput is recipients, so criterion's time per element is the cost
//! per recipient.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dormouse::bench::{WriteQueue, CONN_RECORD_BYTES};
use dormouse_tags::{MemberKey, TagId, TagIndex, TagInterner};
use std::hint::black_box;
use std::time::{Duration, Instant};

const BIG: usize = 100_000;
const FILLER: usize = CONN_RECORD_BYTES - 16 - size_of::<WriteQueue>();

/// What the fan-out loop reads and writes in a socket's record.
struct Sink {
    open: bool,
    joined: bool,
    local_room: u32,
    gen: u32,
    out: WriteQueue,
    _rest: [u8; FILLER],
}

const _: () = assert!(size_of::<Sink>() == CONN_RECORD_BYTES);

/// `n` members; every hundredth carries "hot", every one "all-of-them".
fn index(n: usize) -> (TagIndex, TagInterner) {
    let mut interner = TagInterner::new();
    let mut index = TagIndex::new();
    for slot in 0..n as u32 {
        let tags: &[&str] = if slot % 100 == 0 { &["all-of-them", "hot"] } else { &["all-of-them"] };
        index.join(slot, tags, &mut interner);
    }
    (index, interner)
}

fn sinks(n: usize) -> slab::Slab<Sink> {
    (0..n)
        .map(|i| {
            (i, Sink { open: true, joined: true, local_room: 0, gen: 1, out: WriteQueue::new(), _rest: [0; FILLER] })
        })
        .collect()
}

/// The reactor's fan-out loop over in-memory sinks.
fn fan_out(index: &TagIndex, tag: Option<TagId>, sinks: &mut slab::Slab<Sink>, payload: &[u8]) -> u64 {
    let frame = dormouse::ws::text_frame(payload);
    let mut delivered = 0;
    for slot in index.slots(tag) {
        let Some(sink) = sinks.get_mut(slot as usize) else { continue };
        if !sink.open || !sink.joined || sink.local_room != 0 || sink.gen == 0 {
            continue;
        }
        if sink.out.try_push(&frame, 4 << 20) {
            delivered += 1;
        }
    }
    delivered
}

/// Times `iters` fan-outs, emptying the queues (untimed) after each.
fn time_fan_out(iters: u64, index: &TagIndex, tag: Option<TagId>, sinks: &mut slab::Slab<Sink>) -> Duration {
    let payload = [b'x'; 100];
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        black_box(fan_out(index, tag, sinks, &payload));
        total += start.elapsed();
        for (_, sink) in sinks.iter_mut() {
            let queued = sink.out.bytes();
            sink.out.advance(queued);
        }
    }
    total
}

fn tag_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("tag_index_100k");
    let (mut index, mut interner) = index(BIG);
    group.throughput(Throughput::Elements(1));
    group.bench_function("join_and_leave_one_with_two_tags", |b| {
        b.iter(|| {
            let key = index.join(black_box(BIG as u32), &["all-of-them", "hot"], &mut interner);
            index.leave(key, &mut interner);
        })
    });
    group.bench_function("set_tags_one", |b| {
        let key = MemberKey(7);
        b.iter(|| {
            index.set_tags(key, &["all-of-them", "hot"], &mut interner);
            index.set_tags(key, &["all-of-them"], &mut interner);
        })
    });
    group.throughput(Throughput::Elements(BIG as u64));
    group.bench_function("iterate_all", |b| b.iter(|| index.slots(None).map(u64::from).sum::<u64>()));
    let hot = interner.lookup("hot");
    group.throughput(Throughput::Elements(index.slots(hot).len() as u64));
    group.bench_function("iterate_tag_1pct", |b| b.iter(|| index.slots(black_box(hot)).map(u64::from).sum::<u64>()));
    group.throughput(Throughput::Elements(BIG as u64));
    group.bench_function("build_100k", |b| {
        b.iter_batched(|| (), |()| self::index(BIG), BatchSize::PerIteration);
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_100B");
    for n in [10_000, BIG] {
        let (index, _interner) = index(n);
        let mut sinks = sinks(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("full_{n}"), |b| {
            b.iter_custom(|iters| time_fan_out(iters, &index, None, &mut sinks))
        });
    }
    let (index, interner) = index(BIG);
    let mut sinks = sinks(BIG);
    let hot = interner.lookup("hot");
    // Compare its time per iteration with full_100000's: the target is at
    // most 2% of it.
    group.throughput(Throughput::Elements(index.slots(hot).len() as u64));
    group.bench_function("tag_1pct_of_100000", |b| b.iter_custom(|iters| time_fan_out(iters, &index, hot, &mut sinks)));
    group.finish();
}

criterion_group!(benches, tag_index, fanout);
criterion_main!(benches);
