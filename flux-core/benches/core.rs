//! flux-core benches, one entry point in two groups:
//!
//! * `policy`: one pure `decide` call of each policy on a warm state;
//! * `memory_store`: one decision through the store on the system clock, on
//!   a hot key and cycling through 1,000,000 pre-populated keys, from one
//!   thread and from two. The two-thread benches report wall time divided by
//!   the decisions both threads made: perfect scaling shows as half the
//!   one-thread time. Beside them, `dram_miss`: the floor under a decision
//!   among a million keys, one read of a line no cache holds.
//! * `limiter`: one decision through a `Limiter` on the memory store (the
//!   key's digest, the counters and all), of one quota and of two
//!   (`"10/second;1000/day"` in shape, at rates no bench reaches, so every
//!   call is admitted and does the same work), beside two limiters of one
//!   quota each decided one after the other (two stacked limits: the 2x a
//!   limit of two quotas must stay under). Callers cycle over 1,024.
//!
//! `make bench` (`cargo bench -p flux-core --bench core`) runs them all in
//! about a minute and a quarter, once built.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use flux_core::config::Config;
use flux_core::{
    decide, parse_rates, storage_key, Backend, LimitSpec, Limiter, MemoryStore, Policy, QuotaSpec,
    State, Store,
};

const KEYS: usize = 1_000_000;

fn short(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
}

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    short(&mut group);
    let period_us = 60_000_000;
    let t0 = 1_700_000_000_000_000;
    for policy in Policy::ALL {
        // 1000 per minute. The state is warm and has room: 400 calls in the
        // previous period and 200 half-way through this one, so the call takes
        // the longer, admitting path (and the sliding window weighs a
        // previous window).
        let quota = QuotaSpec::new(policy, 1_000, 60.0).build().unwrap();
        let mut state: Option<State> = None;
        for (at, calls) in [(t0, 400), (t0 + period_us + period_us / 2, 200)] {
            for _ in 0..calls {
                let out = decide(&quota, state, at, 1).unwrap();
                state = out.update.map(|(s, _)| s).or(state);
            }
        }
        let now = t0 + period_us + period_us / 2 + 10;
        assert!(decide(&quota, state, now, 1).unwrap().decision.allowed);
        group.bench_function(policy.name(), |b| {
            b.iter(|| {
                decide(
                    black_box(&quota),
                    black_box(state),
                    black_box(now),
                    black_box(1),
                )
            })
        });
    }
    group.finish();
}

/// Runs `per_thread` decisions on each of two threads, started together, and
/// returns wall time per decision made.
fn two_threads(per_thread: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let start = Barrier::new(2);
    let elapsed = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (start, work) = (&start, &work);
                s.spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    work(t, per_thread);
                    began.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap()
    });
    elapsed / 2
}

fn memory_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_store");
    short(&mut group);
    // 100 per hour: a pre-populating call of cost 50 keeps a key for 30
    // minutes, so nothing expires during the run and hits mix admitted and
    // refused calls as a busy limit does.
    let quota = QuotaSpec::new(Policy::Gcra, 100, 3600.0).build().unwrap();

    let store = MemoryStore::new();
    let hot = storage_key("flux:", "api", Policy::Gcra, b"203.0.113.7");
    store.decide(&hot, &quota, 50).unwrap();
    group.bench_function("hot_key", |b| {
        b.iter(|| store.decide(black_box(&hot), &quota, 1))
    });
    group.bench_function("hot_key_2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, n| {
                for _ in 0..n {
                    black_box(store.decide(black_box(&hot), &quota, 1).unwrap());
                }
            })
        })
    });

    // Built on first use, so a run filtered to other benches skips it.
    let million = OnceLock::new();
    let populated = || {
        million.get_or_init(|| {
            let store = MemoryStore::new();
            let keys: Vec<String> = (0..KEYS as u32)
                .map(|i| storage_key("flux:", "api", Policy::Gcra, &i.to_le_bytes()))
                .collect();
            for key in &keys {
                store.decide(key, &quota, 50).unwrap();
            }
            assert_eq!(store.len(), KEYS);
            (store, keys)
        })
    };
    let cursor = AtomicUsize::new(0);
    group.bench_function("million_keys", |b| {
        let (store, keys) = populated();
        b.iter_custom(|iters| {
            let from = cursor.fetch_add(iters as usize, Ordering::Relaxed);
            let began = Instant::now();
            for i in 0..iters as usize {
                black_box(store.decide(&keys[(from + i) % KEYS], &quota, 1).unwrap());
            }
            began.elapsed()
        })
    });
    group.bench_function("million_keys_2_threads", |b| {
        let (store, keys) = populated();
        b.iter_custom(|iters| {
            let from = cursor.fetch_add(iters as usize, Ordering::Relaxed);
            two_threads(iters, |t, n| {
                // The threads walk the keys half the map apart.
                let from = from + t * KEYS / 2;
                for i in 0..n as usize {
                    black_box(store.decide(&keys[(from + i) % KEYS], &quota, 1).unwrap());
                }
            })
        })
    });
    if let Some((store, _)) = million.get() {
        assert_eq!(store.len(), KEYS, "no key expired or was added");
    }
    group.bench_function("dram_miss", |b| {
        // As many lines as the store's tables have slots for a million keys
        // (at most half full: 64 shards of 32,768): 128 MiB.
        let lines = shuffled_lines(2 * KEYS.next_power_of_two());
        let mut at = 0;
        b.iter(|| {
            at = lines[at].0[0];
            black_box(at)
        })
    });
    group.finish();
}

/// A 64-byte line, as a slot of the store's table is.
#[repr(align(64))]
struct Line([usize; 8]);

/// `n` lines, each naming the next in one random cycle through them all: a
/// walk reads one line the cache does not hold per step, each step's
/// address known only from the last (what a million keys' table costs a
/// decision, with nothing else of the decision).
fn shuffled_lines(n: usize) -> Vec<Line> {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rng());
    let mut lines: Vec<Line> = (0..n).map(|_| Line([0; 8])).collect();
    for (i, &line) in order.iter().enumerate() {
        lines[line].0[0] = order[(i + 1) % n];
    }
    lines
}

/// Rates no bench reaches: one quota, and two in the shape of
/// `"10/second;1000/day"` (one per second, one a hundred times that per day).
const ONE_QUOTA: &str = "1000000000/second";
const TWO_QUOTAS: &str = "1000000000/second;100000000000/day";

/// Callers a limiter bench cycles through.
const CALLERS: usize = 1024;

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    short(&mut group);
    let backend = Arc::new(Backend::memory());
    let config = Config::default();
    let limiter = |scope: &str, rates: &str| {
        let spec = LimitSpec {
            rate: Some(parse_rates(rates).unwrap()),
            ..LimitSpec::default()
        };
        Limiter::new(backend.clone(), &config, scope, None, &spec).unwrap()
    };
    let (one, two) = (limiter("one", ONE_QUOTA), limiter("two", TWO_QUOTAS));
    let (second, day) = (
        limiter("second", ONE_QUOTA),
        limiter("day", "100000000000/day"),
    );
    assert_eq!((one.quotas().len(), two.quotas().len()), (1, 2));
    let callers: Vec<Vec<u8>> = (0..CALLERS)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256).into_bytes())
        .collect();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % CALLERS;
        &callers[i]
    };
    group.bench_function("one_quota", |b| {
        b.iter(|| {
            let d = one.decide(next(), 1).unwrap();
            debug_assert!(d.allowed);
            black_box(d)
        })
    });
    group.bench_function("two_quotas", |b| {
        b.iter(|| {
            let d = two.decide(next(), 1).unwrap();
            debug_assert!(d.allowed);
            black_box(d)
        })
    });
    group.bench_function("two_limiters_one_quota_each", |b| {
        b.iter(|| {
            let caller = next();
            black_box((
                second.decide(caller, 1).unwrap(),
                day.decide(caller, 1).unwrap(),
            ))
        })
    });
    group.finish();
    // Every call was admitted, so every call did the same work.
    let refused: u64 = backend
        .analytics()
        .snapshot()
        .endpoints
        .values()
        .map(|ep| ep.total() - ep.count(flux_core::analytics::Outcome::Allowed))
        .sum();
    assert_eq!(refused, 0, "a limiter bench refused calls");
}

criterion_group!(benches, policy, memory_store, limiter);
criterion_main!(benches);
