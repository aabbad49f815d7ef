//! The store on a Redis Cluster of three primaries started by the test: keys
//! land on every primary, single and batched decisions enforce limits
//! exactly, scripts missing on a node are loaded there, clearing a prefix
//! reaches every node, a slot that moved is followed, a slot migrating with
//! keys in it is followed by ASK, TRYAGAIN is tried again for the bounded
//! rounds then fails, and redirects that never settle hold no call beyond
//! `timeout_ms`. A limit of several rates keeps each caller's keys on one
//! node and decides them all or none.

mod support;

use std::time::{Duration, Instant};

use flux_core::{storage_key, Call, Op, Policy, Quota, QuotaSpec, Request, Store};
use flux_redis::{RedisConfig, RedisStore};
use support::{RedisCluster, RedisServer};

const KEYS_PER_POLICY: usize = 40;
const BOUND: u64 = 5;

/// One cluster for every scenario, in turn: starting one takes seconds.
#[test]
fn a_three_primary_cluster() {
    let cluster = RedisCluster::start(3);
    spreads_keys_and_enforces_limits_exactly(&cluster);
    several_rates_decide_together_on_every_primary(&cluster);
    a_batch_follows_a_slot_that_moved_to_another_primary(&cluster);
    redirects_that_never_settle_hold_no_call_beyond_timeout_ms(&cluster);
    asked_calls_follow_a_live_migration_and_are_counted_once(&cluster);
    tryagain_is_retried_for_the_bounded_rounds_then_fails(&cluster);
}

/// Callers of "3/hour;5/day" spread over every primary, decided one by one
/// and in batches: each caller's keys share a slot (one script call each),
/// three are admitted, and a refusal leaves both keys as they were.
fn several_rates_decide_together_on_every_primary(cluster: &RedisCluster) {
    use flux_core::config::Config;
    use flux_core::{apply_batch, hash_tag, BatchRequest, LimitSpec, Limiter, Op};

    let config = Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"{}\"\ncluster = true\ntimeout_ms = 2000\n\
             [flux]\njitter_enabled = false\nlocal_cache_size = 0\n",
            cluster.url()
        ),
        None,
    )
    .unwrap();
    let spec = LimitSpec {
        rate: Some(flux_core::parse_rates("3/hour;5/day").unwrap()),
        ..LimitSpec::default()
    };
    let backend = flux_redis::open(&config).unwrap().backend;
    let limiter = Limiter::new(backend, &config, "several", None, &spec).unwrap();
    let callers: Vec<String> = (0..30).map(|i| format!("caller-{i}")).collect();
    let mut nodes = std::collections::HashSet::new();
    for caller in &callers {
        let keys = limiter.keys(None, caller.as_bytes());
        assert_eq!(
            hash_tag(keys[0].as_bytes()),
            hash_tag(keys[1].as_bytes()),
            "{keys:?}"
        );
        let slot: u16 = cluster.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", &keys[0]])
            .parse()
            .unwrap();
        nodes.insert(owner(cluster, slot));
    }
    assert_eq!(nodes.len(), 3, "the callers reach every primary");
    // Both keys of every caller, as the node holding them has them.
    let state = || -> Vec<String> {
        callers
            .iter()
            .flat_map(|c| limiter.keys(None, c.as_bytes()))
            .map(|key| {
                let slot: u16 = cluster.nodes[0]
                    .cli(&["CLUSTER", "KEYSLOT", &key])
                    .parse()
                    .unwrap();
                cluster.nodes[owner(cluster, slot)].cli(&["GET", &key])
            })
            .collect()
    };
    let mut after_admissions = Vec::new();
    for round in 0..5 {
        if round == 3 {
            after_admissions = state();
            assert!(after_admissions.iter().all(|v| !v.is_empty()));
        }
        let decisions: Vec<bool> = if round % 2 == 0 {
            let requests: Vec<BatchRequest<'_>> = callers
                .iter()
                .map(|c| BatchRequest {
                    limiter: &limiter,
                    endpoint: None,
                    identity: c.as_bytes(),
                    cost: 1,
                    op: Op::Decide,
                })
                .collect();
            apply_batch(&requests)
                .into_iter()
                .map(|d| d.unwrap().allowed)
                .collect()
        } else {
            callers
                .iter()
                .map(|c| limiter.decide(c.as_bytes(), 1).unwrap().allowed)
                .collect()
        };
        assert!(decisions.iter().all(|&a| a == (round < 3)), "round {round}");
    }
    assert_eq!(state(), after_admissions, "a refusal charged a quota");
}

fn spreads_keys_and_enforces_limits_exactly(cluster: &RedisCluster) {
    let store = RedisStore::connect(&RedisConfig {
        timeout_ms: 2_000,
        ..RedisConfig::from_url(cluster.url())
    })
    .unwrap();
    assert!(store.is_cluster());

    // 5 a day: nothing refills during the test.
    let quotas: Vec<Quota> = Policy::ALL
        .iter()
        .map(|&p| QuotaSpec::new(p, BOUND, 86_400.0).build().unwrap())
        .collect();
    let limits: Vec<&[Quota]> = quotas.iter().map(std::slice::from_ref).collect();
    store.preload_scripts(&limits).unwrap();
    let keys: Vec<(String, &Quota)> = quotas
        .iter()
        .flat_map(|quota| {
            (0..KEYS_PER_POLICY).map(move |i| {
                let identity = format!("client-{i}");
                let key = storage_key("flux:", "cluster", quota.policy(), identity.as_bytes());
                (key, quota)
            })
        })
        .collect();

    // Rounds alternate between one batch of every key (a pipeline per
    // primary) and one call per key; nodes lose their scripts midway.
    for round in 0..BOUND + 2 {
        if round == 2 || round == 3 {
            // Before a batch and before single calls.
            assert_eq!(
                cluster.nodes[round as usize - 1].cli(&["SCRIPT", "FLUSH"]),
                "OK"
            );
        }
        let decisions: Vec<_> = if round % 2 == 0 {
            let requests: Vec<Request<'_>> = keys
                .iter()
                .map(|(key, quota)| Request {
                    key,
                    quota,
                    cost: 1,
                })
                .collect();
            store.decide_many(&requests)
        } else {
            keys.iter()
                .map(|(key, quota)| store.decide(key, quota, 1))
                .collect()
        };
        for ((key, quota), decision) in keys.iter().zip(decisions) {
            let d = decision.unwrap();
            let allowed = round < BOUND;
            assert_eq!(
                d.allowed,
                allowed,
                "{} round {round}: {key}",
                quota.policy()
            );
            let remaining = if allowed { BOUND - 1 - round } else { 0 };
            assert_eq!(
                d.remaining,
                remaining,
                "{} round {round}: {key}",
                quota.policy()
            );
        }
    }

    // Every primary holds some of the keys, and each key is on exactly one.
    let total: usize = cluster
        .nodes
        .iter()
        .map(|node| {
            let n: usize = node.cli(&["DBSIZE"]).parse().unwrap();
            assert!(n > 0, "no key on node {}", node.port);
            n
        })
        .sum();
    assert_eq!(total, keys.len());

    // `cluster = true` with a plain URL naming one node finds the rest.
    let seed = RedisStore::connect(&RedisConfig {
        cluster: true,
        timeout_ms: 2_000,
        ..RedisConfig::from_url(cluster.nodes[2].url())
    })
    .unwrap();
    let (key, quota) = &keys[0];
    assert!(!seed.decide(key, quota, 1).unwrap().allowed);

    assert_eq!(
        store.clear_prefix("flux:cluster:").unwrap(),
        keys.len() as u64
    );
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["DBSIZE"]), "0");
    }
}

fn node_id(cluster: &RedisCluster, index: usize) -> String {
    cluster.nodes[index]
        .cli(&["CLUSTER", "MYID"])
        .trim()
        .to_owned()
}

/// What each of `keys` has left after one call of cost 1 on each, decided
/// as one batch.
fn remaining_after_batch(store: &RedisStore, quota: &Quota, keys: &[&str]) -> Vec<u64> {
    let requests: Vec<Request<'_>> = keys
        .iter()
        .map(|key| Request {
            key,
            quota,
            cost: 1,
        })
        .collect();
    store
        .decide_many(&requests)
        .into_iter()
        .map(|d| d.unwrap().remaining)
        .collect()
}

/// The node that owns `slot`, by `CLUSTER NODES`.
fn owner(cluster: &RedisCluster, slot: u16) -> usize {
    let port = cluster.nodes[0].slot_owner_port(slot);
    cluster.nodes.iter().position(|n| n.port == port).unwrap()
}

fn a_batch_follows_a_slot_that_moved_to_another_primary(cluster: &RedisCluster) {
    let store = RedisStore::connect(&RedisConfig {
        timeout_ms: 2_000,
        ..RedisConfig::from_url(cluster.url())
    })
    .unwrap();
    let quota = QuotaSpec::new(Policy::FixedWindow, 3, 86_400.0)
        .build()
        .unwrap();
    let others: Vec<String> = (0..30).map(|i| format!("moved:other:{i}")).collect();
    let batch = |keys: &[&str]| remaining_after_batch(&store, &quota, keys);
    // The store learns the slot map.
    let mut keys: Vec<&str> = others.iter().map(String::as_str).collect();
    assert!(batch(&keys).iter().all(|&r| r == 2));

    // An empty slot moves from its primary to another; the store's map is stale.
    let key = "moved:key";
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", key])
        .parse()
        .unwrap();
    let from = owner(cluster, slot);
    assert_eq!(
        cluster.nodes[from].cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]),
        "0"
    );
    let to = (from + 1) % cluster.nodes.len();
    let to_id = node_id(cluster, to);
    for i in [to, from, (from + 2) % cluster.nodes.len()] {
        assert_eq!(
            cluster.nodes[i].cli(&["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to_id]),
            "OK"
        );
    }
    assert_eq!(owner(cluster, slot), to);

    // Batches with the moved key still decide every call once, on the new owner.
    keys.insert(7, key);
    let first = batch(&keys);
    assert_eq!(first[7], 2);
    assert!(first.iter().enumerate().all(|(i, &r)| i == 7 || r == 1));
    assert_eq!(batch(&[key, key]), [1, 0]);
    assert_eq!(cluster.nodes[to].cli(&["EXISTS", key]), "1");
    assert_eq!(
        cluster.nodes[from].cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]),
        "0"
    );
}

/// A slot its owner says is migrating to a node that does not import it:
/// the owner answers `ASK` for keys it lacks, the other `MOVED` back. A
/// batch with thousands of keys there (and others elsewhere) still returns
/// within about `timeout_ms`: the calls there fail as Redis failing (a
/// limiter may fail open), the others are decided exactly once.
fn redirects_that_never_settle_hold_no_call_beyond_timeout_ms(cluster: &RedisCluster) {
    const TIMEOUT_MS: u64 = 200;
    let store = RedisStore::connect(&RedisConfig {
        timeout_ms: TIMEOUT_MS,
        ..RedisConfig::from_url(cluster.url())
    })
    .unwrap();
    let quota = QuotaSpec::new(Policy::FixedWindow, 3, 86_400.0)
        .build()
        .unwrap();
    store
        .preload_scripts(&[std::slice::from_ref(&quota)])
        .unwrap();
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", "{loop}"])
        .parse()
        .unwrap();
    let from = owner(cluster, slot);
    let to_id = node_id(cluster, (from + 1) % cluster.nodes.len());
    let looping: Vec<String> = (0..4000).map(|i| format!("{{loop}}:{i}")).collect();
    let elsewhere: Vec<String> = (0..30).map(|i| format!("settled:{i}")).collect();
    // The store learns the slot map while it is sound.
    let warm = Request {
        key: &elsewhere[0],
        quota: &quota,
        cost: 1,
    };
    assert_eq!(store.decide_many(&[warm])[0].as_ref().unwrap().remaining, 2);
    assert_eq!(
        cluster.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot.to_string(), "MIGRATING", &to_id]),
        "OK"
    );

    let requests: Vec<Request<'_>> = elsewhere
        .iter()
        .chain(&looping)
        .map(|key| Request {
            key,
            quota: &quota,
            cost: 1,
        })
        .collect();
    let bound = Duration::from_millis(TIMEOUT_MS) + Duration::from_millis(400);
    let started = Instant::now();
    let results = store.decide_many(&requests);
    let took = started.elapsed();
    let single = Instant::now();
    let alone = store.decide(&looping[0], &quota, 1);
    let single = single.elapsed();
    assert_eq!(
        cluster.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot.to_string(), "STABLE"]),
        "OK"
    );

    assert!(took < bound, "a batch took {took:?}");
    assert!(single < bound, "a single call took {single:?}");
    let (settled, stuck) = results.split_at(elsewhere.len());
    let remaining: Vec<u64> = settled
        .iter()
        .map(|r| r.as_ref().unwrap().remaining)
        .collect();
    assert_eq!(remaining[0], 1);
    assert!(remaining[1..].iter().all(|&r| r == 2), "{remaining:?}");
    for result in stuck.iter().chain([&alone]) {
        let err = result.as_ref().unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }

    // Settled again, every key decides, counted once.
    let again: Vec<u64> = store
        .decide_many(&requests)
        .into_iter()
        .map(|r| r.unwrap().remaining)
        .collect();
    assert_eq!(again[0], 0);
    assert!(again[1..elsewhere.len()].iter().all(|&r| r == 1));
    assert!(
        again[elsewhere.len()..].iter().all(|&r| r == 2),
        "stuck calls counted"
    );
}

/// The rounds a call makes at most before it fails (cluster.rs `MAX_ROUNDS`).
const MAX_ROUNDS: u64 = 5;

/// How many error replies starting `code` (MOVED, ASK, TRYAGAIN) the node
/// has given, by `INFO errorstats`.
fn errors(node: &RedisServer, code: &str) -> u64 {
    node.cli(&["INFO", "errorstats"])
        .lines()
        .find_map(|line| line.strip_prefix(&format!("errorstat_{code}:count=")))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// `slot` starts moving from node `from` to node `to`, as `redis-cli
/// --cluster reshard` does: `to` imports it, `from` migrates it.
fn start_migration(cluster: &RedisCluster, slot: u16, from: usize, to: usize) {
    let slot = slot.to_string();
    let (from_id, to_id) = (node_id(cluster, from), node_id(cluster, to));
    assert_eq!(
        cluster.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
        "OK"
    );
    assert_eq!(
        cluster.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
        "OK"
    );
}

/// Moves `keys` of a migrating slot from node `from` to node `to`.
fn migrate(cluster: &RedisCluster, from: usize, to: usize, keys: &[&str]) {
    let port = cluster.nodes[to].port.to_string();
    let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    args.extend(keys);
    assert_eq!(cluster.nodes[from].cli(&args), "OK");
}

/// The slot's migration ends: every node says `to` owns it.
fn finish_migration(cluster: &RedisCluster, slot: u16, to: usize) {
    let (slot, to_id) = (slot.to_string(), node_id(cluster, to));
    for node in &cluster.nodes {
        assert_eq!(
            node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]),
            "OK"
        );
    }
}

fn keyslot(cluster: &RedisCluster, key: &str) -> u16 {
    cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", key])
        .parse()
        .unwrap()
}

/// A slot migrating with keys in it: calls on keys still on the old owner
/// run there; calls on keys already moved (or new) are answered ASK and run
/// on the new owner after ASKING; each is charged once, in batches and
/// single calls, and the counts survive the end of the migration.
fn asked_calls_follow_a_live_migration_and_are_counted_once(cluster: &RedisCluster) {
    let store = RedisStore::connect(&RedisConfig {
        timeout_ms: 2_000,
        ..RedisConfig::from_url(cluster.url())
    })
    .unwrap();
    let quota = QuotaSpec::new(Policy::FixedWindow, 3, 86_400.0)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..10).map(|i| format!("{{migrating}}:{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let batch = |keys: &[&str]| remaining_after_batch(&store, &quota, keys);
    assert_eq!(batch(&keys[..8]), [2; 8]);

    let slot = keyslot(cluster, keys[0]);
    let from = owner(cluster, slot);
    let to = (from + 1) % cluster.nodes.len();
    let (old, new) = (&cluster.nodes[from], &cluster.nodes[to]);
    start_migration(cluster, slot, from, to);
    migrate(cluster, from, to, &keys[..4]);
    let asked = errors(old, "ASK");

    // 0..4 moved, 4..8 not yet, 8 and 9 new: ASK sends them to the new owner.
    assert_eq!(batch(&keys), [1, 1, 1, 1, 1, 1, 1, 1, 2, 2]);
    assert_eq!(
        errors(old, "ASK") - asked,
        6,
        "one ASK per call not on the old owner"
    );
    let on = |node: &RedisServer| -> Vec<String> {
        let mut held: Vec<String> = node
            .cli(&["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "100"])
            .lines()
            .map(str::to_owned)
            .collect();
        held.sort();
        held
    };
    let named = |range: &[&str]| -> Vec<String> { range.iter().map(|k| k.to_string()).collect() };
    assert_eq!(on(old), named(&keys[4..8]));
    assert_eq!(on(new), named(&[&keys[..4], &keys[8..]].concat()));
    // Single calls, on either side.
    for key in [keys[0], keys[5], keys[9]] {
        assert_eq!(
            store.decide(key, &quota, 1).unwrap().remaining,
            if key == keys[9] { 1 } else { 0 }
        );
    }

    migrate(cluster, from, to, &keys[4..8]);
    finish_migration(cluster, slot, to);
    assert_eq!(owner(cluster, slot), to);
    // Every count made it across: 0 and 5 are spent, the others one short.
    let after: Vec<bool> = keys
        .iter()
        .map(|key| store.decide(key, &quota, 1).unwrap().allowed)
        .collect();
    assert_eq!(
        after,
        [false, true, true, true, true, false, true, true, true, true]
    );
    assert_eq!(
        old.cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]),
        "0"
    );
}

/// A limit of two rates on a slot in the middle of its migration, with one
/// of the caller's keys moved and the other not: neither node can run the
/// script (TRYAGAIN). The call is tried again for the bounded rounds, then
/// fails as Redis failing, charging nothing, while the other calls of its
/// batch are decided once; single calls alike. Once the slot has moved,
/// it decides.
fn tryagain_is_retried_for_the_bounded_rounds_then_fails(cluster: &RedisCluster) {
    let store = RedisStore::connect(&RedisConfig {
        timeout_ms: 2_000,
        ..RedisConfig::from_url(cluster.url())
    })
    .unwrap();
    let quotas = [
        QuotaSpec::new(Policy::Gcra, 2, 60.0).build().unwrap(),
        QuotaSpec::new(Policy::Gcra, 5, 86_400.0).build().unwrap(),
    ];
    let (a, b) = ("{split}:2per60", "{split}:5per86400");
    let split = [a, b];
    let call = Call {
        keys: &split,
        quotas: &quotas,
        cost: 1,
        op: Op::Decide,
    };
    assert_eq!(store.apply(&call).unwrap().remaining, 1);

    let slot = keyslot(cluster, a);
    let from = owner(cluster, slot);
    let to = (from + 1) % cluster.nodes.len();
    let old = &cluster.nodes[from];
    start_migration(cluster, slot, from, to);
    migrate(cluster, from, to, &[a]);

    let elsewhere: Vec<String> = (0..6).map(|i| format!("settled:tryagain:{i}")).collect();
    let others: Vec<[&str; 1]> = elsewhere.iter().map(|k| [k.as_str()]).collect();
    let mut calls: Vec<Call<'_>> = others
        .iter()
        .map(|keys| Call {
            keys,
            quotas: &quotas[..1],
            cost: 1,
            op: Op::Decide,
        })
        .collect();
    calls.insert(3, call);
    let tried = errors(old, "TRYAGAIN");
    let results = store.apply_many(&calls);
    assert_eq!(
        errors(old, "TRYAGAIN") - tried,
        MAX_ROUNDS,
        "rounds of a batch"
    );
    for (i, result) in results.iter().enumerate() {
        if i == 3 {
            let err = result.as_ref().unwrap_err();
            assert!(err.is_unavailable(), "{err}");
            assert!(err.to_string().contains("TRYAGAIN"), "{err}");
        } else {
            assert_eq!(result.as_ref().unwrap().remaining, 1, "call {i}");
        }
    }
    let err = store.apply(&call).unwrap_err();
    assert!(
        err.is_unavailable() && err.to_string().contains("TRYAGAIN"),
        "{err}"
    );
    assert_eq!(
        errors(old, "TRYAGAIN") - tried,
        2 * MAX_ROUNDS,
        "rounds of a single call"
    );

    // Nothing was charged meanwhile: the first call left 1.
    migrate(cluster, from, to, &[b]);
    finish_migration(cluster, slot, to);
    assert_eq!(store.apply(&call).unwrap().remaining, 0);
    assert!(!store.apply(&call).unwrap().allowed);
}
