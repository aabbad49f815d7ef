//! token_bucket: up to `burst` tokens, refilled continuously at
//! `requests / period`, with fractions of a token kept (the seed reset its
//! refill time on every call while adding only whole tokens, so traffic
//! faster than one call per interval never refilled).

mod common;

use common::{quota, quota_with_burst, Key};
use flux_core::{decide, Policy, QuotaError, State};

#[test]
fn steady_traffic_faster_than_the_interval_still_refills() {
    // 10 per second (one token per 100 ms), a call every 30 ms for 10 s:
    // calls at 0, 30 ms, ..., 9.99 s. The bucket never empties (each call
    // adds 100_000 units, at most 30_000 drain between calls), so what is
    // admitted is the burst plus what drained: 10 + floor(9.99 s / 100 ms) =
    // 109. Losing the fractions would admit the burst and nothing after.
    let mut key = Key::new(quota(Policy::TokenBucket, 10, 1.0));
    let admitted = (0..334u64)
        .filter(|k| key.call(k * 30_000, 1).allowed)
        .count();
    assert_eq!(admitted, 109);
    // The last admission, at 9.9 s, took the last whole token; by 9.99 s 0.9
    // of the next has come back.
    assert_eq!(
        key.state,
        Some(State::TokenBucket {
            tokens: 0,
            last: 9_900_000
        })
    );
    let d = key.peek(9_990_000, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 10_000));
}

#[test]
fn a_fraction_of_a_token_is_not_lost() {
    // 10 per second, burst 10: a token is 100_000 units, 1 unit refills per µs.
    let mut key = Key::new(quota(Policy::TokenBucket, 10, 1.0));
    assert_eq!(key.admitted(0, 20), 10);
    // 250 ms later: 2.5 tokens. Two are spent; the half token stays.
    let d = key.call(250_000, 2);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 0, 950_000)
    );
    assert_eq!(
        key.state,
        Some(State::TokenBucket {
            tokens: 50_000,
            last: 250_000
        })
    );
    // 50 ms later the half token has become a whole one.
    assert!(!key.call(299_999, 1).allowed);
    assert!(key.call(300_000, 1).allowed);
    let d = key.call(300_000, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 100_000));
}

#[test]
fn a_burst_of_exactly_burst_then_one_per_fractional_interval() {
    let mut key = Key::new(quota_with_burst(Policy::TokenBucket, 3, 1.0, 6));
    assert_eq!(key.admitted(0, 100), 6);
    let d = key.call(0, 1);
    assert_eq!(
        (d.allowed, d.retry_after_us, d.reset_after_us),
        (false, 333_334, 2_000_000)
    );
    for t in (1..=9u64).map(|k| (k * 1_000_000).div_ceil(3)) {
        assert!(
            !key.call(t - 1, 1).allowed,
            "admitted 1 µs early at {}",
            t - 1
        );
        let d = key.call(t, 1);
        assert!(d.allowed, "refused at {t}");
        assert_eq!(d.remaining, 0);
    }
}

#[test]
fn remaining_counts_whole_tokens_and_reset_after_the_time_to_full() {
    // 4 per 10 s, burst 4: a token every 2.5 s.
    let mut key = Key::new(quota(Policy::TokenBucket, 4, 10.0));
    let d = key.call(0, 3);
    assert_eq!((d.remaining, d.reset_after_us), (1, 7_500_000));
    // 4 s later 1.6 tokens have come back: 2.6 held; after one more, 1.6.
    let d = key.peek(4_000_000, 1);
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after_us),
        (true, 1, 6_000_000)
    );
    let d = key.call(4_000_000, 3);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us),
        (false, 2, 1_000_000, 3_500_000)
    );
}

#[test]
fn costs_are_checked_against_the_burst() {
    let q = quota_with_burst(Policy::TokenBucket, 100, 60.0, 7);
    assert_eq!(
        decide(&q, None, 0, 8).unwrap_err(),
        QuotaError::CostTooHigh { cost: 8, max: 7 }
    );
    assert_eq!(decide(&q, None, 0, 0).unwrap_err(), QuotaError::CostZero);
    let out = decide(&q, None, 0, 7).unwrap();
    assert_eq!((out.decision.allowed, out.decision.remaining), (true, 0));
}

#[test]
fn admits_what_gcra_admits_at_every_step() {
    let mut gcra = Key::new(quota_with_burst(Policy::Gcra, 5, 0.7, 3));
    let mut tokens = Key::new(quota_with_burst(Policy::TokenBucket, 5, 0.7, 3));
    // Steps of 0, of less than E = 140 ms, of more than a period.
    let steps = [
        0, 1, 0, 139_999, 1, 70_000, 0, 0, 900_000, 0, 0, 0, 0, 140_000,
    ];
    let mut now = 0;
    for step in steps.iter().cycle().take(1_000) {
        now += step;
        assert_eq!(gcra.call(now, 1), tokens.call(now, 1), "at {now}");
    }
}

#[test]
fn a_clock_that_steps_back_does_not_refill_twice() {
    // 1 per second, burst 2. Calls at 10 s and then, after the clock stepped
    // back, at 9 s: both fit (nothing drains over negative time). The level
    // is then true as of 10 s, so by 10.5 s half a token has come back, not
    // the one and a half that counting from 9 s again would give.
    let mut key = Key::new(quota_with_burst(Policy::TokenBucket, 1, 1.0, 2));
    assert!(key.call(10_000_000, 1).allowed);
    assert!(key.call(9_000_000, 1).allowed);
    assert_eq!(
        key.state,
        Some(State::TokenBucket {
            tokens: 0,
            last: 10_000_000
        })
    );
    let d = key.call(10_500_000, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 500_000));
}
