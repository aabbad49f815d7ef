//! A process stopped and continued while its calls wait for Redis's replies
//! (SIGSTOP and SIGCONT: what Ctrl-Z and `fg`, `kill -STOP`, a debugger or a
//! profiler attaching do). Linux does not restart a socket read with a
//! timeout after a stop: it fails with EINTR, and no signal mask holds a
//! stop off. Each call must still get the decision Redis made: none fails,
//! and none is reported failed while Redis counted it.
//!
//! Over TCP with an ACL user and a database (the connection's own set-up),
//! over a Unix socket in batches, and on a cluster in batches (one pipeline
//! per primary). One test: it stops the whole test process, every thread.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use flux_core::{Call, Op, Policy, Quota, QuotaSpec, Request, Store};
use flux_redis::{RedisConfig, RedisStore};
use support::{RedisCluster, RedisServer};

/// What a key may admit in a day: far fewer than the calls made on it while
/// the process is stopped and continued, so every outcome is exact.
const LIMIT: u64 = 500;
const STOPS: u32 = 250;
/// Keys a batch decides, each several times.
const KEYS: usize = 3;
const PER_KEY: usize = 4;

#[derive(Debug, Default)]
struct Tally {
    allowed: u64,
    refused: u64,
    errors: Vec<String>,
}

fn store(url: String) -> RedisStore {
    RedisStore::connect(&RedisConfig {
        timeout_ms: 1_000,
        ..RedisConfig::from_url(url)
    })
    .unwrap()
}

/// Decides on `keys` until `done`, one call at a time for one key, else in
/// batches of [`PER_KEY`] calls on each key; tallies what each key got.
fn decide_until(
    done: &AtomicBool,
    store: &RedisStore,
    keys: &[String],
    quota: &Quota,
) -> BTreeMap<String, Tally> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let requests: Vec<Request<'_>> = keys
        .iter()
        .cycle()
        .take(if keys.len() == 1 {
            1
        } else {
            keys.len() * PER_KEY
        })
        .map(|key| Request {
            key,
            quota,
            cost: 1,
        })
        .collect();
    while !done.load(Ordering::Relaxed) {
        let decisions = if requests.len() == 1 {
            vec![store.decide(requests[0].key, quota, 1)]
        } else {
            store.decide_many(&requests)
        };
        for (request, decision) in requests.iter().zip(decisions) {
            let tally = tallies.entry(request.key.to_owned()).or_default();
            match decision {
                Ok(d) if d.allowed => tally.allowed += 1,
                Ok(_) => tally.refused += 1,
                Err(err) => tally.errors.push(err.to_string()),
            }
        }
    }
    tallies
}

/// Stops this process and continues it `times` times, a few milliseconds
/// apart, from a shell of its own (a stopped process cannot continue
/// itself), which continues it whatever ends the shell.
fn stop_and_continue_this_process(times: u32) {
    let pid = std::process::id();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap 'kill -CONT {pid}' EXIT; i=0; while [ $i -lt {times} ]; do \
             kill -STOP {pid}; sleep 0.001; kill -CONT {pid}; sleep 0.005; i=$((i+1)); done"
        ))
        .status()
        .expect("run sh");
    assert!(status.success());
}

#[test]
fn calls_in_a_process_stopped_and_continued_are_decided_by_redis() {
    let server = RedisServer::start();
    assert_eq!(
        server.cli(&["ACL", "SETUSER", "app", "on", ">app-secret", "~*", "+@all"]),
        "OK"
    );
    let cluster = RedisCluster::start(3);
    let quota = QuotaSpec::new(Policy::Gcra, LIMIT, 86_400.0)
        .build()
        .unwrap();
    let cases = [
        (
            "tcp",
            store(format!(
                "redis://app:app-secret@127.0.0.1:{}/2",
                server.port
            )),
            1,
        ),
        ("unix", store(server.unix_url()), KEYS),
        ("cluster", store(cluster.url()), KEYS),
    ];
    let keys: Vec<Vec<String>> = cases
        .iter()
        .map(|(name, _, n)| (0..*n).map(|i| format!("stops:{name}:{i}")).collect())
        .collect();
    for ((_, store, _), keys) in cases.iter().zip(&keys) {
        // Connected before the first stop: the stops meet calls.
        store.ping().unwrap();
        for key in keys {
            store.remove_keys(&[key.as_str()]).unwrap();
        }
    }

    let done = AtomicBool::new(false);
    let tallies: Vec<BTreeMap<String, Tally>> = std::thread::scope(|s| {
        let deciders: Vec<_> = cases
            .iter()
            .zip(&keys)
            .map(|((_, store, _), keys)| s.spawn(|| decide_until(&done, store, keys, &quota)))
            .collect();
        stop_and_continue_this_process(STOPS);
        done.store(true, Ordering::Relaxed);
        deciders.into_iter().map(|d| d.join().unwrap()).collect()
    });

    for ((name, store, _), tallies) in cases.iter().zip(tallies) {
        for (key, tally) in &tallies {
            let calls = tally.allowed + tally.refused + tally.errors.len() as u64;
            let first_errors: Vec<&String> = tally.errors.iter().take(3).collect();
            assert!(
                tally.errors.is_empty(),
                "{name}: {} of {calls} calls failed: {first_errors:?}",
                tally.errors.len()
            );
            assert!(calls > LIMIT, "{name}: only {calls} calls on {key}");
            assert_eq!(
                (tally.allowed, tally.refused),
                (LIMIT, calls - LIMIT),
                "{name}: {key}"
            );
            let peek = Call {
                keys: &[key.as_str()],
                quotas: std::slice::from_ref(&quota),
                cost: 1,
                op: Op::Peek,
            };
            assert_eq!(store.apply(&peek).unwrap().remaining, 0, "{name}: {key}");
        }
    }
    // The ACL user's calls went to its database.
    assert_eq!(server.cli(&["-n", "2", "EXISTS", "stops:tcp:0"]), "1");
    assert_eq!(server.cli(&["EXISTS", "stops:tcp:0"]), "0");
}
