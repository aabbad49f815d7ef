//! The in-memory store: atomic under contention, and bounded in memory under
//! a flood of unique keys.

use std::collections::VecDeque;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use flux_core::{
    storage_key, Clock, ManualClock, MemoryStore, Policy, Quota, QuotaError, QuotaSpec, Store,
    StoreError,
};

fn store_at(now_us: u64) -> (ManualClock, MemoryStore) {
    let clock = ManualClock::new(now_us);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    (clock, store)
}

fn quota(policy: Policy, requests: u64, period: f64) -> Quota {
    QuotaSpec::new(policy, requests, period).build().unwrap()
}

#[test]
fn two_threads_hammering_one_key_admit_exactly_the_bound() {
    const CALLS_PER_THREAD: u64 = 50_000;
    let mut cases: Vec<(Quota, u64)> = Policy::ALL
        .iter()
        .map(|&p| (quota(p, 100, 60.0), 100))
        .collect();
    // A shaping leaky bucket also queues what drains within max_wait: 6 s at
    // one call per 0.6 s is 10 more.
    let shaping = QuotaSpec::new(Policy::LeakyBucket, 100, 60.0)
        .max_wait(6.0)
        .build()
        .unwrap();
    cases.push((shaping, 110));

    for (quota, bound) in cases {
        let (_clock, store) = store_at(1_700_000_000_000_000);
        let start = Barrier::new(2);
        let admitted: u64 = thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        (0..CALLS_PER_THREAD)
                            .filter(|_| store.decide("hot", &quota, 1).unwrap().allowed)
                            .count() as u64
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(admitted, bound, "{}", quota.policy());
        assert_eq!(store.len(), 1);
    }
}

#[test]
fn a_million_unique_keys_are_all_swept_once_expired() {
    const KEYS: usize = 1_000_000;
    let (clock, store) = store_at(0);
    // One call per second each: every key's state expires 1 s after its call.
    let q = quota(Policy::Gcra, 1, 1.0);
    for i in 0..KEYS {
        assert!(store.decide(&format!("k{i}"), &q, 1).unwrap().allowed);
    }
    assert_eq!(store.len(), KEYS, "nothing has expired yet");
    clock.set_us(999_999);
    store.sweep();
    assert_eq!(store.len(), KEYS, "nothing has expired yet");
    clock.set_us(1_000_000);
    store.sweep();
    assert_eq!(store.len(), 0);
    assert!(store.is_empty());
}

#[test]
fn a_flood_of_new_keys_keeps_memory_bounded_without_explicit_sweeps() {
    // 10_000 new keys every 100 ms (100_000 a second), each live for 1 s.
    // Every shard sweeps at least once a second of store time, and a sweep at
    // T keeps the keys written after T - 1 s, so the store never holds more
    // than the keys of the last 2 s: 200_000, while 100_000 are live.
    const PER_ROUND: u64 = 10_000;
    let (clock, store) = store_at(0);
    let q = quota(Policy::Gcra, 1, 1.0);
    let mut most = 0;
    for round in 0..50 {
        clock.set_us(round * 100_000);
        for i in 0..PER_ROUND {
            let key = format!("r{round}:{i}");
            assert!(store.decide(&key, &q, 1).unwrap().allowed);
        }
        most = most.max(store.len());
    }
    assert!(most <= 200_000, "held {most} entries");
    assert!(most >= 100_000, "held {most} entries");
    // Live now: the keys of rounds 40..=49 (those of round 39 expired at 4.9 s).
    store.sweep();
    assert_eq!(store.len(), 100_000);
}

#[test]
fn an_expired_key_starts_afresh_even_before_it_is_swept() {
    let (clock, store) = store_at(0);
    let q = quota(Policy::TokenBucket, 2, 1.0);
    assert!(store.decide("k", &q, 2).unwrap().allowed);
    assert!(!store.decide("k", &q, 1).unwrap().allowed);
    clock.set_us(1_000_000);
    let d = store.decide("k", &q, 1).unwrap();
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 1, 500_000)
    );
}

#[test]
fn keys_and_policies_do_not_share_state() {
    let (_clock, store) = store_at(0);
    let gcra = quota(Policy::Gcra, 1, 60.0);
    let window = quota(Policy::FixedWindow, 1, 60.0);
    let alice = storage_key("flux:", "api", Policy::Gcra, b"alice");
    let bob = storage_key("flux:", "api", Policy::Gcra, b"bob");
    let alice_window = storage_key("flux:", "api", Policy::FixedWindow, b"alice");
    assert!(store.decide(&alice, &gcra, 1).unwrap().allowed);
    assert!(!store.decide(&alice, &gcra, 1).unwrap().allowed);
    assert!(store.decide(&bob, &gcra, 1).unwrap().allowed);
    assert!(store.decide(&alice_window, &window, 1).unwrap().allowed);
    assert_eq!(store.len(), 3);
}

#[test]
fn clear_prefix_forgets_only_that_scope() {
    let (_clock, store) = store_at(0);
    let q = quota(Policy::Gcra, 1, 60.0);
    for scope in ["api", "login"] {
        for i in 0..100u32 {
            let key = storage_key("flux:", scope, Policy::Gcra, &i.to_le_bytes());
            store.decide(&key, &q, 1).unwrap();
        }
    }
    // Keys of any other shape, kept as their text, are cleared alike.
    for key in ["flux:api:plain", "flux:login:plain"] {
        store.decide(key, &q, 1).unwrap();
    }
    assert_eq!(store.clear_prefix("flux:login:").unwrap(), 101);
    assert_eq!(store.len(), 101);
    let key = storage_key("flux:", "login", Policy::Gcra, &0u32.to_le_bytes());
    assert!(store.decide(&key, &q, 1).unwrap().allowed);
    assert!(store.decide("flux:login:plain", &q, 1).unwrap().allowed);
    assert!(!store.decide("flux:api:plain", &q, 1).unwrap().allowed);
}

#[test]
fn an_invalid_cost_is_an_error_and_stores_nothing() {
    let (_clock, store) = store_at(0);
    let q = quota(Policy::SlidingWindow, 5, 1.0);
    assert!(matches!(
        store.decide("k", &q, 0),
        Err(StoreError::Quota(QuotaError::CostZero))
    ));
    assert!(matches!(
        store.decide("k", &q, 6),
        Err(StoreError::Quota(QuotaError::CostTooHigh {
            cost: 6,
            max: 5
        }))
    ));
    assert!(store.is_empty());
}

/// A clock that hands out scripted times and, once armed, holds its next
/// reader for a while: the way a thread can be descheduled between reading
/// the time and taking the key's lock.
#[derive(Debug)]
struct StallingClock {
    times: Mutex<VecDeque<u64>>,
    armed: Mutex<bool>,
    others_done: (Mutex<bool>, Condvar),
}

impl Clock for StallingClock {
    fn now_us(&self) -> u64 {
        let now = self.times.lock().unwrap().pop_front().unwrap();
        if std::mem::take(&mut *self.armed.lock().unwrap()) {
            // Wait until the other thread has decided, or 100 ms if it cannot
            // (because the store reads the time under the key's lock).
            let (done, signal) = &self.others_done;
            let done = done.lock().unwrap();
            let _ = signal
                .wait_timeout_while(done, Duration::from_millis(100), |d| !*d)
                .unwrap();
        }
        now
    }
}

#[test]
fn decisions_on_a_key_follow_the_order_of_their_times() {
    // 10_000 per second, burst 10: a call weighs 100 units, 1 drains per µs.
    // Five calls at t = 0 leave 500 units. Thread A reads t = 0 and stalls;
    // thread B reads t = 100 and decides. If A then decided at t = 0 after B,
    // its state would claim a level at t = 0 that already had B's drain to
    // t = 100 taken off, so that drain would count twice: five more calls at
    // t = 100 would fit where four do (12 calls within 100 µs, where the
    // bound is 10 + 100 / 100 = 11).
    for policy in [Policy::Gcra, Policy::TokenBucket, Policy::LeakyBucket] {
        let q = QuotaSpec::new(policy, 10_000, 1.0)
            .burst(10)
            .build()
            .unwrap();
        let mut times = VecDeque::from([0; 6]); // five calls, then A
        times.extend([100; 11]); // B, then ten calls
        let clock = Arc::new(StallingClock {
            times: Mutex::new(times),
            armed: Mutex::new(false),
            others_done: (Mutex::new(false), Condvar::new()),
        });
        let store = MemoryStore::with_clock(clock.clone());
        let decide = || store.decide("k", &q, 1).unwrap().allowed as u64;
        let mut admitted: u64 = (0..5).map(|_| decide()).sum();
        *clock.armed.lock().unwrap() = true;
        thread::scope(|s| {
            let a = s.spawn(decide);
            while *clock.armed.lock().unwrap() {
                thread::yield_now(); // until A has read its time
            }
            let b = s.spawn(decide).join().unwrap();
            *clock.others_done.0.lock().unwrap() = true;
            clock.others_done.1.notify_all();
            admitted += a.join().unwrap() + b;
        });
        admitted += (0..10).map(|_| decide()).sum::<u64>();
        assert_eq!(admitted, 11, "{policy}");
    }
}
