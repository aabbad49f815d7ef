//! The local deny cache on the memory store: one refused caller decided
//! through a `Limiter` with the cache off and on, from one thread and from
//! two (wall time divided by the decisions both made). It answers whether
//! the cache is worth having where the store is in-process; against Redis,
//! `benches/deny_cache.py` measures what it saves.
//!
//! `cargo bench -p flux-core --bench local_cache` (part of `make bench`).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use flux_core::analytics::Analytics;
use flux_core::config::Config;
use flux_core::{Backend, LimitSpec, Limiter, MemoryStore, MonotonicClock, Source};

fn limiter(cache_size: usize) -> Limiter {
    let backend = Backend::new(Arc::new(MemoryStore::new()), Arc::new(Analytics::default()))
        .with_local_cache(cache_size, Arc::new(MonotonicClock::new()));
    let config = Config::from_toml_str("[flux]\njitter_enabled = false\n", None).unwrap();
    let spec = LimitSpec {
        requests: Some(1),
        period: Some(3600.0),
        ..LimitSpec::default()
    };
    let limiter = Limiter::new(Arc::new(backend), &config, "api", None, &spec).unwrap();
    limiter.decide(b"203.0.113.7", 1).unwrap();
    let refused = limiter.decide(b"203.0.113.7", 1).unwrap();
    assert!(!refused.allowed);
    let again = limiter.decide(b"203.0.113.7", 1).unwrap();
    assert_eq!(again.source == Source::LocalCache, cache_size > 0);
    limiter
}

fn two_threads(limiter: &Limiter, per_thread: u64) -> Duration {
    let barrier = Barrier::new(2);
    let start = thread::scope(|s| {
        let other = s.spawn(|| {
            barrier.wait();
            for _ in 0..per_thread {
                black_box(limiter.decide(b"203.0.113.7", 1).unwrap());
            }
        });
        barrier.wait();
        let start = Instant::now();
        for _ in 0..per_thread {
            black_box(limiter.decide(b"203.0.113.7", 1).unwrap());
        }
        other.join().unwrap();
        start
    });
    start.elapsed() / 2
}

fn refused_caller(c: &mut Criterion) {
    let mut group = c.benchmark_group("refused_caller_memory_store");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, size) in [("cache_off", 0), ("cache_on", 10_000)] {
        let limiter = limiter(size);
        group.bench_function(name, |b| {
            b.iter(|| limiter.decide(black_box(b"203.0.113.7"), 1).unwrap())
        });
        group.bench_function(format!("{name}_2_threads"), |b| {
            b.iter_custom(|iters| two_threads(&limiter, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, refused_caller);
criterion_main!(benches);
