//! One decision through RedisStore against a local redis-server (started
//! here, on a free port), beside a PING on the same kind of connection;
//! throughput from one and two threads; the batch entry point; and a limit
//! of two quotas against a limit of one, through `flux_core::Limiter`, one
//! call at a time and in batches of 64 (`redis/quotas`).
//!
//! `cargo bench -p flux-redis --bench redis`. Targets: a decision costs at
//! most 1.3x a PING round trip; a batch of 64 gives at least 8x the
//! decisions per second of one-at-a-time; a decision under two quotas costs
//! at most 1.3x one under one quota.
//!
//! Client and server run on different cores, as they would on a real
//! deployment: redis-server pinned to CPU 1, this process to CPU 0 (with
//! `taskset`, when the machine has it and two CPUs; `FLUX_BENCH_PIN=0` leaves
//! the placement to the scheduler).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flux_core::config::Config;
use flux_core::{
    apply_batch, parse_rates, BatchRequest, LimitSpec, Limiter, Op, Policy, Quota, QuotaSpec,
    Request, Store,
};
use flux_redis::{RedisConfig, RedisStore};
use support::RedisServer;

/// Keys a bench cycles through, so Redis works on a realistic keyspace.
const KEYS: usize = 1024;

/// Never refuses at these rates, so every call runs the whole script and writes.
fn quota() -> Quota {
    QuotaSpec::new(Policy::Gcra, 1_000_000_000, 1.0)
        .build()
        .unwrap()
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("bench:gcra:{i:032x}")).collect()
}

fn store(server: &RedisServer) -> Arc<RedisStore> {
    let store = RedisStore::connect(&RedisConfig {
        pool_size: 4,
        timeout_ms: 1_000,
        ..RedisConfig::from_url(server.url())
    })
    .unwrap();
    store.preload_scripts(&[]).unwrap();
    Arc::new(store)
}

fn round_trip(c: &mut Criterion, server: &RedisServer) {
    let store = store(server);
    let (quota, keys) = (quota(), keys());
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();

    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut raw)
        .unwrap();
    let mut group = c.benchmark_group("redis/round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ping (raw connection)", |b| {
        b.iter(|| redis::cmd("PING").query::<()>(&mut raw).unwrap())
    });
    group.bench_function("ping (store pool)", |b| b.iter(|| store.ping().unwrap()));
    let mut i = 0;
    group.bench_function("decide (gcra)", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(store.decide(&keys[i], &quota, 1).unwrap())
        })
    });
    group.finish();
    report_server_time(&mut raw);
}

/// What Redis itself spent per call (`INFO commandstats`): the part of a
/// round trip the script costs, apart from the network and the wake-ups.
fn report_server_time(conn: &mut redis::Connection) {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    for line in stats.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if let Some(command) = ["cmdstat_ping", "cmdstat_evalsha"]
            .iter()
            .find(|c| **c == name)
        {
            let per_call = fields
                .split(',')
                .find_map(|f| f.strip_prefix("usec_per_call="))
                .unwrap_or("?");
            println!(
                "redis-server time per {}: {per_call} us",
                &command["cmdstat_".len()..]
            );
        }
    }
}

fn throughput(c: &mut Criterion, server: &RedisServer) {
    let store = store(server);
    let (quota, keys) = (Arc::new(quota()), Arc::new(keys()));
    let mut group = c.benchmark_group("redis/threads");
    group.throughput(Throughput::Elements(1));
    for threads in [1usize, 2] {
        group.bench_function(BenchmarkId::new("decide", threads), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads as u64);
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (store, quota, keys) = (store.clone(), quota.clone(), keys.clone());
                        thread::spawn(move || {
                            for n in 0..per_thread as usize {
                                let key = &keys[(n * threads + t) % KEYS];
                                black_box(store.decide(key, &quota, 1).unwrap());
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion, server: &RedisServer) {
    let store = store(server);
    let (quota, keys) = (quota(), keys());
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut group = c.benchmark_group("redis/batch");
    for size in [1usize, 16, 64] {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut raw)
            .unwrap();
        group.throughput(Throughput::Elements(size as u64));
        let mut offset = 0;
        group.bench_function(BenchmarkId::new("decide_many", size), |b| {
            b.iter(|| {
                offset = (offset + size) % KEYS;
                let requests: Vec<Request<'_>> = (0..size)
                    .map(|i| Request {
                        key: &keys[(offset + i) % KEYS],
                        quota: &quota,
                        cost: 1,
                    })
                    .collect();
                for d in store.decide_many(&requests) {
                    black_box(d.unwrap());
                }
            })
        });
        println!("batch of {size}:");
        report_server_time(&mut raw);
    }
    group.finish();
}

/// Rates no bench reaches: one quota, and two in the shape of
/// `"10/second;1000/day"` (one per second, one a hundred times that per
/// day), so every call is admitted and each runs the whole script.
const ONE_QUOTA: &str = "1000000000/second";
const TWO_QUOTAS: &str = "1000000000/second;100000000000/day";
const BATCH: usize = 64;

/// The same calls under a limit of one quota and of two, through a
/// `Limiter` as an application makes them (the caller's digest, the
/// counters, the local deny cache): one at a time, and in batches of 64
/// (one `EVALSHA` for the batch). Redis's own time per decision follows
/// each bench.
fn quotas(c: &mut Criterion, server: &RedisServer) {
    let config = Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"{}\"\npool_size = 4\ntimeout_ms = 1000\n\
             [flux]\nstorage = \"redis\"\nkey_prefix = \"quotas:\"\njitter_enabled = false\n",
            server.url()
        ),
        None,
    )
    .unwrap();
    let backend = flux_redis::open(&config).unwrap().backend;
    let limiter = |rates: &str| {
        let spec = LimitSpec {
            rate: Some(parse_rates(rates).unwrap()),
            ..LimitSpec::default()
        };
        Limiter::new(backend.clone(), &config, "bench", None, &spec).unwrap()
    };
    let limits = [
        ("one_quota", limiter(ONE_QUOTA)),
        ("two_quotas", limiter(TWO_QUOTAS)),
    ];
    let callers: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256).into_bytes())
        .collect();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut group = c.benchmark_group("redis/quotas");
    for (name, limiter) in &limits {
        group.throughput(Throughput::Elements(1));
        let mut i = 0;
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut raw)
            .unwrap();
        group.bench_function(BenchmarkId::new("decide", name), |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                let decision = limiter.decide(&callers[i], 1).unwrap();
                assert!(decision.allowed);
                black_box(decision)
            })
        });
        println!("{name}, one at a time:");
        report_server_time(&mut raw);
    }
    for (name, limiter) in &limits {
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut offset = 0;
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut raw)
            .unwrap();
        group.bench_function(BenchmarkId::new("batch_64", name), |b| {
            b.iter(|| {
                offset = (offset + BATCH) % KEYS;
                let batch: Vec<BatchRequest<'_>> = (0..BATCH)
                    .map(|j| BatchRequest {
                        limiter,
                        endpoint: None,
                        identity: &callers[(offset + j) % KEYS],
                        cost: 1,
                        op: Op::Decide,
                    })
                    .collect();
                for decision in apply_batch(&batch) {
                    assert!(decision.unwrap().allowed);
                }
            })
        });
        println!("{name}, batches of {BATCH} (Redis's time per call is per batch):");
        report_server_time(&mut raw);
    }
    group.finish();
}

/// Pins this process (and the threads it starts) to CPU 0 and returns a
/// redis-server on CPU 1; an unpinned server where that cannot be done.
fn server_on_another_core() -> RedisServer {
    let two_cpus = thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let wanted = std::env::var("FLUX_BENCH_PIN").map_or(true, |v| v != "0");
    let pinned = two_cpus
        && wanted
        && std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if pinned {
        RedisServer::start_on_cpu(1)
    } else {
        eprintln!("not pinned: client and server share the CPUs");
        RedisServer::start()
    }
}

fn benches(c: &mut Criterion) {
    let server = server_on_another_core();
    round_trip(c, &server);
    throughput(c, &server);
    batch(c, &server);
    quotas(c, &server);
}

criterion_group! {
    name = redis_benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(redis_benches);
