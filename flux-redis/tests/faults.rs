//! What Redis trouble looks like from the store: every call comes back within
//! about `timeout_ms` with an error that says "connectivity" (so a limiter can
//! fail open or closed), and the same store recovers when Redis does.

mod support;

use std::time::{Duration, Instant};

use flux_core::{Policy, Quota, QuotaSpec, Request, Store, StoreError, Unavailable};
use flux_redis::{RedisConfig, RedisStore};
use support::{DeadPort, Proxy, RedisServer, Rng};

const TIMEOUT_MS: u64 = 200;
/// What "about timeout_ms" allows on a shared two-core machine.
const SLACK: Duration = Duration::from_millis(250);

fn store(port: u16) -> RedisStore {
    RedisStore::connect(&RedisConfig {
        timeout_ms: TIMEOUT_MS,
        pool_size: 3,
        ..RedisConfig::host_port("127.0.0.1", port)
    })
    .expect("connect is lazy: it never fails for want of Redis")
}

fn daily(policy: Policy, requests: u64) -> Quota {
    QuotaSpec::new(policy, requests, 86_400.0).build().unwrap()
}

/// Runs `f`, checks it failed for want of Redis within about the timeout.
fn fails_in_time<T: std::fmt::Debug>(what: &str, f: impl FnOnce() -> Result<T, StoreError>) {
    let start = Instant::now();
    let err = f().expect_err(what);
    let took = start.elapsed();
    assert!(err.is_unavailable(), "{what}: {err}");
    assert!(
        took < Duration::from_millis(TIMEOUT_MS) + SLACK,
        "{what} took {took:?}: {err}"
    );
}

#[test]
fn redis_not_running_fails_each_call_within_the_timeout() {
    let nowhere = DeadPort::new();
    let store = store(nowhere.port);
    let quota = daily(Policy::Gcra, 10);
    for _ in 0..3 {
        fails_in_time("decide", || store.decide("down:a", &quota, 1));
    }
    let start = Instant::now();
    let batch = store.decide_many(&[
        Request {
            key: "down:a",
            quota: &quota,
            cost: 1,
        },
        Request {
            key: "down:b",
            quota: &quota,
            cost: 1,
        },
    ]);
    assert!(start.elapsed() < Duration::from_millis(TIMEOUT_MS) + SLACK);
    assert!(batch
        .iter()
        .all(|r| r.as_ref().unwrap_err().is_unavailable()));
    fails_in_time("preload", || store.preload(&[]));
    fails_in_time("clear_prefix", || store.clear_prefix("down:"));

    // A mistake is still a mistake, not an outage, and needs no Redis to find.
    let err = store.decide("down:a", &quota, 0).unwrap_err();
    assert!(
        matches!(err, StoreError::Quota(_)) && !err.is_unavailable(),
        "{err}"
    );
}

#[test]
fn a_redis_killed_and_restarted_on_the_same_port_is_used_again() {
    let mut server = RedisServer::start();
    let store = store(server.port);
    let quota = daily(Policy::FixedWindow, 5);
    for expected in [4, 3, 2] {
        assert_eq!(
            store.decide("restart:a", &quota, 1).unwrap().remaining,
            expected
        );
    }

    // Killed: calls fail in time, the store stays.
    server.kill();
    for _ in 0..2 {
        fails_in_time("decide while down", || store.decide("restart:a", &quota, 1));
    }

    // Back on the same port (empty, without the scripts): the next call works.
    server.restart();
    let d = store.decide("restart:a", &quota, 1).unwrap();
    assert!(d.allowed && d.remaining == 4, "{d:?}");

    // Restarted while the pool's connections sat idle (made by calls at
    // once, so likely several). The call that finds its connection dead
    // fails: it was written before the connection was found closed, and
    // what may have reached Redis is never sent again. The connections as
    // old as it are then checked with a PING before use: no other call fails,
    // and every call that was answered counted once.
    let start = std::sync::Barrier::new(3);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                start.wait();
                store.decide("restart:c", &quota, 1).unwrap();
            });
        }
    });
    server.restart();
    let (answered, failed): (Vec<_>, Vec<_>) = (0..6)
        .map(|_| store.decide("restart:b", &quota, 1))
        .partition(Result::is_ok);
    assert!(failed.len() <= 1, "{failed:?}");
    assert!(failed.iter().all(|e| matches!(
        e,
        Err(StoreError::Unavailable {
            why: Unavailable::Unreachable,
            ..
        })
    )));
    let remaining: Vec<u64> = answered.into_iter().map(|d| d.unwrap().remaining).collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0, 0][..remaining.len()]);
}

#[test]
fn a_stopped_redis_times_out_each_call_then_the_store_recovers() {
    let server = RedisServer::start();
    let store = store(server.port);
    let quota = daily(Policy::SlidingWindow, 10);
    for _ in 0..3 {
        store.decide("stop:warm", &quota, 1).unwrap();
    }

    server.pause();
    for i in 0..4 {
        fails_in_time("decide while stopped", || {
            store.decide(&format!("stop:paused:{i}"), &quota, 1)
        });
    }
    server.resume();

    // Every connection that timed out was dropped, so no later call reads a
    // reply meant for another: each fresh key starts from the top.
    for i in 0..12 {
        let d = store.decide(&format!("stop:after:{i}"), &quota, 1).unwrap();
        assert!(d.allowed && d.remaining == 9 && d.limit == 10, "{d:?}");
    }
}

/// The fixed window's count for `key`, as Redis holds it ("count end").
fn count(server: &RedisServer, key: &str) -> u64 {
    let value = server.cli(&["GET", key]);
    value.split(' ').next().unwrap().parse().unwrap_or(0)
}

#[test]
fn a_call_whose_reply_was_lost_is_not_sent_again() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let store = store(proxy.port);
    let quota = daily(Policy::FixedWindow, 10);
    store
        .preload_scripts(&[std::slice::from_ref(&quota)])
        .unwrap();
    assert_eq!(store.decide("lost:a", &quota, 1).unwrap().remaining, 9);

    // Redis runs the call; the connection breaks before its answer arrives.
    proxy.drop_next_reply();
    let lost = store.decide("lost:a", &quota, 1);
    assert_eq!(count(&server, "lost:a"), 2, "sent once: {lost:?}");
    assert!(lost.unwrap_err().is_unavailable());
    assert_eq!(store.decide("lost:a", &quota, 1).unwrap().remaining, 7);

    // The same for a batch (one pipeline).
    let requests = [
        Request {
            key: "lost:b",
            quota: &quota,
            cost: 1,
        },
        Request {
            key: "lost:c",
            quota: &quota,
            cost: 2,
        },
    ];
    store.decide_many(&requests);
    proxy.drop_next_reply();
    let lost = store.decide_many(&requests);
    assert_eq!(
        (count(&server, "lost:b"), count(&server, "lost:c")),
        (2, 4),
        "sent once: {lost:?}"
    );
    assert!(lost
        .iter()
        .all(|r| r.as_ref().unwrap_err().is_unavailable()));
    let after: Vec<u64> = store
        .decide_many(&requests)
        .into_iter()
        .map(|r| r.unwrap().remaining)
        .collect();
    assert_eq!(after, [7, 4]);
}

#[test]
fn script_flush_is_transparent_to_single_and_batched_decisions() {
    let server = RedisServer::start();
    let store = store(server.port);
    let quotas: Vec<Quota> = Policy::ALL.iter().map(|&p| daily(p, 10)).collect();
    let keys: Vec<String> = Policy::ALL.iter().map(|p| format!("flush:{p}")).collect();
    for (key, quota) in keys.iter().zip(&quotas) {
        assert_eq!(store.decide(key, quota, 1).unwrap().remaining, 9);
    }

    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    for (key, quota) in keys.iter().zip(&quotas) {
        assert_eq!(store.decide(key, quota, 1).unwrap().remaining, 8);
    }

    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let requests: Vec<Request<'_>> = keys
        .iter()
        .zip(&quotas)
        .flat_map(|(key, quota)| [1, 2].map(|cost| Request { key, quota, cost }))
        .collect();
    let remaining: Vec<u64> = store
        .decide_many(&requests)
        .into_iter()
        .map(|r| r.unwrap().remaining)
        .collect();
    assert_eq!(remaining, [7, 5].repeat(Policy::ALL.len()));
}

#[test]
fn every_key_written_has_a_ttl_and_clear_prefix_removes_exactly_the_prefix() {
    let server = RedisServer::start();
    let store = store(server.port);
    server.cli(&["SET", "other:key", "kept"]);
    server.cli(&["SET", "ttlX:looks-alike", "kept"]);
    let quotas: Vec<Quota> = Policy::ALL
        .iter()
        .map(|&p| QuotaSpec::new(p, 5, 60.0).build().unwrap())
        .collect();
    let mut rng = Rng::new(7);
    let mut written = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let quota = &quotas[rng.range(0, 4) as usize];
        let key = format!("ttl*:{}:{}", quota.policy(), rng.range(0, 19));
        if store.decide(&key, quota, 1).unwrap().allowed {
            written.insert(key);
        }
    }

    let keys: Vec<String> = server
        .cli(&["--scan", "--pattern", "ttl\\*:*"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(keys.len(), written.len());
    for key in &keys {
        let ttl: i64 = server.cli(&["PTTL", key]).parse().unwrap();
        // At most two periods (sliding_window's reset), never without expiry.
        assert!((1..=120_000).contains(&ttl), "{key} has PTTL {ttl}");
    }

    // The `*` in the prefix is a literal, not a glob.
    assert_eq!(store.clear_prefix("ttl*:").unwrap(), written.len() as u64);
    assert_eq!(server.cli(&["DBSIZE"]), "2");
    assert_eq!(server.cli(&["GET", "ttlX:looks-alike"]), "kept");
    let err = store.clear_prefix("").unwrap_err();
    assert!(!err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string()
            .contains("clear_prefix needs a prefix: an empty one would clear the whole database"),
        "{err}"
    );
    assert_eq!(server.cli(&["DBSIZE"]), "2");
}
