//! A limit of several quotas on one caller ("3/second;5/minute"): admitted
//! only when every quota admits, then charged to all; refused, charged to
//! none. Exact counts on the manual clock, through the pure `apply` and
//! through the memory store from many threads.

mod common;

use std::sync::{Arc, Barrier};

use common::quota;
use flux_core::{
    apply, parse_rates, storage_key, Call, Decision, ManualClock, MemoryStore, Op, Policy, Quota,
    QuotaSpec, State, Store,
};

const SECOND: u64 = 1_000_000;

/// One call of `cost` through `store`'s `apply`.
fn call(store: &dyn Store, keys: &[&str], quotas: &[Quota], cost: u64, op: Op) -> Decision {
    store
        .apply(&Call {
            keys,
            quotas,
            cost,
            op,
        })
        .unwrap()
}

fn quotas(policy: Policy, rates: &str) -> Vec<Quota> {
    parse_rates(rates)
        .unwrap()
        .iter()
        .map(|r| {
            QuotaSpec::new(policy, r.requests, r.period_secs())
                .build()
                .unwrap()
        })
        .collect()
}

/// One caller's states under a limit, carried from call to call.
struct Caller {
    quotas: Vec<Quota>,
    states: Vec<Option<State>>,
}

impl Caller {
    fn new(quotas: Vec<Quota>) -> Self {
        let states = vec![None; quotas.len()];
        Caller { quotas, states }
    }

    fn call(&mut self, now: u64, cost: u64, op: Op) -> Decision {
        let applied = apply(&self.quotas, &self.states, now, cost, op).unwrap();
        for (state, update) in self.states.iter_mut().zip(applied.updates) {
            match update {
                Some((s, expires_at)) if expires_at > now => *state = Some(s),
                Some(_) => *state = None,
                None => {}
            }
        }
        applied.decision
    }
}

#[test]
fn every_quota_must_admit_and_a_refusal_charges_none() {
    for policy in Policy::ALL {
        let mut caller = Caller::new(quotas(policy, "3/second;5/minute"));
        let t0 = 1_000 * SECOND;
        let allowed: Vec<bool> = (0..4)
            .map(|_| caller.call(t0, 1, Op::Decide).allowed)
            .collect();
        assert_eq!(allowed, [true, true, true, false], "{policy}: 3 per second");
        // The refusal charged the minute quota nothing: once the per-second
        // quota has room again, two more calls fit (5 per minute), not one.
        let t1 = t0 + 2 * SECOND;
        let allowed: Vec<bool> = (0..3)
            .map(|_| caller.call(t1, 1, Op::Decide).allowed)
            .collect();
        assert_eq!(allowed, [true, true, false], "{policy}");
        let refused = caller.call(t1, 1, Op::Decide);
        assert_eq!(refused.quota_index, 1, "{policy}: the minute quota refuses");
        assert_eq!(refused.remaining, 0, "{policy}");
    }
}

#[test]
fn a_refusal_by_one_quota_leaves_every_key_unchanged() {
    let mut caller = Caller::new(quotas(Policy::Gcra, "10/second;2/minute"));
    let t0 = 5 * SECOND;
    caller.call(t0, 1, Op::Decide);
    caller.call(t0, 1, Op::Decide);
    let before = caller.states.clone();
    for _ in 0..5 {
        assert!(!caller.call(t0 + 1, 1, Op::Decide).allowed);
    }
    assert_eq!(caller.states, before);
}

#[test]
fn the_decision_reports_the_quota_closest_to_refusing() {
    let mut caller = Caller::new(quotas(Policy::FixedWindow, "10/second;4/minute"));
    let first = caller.call(0, 1, Op::Decide);
    // 9 left of the second, 3 of the minute: the minute is closer.
    assert_eq!((first.quota_index, first.limit, first.remaining), (1, 4, 3));
    assert_eq!(first.reset_after_us, 60 * SECOND);

    let mut caller = Caller::new(quotas(Policy::FixedWindow, "2/second;100/minute"));
    caller.call(0, 1, Op::Decide);
    let second = caller.call(0, 1, Op::Decide);
    assert_eq!((second.quota_index, second.remaining), (0, 0));
    let refused = caller.call(SECOND / 4, 1, Op::Decide);
    assert_eq!((refused.quota_index, refused.allowed), (0, false));
    assert_eq!(refused.retry_after_us, 3 * SECOND / 4);
}

#[test]
fn a_refusal_by_several_reports_the_longest_wait() {
    // Both full: the per-second quota frees up in 1 s, the per-minute one in 60 s.
    let mut caller = Caller::new(quotas(Policy::FixedWindow, "1/second;1/minute"));
    caller.call(0, 1, Op::Decide);
    let refused = caller.call(0, 1, Op::Decide);
    assert!(!refused.allowed);
    assert_eq!(refused.quota_index, 1);
    assert_eq!(refused.retry_after_us, 60 * SECOND);
    // Waiting that long is enough for every quota.
    assert!(caller.call(60 * SECOND, 1, Op::Decide).allowed);
}

#[test]
fn a_shaped_call_waits_for_the_slowest_quota() {
    let spec = |requests, period| {
        QuotaSpec::new(Policy::LeakyBucket, requests, period)
            .burst(1)
            .max_wait(10.0)
            .build()
            .unwrap()
    };
    // One per second and one per two seconds, each queueing up to 10 s.
    let mut caller = Caller::new(vec![spec(1, 1.0), spec(1, 2.0)]);
    assert_eq!(caller.call(0, 1, Op::Decide).delay_us, 0);
    let second = caller.call(0, 1, Op::Decide);
    assert!(second.allowed);
    assert_eq!(second.delay_us, 2 * SECOND, "the slower quota's delay");
}

#[test]
fn peeks_never_charge() {
    let mut caller = Caller::new(quotas(Policy::SlidingWindow, "2/second;3/minute"));
    for _ in 0..10 {
        assert!(caller.call(0, 1, Op::Peek).allowed);
    }
    assert!(caller.states.iter().all(Option::is_none));
    assert!(caller.call(0, 1, Op::Decide).allowed);
    assert!(caller.call(0, 1, Op::Decide).allowed);
    let peeked = caller.call(0, 1, Op::Peek);
    let decided = caller.call(0, 1, Op::Decide);
    assert_eq!(peeked, decided);
    assert!(!decided.allowed);
}

/// The memory store's keys of one caller, as a limiter names them.
fn keys(limit: &str, identity: &[u8]) -> Vec<String> {
    parse_rates(limit)
        .unwrap()
        .iter()
        .map(|r| {
            storage_key(
                "flux:",
                &format!("api:{}", r.label()),
                Policy::Gcra,
                identity,
            )
        })
        .collect()
}

#[test]
fn threads_on_one_caller_admit_exactly_the_bound_and_charge_nothing_on_refusal() {
    let clock = ManualClock::new(1_000 * SECOND);
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let quotas = Arc::new(quotas(Policy::Gcra, "3/second;5/minute"));
    let keys = Arc::new(keys("3/second;5/minute", b"10.0.0.1"));
    let run = |calls_per_thread: usize| -> usize {
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, quotas, keys, barrier) =
                    (store.clone(), quotas.clone(), keys.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    barrier.wait();
                    (0..calls_per_thread)
                        .filter(|_| call(&*store, &keys, &quotas, 1, Op::Decide).allowed)
                        .count()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    };
    assert_eq!(run(50), 3);
    clock.advance_us(SECOND);
    // Had the 397 refusals charged the minute quota, nothing would pass now.
    assert_eq!(run(50), 2);
    clock.advance_us(SECOND);
    assert_eq!(run(50), 0);
}

#[test]
fn keys_without_a_common_tag_are_still_decided_together() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let quotas = quotas(Policy::FixedWindow, "2/second;3/minute");
    // Plain keys with no hash tag land in different shards (among 64, some
    // pair does); the call locks both.
    let names: Vec<String> = (0..64).map(|i| format!("plain-{i}")).collect();
    for pair in names.chunks(2) {
        let keys = [pair[0].as_str(), pair[1].as_str()];
        let admitted = (0..5)
            .filter(|_| call(&store, &keys, &quotas, 1, Op::Decide).allowed)
            .count();
        assert_eq!(admitted, 2);
    }
}

#[test]
fn reset_forgets_every_key_of_the_caller() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let quotas = quotas(Policy::TokenBucket, "1/second;2/minute");
    let owned = keys("1/second;2/minute", b"alice");
    let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
    assert!(call(&store, &keys, &quotas, 1, Op::Decide).allowed);
    assert!(!call(&store, &keys, &quotas, 1, Op::Decide).allowed);
    assert_eq!(store.remove(&keys).unwrap(), 2);
    assert!(call(&store, &keys, &quotas, 1, Op::Decide).allowed);
    assert_eq!(store.remove(&["never-written"]).unwrap(), 0);
}

#[test]
fn quota_helper_matches_a_single_quota_limit() {
    // A limit of one quota through `apply` is the plain policy.
    let single = quota(Policy::Gcra, 2, 1.0);
    let mut caller = Caller::new(vec![single]);
    let decisions: Vec<Decision> = (0..3).map(|_| caller.call(0, 1, Op::Decide)).collect();
    assert_eq!(
        decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(decisions[2].retry_after_us, SECOND / 2);
    assert!(decisions.iter().all(|d| d.quota_index == 0));
}

#[test]
fn a_tie_between_quotas_reports_the_earlier() {
    // After one call both have 1 left and nothing to wait for: the first
    // quota (2 per second) is reported, with its own reset.
    let quotas = quotas(Policy::FixedWindow, "2/second;2/minute");
    let applied = apply(&quotas, &[None, None], 0, 1, Op::Decide).unwrap();
    let d = applied.decision;
    assert_eq!((d.allowed, d.remaining, d.retry_after_us), (true, 1, 0));
    assert_eq!((d.quota_index, d.reset_after_us), (0, SECOND));
}

#[test]
fn each_operation_has_its_name() {
    assert_eq!(
        [Op::Decide.name(), Op::Peek.name(), Op::Refund.name()],
        ["decide", "peek", "refund"]
    );
}
