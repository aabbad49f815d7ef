//! GCRA: a burst of exactly `burst` from empty, then one call per emission
//! interval `E = period / requests`, with a fractional `E` kept exact.

mod common;

use common::{quota, quota_with_burst, Key};
use flux_core::{decide, Policy, QuotaError, State};

#[test]
fn a_burst_of_exactly_burst_from_empty_then_the_next_waits_one_interval() {
    // 10 per second: E = 100 ms whatever the burst.
    for burst in [1, 2, 5, 10, 25] {
        let mut key = Key::new(quota_with_burst(Policy::Gcra, 10, 1.0, burst));
        for i in 1..=burst {
            let d = key.call(0, 1);
            assert!(d.allowed, "call {i} of a burst of {burst}");
            assert_eq!(d.remaining, burst - i);
            assert_eq!(d.reset_after_us, i * 100_000);
            assert_eq!(d.limit, burst);
        }
        let d = key.call(0, 1);
        assert!(!d.allowed, "call {} of a burst of {burst}", burst + 1);
        assert_eq!(d.retry_after_us, 100_000);
        assert_eq!(d.reset_after_us, burst * 100_000);
        assert_eq!(d.remaining, 0);
    }
}

#[test]
fn a_fractional_interval_is_kept_exact_after_the_burst() {
    // 3 per second: E = 333_333.33 µs, so after a burst at t = 0 the k-th
    // further call is due at exactly ceil(k * 1_000_000 / 3) µs.
    let mut key = Key::new(quota(Policy::Gcra, 3, 1.0));
    assert_eq!(key.admitted(0, 3), 3);
    let d = key.call(0, 1);
    assert!(!d.allowed);
    assert_eq!(d.retry_after_us, 333_334);

    let due: Vec<u64> = (1..=9).map(|k: u64| (k * 1_000_000).div_ceil(3)).collect();
    assert_eq!(&due[..4], &[333_334, 666_667, 1_000_000, 1_333_334]);
    for t in due {
        let early = key.call(t - 1, 1);
        assert!(!early.allowed, "admitted 1 µs early at {}", t - 1);
        assert_eq!(early.retry_after_us, 1);
        assert!(key.call(t, 1).allowed, "refused at {t}");
    }
    // Nine intervals of 333_333.33 µs after the burst: exactly 3 s, no drift.
    assert_eq!(
        key.state,
        Some(State::Gcra {
            tat: 4_000_000,
            frac: 0
        })
    );
}

#[test]
fn remaining_and_reset_after_are_exact() {
    // 3 per second: a call weighs 1_000_000 units, 3 drain per µs, capacity 3_000_000.
    let q = quota(Policy::Gcra, 3, 1.0);
    assert_eq!((q.unit(), q.rate()), (1_000_000, 3));
    let mut key = Key::new(q);
    let expected = [(2, 333_334), (1, 666_667), (0, 1_000_000)];
    for (remaining, reset_after) in expected {
        let d = key.call(0, 1);
        assert!(d.allowed);
        assert_eq!(
            (d.remaining, d.reset_after_us, d.retry_after_us),
            (remaining, reset_after, 0)
        );
    }
    let d = key.call(0, 1);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us, d.retry_after_us),
        (false, 0, 1_000_000, 333_334)
    );
    // Half a second later 1.5 calls have drained: one fits, leaving half a call.
    let d = key.call(500_000, 1);
    assert!(d.allowed);
    assert_eq!((d.remaining, d.reset_after_us), (0, 833_334));
    // The theoretical arrival time carries the third of a microsecond.
    assert_eq!(
        key.state,
        Some(State::Gcra {
            tat: 1_333_333,
            frac: 1
        })
    );
    assert_eq!(key.expires_at, Some(1_333_334));
}

#[test]
fn the_stored_tat_and_its_expiry() {
    let q = quota(Policy::Gcra, 3, 1.0);
    let out = decide(&q, None, 10, 1).unwrap();
    // level 1_000_000 units at t = 10 reaches 0 at 10 + 333_333 + 1/3 µs.
    assert_eq!(
        out.update,
        Some((
            State::Gcra {
                tat: 333_343,
                frac: 1
            },
            333_344
        ))
    );
}

#[test]
fn costs_above_one_take_that_many_calls() {
    // 10 per second, burst 10: a call weighs 100_000 units, 1 drains per µs.
    let mut key = Key::new(quota(Policy::Gcra, 10, 1.0));
    let d = key.call(0, 4);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 6, 400_000)
    );
    let d = key.call(0, 4);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 2, 800_000)
    );
    let d = key.call(0, 4);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us, d.retry_after_us),
        (false, 2, 800_000, 200_000)
    );
    let d = key.call(0, 2);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 0, 1_000_000)
    );
    // A full-capacity call waits for the whole bucket to drain.
    let d = key.call(0, 10);
    assert_eq!((d.allowed, d.retry_after_us), (false, 1_000_000));
    assert!(!key.call(999_999, 10).allowed);
    assert!(key.call(1_000_000, 10).allowed);
}

#[test]
fn a_cost_no_moment_could_admit_is_an_error_not_a_denial() {
    let q = quota_with_burst(Policy::Gcra, 10, 1.0, 5);
    assert_eq!(
        decide(&q, None, 0, 6).unwrap_err(),
        QuotaError::CostTooHigh { cost: 6, max: 5 }
    );
    assert_eq!(decide(&q, None, 0, 0).unwrap_err(), QuotaError::CostZero);
    assert!(decide(&q, None, 0, 5).unwrap().decision.allowed);
}

#[test]
fn rates_above_a_thousand_per_second_keep_their_limit() {
    // The seed computed E in whole milliseconds, 0 here, and admitted everything.
    let mut key = Key::new(quota_with_burst(Policy::Gcra, 5_000, 1.0, 1));
    assert!(key.call(0, 1).allowed);
    assert!(!key.call(199, 1).allowed);
    assert!(key.call(200, 1).allowed);
    // A million per second, burst 1: one call per microsecond, no more.
    let mut key = Key::new(quota_with_burst(Policy::Gcra, 1_000_000, 1.0, 1));
    for t in 0..1_000 {
        assert!(key.call(t, 1).allowed);
        assert!(!key.call(t, 1).allowed);
    }
    // 2.5 million per second, burst 5: E = 0.4 µs. The half call left over
    // each microsecond is carried to the next, so they alternate 2 and 3.
    let mut key = Key::new(quota_with_burst(Policy::Gcra, 2_500_000, 1.0, 5));
    let per_us: Vec<u64> = (0..7).map(|t| key.admitted(t, 10)).collect();
    assert_eq!(per_us, [5, 2, 3, 2, 3, 2, 3]);
}

#[test]
fn a_key_left_idle_is_back_to_full() {
    let mut key = Key::new(quota_with_burst(Policy::Gcra, 2, 1.0, 4));
    assert_eq!(key.admitted(0, 10), 4);
    // Full again exactly when reset_after said: 4 calls of 500 ms.
    let d = key.peek(1_999_999, 4);
    assert_eq!((d.allowed, d.retry_after_us), (false, 1));
    assert_eq!(key.admitted(2_000_000, 10), 4);
    // Long idle periods do not bank more than the burst.
    assert_eq!(key.admitted(100_000_000, 10), 4);
}

#[test]
fn a_stored_level_from_a_much_slower_quota_is_refused_not_overflowed() {
    // A limit renamed in place: state written under 1 per hour with a burst of
    // 1000 is read under ~10^9 per second. Its level in the new units is
    // ~3.6e21, past u64: it must read as full, never wrap to nearly empty.
    let slow = quota_with_burst(Policy::Gcra, 1, 3600.0, 1_000);
    let mut key = Key::new(slow);
    assert_eq!(key.admitted(0, 1_000), 1_000);
    let fast = quota(Policy::Gcra, 999_999_937, 1.0);
    let out = decide(&fast, key.state, 0, 1).unwrap();
    assert!(!out.decision.allowed);
    assert!(out.update.is_none());
}
