//! Limiter: limits from the configuration with overrides, keys, jitter on
//! refusals, and batches across stores. (Failing open is tested against a
//! missing Redis in flux-ffi/tests/redis.rs.)

use std::sync::Arc;

use flux_core::config::Config;
use flux_core::{storage_key, ManualClock, MemoryStore, Policy, QuotaSpec};
use flux_redis::{decide_batch, Backend, BatchRequest, LimitOverrides, Limiter, LimiterError};

fn config(toml: &str) -> Config {
    Config::from_toml_str(toml, None).expect("valid")
}

fn rate(requests: u64, period: f64) -> LimitOverrides {
    LimitOverrides {
        requests: Some(requests),
        period: Some(period),
        ..LimitOverrides::default()
    }
}

#[test]
fn overrides_replace_what_they_name_and_keep_the_rest() {
    let base = QuotaSpec::new(Policy::LeakyBucket, 5, 60.0)
        .burst(2)
        .max_wait(1.5);
    let period = LimitOverrides {
        period: Some(30.0),
        ..LimitOverrides::default()
    };
    assert_eq!(
        period.apply(&base),
        QuotaSpec::new(Policy::LeakyBucket, 5, 30.0)
            .burst(2)
            .max_wait(1.5)
    );
    // New requests come with their own burst (by default, requests).
    assert_eq!(
        rate(8, 60.0).apply(&base),
        QuotaSpec::new(Policy::LeakyBucket, 8, 60.0).max_wait(1.5)
    );
    // Another policy drops a burst and a max_wait it may not allow.
    let window = LimitOverrides {
        policy: Some(Policy::FixedWindow),
        ..LimitOverrides::default()
    };
    assert_eq!(
        window.apply(&base),
        QuotaSpec::new(Policy::FixedWindow, 5, 60.0)
    );
}

#[test]
fn a_limiter_is_built_from_a_named_limit_and_checked() {
    let config = config("[rate_limits.login]\nrequests = 3\nperiod = 60\n");
    let backend = Arc::new(Backend::from_config(&config).unwrap());
    let new = |name: Option<&str>, overrides: LimitOverrides| {
        Limiter::new(backend.clone(), &config, "login", name, &overrides)
    };

    let login = new(Some("login"), LimitOverrides::default()).unwrap();
    assert_eq!(login.quota().requests(), 3);
    assert_eq!(
        login.key(b"10.0.0.1"),
        storage_key("flux:", "login", Policy::Gcra, b"10.0.0.1")
    );

    let err = new(Some("signup"), LimitOverrides::default()).unwrap_err();
    assert!(matches!(err, LimiterError::UnknownLimit(_)), "{err:?}");
    let err = new(None, rate(0, 1.0)).unwrap_err();
    assert!(matches!(err, LimiterError::Limit(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "requests must be a whole number of at least 1, got 0"
    );
    let err = Limiter::new(backend.clone(), &config, "", None, &rate(1, 1.0)).unwrap_err();
    assert!(matches!(err, LimiterError::Argument(_)), "{err:?}");
}

#[test]
fn refusals_are_spread_by_jitter_only_when_enabled() {
    let jittered = config("[flux]\njitter_max_ms = 400\n");
    let exact = config("[flux]\njitter_enabled = false\n");
    for (config, spread) in [(jittered, 400_000), (exact, 0)] {
        // Time stands still, so a refused call waits exactly 1 s plus the jitter.
        let store = MemoryStore::with_clock(Arc::new(ManualClock::new(1_000_000)));
        let backend = Arc::new(Backend::memory(store));
        let limiter = Limiter::new(backend, &config, "api", None, &rate(1, 1.0)).unwrap();
        let first = limiter.decide(b"k", 1).unwrap();
        assert!(first.allowed);
        assert_eq!(first.retry_after_us, 0, "no jitter on an admitted call");
        let waits: Vec<u64> = (0..50)
            .map(|_| limiter.decide(b"k", 1).unwrap())
            .inspect(|d| assert!(!d.allowed))
            .map(|d| d.retry_after_us)
            .collect();
        assert!(
            waits
                .iter()
                .all(|w| (1_000_000..=1_000_000 + spread).contains(w)),
            "{waits:?}"
        );
        let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        if spread == 0 {
            assert_eq!(min, max);
        } else {
            // 50 uniform draws from 0..=400 ms all within 50 ms: about 1e-45.
            assert!(max - min > 50_000, "{min}..{max}");
        }
    }
}

#[test]
fn a_batch_answers_in_order_across_stores() {
    let config = config("[flux]\njitter_enabled = false\n");
    let (a, b) = (
        Arc::new(Backend::from_config(&config).unwrap()),
        Arc::new(Backend::from_config(&config).unwrap()),
    );
    // The same scope on two memory stores: two separate limits.
    let on_a = Limiter::new(a, &config, "api", None, &rate(1, 60.0)).unwrap();
    let on_b = Limiter::new(b, &config, "api", None, &rate(1, 60.0)).unwrap();
    let request = |limiter, cost| BatchRequest {
        limiter,
        endpoint: None,
        identity: b"k",
        cost,
    };
    let answers = decide_batch(&[
        request(&on_a, 1),
        request(&on_b, 1),
        request(&on_a, 2),
        request(&on_a, 1),
        request(&on_b, 1),
    ]);
    let summary: Vec<_> = answers
        .iter()
        .map(|a| a.as_ref().map(|d| d.allowed).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(
        summary,
        [
            Ok(true),
            Ok(true),
            Err("cost 2 can never be admitted: the limit holds at most 1 at once".into()),
            Ok(false),
            Ok(false)
        ]
    );
}
