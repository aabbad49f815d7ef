//! The batch entry point decides like one call after another, whatever the
//! mix of policies, keys, costs and batch sizes; and a key Flux did not write
//! is reported, not overwritten.

mod support;

use std::sync::Arc;

use flux_core::{ManualClock, Policy, Quota, QuotaSpec, Request, Store};
use flux_redis::{RedisConfig, RedisError, RedisStore, TimeSource};
use support::{RedisServer, Rng};

fn store(server: &RedisServer, clock: &ManualClock) -> RedisStore {
    RedisStore::connect(&RedisConfig::from_url(server.url()))
        .unwrap()
        .with_time_source(TimeSource::Clock(Arc::new(clock.clone())))
}

#[test]
fn a_batch_decides_like_the_same_calls_one_at_a_time() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_700_000_000_000_000);
    let store = store(&server, &clock);
    let quotas: Vec<Quota> = Policy::ALL
        .iter()
        .map(|&p| QuotaSpec::new(p, 20, 10.0).build().unwrap())
        .collect();
    let mut rng = Rng::new(11);
    for size in [1, 2, 7, 64, 129, 300] {
        // The same calls on two sets of keys: batched on one, one by one on the other.
        let picks: Vec<(usize, u64, u64)> = (0..size)
            .map(|_| {
                let q = rng.range(0, 4) as usize;
                let cost = if rng.chance(5) { 0 } else { rng.range(1, 3) };
                (q, rng.range(0, 9), cost)
            })
            .collect();
        let key = |set: &str, q: usize, k: u64| format!("{set}:{size}:{}:{k}", quotas[q].policy());
        let batched_keys: Vec<String> = picks.iter().map(|&(q, k, _)| key("b", q, k)).collect();
        let requests: Vec<Request<'_>> = picks
            .iter()
            .zip(&batched_keys)
            .map(|(&(q, _, cost), key)| Request {
                key,
                quota: &quotas[q],
                cost,
            })
            .collect();
        let batched = store.decide_many(&requests);
        assert_eq!(batched.len(), size);
        for ((q, k, cost), got) in picks.iter().zip(batched) {
            let want = store.decide(&key("s", *q, *k), &quotas[*q], *cost);
            match (want, got) {
                (Ok(want), Ok(got)) => assert_eq!(want, got, "batch of {size}"),
                (Err(RedisError::Quota(_)), Err(RedisError::Quota(_))) => {}
                other => panic!("batch of {size}: {other:?}"),
            }
        }
        clock.advance_us(rng.range(0, 2_000_000));
    }
}

#[test]
fn a_key_of_another_type_is_reported_and_left_alone() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_700_000_000_000_000);
    let store = store(&server, &clock);
    server.cli(&["HSET", "foreign:gcra:x", "field", "value"]);
    let quota = QuotaSpec::new(Policy::Gcra, 10, 1.0).build().unwrap();

    let err = store.decide("foreign:gcra:x", &quota, 1).unwrap_err();
    assert!(
        matches!(err, RedisError::KeyType { .. }) && !err.redis_failed(),
        "{err}"
    );

    let batch = store.decide_many(&[
        Request {
            key: "foreign:gcra:a",
            quota: &quota,
            cost: 1,
        },
        Request {
            key: "foreign:gcra:x",
            quota: &quota,
            cost: 1,
        },
        Request {
            key: "foreign:gcra:b",
            quota: &quota,
            cost: 1,
        },
    ]);
    assert!(batch[0].as_ref().unwrap().allowed && batch[2].as_ref().unwrap().allowed);
    assert!(matches!(batch[1], Err(RedisError::KeyType { .. })));
    assert_eq!(server.cli(&["HGET", "foreign:gcra:x", "field"]), "value");
}

#[test]
fn a_key_under_two_quotas_in_one_batch_keeps_the_order_of_its_calls() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_700_000_000_000_000);
    let store = store(&server, &clock);
    // The same key and policy, its limit changed between two calls.
    let (two, three) = (
        QuotaSpec::new(Policy::FixedWindow, 2, 60.0)
            .build()
            .unwrap(),
        QuotaSpec::new(Policy::FixedWindow, 3, 60.0)
            .build()
            .unwrap(),
    );
    let request = |quota| Request {
        key: "order:k",
        quota,
        cost: 1,
    };
    let batch = store.decide_many(&[
        request(&two),
        request(&three),
        request(&two),
        request(&three),
    ]);
    let answers: Vec<(bool, u64)> = batch
        .into_iter()
        .map(|d| d.map(|d| (d.allowed, d.remaining)).unwrap())
        .collect();
    // One after another: 1 of 2 used, 2 of 3, 3 > 2 refused, 3 of 3.
    assert_eq!(answers, [(true, 1), (true, 1), (false, 0), (true, 0)]);
}
