//! One limiter handle used from many threads at once admits exactly its burst.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;

use flux_ffi::*;
use support::*;

const THREADS: usize = 16;
const CALLS_PER_THREAD: usize = 200;

/// Admitted calls when every thread hammers the same key of `limiter`.
fn admitted_from_many_threads(limiter: *const flux_limiter) -> u64 {
    let admitted = AtomicU64::new(0);
    let start = Barrier::new(THREADS);
    let shared = Shared(limiter);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let limiter = shared;
                start.wait();
                for _ in 0..CALLS_PER_THREAD {
                    let d = decide(limiter.0, b"one key", 1).expect("decides");
                    if d.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

#[test]
fn every_policy_admits_exactly_its_capacity_under_contention() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    // One call an hour after a burst of 500: nothing refills during the test.
    for policy in [
        flux_policy::Gcra,
        flux_policy::TokenBucket,
        flux_policy::LeakyBucket,
    ] {
        let p = flux_limit_params {
            set: FLUX_PARAM_POLICY | FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD | FLUX_PARAM_BURST,
            policy: policy as u32,
            requests: 1,
            period: 3600.0,
            burst: 500,
            max_wait: 0.0,
            ..flux_limit_params::default()
        };
        let limiter = limiter(store, config, "contended", &p);
        assert_eq!(admitted_from_many_threads(limiter), 500, "{policy:?}");
        flux_limiter_free(limiter);
    }
    for policy in [flux_policy::FixedWindow, flux_policy::SlidingWindow] {
        let p = flux_limit_params {
            set: FLUX_PARAM_POLICY | FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD,
            policy: policy as u32,
            requests: 500,
            period: 3600.0,
            ..Default::default()
        };
        let limiter = limiter(store, config, "contended", &p);
        assert_eq!(admitted_from_many_threads(limiter), 500, "{policy:?}");
        flux_limiter_free(limiter);
    }
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn each_thread_keeps_its_own_last_error() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "api", &params(10, 10.0, None));
    let shared = Shared(limiter as *const flux_limiter);
    thread::scope(|s| {
        for cost in [0_u64, 11] {
            s.spawn(move || {
                let limiter = shared;
                for _ in 0..100 {
                    let (code, message) = decide(limiter.0, b"k", cost).unwrap_err();
                    assert_eq!(code, flux_result::InvalidCost);
                    assert!(message.starts_with(&format!("cost {cost}")) == (cost == 11));
                    assert!(message.contains("at least 1, got 0") == (cost == 0));
                }
            });
        }
    });
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}
