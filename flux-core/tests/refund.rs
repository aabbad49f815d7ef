//! Refunds give back at most what a key holds: a bucket never below empty,
//! a window count never below zero; a fixed window keeps its end; a sliding
//! window gives back from the current window first.

mod common;

use std::sync::Arc;

use common::{quota, quota_with_burst};
use flux_core::{
    apply, decide, refund, Call, Decision, ManualClock, MemoryStore, Op, Policy, Quota, State,
    Store,
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

fn charged(quota: &Quota, now: u64, calls: u64) -> Option<State> {
    let mut state = None;
    for _ in 0..calls {
        let out = decide(quota, state, now, 1).unwrap();
        assert!(out.decision.allowed);
        state = out.update.map(|(s, _)| s);
    }
    state
}

fn admitted(quota: &Quota, mut state: Option<State>, now: u64) -> u64 {
    let mut n = 0;
    while let Some((s, _)) = decide(quota, state, now, 1).unwrap().update {
        state = Some(s);
        n += 1;
    }
    n
}

#[test]
fn a_refund_makes_room_for_exactly_what_it_gave_back() {
    for policy in Policy::ALL {
        let quota = quota(policy, 5, 10.0);
        let full = charged(&quota, 100 * SECOND, 5);
        assert_eq!(admitted(&quota, full, 100 * SECOND), 0, "{policy}");
        let (state, _) = refund(&quota, full, 100 * SECOND, 2).unwrap();
        assert_eq!(admitted(&quota, Some(state), 100 * SECOND), 2, "{policy}");
    }
}

#[test]
fn a_refund_never_goes_below_empty() {
    for policy in Policy::ALL {
        let quota = quota(policy, 5, 10.0);
        let two = charged(&quota, 100 * SECOND, 2);
        let (state, expires_at) = refund(&quota, two, 100 * SECOND, 50).unwrap();
        // Nothing more than a fresh key admits: the burst, not 2 + 50.
        assert_eq!(admitted(&quota, Some(state), 100 * SECOND), 5, "{policy}");
        if policy != Policy::FixedWindow {
            assert!(
                expires_at <= 100 * SECOND,
                "{policy}: an empty state may go"
            );
        }
        // Nothing held: nothing to give back.
        assert_eq!(refund(&quota, None, 100 * SECOND, 1), None, "{policy}");
    }
}

#[test]
fn a_bucket_refund_gives_back_only_what_has_not_drained() {
    // 1 per second, burst 4: four calls at t, then 3 s later one remains charged.
    let quota = quota_with_burst(Policy::Gcra, 1, 1.0, 4);
    let t = 50 * SECOND;
    let full = charged(&quota, t, 4);
    let (state, expires_at) = refund(&quota, full, t + 3 * SECOND, 4).unwrap();
    assert_eq!(expires_at, t + 3 * SECOND);
    assert_eq!(admitted(&quota, Some(state), t + 3 * SECOND), 4);
    // Half of one call: the refund of one leaves nothing.
    let one = charged(&quota, t, 1);
    let (state, _) = refund(&quota, one, t + SECOND / 2, 1).unwrap();
    // A full burst of 4 fits again.
    assert!(
        decide(&quota, Some(state), t + SECOND / 2, 4)
            .unwrap()
            .decision
            .allowed
    );
}

#[test]
fn a_fixed_window_refund_keeps_the_window_end() {
    let quota = quota(Policy::FixedWindow, 3, 10.0);
    let t = 7 * SECOND;
    let full = charged(&quota, t, 3);
    let (state, expires_at) = refund(&quota, full, t + SECOND, 1).unwrap();
    assert_eq!(
        state,
        State::FixedWindow {
            count: 2,
            end: t + 10 * SECOND
        }
    );
    assert_eq!(expires_at, t + 10 * SECOND);
    // After the window, nothing is held any more.
    assert_eq!(refund(&quota, full, t + 10 * SECOND, 1), None);
}

#[test]
fn a_sliding_window_refund_takes_from_the_current_window_first() {
    let quota = quota(Policy::SlidingWindow, 4, 10.0);
    let t = 20 * SECOND;
    // Three calls in one window, one in the next.
    let state = charged(&quota, t, 3);
    let out = decide(&quota, state, t + 10 * SECOND, 1).unwrap();
    assert!(out.decision.allowed);
    let state = out.update.map(|(s, _)| s);
    let (after, expires_at) = refund(&quota, state, t + 10 * SECOND, 3).unwrap();
    assert_eq!(
        after,
        State::SlidingWindow {
            prev: 1,
            curr: 0,
            start: t + 10 * SECOND
        }
    );
    // Only the previous window still weighs: the state matters until this one ends.
    assert_eq!(expires_at, t + 20 * SECOND);
}

#[test]
fn a_refund_op_answers_what_the_next_call_would_be_told() {
    let quota = quota(Policy::Gcra, 2, 1.0);
    let full = charged(&quota, 0, 2);
    let applied = apply(&[quota], &[full], 0, 1, Op::Refund).unwrap();
    assert!(applied.decision.allowed);
    assert_eq!(
        applied.decision.remaining, 0,
        "one call fits: the one it asks about"
    );
    let next = decide(&quota, applied.updates[0].map(|(s, _)| s), 0, 1).unwrap();
    assert!(next.decision.allowed);
    assert_eq!(
        apply(&[quota], &[full], 0, 0, Op::Refund)
            .unwrap_err()
            .to_string(),
        "cost must be at least 1, got 0"
    );
}

#[test]
fn the_memory_store_refunds_and_peeks() {
    let clock = ManualClock::new(SECOND);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let quota = quota(Policy::FixedWindow, 2, 60.0);
    let key = ["k"];
    for _ in 0..2 {
        assert!(store.decide("k", &quota, 1).unwrap().allowed);
    }
    assert!(!call(&store, &key, &[quota], 1, Op::Peek).allowed);
    // What the next call would be told: admitted, and then none left.
    let after = call(&store, &key, &[quota], 1, Op::Refund);
    assert_eq!((after.allowed, after.remaining), (true, 0));
    assert!(call(&store, &key, &[quota], 1, Op::Peek).allowed);
    assert!(store.decide("k", &quota, 1).unwrap().allowed);
    assert!(!store.decide("k", &quota, 1).unwrap().allowed);
}

#[test]
fn refund_reports_nothing_to_give_back_and_when_what_is_left_expires() {
    // A fixed window that counts nothing has nothing to give back.
    let fixed = quota(Policy::FixedWindow, 3, 10.0);
    let empty = State::FixedWindow {
        count: 0,
        end: 10 * SECOND,
    };
    assert_eq!(refund(&fixed, Some(empty), SECOND, 1), None);

    // A sliding window matters until the windows that hold counts are over:
    // its own and the next while the current count is left, its own while
    // only the previous one is.
    let sliding = quota(Policy::SlidingWindow, 5, 10.0);
    let start = 7 * SECOND;
    let both = State::SlidingWindow {
        prev: 2,
        curr: 3,
        start,
    };
    assert_eq!(
        refund(&sliding, Some(both), start + SECOND, 1),
        Some((
            State::SlidingWindow {
                prev: 2,
                curr: 2,
                start
            },
            start + 20 * SECOND
        ))
    );
    assert_eq!(
        refund(&sliding, Some(both), start + SECOND, 4),
        Some((
            State::SlidingWindow {
                prev: 1,
                curr: 0,
                start
            },
            start + 10 * SECOND
        ))
    );
}
