//! The local deny cache against a real redis-server: a hot key hammered
//! through a limiter with the cache and through one without it, at the same
//! injected instants, gets the same decisions, field for field (all but
//! `source`), in every policy; the cached run sends Redis only a fraction of
//! the calls.

mod support;

use std::sync::Arc;

use flux_core::analytics::Analytics;
use flux_core::config::Config;
use flux_core::{
    parse_rates, Backend, Decision, LimitSpec, Limiter, ManualClock, Op, Policy, Source,
};
use flux_redis::{RedisConfig, RedisStore, TimeSource};
use support::{RedisServer, Rng};

const STEPS: usize = 3_000;

/// A limiter under `prefix` on `server`, deciding at `clock`'s time, with a
/// deny cache when `cached`.
fn limiter(
    server: &RedisServer,
    clock: &ManualClock,
    prefix: &str,
    cached: bool,
    spec: &LimitSpec,
) -> Limiter {
    let store = RedisStore::connect(&RedisConfig {
        timeout_ms: 5_000,
        ..RedisConfig::from_url(server.url())
    })
    .unwrap()
    .with_time_source(TimeSource::Clock(Arc::new(clock.clone())));
    let mut backend = Backend::new(Arc::new(store), Arc::new(Analytics::default()));
    if cached {
        backend = backend.with_local_cache(1_000, Arc::new(clock.clone()));
    }
    let config = Config::from_toml_str(
        &format!("[flux]\nkey_prefix = \"{prefix}\"\njitter_enabled = false\n"),
        None,
    )
    .unwrap();
    Limiter::new(Arc::new(backend), &config, "hot", None, spec).unwrap()
}

fn limits() -> Vec<(&'static str, LimitSpec)> {
    let rate = |policy: Policy, requests: u64, period: f64| LimitSpec {
        policy: Some(policy),
        requests: Some(requests),
        period: Some(period),
        ..LimitSpec::default()
    };
    vec![
        ("gcra", rate(Policy::Gcra, 5, 1.0)),
        (
            "token_bucket",
            LimitSpec {
                burst: Some(8),
                ..rate(Policy::TokenBucket, 3, 0.7)
            },
        ),
        ("leaky_bucket", rate(Policy::LeakyBucket, 4, 1.3)),
        (
            "leaky_bucket shaping",
            LimitSpec {
                max_wait: Some(0.4),
                ..rate(Policy::LeakyBucket, 4, 1.0)
            },
        ),
        ("fixed_window", rate(Policy::FixedWindow, 6, 1.1)),
        ("sliding_window", rate(Policy::SlidingWindow, 5, 0.9)),
        (
            "gcra, two rates",
            LimitSpec {
                policy: Some(Policy::Gcra),
                rate: Some(parse_rates("3/second;10/5s").unwrap()),
                ..LimitSpec::default()
            },
        ),
    ]
}

/// Everything but where the decision came from.
fn fields(d: &Decision) -> Decision {
    Decision {
        source: Source::Storage,
        ..*d
    }
}

#[test]
fn a_hot_key_gets_the_same_answers_with_and_without_the_cache() {
    let server = RedisServer::start();
    for (seed, (name, spec)) in limits().iter().enumerate() {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let prefix = format!("lc{seed}:");
        let plain = limiter(&server, &clock, &format!("{prefix}plain:"), false, spec);
        let cached = limiter(&server, &clock, &format!("{prefix}cached:"), true, spec);
        let quota = plain.quota();
        let interval = quota.period_us() / quota.requests();
        let mut rng = Rng::new(seed as u64 + 1);
        let (mut hits, mut refusals) = (0, 0);
        for step in 0..STEPS {
            // Hammered: many calls per emission interval, now and then a pause.
            let advance = match rng.range(0, 99) {
                0..=89 => rng.range(0, interval / 8),
                90..=98 => rng.range(0, interval),
                _ => rng.range(0, 3 * quota.period_us()),
            };
            clock.advance_us(advance);
            let cost = if rng.chance(85) { 1 } else { 2 };
            let op = if rng.chance(90) { Op::Decide } else { Op::Peek };
            let want = plain.apply(None, b"attacker", cost, op).unwrap();
            let got = cached.apply(None, b"attacker", cost, op).unwrap();
            assert_eq!(
                fields(&got),
                fields(&want),
                "{name}, step {step}: cost {cost}, {op:?}"
            );
            assert_eq!(want.source, Source::Storage);

            if got.source == Source::LocalCache {
                hits += 1;
            }
            refusals += usize::from(!want.allowed);
        }
        // Most refusals never reached Redis.
        println!("{name}: {hits} of {refusals} refusals answered from the cache");
        assert!(
            hits * 2 >= refusals,
            "{name}: {hits} of {refusals} refusals from the cache"
        );
    }
}
