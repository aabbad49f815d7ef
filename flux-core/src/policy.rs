//! The five policies as one pure function of (state, now, quota, cost).
//!
//! `decide` never reads a clock and never stores anything: it returns the
//! decision and, when the call was admitted, the state to store and when that
//! state expires. The stores apply it atomically; the Redis scripts in
//! flux-redis/lua reproduce the same integer math step for step.
//!
//! # The bucket policies
//!
//! `gcra`, `token_bucket` and `leaky_bucket` all meter a *level* in scaled
//! units (see [`Quota`]): a call of cost `c` adds `c * unit`, the level drains
//! by `rate` per microsecond, and a call fits when the level after it is at
//! most `capacity = burst * unit`. They admit exactly the same traffic (GCRA
//! is a token bucket written as a time) and differ in what they store:
//!
//! | policy | stored | meaning |
//! |---|---|---|
//! | gcra | `tat`, `frac` | theoretical arrival time `tat + frac / rate` µs, i.e. when the level reaches 0 |
//! | token_bucket | `tokens`, `last` | `capacity - level` at time `last` |
//! | leaky_bucket | `level`, `last` | the level at time `last` |
//!
//! `leaky_bucket` with `max_wait > 0` shapes instead of refusing: a call that
//! would overflow is admitted when its overflow drains within `max_wait`, and
//! is told to wait that `delay` before it runs. Such a call is admitted, so
//! `remaining` counts the calls the queue still takes, not only those that
//! would run at once.
//!
//! # The window policies
//!
//! `fixed_window` counts calls in a window of `period` that opens at the key's
//! first call (not aligned to the clock, so keys do not all reset at once).
//! `sliding_window` keeps the previous and current window's counts and weighs
//! the previous one by the part of it still inside the sliding window:
//! `prev * (period - elapsed) + curr * period <= requests * period`.

use crate::rate::MAX_QUOTAS;
use crate::{Decision, Policy, Quota, QuotaError, Source};

/// Per-key state; the variant always matches the quota's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Gcra { tat: u64, frac: u64 },
    TokenBucket { tokens: u64, last: u64 },
    LeakyBucket { level: u64, last: u64 },
    FixedWindow { count: u64, end: u64 },
    SlidingWindow { prev: u64, curr: u64, start: u64 },
}

/// What a decision does to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    /// The state to store and the time (µs) after which it is the same as
    /// no state at all; `None` leaves the stored state as it was.
    pub update: Option<(State, u64)>,
}

/// Applies `quota` to one call of `cost` at `now` (µs) given the key's stored
/// `state` (`None` for a key never seen or expired).
///
/// ```
/// use flux_core::{decide, Policy, QuotaSpec};
/// // 2 per second, burst 2: the third call at t=0 waits half a second.
/// let quota = QuotaSpec::new(Policy::Gcra, 2, 1.0).build().unwrap();
/// let mut state = None;
/// for _ in 0..2 {
///     let out = decide(&quota, state, 0, 1).unwrap();
///     assert!(out.decision.allowed);
///     state = out.update.map(|(s, _)| s);
/// }
/// let out = decide(&quota, state, 0, 1).unwrap();
/// assert!(!out.decision.allowed);
/// assert_eq!(out.decision.retry_after_us, 500_000);
/// ```
pub fn decide(
    quota: &Quota,
    state: Option<State>,
    now: u64,
    cost: u64,
) -> Result<Outcome, QuotaError> {
    quota.check_cost(cost)?;
    Ok(match quota.policy() {
        Policy::Gcra | Policy::TokenBucket | Policy::LeakyBucket => bucket(quota, state, now, cost),
        Policy::FixedWindow => fixed_window(quota, state, now, cost),
        Policy::SlidingWindow => sliding_window(quota, state, now, cost),
    })
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// The level in scaled units at `now`, after draining since the state was stored.
fn level_at(quota: &Quota, state: Option<State>, now: u64) -> u64 {
    let rate = quota.rate();
    let drain = |level: u64, last: u64| {
        let elapsed = now.saturating_sub(last);
        level.saturating_sub(elapsed.saturating_mul(rate))
    };
    match state {
        Some(State::Gcra { tat, frac }) if tat >= now => {
            (tat - now).saturating_mul(rate).saturating_add(frac)
        }
        Some(State::TokenBucket { tokens, last }) => drain(
            quota.burst() * quota.unit() - tokens.min(quota.burst() * quota.unit()),
            last,
        ),
        Some(State::LeakyBucket { level, last }) => drain(level, last),
        _ => 0,
    }
}

fn bucket(quota: &Quota, state: Option<State>, now: u64, cost: u64) -> Outcome {
    let (unit, rate) = (quota.unit(), quota.rate());
    let capacity = quota.burst() * unit;
    // The highest level an admitted call may leave: capacity, plus what drains
    // within max_wait. A call of cost c is admitted iff level + c * unit <= room.
    let room = capacity + quota.max_wait_us() * rate;
    let level = level_at(quota, state, now);
    // Saturating: a level stored under another quota (a limit changed in
    // place) can exceed u64 in this quota's units; it must read as full.
    let after = level.saturating_add(cost * unit);
    // Microseconds until `after` drains down to capacity: 0 when it fits now.
    let wait = ceil_div(after.saturating_sub(capacity), rate);

    let limit = quota.limit();
    if wait > quota.max_wait_us() {
        return Outcome {
            decision: Decision {
                allowed: false,
                limit,
                remaining: room.saturating_sub(level) / unit,
                reset_after_us: ceil_div(level, rate),
                retry_after_us: wait - quota.max_wait_us(),
                delay_us: 0,
                source: Source::Storage,
                quota_index: 0,
            },
            update: None,
        };
    }

    Outcome {
        decision: Decision {
            allowed: true,
            limit,
            remaining: room.saturating_sub(after) / unit,
            reset_after_us: ceil_div(after, rate),
            retry_after_us: 0,
            delay_us: wait,
            source: Source::Storage,
            quota_index: 0,
        },
        update: Some(store_level(quota, state, now, after)),
    }
}

/// The state that holds `level` at `now` in `quota`'s policy, and when it
/// drains to nothing.
fn store_level(quota: &Quota, state: Option<State>, now: u64, level: u64) -> (State, u64) {
    let rate = quota.rate();
    // The time the stored level is true at. Never earlier than the last one:
    // if the clock steps back, a level already drained up to `last` must not
    // drain over the same microseconds again.
    let stamp = match state {
        Some(State::TokenBucket { last, .. } | State::LeakyBucket { last, .. }) => last.max(now),
        _ => now,
    };
    let stored = match quota.policy() {
        Policy::Gcra => State::Gcra {
            tat: now + level / rate,
            frac: level % rate,
        },
        Policy::TokenBucket => State::TokenBucket {
            tokens: (quota.burst() * quota.unit()).saturating_sub(level),
            last: stamp,
        },
        _ => State::LeakyBucket { level, last: stamp },
    };
    (stored, stamp + ceil_div(level, rate))
}

fn fixed_window(quota: &Quota, state: Option<State>, now: u64, cost: u64) -> Outcome {
    let limit = quota.limit();
    let (count, end) = match state {
        Some(State::FixedWindow { count, end }) if now < end => (count, end),
        _ => (0, now + quota.period_us()),
    };
    let reset_after_us = end - now;
    if count + cost > limit {
        return Outcome {
            decision: Decision {
                allowed: false,
                limit,
                // Saturating: a count stored under a higher limit (a limit
                // lowered in place) can exceed this one.
                remaining: limit.saturating_sub(count),
                reset_after_us,
                retry_after_us: reset_after_us,
                delay_us: 0,
                source: Source::Storage,
                quota_index: 0,
            },
            update: None,
        };
    }
    let count = count + cost;
    Outcome {
        decision: Decision {
            allowed: true,
            limit,
            remaining: limit - count,
            reset_after_us,
            retry_after_us: 0,
            delay_us: 0,
            source: Source::Storage,
            quota_index: 0,
        },
        update: Some((State::FixedWindow { count, end }, end)),
    }
}

fn sliding_window(quota: &Quota, state: Option<State>, now: u64, cost: u64) -> Outcome {
    let (n, period) = (quota.requests(), quota.period_us());
    let (prev, mut curr, start) = windows_at(quota, state, now);
    let elapsed = now.saturating_sub(start);
    let left = period - elapsed;
    // Everything below is the estimate multiplied by `period`, so it stays integral.
    let budget = n * period;
    let weighted_prev = prev * left;
    let remaining_after = |curr: u64| budget.saturating_sub(weighted_prev + curr * period) / period;
    let reset_after = |curr: u64| match (prev, curr) {
        (_, c) if c > 0 => left + period,
        (p, _) if p > 0 => left,
        _ => 0,
    };

    if weighted_prev + (curr + cost) * period > budget {
        let retry_after_us = if curr + cost <= n {
            // Within this window, as the previous window's weight slides out.
            ceil_div(weighted_prev - (n - curr - cost) * period, prev)
        } else {
            // Only after this window ends, as the current count slides out.
            left + ceil_div((curr + cost - n) * period, curr)
        };
        return Outcome {
            decision: Decision {
                allowed: false,
                limit: n,
                remaining: remaining_after(curr),
                reset_after_us: reset_after(curr),
                retry_after_us,
                delay_us: 0,
                source: Source::Storage,
                quota_index: 0,
            },
            update: None,
        };
    }
    curr += cost;
    let reset_after_us = reset_after(curr);
    Outcome {
        decision: Decision {
            allowed: true,
            limit: n,
            remaining: remaining_after(curr),
            reset_after_us,
            retry_after_us: 0,
            delay_us: 0,
            source: Source::Storage,
            quota_index: 0,
        },
        update: Some((
            State::SlidingWindow { prev, curr, start },
            now + reset_after_us,
        )),
    }
}

/// A sliding window's `(prev, curr, start)` at `now`: the stored counts moved
/// on by the windows that ended since.
fn windows_at(quota: &Quota, state: Option<State>, now: u64) -> (u64, u64, u64) {
    let period = quota.period_us();
    let (mut prev, mut curr, mut start) = match state {
        Some(State::SlidingWindow { prev, curr, start }) => (prev, curr, start),
        _ => (0, 0, now),
    };
    if now >= start + period {
        let windows = (now - start) / period;
        prev = if windows == 1 { curr } else { 0 };
        curr = 0;
        start += windows * period;
    }
    if prev == 0 && curr == 0 {
        // Nothing left to weigh: the same as a key never seen, whether or not
        // the store has expired it yet, so both stores decide alike.
        start = now;
    }
    (prev, curr, start)
}

/// Gives back up to `cost` of what one quota's `state` holds at `now`: the
/// state to store and when it expires (at or before `now` when nothing is
/// left, so the key may go), or `None` when there is nothing to give back.
///
/// Never below empty: a bucket's level stops at 0, a window's count at 0.
/// A fixed window keeps its end. A sliding window gives back from the
/// current window first, then from the previous one.
///
/// ```
/// use flux_core::{decide, refund, Policy, QuotaSpec};
/// // 2 per second: two calls fill it; a refund of one makes room for one more.
/// let quota = QuotaSpec::new(Policy::Gcra, 2, 1.0).build().unwrap();
/// let mut state = None;
/// for _ in 0..2 {
///     state = decide(&quota, state, 0, 1).unwrap().update.map(|(s, _)| s);
/// }
/// assert!(!decide(&quota, state, 0, 1).unwrap().decision.allowed);
/// state = refund(&quota, state, 0, 1).map(|(s, _)| s);
/// assert!(decide(&quota, state, 0, 1).unwrap().decision.allowed);
/// ```
pub fn refund(quota: &Quota, state: Option<State>, now: u64, cost: u64) -> Option<(State, u64)> {
    match quota.policy() {
        Policy::Gcra | Policy::TokenBucket | Policy::LeakyBucket => {
            let level = level_at(quota, state, now);
            if level == 0 {
                return None;
            }
            let given = cost.saturating_mul(quota.unit()).min(level);
            Some(store_level(quota, state, now, level - given))
        }
        Policy::FixedWindow => match state {
            Some(State::FixedWindow { count, end }) if now < end && count > 0 => Some((
                State::FixedWindow {
                    count: count - count.min(cost),
                    end,
                },
                end,
            )),
            _ => None,
        },
        Policy::SlidingWindow => {
            let (prev, curr, start) = windows_at(quota, state, now);
            if prev == 0 && curr == 0 {
                return None;
            }
            let from_curr = curr.min(cost);
            let (prev, curr) = (prev - prev.min(cost - from_curr), curr - from_curr);
            let period = quota.period_us();
            let expires_at = match (prev, curr) {
                (_, c) if c > 0 => start + 2 * period,
                (p, _) if p > 0 => start + period,
                _ => now,
            };
            Some((State::SlidingWindow { prev, curr, start }, expires_at))
        }
    }
}

/// What a call does to its keys' state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Op {
    /// Decides, and when every quota admits the call, charges every quota.
    #[default]
    Decide,
    /// Decides without charging anything: what `Decide` would answer now.
    Peek,
    /// Gives `cost` back to every quota (see [`refund`]) and answers what a
    /// call of cost 1 would be told afterwards.
    Refund,
}

impl Op {
    pub const fn name(self) -> &'static str {
        match self {
            Op::Decide => "decide",
            Op::Peek => "peek",
            Op::Refund => "refund",
        }
    }
}

/// The answer to one call under every quota of a limit, and what to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The quota closest to refusing (or the one that refused), with the
    /// longest `delay` of all when the call is admitted.
    pub decision: Decision,
    /// For quota `i`, the state to store and when it expires (at or before
    /// `now`: the key may be removed); `None` leaves the key as it was.
    pub updates: [Option<(State, u64)>; MAX_QUOTAS],
}

/// Applies `op` for one call of `cost` to a limit of several quotas on one
/// caller, `states[i]` being what quota `i`'s key holds (`None` for a key
/// never seen or expired). All or nothing: a call is admitted only when
/// every quota admits it, and only then is every quota charged.
///
/// ```
/// use flux_core::{apply, Op, Policy, QuotaSpec};
/// // 2 per second and 3 per minute: the third call in a minute is refused by
/// // the second quota even once the first has room again.
/// let per_second = QuotaSpec::new(Policy::FixedWindow, 2, 1.0).build().unwrap();
/// let per_minute = QuotaSpec::new(Policy::FixedWindow, 3, 60.0).build().unwrap();
/// let quotas = [per_second, per_minute];
/// let mut states = [None, None];
/// for (now, allowed) in [(0, true), (0, true), (0, false), (1_000_000, true), (2_000_000, false)] {
///     let applied = apply(&quotas, &states, now, 1, Op::Decide).unwrap();
///     assert_eq!(applied.decision.allowed, allowed);
///     for (state, update) in states.iter_mut().zip(applied.updates) {
///         if let Some((s, _)) = update {
///             *state = Some(s);
///         }
///     }
/// }
/// ```
///
/// # Panics
/// When `quotas` is empty or longer than [`MAX_QUOTAS`], or `states` is not
/// as long as `quotas`: a limiter never asks that.
pub fn apply(
    quotas: &[Quota],
    states: &[Option<State>],
    now: u64,
    cost: u64,
    op: Op,
) -> Result<Applied, QuotaError> {
    assert!(
        !quotas.is_empty() && quotas.len() <= MAX_QUOTAS && states.len() == quotas.len(),
        "a call names 1 to {MAX_QUOTAS} quotas and one state each"
    );
    let mut updates = [None; MAX_QUOTAS];
    let mut reported: Option<Decision> = None;
    if op == Op::Refund {
        if cost == 0 {
            return Err(QuotaError::CostZero);
        }
        for (i, (quota, &state)) in quotas.iter().zip(states).enumerate() {
            let update = refund(quota, state, now, cost);
            let after = match update {
                Some((state, expires_at)) if expires_at > now => Some(state),
                Some(_) => None,
                None => state,
            };
            updates[i] = update;
            let seen = decide(quota, after, now, 1)?.decision;
            reported = Some(closer(reported, seen, i));
        }
        let decision = reported.expect("at least one quota");
        return Ok(Applied { decision, updates });
    }
    let (mut admitted, mut delay_us) = (true, 0);
    for (i, (quota, &state)) in quotas.iter().zip(states).enumerate() {
        let out = decide(quota, state, now, cost)?;
        admitted &= out.decision.allowed;
        delay_us = delay_us.max(out.decision.delay_us);
        updates[i] = out.update;
        reported = Some(closer(reported, out.decision, i));
    }
    let mut decision = reported.expect("at least one quota");
    if admitted {
        decision.delay_us = delay_us;
    }
    if !admitted || op == Op::Peek {
        updates = [None; MAX_QUOTAS];
    }
    Ok(Applied { decision, updates })
}

/// Of the decision so far and quota `index`'s, the one closer to refusing:
/// a refusal over an admission, then the longer wait, then the fewer calls
/// remaining; the earlier quota on a tie.
fn closer(so_far: Option<Decision>, next: Decision, index: usize) -> Decision {
    let next = Decision {
        quota_index: index,
        ..next
    };
    let Some(so_far) = so_far else {
        return next;
    };
    let key = |d: &Decision| (!d.allowed, d.retry_after_us, std::cmp::Reverse(d.remaining));
    if key(&next) > key(&so_far) {
        next
    } else {
        so_far
    }
}
