//! TTLs in production mode: the scripts on Redis's own clock (no injected
//! time, which keeps every key at least a minute). Each key a decision or a
//! refund writes expires exactly when its state stops mattering: read back
//! with Redis's time at the same instant, its `PTTL` is the expiry its state
//! says (the bucket drained, the window over) within 2 ms of rounding, and
//! for a single quota that is the decision's `reset_after`. A state refunded
//! to nothing is deleted.

mod support;

use std::time::Instant;

use flux_core::{Call, Decision, Op, Policy, Quota, QuotaSpec, Store};
use flux_redis::{RedisConfig, RedisStore};
use support::RedisServer;

/// A key's value and PTTL (ms), and Redis's time (µs), read in one script:
/// at one instant.
fn read(conn: &mut redis::Connection, key: &str) -> (Option<String>, i64, u64) {
    let script = redis::Script::new(
        "local t = redis.call('TIME')
         return {redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1]), t[1], t[2]}",
    );
    let (value, pttl, secs, micros): (String, i64, u64, u64) =
        script.key(key).invoke(conn).unwrap();
    let value = (!value.is_empty()).then_some(value);
    (value, pttl, secs * 1_000_000 + micros)
}

/// When the state `value` stops mattering (µs since the epoch), by its
/// layout (prelude.lua and each policy's file): a bucket when its level has
/// drained, a fixed window at its end, a sliding window when no count is
/// left inside it.
fn expiry(quota: &Quota, value: &str) -> u64 {
    let n: Vec<u64> = value.split(' ').map(|x| x.parse().unwrap()).collect();
    let drained = |level: u64, at: u64| at + level.div_ceil(quota.rate());
    match quota.policy() {
        Policy::Gcra => drained(n.get(1).copied().unwrap_or(0), n[0]),
        Policy::TokenBucket => drained(quota.burst() * quota.unit() - n[0], n[1]),
        Policy::LeakyBucket => drained(n[0], n[1]),
        Policy::FixedWindow => n[1],
        Policy::SlidingWindow => {
            let (prev, curr, start) = (n[0], n[1], n[2]);
            match (prev, curr) {
                (_, c) if c > 0 => start + 2 * quota.period_us(),
                (p, _) if p > 0 => start + quota.period_us(),
                _ => panic!("a sliding window with nothing in it is stored: {value}"),
            }
        }
    }
}

/// The key's PTTL is its state's expiry, and returns the PTTL.
fn assert_ttl_is_expiry(conn: &mut redis::Connection, key: &str, quota: &Quota) -> i64 {
    let (value, pttl, now_us) = read(conn, key);
    let value = value.unwrap_or_else(|| panic!("{key} was not written"));
    let expires_at = expiry(quota, &value);
    let expected_ms = expires_at.saturating_sub(now_us) as f64 / 1000.0;
    // The script sets a whole number of ms from its own time; this reads at another.
    assert!(
        (pttl as f64 - expected_ms).abs() <= 2.0,
        "{key} ({}): PTTL {pttl} ms, its state {value:?} expires in {expected_ms} ms",
        quota.policy()
    );
    pttl
}

fn apply(store: &RedisStore, keys: &[&str], quotas: &[Quota], cost: u64, op: Op) -> Decision {
    store
        .apply(&Call {
            keys,
            quotas,
            cost,
            op,
        })
        .unwrap()
}

#[test]
fn every_key_expires_when_its_state_stops_mattering() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&RedisConfig::from_url(server.url())).unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();

    for policy in Policy::ALL {
        // 3 per 30 s (a burst of 6 for the buckets): TTLs of seconds, so one
        // ten times too short is far outside 2 ms.
        let mut spec = QuotaSpec::new(policy, 3, 30.0);
        if policy.is_bucket() {
            spec = spec.burst(6);
        }
        let quota = spec.build().unwrap();
        let quotas = std::slice::from_ref(&quota);
        let key = format!("ttl:{policy}:one");
        let keys = [key.as_str()];

        // A single quota's reset_after is its key's expiry: what the call
        // reported, less the time until the PTTL was read.
        let started = Instant::now();
        let first = apply(&store, &keys, quotas, 1, Op::Decide);
        let pttl = assert_ttl_is_expiry(&mut conn, &key, &quota);
        let took_ms = started.elapsed().as_millis() as i64;
        let reset_ms = first.reset_after_us.div_ceil(1000) as i64;
        assert!(
            pttl <= reset_ms && reset_ms - pttl <= took_ms + 2,
            "{policy}: PTTL {pttl} ms after reset_after {reset_ms} ms"
        );
        assert!(pttl > 1000, "{policy}: PTTL {pttl} ms");

        // Fuller, then partly refunded: each write moves the expiry with it.
        assert!(apply(&store, &keys, quotas, 2, Op::Decide).allowed);
        let fuller = assert_ttl_is_expiry(&mut conn, &key, &quota);
        apply(&store, &keys, quotas, 1, Op::Refund);
        let refunded = assert_ttl_is_expiry(&mut conn, &key, &quota);
        if policy.is_bucket() {
            assert!(
                fuller > pttl && refunded < fuller,
                "{policy}: {pttl} {fuller} {refunded}"
            );
        }

        // Refunded to nothing: a bucket or a sliding window has no state
        // left and the key goes; a fixed window keeps its end with no calls
        // counted, until that end.
        apply(&store, &keys, quotas, 6, Op::Refund);
        let (value, pttl, _) = read(&mut conn, &key);
        if policy == Policy::FixedWindow {
            assert_eq!(
                value.as_deref().map(|v| v.split(' ').next()),
                Some(Some("0"))
            );
            assert_ttl_is_expiry(&mut conn, &key, &quota);
        } else {
            assert_eq!((value, pttl), (None, -2), "{policy}: refunded to nothing");
        }

        // A limit of several rates: one key per quota, each with its own expiry.
        let quotas = [
            QuotaSpec::new(policy, 2, 20.0).build().unwrap(),
            QuotaSpec::new(policy, 5, 600.0).build().unwrap(),
        ];
        let (short_key, long_key) = (
            format!("ttl:{policy}:{{several}}:2per20"),
            format!("ttl:{policy}:{{several}}:5per600"),
        );
        let keys = [short_key.as_str(), long_key.as_str()];
        assert!(apply(&store, &keys, &quotas, 1, Op::Decide).allowed);
        let short = assert_ttl_is_expiry(&mut conn, keys[0], &quotas[0]);
        let long = assert_ttl_is_expiry(&mut conn, keys[1], &quotas[1]);
        assert!(
            short < 50_000 && long > 100_000,
            "{policy}: {short} ms and {long} ms"
        );
        // Refused by the first quota: nothing is written, no TTL moves on.
        assert!(apply(&store, &keys, &quotas, 1, Op::Decide).allowed);
        let before = assert_ttl_is_expiry(&mut conn, keys[1], &quotas[1]);
        assert!(!apply(&store, &keys, &quotas, 1, Op::Decide).allowed);
        let after = assert_ttl_is_expiry(&mut conn, keys[1], &quotas[1]);
        assert!(after <= before, "{policy}: a refusal moved a TTL");
    }
}
