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
