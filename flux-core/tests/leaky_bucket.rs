//! leaky_bucket: without `max_wait` it refuses what overflows and admits
//! exactly what gcra admits; with `max_wait` it shapes, admitting a call late
//! (with a `delay`) when its slot comes within `max_wait`.

mod common;

use common::{quota, quota_with_burst, Key};
use flux_core::{decide, Policy, Quota, QuotaError, QuotaSpec, State};

fn shaping(requests: u64, period: f64, burst: u64, max_wait: f64) -> Quota {
    QuotaSpec::new(Policy::LeakyBucket, requests, period)
        .burst(burst)
        .max_wait(max_wait)
        .build()
        .unwrap()
}

#[test]
fn without_max_wait_a_burst_then_one_per_interval() {
    let mut key = Key::new(quota(Policy::LeakyBucket, 3, 1.0));
    assert_eq!(key.admitted(0, 10), 3);
    let d = key.call(0, 1);
    assert_eq!(
        (d.allowed, d.retry_after_us, d.delay_us),
        (false, 333_334, 0)
    );
    assert!(!key.call(333_333, 1).allowed);
    let d = key.call(333_334, 1);
    assert_eq!((d.allowed, d.delay_us, d.remaining), (true, 0, 0));
    // The stored level is what is left at the time of the last call.
    assert_eq!(
        key.state,
        Some(State::LeakyBucket {
            level: 2_999_998,
            last: 333_334
        })
    );
}

#[test]
fn max_wait_delays_calls_one_interval_apart_then_refuses() {
    // 2 per second, burst 2, up to 1 s of queueing: two calls now, two more
    // at 0.5 s and 1 s, and the fifth would start at 1.5 s: 0.5 s too late.
    let mut key = Key::new(shaping(2, 1.0, 2, 1.0));
    let got: Vec<_> = (0..4)
        .map(|_| {
            let d = key.call(0, 1);
            assert!(d.allowed);
            (d.delay_us, d.remaining, d.reset_after_us)
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, 3, 500_000),
            (0, 2, 1_000_000),
            (500_000, 1, 1_500_000),
            (1_000_000, 0, 2_000_000)
        ]
    );
    let d = key.call(0, 1);
    assert_eq!(
        (
            d.allowed,
            d.retry_after_us,
            d.remaining,
            d.reset_after_us,
            d.delay_us
        ),
        (false, 500_000, 0, 2_000_000, 0)
    );
    // retry_after = wait - max_wait: at exactly that time it is admitted, delayed by max_wait.
    assert!(!key.call(499_999, 1).allowed);
    let d = key.call(500_000, 1);
    assert_eq!((d.allowed, d.delay_us), (true, 1_000_000));
}

#[test]
fn delays_keep_a_fractional_interval_exact() {
    // 3 per second, burst 1, max_wait 1 s: calls start at ceil(k * 333_333.33) µs.
    let mut key = Key::new(shaping(3, 1.0, 1, 1.0));
    let delays: Vec<u64> = (0..4).map(|_| key.call(0, 1).delay_us).collect();
    assert_eq!(delays, [0, 333_334, 666_667, 1_000_000]);
    let d = key.call(0, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 333_334));
    let d = key.call(333_333, 1);
    assert_eq!((d.allowed, d.retry_after_us), (false, 1));
    let d = key.call(333_334, 1);
    // Starts at 333_334 + 1_000_000 = ceil(4 * 333_333.33).
    assert_eq!((d.allowed, d.delay_us), (true, 1_000_000));
}

#[test]
fn remaining_counts_the_calls_the_queue_still_takes() {
    // remaining is "calls of cost 1 that would still be admitted now", and a
    // delayed call is admitted: with max_wait, the queue's free room counts.
    let mut key = Key::new(shaping(10, 1.0, 5, 0.5));
    // Room: burst 5 plus 0.5 s of draining = 10 calls at one instant.
    let d = key.call(0, 1);
    assert_eq!(d.remaining, 9);
    // limit is what remaining counts down from, so headers never show remaining > limit.
    assert_eq!(d.limit, 10);
    for left in (0..9).rev() {
        let d = key.call(0, 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, left);
    }
    let d = key.call(0, 1);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_us),
        (false, 0, 100_000)
    );
    assert_eq!(key.call(0, 1).delay_us, 0, "denied calls change nothing");
}

#[test]
fn costs_above_one_queue_their_whole_weight() {
    // 10 per second, burst 10, max_wait 0.3 s.
    let mut key = Key::new(shaping(10, 1.0, 10, 0.3));
    let d = key.call(0, 8);
    assert_eq!((d.allowed, d.delay_us, d.remaining), (true, 0, 5));
    let d = key.call(0, 4);
    assert_eq!((d.allowed, d.delay_us, d.remaining), (true, 200_000, 1));
    let d = key.call(0, 2);
    assert_eq!(
        (d.allowed, d.retry_after_us, d.remaining),
        (false, 100_000, 1)
    );
    assert_eq!(
        decide(key.quota(), None, 0, 11).unwrap_err(),
        QuotaError::CostTooHigh { cost: 11, max: 10 }
    );
}

#[test]
fn admits_what_gcra_and_token_bucket_admit() {
    let quotas = [Policy::Gcra, Policy::TokenBucket, Policy::LeakyBucket]
        .map(|p| quota_with_burst(p, 7, 2.3, 4));
    let mut keys = quotas.map(Key::new);
    // A deterministic, irregular trace: steps of 0 to ~1.1 E, costs 1 to 3.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut now = 0;
    let mut admitted = 0;
    for _ in 0..5_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        now += seed % 360_000;
        let cost = 1 + (seed >> 32) % 3;
        let [g, t, l] = keys.each_mut().map(|k| k.call(now, cost));
        assert_eq!(g, t, "gcra and token_bucket differ at {now}");
        assert_eq!(g, l, "gcra and leaky_bucket differ at {now}");
        admitted += g.allowed as u64;
    }
    // The trace must exercise both answers for the comparison to mean anything.
    assert!((1_000..4_000).contains(&admitted), "{admitted}");
}
