//! Four threads, each on its own connection, hammer one key at once: the
//! scripts run atomically, so exactly the policy's bound is admitted, no more
//! (a lost update) and no less.

mod support;

use std::sync::{Arc, Barrier};
use std::thread;

use flux_core::{Policy, Quota, QuotaSpec, Store};
use flux_redis::{RedisConfig, RedisStore};
use support::RedisServer;

const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 60;

/// 50 a day: nothing refills while the test runs, so the bound is exact.
fn quota(policy: Policy) -> (Quota, usize) {
    let spec = QuotaSpec::new(policy, 50, 86_400.0);
    match policy {
        // Ten emission intervals of queue on top of the bucket.
        Policy::LeakyBucket => (spec.max_wait(86_400.0 / 5.0).build().unwrap(), 60),
        _ => (spec.build().unwrap(), 50),
    }
}

fn hammer(server: &RedisServer, policy: Policy) {
    let (quota, bound) = quota(policy);
    let key = format!("atomic:{policy}");
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            // A store per thread: separate pools, separate connections, Redis TIME.
            let store = RedisStore::connect(&RedisConfig {
                pool_size: 1,
                timeout_ms: 2_000,
                ..RedisConfig::from_url(server.url())
            })
            .unwrap();
            store
                .preload_scripts(&[std::slice::from_ref(&quota)])
                .unwrap();
            let (barrier, key) = (barrier.clone(), key.clone());
            thread::spawn(move || {
                barrier.wait();
                (0..CALLS_PER_THREAD)
                    .map(|_| store.decide(&key, &quota, 1).unwrap())
                    .filter(|d| d.allowed)
                    .count()
            })
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(admitted, bound, "{policy}: {admitted} admitted of {bound}");
}

#[test]
fn every_policy_admits_exactly_its_bound_under_contention() {
    let server = RedisServer::start();
    for policy in Policy::ALL {
        hammer(&server, policy);
    }
}

#[test]
fn batches_from_four_threads_admit_exactly_the_bound() {
    let server = RedisServer::start();
    let (quota, bound) = quota(Policy::Gcra);
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = RedisStore::connect(&RedisConfig::from_url(server.url())).unwrap();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let requests: Vec<_> = (0..CALLS_PER_THREAD / 4)
                    .map(|_| flux_core::Request {
                        key: "atomic:batch",
                        quota: &quota,
                        cost: 1,
                    })
                    .collect();
                (0..4)
                    .flat_map(|_| store.decide_many(&requests))
                    .filter(|d| d.as_ref().unwrap().allowed)
                    .count()
            })
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(admitted, bound);
}

/// For each policy, threads of separate stores hammer one caller of
/// "3/second;5/minute" until two seconds have passed: the minute's 5 is the
/// bound, met exactly, and a refusal charges no quota, so the minute window
/// holds exactly the calls admitted and no second window more than 3.
#[test]
fn several_rates_admit_exactly_their_bound_under_contention() {
    use flux_core::config::Config;
    use flux_core::{LimitSpec, Limiter};
    use std::time::{Duration, Instant};

    const POLICIES: [&str; 4] = ["gcra", "token_bucket", "fixed_window", "sliding_window"];
    const PER_POLICY: usize = 2;
    let server = RedisServer::start();
    let config = Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"{}\"\ntimeout_ms = 2000\n[flux]\nkey_prefix = \"several:\"\n\
             jitter_enabled = false\nlocal_cache_size = 0\n",
            server.url()
        ),
        None,
    )
    .unwrap();
    let barrier = Arc::new(Barrier::new(POLICIES.len() * PER_POLICY));
    // Past the second window's weight on a sliding window's first (at 1.67 s
    // of 3/second, the fifth call fits).
    let until = Instant::now() + Duration::from_millis(2200);
    let threads: Vec<_> = POLICIES
        .iter()
        .flat_map(|&policy| std::iter::repeat_n(policy, PER_POLICY))
        .map(|policy| {
            let spec = LimitSpec {
                rate: Some(flux_core::parse_rates("3/second;5/minute").unwrap()),
                policy: Some(policy.parse().unwrap()),
                ..LimitSpec::default()
            };
            let backend = flux_redis::open(&config).unwrap().backend;
            let limiter = Limiter::new(backend, &config, policy, None, &spec).unwrap();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut admitted = 0;
                while Instant::now() < until {
                    admitted += usize::from(limiter.decide(b"one caller", 1).unwrap().allowed);
                }
                (policy, admitted, limiter.keys(None, b"one caller"))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for policy in POLICIES {
        let of_policy: Vec<_> = results.iter().filter(|(p, ..)| *p == policy).collect();
        let admitted: usize = of_policy.iter().map(|(_, n, _)| n).sum();
        assert_eq!(admitted, 5, "{policy}: {admitted} admitted");
        if policy == "fixed_window" {
            // "count end": the minute's window counted exactly the calls admitted.
            let keys = &of_policy[0].2;
            let minute = server.cli(&["GET", &keys[1]]);
            assert_eq!(
                minute.split_whitespace().next(),
                Some("5"),
                "the minute holds {minute}"
            );
            let second = server.cli(&["GET", &keys[0]]);
            let count: usize = second
                .split_whitespace()
                .next()
                .map_or(0, |c| c.parse().unwrap());
            assert!(count <= 3, "a second's window holds {second}");
        }
    }
}
