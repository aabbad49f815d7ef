//! sliding_window: `requests` per any window of `period`, estimated from the
//! current window's count plus the previous window's count weighted by the
//! part of it still inside the sliding window.

mod common;

use std::sync::Arc;

use common::{quota, Key};
use flux_core::{decide, ManualClock, MemoryStore, Policy, QuotaError, State, Store};

/// 10 per second: the examples below are worked out for it by hand.
fn ten_per_second() -> Key {
    Key::new(quota(Policy::SlidingWindow, 10, 1.0))
}

#[test]
fn a_full_window_then_the_previous_count_slides_out() {
    let mut key = ten_per_second();
    for remaining in (0..10).rev() {
        let d = key.call(0, 1);
        assert_eq!(
            (d.allowed, d.remaining, d.reset_after_us),
            (true, remaining, 2_000_000)
        );
    }
    // Over the limit in this window: retry once the next window has begun
    // and a tenth of this one's weight has slid out, at 1.1 s.
    let d = key.call(0, 1);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us),
        (false, 0, 1_100_000, 2_000_000)
    );
    // At 1_099_999 the estimate is 10 * 0.900_001 + 1 > 10. Nothing counted
    // in this window yet: the key is back to full once the previous window
    // has slid out, at 2 s.
    let d = key.call(1_099_999, 1);
    assert_eq!(
        (d.allowed, d.retry_after_us, d.reset_after_us),
        (false, 1, 900_001)
    );
    assert!(key.call(1_100_000, 1).allowed);
    assert_eq!(
        key.state,
        Some(State::SlidingWindow {
            prev: 10,
            curr: 1,
            start: 1_000_000
        })
    );
}

#[test]
fn halfway_through_the_next_window_half_the_previous_count_remains() {
    let mut key = ten_per_second();
    assert_eq!(key.admitted(0, 10), 10);
    // At 1.5 s the estimate is 10 * 0.5 + curr: five more fit.
    for remaining in (0..5).rev() {
        let d = key.call(1_500_000, 1);
        assert_eq!(
            (d.allowed, d.remaining, d.reset_after_us),
            (true, remaining, 1_500_000)
        );
    }
    let d = key.call(1_500_000, 1);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_us),
        (false, 0, 100_000)
    );
    assert_eq!(key.call(1_599_999, 1).retry_after_us, 1);
    assert!(key.call(1_600_000, 1).allowed);
    // A quarter in, 7.5 of the previous count weighs: 2 fit, 1 remaining after one.
    let mut key = ten_per_second();
    key.admitted(0, 10);
    let d = key.peek(1_250_000, 1);
    assert_eq!((d.allowed, d.remaining), (true, 1));
}

#[test]
fn a_caller_every_ten_ms_is_admitted_as_the_weight_slides() {
    let mut key = ten_per_second();
    assert_eq!(key.admitted(0, 10), 10);
    let admitted_in = |key: &mut Key, from: u64| -> Vec<u64> {
        (0..100)
            .map(|i| from + i * 10_000)
            .filter(|&t| key.call(t, 1).allowed)
            .collect()
    };
    // [1 s, 2 s): the k-th call fits once k tenths of the 10 have slid out.
    let first: Vec<u64> = (1..=9).map(|k| 1_000_000 + k * 100_000).collect();
    assert_eq!(admitted_in(&mut key, 1_000_000), first);
    // [2 s, 3 s): the previous 9 weigh 9 * (1 - e): the k-th call fits at
    // e >= (k - 1) / 9 s, rounded up to the 10 ms the caller keeps.
    assert_eq!(
        admitted_in(&mut key, 2_000_000),
        [0, 120_000, 230_000, 340_000, 450_000, 560_000, 670_000, 780_000, 890_000]
            .map(|e| 2_000_000 + e)
    );
}

#[test]
fn at_most_twice_requests_less_two_in_any_window_of_period() {
    // The tight bound (see proptests.rs): one call opens the window at 0,
    // nine more come at its last microsecond, and nine fit at the next
    // window's second-to-last: 18 = 2 * 10 - 2 calls within 999_999 µs.
    let mut key = ten_per_second();
    assert!(key.call(0, 1).allowed);
    assert_eq!(key.admitted(999_999, 20), 9);
    assert_eq!(key.admitted(1_999_998, 20), 9);
}

#[test]
fn a_key_idle_for_two_windows_starts_afresh_at_its_next_call() {
    let mut key = ten_per_second();
    assert_eq!(key.admitted(0, 10), 10);
    // Nothing in [1 s, 2.5 s): the window reopens at 2.5 s with nothing to weigh.
    let d = key.call(2_500_000, 1);
    assert_eq!((d.remaining, d.reset_after_us), (9, 2_000_000));
    assert_eq!(key.admitted(2_500_000, 20), 9);
    assert_eq!(
        key.state,
        Some(State::SlidingWindow {
            prev: 0,
            curr: 10,
            start: 2_500_000
        })
    );
}

#[test]
fn with_one_request_the_previous_window_weighs_in_whole() {
    let mut key = Key::new(quota(Policy::SlidingWindow, 1, 1.0));
    assert!(key.call(0, 1).allowed);
    // At 1 s the previous window's call still weighs 1 and slides out only
    // as the whole next window passes.
    let d = key.call(1_000_000, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 1_000_000));
    assert!(!key.call(1_999_999, 1).allowed);
    assert!(key.call(2_000_000, 1).allowed);
}

#[test]
fn costs_above_one_and_over_the_limit() {
    let mut key = ten_per_second();
    let d = key.call(0, 6);
    assert_eq!((d.allowed, d.remaining), (true, 4));
    // 6 + 5 > 10 within this window: wait for the window to end and for
    // 1/6 of its weight to slide out: 1 s + 166_667 µs.
    let d = key.call(0, 5);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_us),
        (false, 4, 1_166_667)
    );
    assert!(!key.call(1_166_666, 5).allowed);
    assert!(key.call(1_166_667, 5).allowed);
    let q = quota(Policy::SlidingWindow, 10, 1.0);
    assert_eq!(
        decide(&q, None, 0, 11).unwrap_err(),
        QuotaError::CostTooHigh { cost: 11, max: 10 }
    );
    assert_eq!(decide(&q, None, 0, 0).unwrap_err(), QuotaError::CostZero);
}

#[test]
fn the_store_forgets_a_key_once_nothing_weighs() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let q = quota(Policy::SlidingWindow, 10, 1.0);
    assert!(store.decide("k", &q, 10).unwrap().allowed);
    clock.set_us(1_999_999);
    store.sweep();
    assert_eq!(store.len(), 1, "the last microsecond still weighs");
    clock.set_us(2_000_000);
    store.sweep();
    assert_eq!(store.len(), 0);
}
