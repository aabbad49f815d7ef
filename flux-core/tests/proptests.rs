//! Properties every policy keeps, over random quotas (each policy, small
//! requests and bursts, periods of whole and fractional emission intervals)
//! and random traces (steps of 0, of less than one emission interval, of one,
//! of several periods; costs from 1 to the capacity).

use std::sync::Arc;

use flux_core::{
    decide, Decision, ManualClock, MemoryStore, Policy, Quota, QuotaSpec, State, Store,
};
use proptest::prelude::*;

/// A quota as drawn, kept so the same numbers can be built under another policy.
#[derive(Debug, Clone)]
struct Limit {
    policy: Policy,
    requests: u64,
    period_us: u64,
    burst: Option<u64>,
    max_wait_us: u64,
}

impl Limit {
    fn quota(&self) -> Quota {
        self.with_policy(self.policy)
    }

    fn with_policy(&self, policy: Policy) -> Quota {
        let mut spec = QuotaSpec::new(policy, self.requests, self.period_us as f64 / 1e6)
            .max_wait(self.max_wait_us as f64 / 1e6);
        spec.burst = self.burst;
        let quota = spec.build().unwrap();
        assert_eq!(quota.period_us(), self.period_us);
        assert_eq!(quota.max_wait_us(), self.max_wait_us);
        quota
    }

    /// Whole microseconds in one emission interval, rounded up.
    fn interval_us(&self) -> u64 {
        self.period_us.div_ceil(self.requests)
    }
}

fn limit() -> impl Strategy<Value = Limit> {
    let period_us = prop_oneof![
        Just(1_000_000u64),
        Just(700_000),
        Just(60_000_000),
        1..=3_000_000u64,
    ];
    (
        prop::sample::select(Policy::ALL.to_vec()),
        1..=5u64,
        period_us,
        prop::option::of(1..=5u64),
        prop::option::of(1..=2_000u64),
    )
        .prop_map(
            |(policy, requests, period_us, burst, wait_permille)| Limit {
                policy,
                requests,
                period_us,
                burst: burst.filter(|_| policy.is_bucket()),
                max_wait_us: match wait_permille {
                    Some(p) if policy == Policy::LeakyBucket => (period_us * p / 1_000).max(1),
                    _ => 0,
                },
            },
        )
}

/// Calls as (time µs, cost), times never decreasing.
fn trace(limit: &Limit) -> impl Strategy<Value = Vec<(u64, u64)>> {
    let e = limit.interval_us();
    let step = prop_oneof![
        3 => Just(0u64),
        3 => 0..e,
        1 => Just(limit.period_us / limit.requests),
        1 => Just(e),
        1 => 1..=3 * limit.period_us,
    ];
    let capacity = limit.quota().capacity();
    let cost = prop_oneof![3 => Just(1u64), 1 => 1..=capacity];
    prop::collection::vec((step, cost), 1..=40).prop_map(|calls| {
        let mut now = 1_000_000_000; // an arbitrary epoch, not 0
        calls
            .into_iter()
            .map(|(step, cost)| {
                now += step;
                (now, cost)
            })
            .collect()
    })
}

fn case() -> impl Strategy<Value = (Limit, Vec<(u64, u64)>)> {
    limit().prop_flat_map(|limit| {
        let calls = trace(&limit);
        (Just(limit), calls)
    })
}

/// One decision of a trace, with the state on either side of it.
#[derive(Debug)]
struct Step {
    now: u64,
    cost: u64,
    before: Option<State>,
    decision: Decision,
    after: Option<State>,
}

fn run(quota: &Quota, calls: &[(u64, u64)]) -> Vec<Step> {
    let mut state = None;
    calls
        .iter()
        .map(|&(now, cost)| {
            let before = state;
            let out = decide(quota, state, now, cost).unwrap();
            if let Some((s, _)) = out.update {
                state = Some(s);
            }
            Step {
                now,
                cost,
                before,
                decision: out.decision,
                after: state,
            }
        })
        .collect()
}

/// Admitted calls as (when they run, cost), in arrival order.
fn admitted(steps: &[Step]) -> Vec<(u64, u64)> {
    steps
        .iter()
        .filter(|s| s.decision.allowed)
        .map(|s| (s.now + s.decision.delay_us, s.cost))
        .collect()
}

/// Calls every pair of admitted calls i <= j (sorted by time) with the cost
/// admitted from i to j and the length of [t_i, t_j]. The busiest interval
/// of any length starts and ends at admitted calls, so these cover them all.
fn for_each_interval(runs: &[(u64, u64)], mut check: impl FnMut(u64, u128)) {
    for i in 0..runs.len() {
        let mut cost = 0u128;
        for j in i..runs.len() {
            cost += runs[j].1 as u128;
            check(runs[j].0 - runs[i].0, cost);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// (a) No interval admits more than the policy's bound.
    #[test]
    fn no_interval_admits_more_than_the_bound((limit, calls) in case()) {
        let quota = limit.quota();
        let steps = run(&quota, &calls);
        let runs = admitted(&steps);
        let (n, period) = (quota.requests() as u128, quota.period_us() as u128);
        match quota.policy() {
            policy if policy.is_bucket() => {
                // Buckets meter cost * unit scaled units draining at `rate` per µs,
                // capacity = burst * unit. Over [t, t + d] of arrivals the admitted
                // cost is at most burst + d / E: cost * unit <= capacity + d * rate.
                //
                // With max_wait the bound holds on *start* times (arrival + delay),
                // with 1 µs of slack. Let V_k be when the level left by admitted call
                // k would drain to 0: V_k = max(V_{k-1}, a_k) + c_k * unit / rate.
                // Call k starts at s_k = a_k + ceil((rate * (V_k - a_k) - capacity) / rate)
                // (or a_k when that is negative), so V_k - capacity / rate <= s_k, and
                // since c_k * unit <= capacity, s_k < max(V_{k-1}, a_k) + 1: the delay
                // is rounded up to a whole µs. Summing from i to j,
                //   sum c * unit = rate * (V_j - max(V_{i-1}, a_i))
                //                < capacity + rate * (s_j - s_i + 1).
                // Integer starts cannot do better: 3 per second leaves gaps of
                // 333_333 and 333_334 µs, so some 333_333 µs hold two starts. Without
                // max_wait s_k = a_k <= max(V_{k-1}, a_k) and the slack vanishes.
                // The same argument shows starts never go backwards: calls run in
                // the order they arrived.
                let (unit, rate) = (quota.unit() as u128, quota.rate() as u128);
                let capacity = quota.burst() as u128 * unit;
                prop_assert!(runs.windows(2).all(|w| w[0].0 <= w[1].0), "starts out of order");
                let slack = if quota.max_wait_us() > 0 { 1 } else { 0 };
                for_each_interval(&runs, |d, cost| {
                    let d = d as u128;
                    if slack == 0 {
                        assert!(cost * unit <= capacity + d * rate, "{cost} in {d} µs");
                    } else {
                        assert!(cost * unit < capacity + (d + 1) * rate, "{cost} starts in {d} µs");
                    }
                });
            }
            Policy::FixedWindow => {
                // Each key's windows are [first call, + period), the next opening at
                // the first call at or after the end: a window admits at most
                // `requests`, and a call is admitted exactly when it still fits.
                let mut window = (0u64, 0u128); // (end, count)
                for s in &steps {
                    if s.now >= window.0 {
                        window = (s.now + quota.period_us(), 0);
                    }
                    let fits = window.1 + s.cost as u128 <= n;
                    prop_assert_eq!(s.decision.allowed, fits, "at {}", s.now);
                    if fits {
                        window.1 += s.cost as u128;
                    }
                }
                // A closed interval of length period meets at most two windows, so
                // it admits at most 2 * requests (reached by a full window's calls in
                // its last µs and the next window's in its first).
                for_each_interval(&runs, |d, cost| {
                    if d as u128 <= period {
                        assert!(cost <= 2 * n, "{cost} in {d} µs");
                    }
                });
            }
            _ => {
                // Sliding window. Windows are [S, S + P) back to back (a key idle for a
                // whole window reopens at its next call, and the P before it held
                // nothing). A closed interval I of length <= P meets at most two, k and
                // k + 1. If I holds k's first µs it ends by k + 1's first µs, where a
                // call needs prev_k * P + curr * P <= N * P: at most N in all. Otherwise
                // I holds a tail of k that misses k's start, and
                //  * that tail admitted a <= N - 1: either k opened with a call outside
                //    the tail, or its own previous window still weighs >= 1/P at its
                //    last µs and prev * (P - e) + curr * P <= N * P with e < P;
                //  * k + 1 then admitted b with prev_k * (P - e) + b * P <= N * P at
                //    some e < P, prev_k >= a, so b < N when a >= 1.
                // Hence at most max(N, 2N - 2) in any interval of length P, and
                // sliding_window.rs reaches 2N - 2. (For N = 1 that is an exact limit.)
                let bound = n.max(2 * n - 2);
                for_each_interval(&runs, |d, cost| {
                    if d as u128 <= period {
                        assert!(cost <= bound, "{cost} in {d} µs, bound {bound}");
                    }
                });
            }
        }
    }

    /// (b) A denied call retried exactly `retry_after` later, with nothing in
    /// between, is admitted; a microsecond earlier it is not.
    #[test]
    fn retry_after_is_exactly_the_wait((limit, calls) in case()) {
        let quota = limit.quota();
        for s in run(&quota, &calls).iter().filter(|s| !s.decision.allowed) {
            let wait = s.decision.retry_after_us;
            prop_assert!(wait >= 1);
            let retried = decide(&quota, s.before, s.now + wait, s.cost).unwrap();
            prop_assert!(retried.decision.allowed, "{:?} retried at {}", s, s.now + wait);
            let early = decide(&quota, s.before, s.now + wait - 1, s.cost).unwrap();
            prop_assert!(!early.decision.allowed, "{:?} admitted at {}", s, s.now + wait - 1);
        }
    }

    /// (c) After a decision with `remaining` r, exactly r more calls of cost 1
    /// at the same instant are admitted.
    #[test]
    fn remaining_is_exact((limit, calls) in case()) {
        let quota = limit.quota();
        for s in run(&quota, &calls) {
            let mut state = s.after;
            for k in 0..=s.decision.remaining {
                let out = decide(&quota, state, s.now, 1).unwrap();
                let expect = k < s.decision.remaining;
                prop_assert_eq!(out.decision.allowed, expect, "call {} after {:?}", k + 1, s);
                if let Some((next, _)) = out.update {
                    state = Some(next);
                }
            }
        }
    }

    /// `reset_after` is when the key is as good as new: from then on, its
    /// state decides exactly as no state would, so a store may drop it.
    #[test]
    fn at_reset_after_the_key_is_as_new((limit, calls) in case()) {
        let quota = limit.quota();
        for s in run(&quota, &calls) {
            let at = s.now + s.decision.reset_after_us;
            for cost in [1, quota.capacity()] {
                prop_assert_eq!(
                    decide(&quota, s.after, at, cost).unwrap(),
                    decide(&quota, None, at, cost).unwrap(),
                    "{:?}", s
                );
            }
        }
    }

    /// The memory store, which forgets a key when its state expires, answers
    /// exactly as the pure policy that never forgets.
    #[test]
    fn the_memory_store_decides_as_the_policy((limit, calls) in case()) {
        let quota = limit.quota();
        let clock = ManualClock::new(0);
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        for s in run(&quota, &calls) {
            clock.set_us(s.now);
            prop_assert_eq!(store.decide("k", &quota, s.cost).unwrap(), s.decision, "at {}", s.now);
        }
    }

    /// gcra, token_bucket and leaky_bucket without max_wait differ only in
    /// what they store: every decision is the same.
    #[test]
    fn the_bucket_policies_decide_alike((limit, calls) in case()) {
        let limit = Limit { max_wait_us: 0, ..limit };
        let quotas = [Policy::Gcra, Policy::TokenBucket, Policy::LeakyBucket]
            .map(|p| Limit { burst: limit.burst.or(Some(limit.requests)), ..limit.clone() }.with_policy(p));
        let [gcra, token, leaky] = quotas.map(|q| run(&q, &calls));
        for ((g, t), l) in gcra.iter().zip(&token).zip(&leaky) {
            prop_assert_eq!(g.decision, t.decision, "at {}", g.now);
            prop_assert_eq!(g.decision, l.decision, "at {}", g.now);
        }
    }
}

/// Calls and refunds as (time µs, cost, refund?), times never decreasing.
fn trace_with_refunds(limit: &Limit) -> impl Strategy<Value = Vec<(u64, u64, bool)>> {
    let steps = trace(limit);
    let flags = prop::collection::vec(prop::bool::weighted(0.3), 40);
    (steps, flags).prop_map(|(calls, flags)| {
        calls
            .into_iter()
            .zip(flags)
            .map(|((now, cost), refund)| (now, cost, refund))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// (d) With refunds of admitted calls, the cost admitted minus the cost
    /// given back in any interval never exceeds what the policy admits there
    /// without refunds: a refund returns at most what was charged.
    #[test]
    fn refunds_never_admit_beyond_the_bound(
        (limit, events) in limit()
            .prop_map(|l| Limit { max_wait_us: 0, ..l })
            .prop_flat_map(|l| { let t = trace_with_refunds(&l); (Just(l), t) })
    ) {
        let quota = limit.quota();
        let mut state = None;
        // (time, +cost admitted or -cost given back)
        let mut moves: Vec<(u64, i128)> = Vec::new();
        let mut unrefunded: Vec<u64> = Vec::new();
        // A fixed window's net cost by the window's end: at most `requests` each.
        let mut windows: std::collections::BTreeMap<u64, i128> = Default::default();
        let mut window_of = |state: Option<State>, net: i128| {
            if let Some(State::FixedWindow { end, .. }) = state {
                *windows.entry(end).or_default() += net;
            }
        };
        for (now, cost, refund) in events {
            if refund && !unrefunded.is_empty() {
                let cost = unrefunded.remove(0);
                if let Some((s, expires_at)) = flux_core::refund(&quota, state, now, cost) {
                    state = (expires_at > now).then_some(s);
                    window_of(state, -(cost as i128));
                }
                moves.push((now, -(cost as i128)));
            } else {
                let out = decide(&quota, state, now, cost).unwrap();
                if let Some((s, _)) = out.update {
                    state = Some(s);
                    window_of(state, cost as i128);
                    unrefunded.push(cost);
                    moves.push((now, cost as i128));
                }
            }
        }
        for (end, net) in windows {
            prop_assert!(net <= quota.requests() as i128, "{net} in the window ending {end}");
        }
        let (n, period) = (quota.requests() as i128, quota.period_us() as i128);
        for i in 0..moves.len() {
            let mut net = 0i128;
            for j in i..moves.len() {
                net += moves[j].1;
                let d = (moves[j].0 - moves[i].0) as i128;
                match quota.policy() {
                    p if p.is_bucket() => {
                        let (unit, rate) = (quota.unit() as i128, quota.rate() as i128);
                        let capacity = quota.burst() as i128 * unit;
                        prop_assert!(net * unit <= capacity + d * rate, "{net} in {d} µs");
                    }
                    Policy::FixedWindow if d <= period => {
                        prop_assert!(net <= 2 * n, "{net} in {d} µs");
                    }
                    Policy::SlidingWindow if d <= period => {
                        prop_assert!(net <= n.max(2 * n - 2), "{net} in {d} µs");
                    }
                    _ => {}
                }
            }
        }
    }
}
