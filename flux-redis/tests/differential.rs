//! The Lua scripts against flux-core: random traces of keys, costs and times
//! go through `MemoryStore` and `RedisStore` at the same injected instants,
//! and every decision must be the same, field for field.
//!
//! The scripts do flux-core's integer math exactly, so this asks for equality
//! (which is within the 1 µs the design allows for the durations).

mod support;

use std::sync::Arc;

use flux_core::{Call, ManualClock, MemoryStore, Op, Policy, Quota, QuotaSpec, Request, Store};
use flux_redis::{RedisConfig, RedisStore, TimeSource};
use support::{RedisServer, Rng};

const STEPS: usize = 10_000;
/// A microsecond epoch with 16 digits, the kind Lua's tostring would mangle.
const EPOCH_US: u64 = 1_700_000_000_123_457;

/// Quotas a trace draws its keys' limits from: whole and fractional emission
/// intervals, bursts above and below `requests`, fractional periods, and for
/// leaky_bucket queues of several lengths.
fn quotas(policy: Policy) -> Vec<Quota> {
    let spec = |requests, period| QuotaSpec::new(policy, requests, period);
    let mut specs = vec![
        spec(10, 1.0),
        spec(3, 0.5),
        spec(7, 0.013),
        spec(100, 60.0),
        spec(2, 1.5),
        spec(1, 0.25),
    ];
    if policy.is_bucket() {
        specs.extend([
            spec(3, 1.0).burst(5),
            spec(7, 0.01).burst(2),
            spec(5, 1.5).burst(1),
            spec(1000, 0.7).burst(13),
        ]);
    }
    // Quantities near 2^53, where a double's a / b can round to the wrong
    // integer and the scripts' exact division has to correct it.
    specs.push(if policy.is_bucket() {
        spec(7, 1e9).burst(4)
    } else {
        spec(3, 1e9)
    });
    if policy == Policy::LeakyBucket {
        specs.extend([
            spec(3, 1.0).burst(2).max_wait(1.5),
            spec(7, 0.333333).max_wait(0.1),
            spec(1, 2.5).burst(3).max_wait(10.0),
            spec(10, 1.0).max_wait(0.05),
        ]);
    }
    specs.into_iter().map(|s| s.build().unwrap()).collect()
}

/// How far the clock moves before the next step, drawn for `quota`; at most
/// a day, so 10,000 steps keep the clock below 2^53 µs.
fn time_step(rng: &mut Rng, quota: &Quota) -> u64 {
    let interval = (quota.period_us() / quota.requests()).max(1);
    let step = match rng.range(0, 99) {
        0..=29 => 0,
        30..=64 => rng.range(1, interval.max(2) - 1),
        65..=84 => rng.range(interval, 2 * quota.period_us()),
        85..=96 => rng.range(2 * quota.period_us(), 5 * quota.period_us()),
        _ => rng.range(100 * quota.period_us(), 1000 * quota.period_us()),
    };
    step.min(86_400_000_000)
}

fn cost(rng: &mut Rng, quota: &Quota) -> u64 {
    match rng.range(0, 99) {
        0..=69 => 1,
        70..=96 => rng.range(1, quota.capacity()),
        // Invalid: both stores must refuse it.
        97 => 0,
        _ => quota.capacity() + 1,
    }
}

fn replay(policy: Policy, seed: u64) {
    let server = RedisServer::start();
    let clock = ManualClock::new(EPOCH_US);
    let memory = MemoryStore::with_clock(Arc::new(clock.clone()));
    let redis = RedisStore::connect(&RedisConfig::from_url(server.url()))
        .unwrap()
        .with_time_source(TimeSource::Clock(Arc::new(clock.clone())));

    let quotas = quotas(policy);
    // Each key keeps one quota; some quotas have two keys.
    let keys: Vec<(String, Quota)> = (0..quotas.len() + 3)
        .map(|i| (format!("diff:{policy}:{i}"), quotas[i % quotas.len()]))
        .collect();

    let mut rng = Rng::new(seed);
    let (mut compared, mut admitted, mut delayed, mut refused) = (0, 0, 0, 0);
    let mut key = 0;
    for step in 0..STEPS {
        // Mostly the same key again, so its limit is reached and its state
        // read back at every kind of distance in time.
        if !rng.chance(70) {
            key = rng.range(0, keys.len() as u64 - 1) as usize;
        }
        clock.advance_us(time_step(&mut rng, &keys[key].1));

        // Mostly one call; sometimes a batch of calls at the same instant.
        let n = if rng.chance(15) { rng.range(2, 8) } else { 1 };
        let picks: Vec<(usize, u64)> = (0..n)
            .map(|i| {
                let k = if i == 0 {
                    key
                } else {
                    rng.range(0, keys.len() as u64 - 1) as usize
                };
                (k, cost(&mut rng, &keys[k].1))
            })
            .collect();
        let requests: Vec<Request<'_>> = picks
            .iter()
            .map(|&(k, cost)| Request {
                key: &keys[k].0,
                quota: &keys[k].1,
                cost,
            })
            .collect();
        let (expected, actual): (Vec<_>, Vec<_>) = if n == 1 {
            let r = &requests[0];
            (
                vec![memory
                    .decide(r.key, r.quota, r.cost)
                    .map_err(|e| e.to_string())],
                vec![redis
                    .decide(r.key, r.quota, r.cost)
                    .map_err(|e| e.to_string())],
            )
        } else {
            (
                memory
                    .decide_many(&requests)
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
                redis
                    .decide_many(&requests)
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
            )
        };
        for ((want, got), request) in expected.iter().zip(&actual).zip(&requests) {
            compared += 1;
            match (want, got) {
                (Ok(want), Ok(got)) => {
                    assert_eq!(
                        want,
                        got,
                        "{policy} seed {seed} step {step}: key {} cost {} at t={} quota {:?}",
                        request.key,
                        request.cost,
                        clock_now(&clock),
                        request.quota
                    );
                    match (want.allowed, want.delay_us > 0) {
                        (true, false) => admitted += 1,
                        (true, true) => delayed += 1,
                        (false, _) => refused += 1,
                    }
                }
                (Err(_), Err(got)) => assert!(got.contains("cost"), "{got}"),
                _ => panic!(
                    "{policy} seed {seed} step {step}: memory said {want:?}, Redis said {got:?}"
                ),
            }
        }
    }
    // The trace must have exercised both answers (and the queue, for leaky).
    assert!(compared >= STEPS);
    println!(
        "{policy}: {compared} compared, {admitted} admitted, {delayed} delayed, {refused} refused"
    );
    assert!(
        admitted > STEPS / 20 && refused > STEPS / 20,
        "{admitted} admitted, {refused} refused"
    );
    if policy == Policy::LeakyBucket {
        assert!(delayed > 100, "only {delayed} delayed calls");
    }
}

/// Steps of the trace of limits, peeks and refunds, per policy.
const LIMIT_STEPS: usize = 4_000;

/// Like [`replay`], for limits of one to three quotas on one caller (keys
/// sharing a hash tag) and every operation: decide, peek and refund, alone
/// and in batches. Each caller keeps its limit.
fn replay_limits(policy: Policy, seed: u64) {
    let server = RedisServer::start();
    let clock = ManualClock::new(EPOCH_US);
    let memory = MemoryStore::with_clock(Arc::new(clock.clone()));
    let redis = RedisStore::connect(&RedisConfig::from_url(server.url()))
        .unwrap()
        .with_time_source(TimeSource::Clock(Arc::new(clock.clone())));
    let pool = quotas(policy);
    let mut rng = Rng::new(seed);
    // (keys, quotas) per caller.
    let callers: Vec<(Vec<String>, Vec<Quota>)> = (0..12)
        .map(|c| {
            let n = rng.range(1, 3) as usize;
            let mut limit: Vec<Quota> = Vec::new();
            while limit.len() < n {
                let quota = pool[rng.range(0, pool.len() as u64 - 1) as usize];
                if !limit.contains(&quota) {
                    limit.push(quota);
                }
            }
            let keys = (0..n)
                .map(|q| format!("limits:{policy}:{q}:{{caller-{c}}}"))
                .collect();
            (keys, limit)
        })
        .collect();
    let mut counts = [0usize; 3];
    let mut caller = 0;
    for step in 0..LIMIT_STEPS {
        if !rng.chance(60) {
            caller = rng.range(0, callers.len() as u64 - 1) as usize;
        }
        clock.advance_us(time_step(&mut rng, &callers[caller].1[0]));
        let n = if rng.chance(15) { rng.range(2, 6) } else { 1 };
        let picks: Vec<(usize, u64, Op)> = (0..n)
            .map(|i| {
                let c = if i == 0 {
                    caller
                } else {
                    rng.range(0, callers.len() as u64 - 1) as usize
                };
                let limit = &callers[c].1;
                let smallest = limit.iter().map(Quota::capacity).min().unwrap();
                let op = match rng.range(0, 99) {
                    0..=74 => Op::Decide,
                    75..=87 => Op::Peek,
                    _ => Op::Refund,
                };
                let cost = match (op, rng.range(0, 99)) {
                    (_, 0) => 0,
                    (Op::Refund, _) => rng.range(1, smallest + 2),
                    (_, 1) => limit.iter().map(Quota::capacity).max().unwrap() + 1,
                    (_, 2..=69) => 1,
                    _ => rng.range(1, smallest),
                };
                (c, cost, op)
            })
            .collect();
        let keys: Vec<Vec<&str>> = picks
            .iter()
            .map(|&(c, _, _)| callers[c].0.iter().map(String::as_str).collect())
            .collect();
        let expected: Vec<Result<_, String>> = picks
            .iter()
            .zip(&keys)
            .map(|(&(c, cost, op), keys)| {
                memory
                    .apply(&Call {
                        keys,
                        quotas: &callers[c].1,
                        cost,
                        op,
                    })
                    .map_err(|e| e.to_string())
            })
            .collect();
        let actual: Vec<Result<_, String>> = if n == 1 {
            let (c, cost, op) = picks[0];
            vec![redis
                .apply(&Call {
                    keys: &keys[0],
                    quotas: &callers[c].1,
                    cost,
                    op,
                })
                .map_err(|e| e.to_string())]
        } else {
            let calls: Vec<Call<'_>> = picks
                .iter()
                .zip(&keys)
                .map(|(&(c, cost, op), keys)| Call {
                    keys,
                    quotas: &callers[c].1,
                    cost,
                    op,
                })
                .collect();
            redis
                .apply_many(&calls)
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
        };
        for ((want, got), &(c, cost, op)) in expected.iter().zip(&actual).zip(&picks) {
            match (want, got) {
                (Ok(want), Ok(got)) => {
                    assert_eq!(
                        want,
                        got,
                        "{policy} seed {seed} step {step}: caller {c} {op:?} cost {cost} at t={} limit {:?}",
                        clock_now(&clock),
                        callers[c].1
                    );
                    let slot = match (want.allowed, want.quota_index) {
                        (false, _) => 0,
                        (true, 0) => 1,
                        _ => 2,
                    };
                    counts[slot] += 1;
                }
                (Err(want), Err(got)) => assert_eq!(want, got),
                _ => panic!("{policy} seed {seed} step {step}: memory {want:?}, Redis {got:?}"),
            }
        }
    }
    let [refused, first_quota, later_quota] = counts;
    assert!(
        refused > 100 && first_quota > 100 && later_quota > 100,
        "{policy}: {refused} refused, {first_quota} admitted reporting quota 0, {later_quota} others"
    );
}

#[test]
fn limits_peeks_and_refunds_match_flux_core() {
    for (policy, seed) in Policy::ALL.into_iter().zip(1u64..) {
        replay_limits(policy, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use flux_core::Clock;
    clock.now_us()
}

#[test]
fn gcra_matches_flux_core() {
    replay(Policy::Gcra, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn token_bucket_matches_flux_core() {
    replay(Policy::TokenBucket, 0xd1b5_4a32_d192_ed03);
}

#[test]
fn leaky_bucket_matches_flux_core() {
    replay(Policy::LeakyBucket, 0x8cb9_2ba7_2f3d_8dd7);
}

#[test]
fn fixed_window_matches_flux_core() {
    replay(Policy::FixedWindow, 0xa076_1d64_78bd_642f);
}

#[test]
fn sliding_window_matches_flux_core() {
    replay(Policy::SlidingWindow, 0xe703_7ed1_a0b4_28db);
}

/// A clock that steps back (an NTP correction on the Redis host) is read the
/// same way by both: a bucket's level stays stamped at the later time, so
/// the same microseconds never drain twice.
#[test]
fn a_clock_that_steps_back_is_read_alike() {
    let server = RedisServer::start();
    for policy in [Policy::TokenBucket, Policy::LeakyBucket] {
        let clock = ManualClock::new(EPOCH_US);
        let memory = MemoryStore::with_clock(Arc::new(clock.clone()));
        let redis = RedisStore::connect(&RedisConfig::from_url(server.url()))
            .unwrap()
            .with_time_source(TimeSource::Clock(Arc::new(clock.clone())));
        let quota = QuotaSpec::new(policy, 1, 1.0).burst(2).build().unwrap();
        let key = format!("back:{policy}");
        let mut answers = Vec::new();
        for at in [10_000_000, 9_000_000, 10_500_000] {
            clock.set_us(EPOCH_US + at);
            let want = memory.decide(&key, &quota, 1).unwrap();
            assert_eq!(
                want,
                redis.decide(&key, &quota, 1).unwrap(),
                "{policy} at {at}"
            );
            answers.push((want.allowed, want.retry_after_us));
        }
        assert_eq!(
            answers,
            [(true, 0), (true, 0), (false, 500_000)],
            "{policy}"
        );
    }
}
