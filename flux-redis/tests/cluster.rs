//! The store on a Redis Cluster of three primaries started by the test: keys
//! land on every primary, single and batched decisions enforce limits
//! exactly, scripts missing on a node are loaded there, and clearing a prefix
//! reaches every node.

mod support;

use flux_core::{storage_key, Policy, Quota, QuotaSpec, Request, Store};
use flux_redis::{RedisOptions, RedisStore};
use support::RedisCluster;

const KEYS_PER_POLICY: usize = 40;
const BOUND: u64 = 5;

#[test]
fn a_three_primary_cluster_spreads_keys_and_enforces_limits_exactly() {
    let cluster = RedisCluster::start(3);
    let store = RedisStore::connect(&RedisOptions {
        timeout_ms: 2_000,
        ..RedisOptions::from_url(cluster.url())
    })
    .unwrap();
    assert!(store.is_cluster());
    store.preload_scripts().unwrap();

    // 5 a day: nothing refills during the test.
    let quotas: Vec<Quota> = Policy::ALL
        .iter()
        .map(|&p| QuotaSpec::new(p, BOUND, 86_400.0).build().unwrap())
        .collect();
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
    // primary) and one call per key; a node loses its scripts midway.
    for round in 0..BOUND + 2 {
        if round == 3 {
            assert_eq!(cluster.nodes[1].cli(&["SCRIPT", "FLUSH"]), "OK");
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
    let seed = RedisStore::connect(&RedisOptions {
        cluster: true,
        timeout_ms: 2_000,
        ..RedisOptions::from_url(cluster.nodes[2].url())
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
