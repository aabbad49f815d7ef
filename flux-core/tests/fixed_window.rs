//! fixed_window: `requests` per window of `period` that opens at the key's
//! first call, so keys do not all reset at the same instant.

mod common;

use std::sync::Arc;

use common::{quota, Key};
use flux_core::{decide, ManualClock, MemoryStore, Policy, QuotaError, QuotaSpec, State, Store};

#[test]
fn requests_per_window_then_a_new_window_at_exactly_its_end() {
    let mut key = Key::new(quota(Policy::FixedWindow, 3, 1.0));
    // The first call, at 100 µs, opens [100, 1_000_100).
    for remaining in [2, 1, 0] {
        let d = key.call(100, 1);
        assert_eq!(
            (d.allowed, d.remaining, d.reset_after_us),
            (true, remaining, 1_000_000)
        );
    }
    let d = key.call(400_100, 1);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us, d.retry_after_us),
        (false, 0, 600_000, 600_000)
    );
    let d = key.call(1_000_099, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 1));
    let d = key.call(1_000_100, 1);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 2, 1_000_000)
    );
    assert_eq!(
        key.state,
        Some(State::FixedWindow {
            count: 1,
            end: 2_000_100
        })
    );
}

#[test]
fn an_idle_key_opens_its_next_window_at_its_next_call() {
    let mut key = Key::new(quota(Policy::FixedWindow, 2, 1.0));
    assert_eq!(key.admitted(0, 5), 2);
    // Nothing between 1 s and 5.5 s: the next window is [5.5 s, 6.5 s), not
    // one aligned to multiples of the period.
    assert_eq!(key.admitted(5_500_000, 5), 2);
    let d = key.call(6_499_999, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 1));
    assert!(key.call(6_500_000, 1).allowed);
}

#[test]
fn each_key_has_its_own_window() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let q = quota(Policy::FixedWindow, 1, 1.0);
    assert!(store.decide("a", &q, 1).unwrap().allowed);
    clock.set_us(300_000);
    assert!(store.decide("b", &q, 1).unwrap().allowed);
    let d = store.decide("a", &q, 1).unwrap();
    assert_eq!((d.allowed, d.retry_after_us), (false, 700_000));
    clock.set_us(1_000_000);
    assert!(store.decide("a", &q, 1).unwrap().allowed);
    let d = store.decide("b", &q, 1).unwrap();
    assert_eq!((d.allowed, d.retry_after_us), (false, 300_000));
    clock.set_us(1_300_000);
    assert!(store.decide("b", &q, 1).unwrap().allowed);
}

#[test]
fn the_store_forgets_a_window_at_its_end() {
    let clock = ManualClock::new(7);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let q = quota(Policy::FixedWindow, 2, 0.25);
    assert!(store.decide("k", &q, 2).unwrap().allowed);
    clock.set_us(250_006);
    assert!(!store.decide("k", &q, 1).unwrap().allowed);
    clock.set_us(250_007);
    store.sweep();
    assert_eq!(store.len(), 0, "the window ended at 250_007");
    let d = store.decide("k", &q, 2).unwrap();
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 0, 250_000)
    );
}

#[test]
fn costs_count_against_the_window() {
    let mut key = Key::new(quota(Policy::FixedWindow, 10, 60.0));
    let d = key.call(0, 4);
    assert_eq!((d.allowed, d.remaining), (true, 6));
    let d = key.call(1, 4);
    assert_eq!((d.allowed, d.remaining), (true, 2));
    let d = key.call(2, 4);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_us),
        (false, 2, 59_999_998)
    );
    let d = key.call(3, 2);
    assert_eq!((d.allowed, d.remaining), (true, 0));
    let q = quota(Policy::FixedWindow, 10, 60.0);
    assert_eq!(
        decide(&q, None, 0, 11).unwrap_err(),
        QuotaError::CostTooHigh { cost: 11, max: 10 }
    );
    assert_eq!(decide(&q, None, 0, 0).unwrap_err(), QuotaError::CostZero);
}

#[test]
fn burst_is_refused_for_a_window() {
    let e = QuotaSpec::new(Policy::FixedWindow, 10, 1.0)
        .burst(20)
        .build()
        .unwrap_err();
    assert!(matches!(e, QuotaError::BurstOnWindow { .. }), "{e}");
}

#[test]
fn a_limit_lowered_under_a_live_window_refuses_with_nothing_remaining() {
    // 50 calls counted under 100 per minute, then the limit becomes 10 per
    // minute with the state still in place (a config change, a Redis key that
    // outlives a deploy): the window is over its new limit until it ends.
    let mut key = Key::new(quota(Policy::FixedWindow, 100, 60.0));
    assert_eq!(key.admitted(0, 50), 50);
    let lowered = quota(Policy::FixedWindow, 10, 60.0);
    let d = decide(&lowered, key.state, 1_000_000, 1).unwrap().decision;
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_us),
        (false, 0, 59_000_000)
    );
}
