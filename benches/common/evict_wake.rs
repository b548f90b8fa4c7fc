//! The evict and wake measurements `hibernate` and `js` share.

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use dormouse::bench::Hibernation;
use std::time::{Duration, Instant};

/// `evict/<name>` and `wake/<name>` of `room`: each sample evicts (the
/// write flushed, untimed) and wakes it, timing one of the two.
pub fn bench(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, room: &mut Hibernation) {
    group.bench_function(format!("evict/{name}"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                room.evict();
                spent += start.elapsed();
                room.settle();
                room.wake();
            }
            spent
        })
    });
    group.bench_function(format!("wake/{name}"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                room.evict();
                room.settle();
                let start = Instant::now();
                room.wake();
                spent += start.elapsed();
            }
            spent
        })
    });
}

/// Times `n` single wake-ups of `room` one by one and prints their p50,
/// p99 and max as `<label>: ...` (criterion reports means; the target is
/// a p99).
pub fn percentiles(label: &str, room: &mut Hibernation, n: usize) {
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("valid precision");
    for _ in 0..n {
        room.evict();
        room.settle();
        let start = Instant::now();
        room.wake();
        histogram.record(start.elapsed().as_nanos() as u64).expect("in range");
    }
    eprintln!(
        "{label}: one by one, n={n}: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        histogram.value_at_quantile(0.5) as f64 / 1e3,
        histogram.value_at_quantile(0.99) as f64 / 1e3,
        histogram.max() as f64 / 1e3
    );
}
