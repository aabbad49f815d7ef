//! Limiter: limits from the configuration given in part, keys, shadow mode,
//! jitter on refusals, peeks, refunds and resets, and batches across
//! stores. (Failing open is tested against a missing Redis in
//! flux-ffi/tests/redis.rs.)

use std::sync::Arc;

use flux_core::analytics::{Analytics, Outcome};
use flux_core::config::Config;
use flux_core::{
    apply_batch, parse_rates, storage_key, Backend, BatchRequest, LimitSpec, Limiter, LimiterError,
    ManualClock, MemoryStore, Op, Policy, Source,
};

fn config(toml: &str) -> Config {
    Config::from_toml_str(toml, None).expect("valid")
}

fn rate(requests: u64, period: f64) -> LimitSpec {
    LimitSpec {
        requests: Some(requests),
        period: Some(period),
        ..LimitSpec::default()
    }
}

fn rates(text: &str) -> LimitSpec {
    LimitSpec {
        rate: Some(parse_rates(text).unwrap()),
        ..LimitSpec::default()
    }
}

/// A backend on a memory store whose clock stands still at `now_us`.
fn still(now_us: u64) -> (ManualClock, Arc<Backend>) {
    let clock = ManualClock::new(now_us);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let backend = Backend::new(Arc::new(store), Arc::new(Analytics::default()));
    (clock, Arc::new(backend))
}

#[test]
fn a_limiter_is_built_from_a_named_limit_and_checked() {
    let config = config("[rate_limits.login]\nrequests = 3\nperiod = 60\n");
    let backend = Arc::new(Backend::memory());
    let new = |name: Option<&str>, spec: LimitSpec| {
        Limiter::new(backend.clone(), &config, "login", name, &spec)
    };

    let login = new(Some("login"), LimitSpec::default()).unwrap();
    assert_eq!(login.quota().requests(), 3);
    assert_eq!(
        login.key(b"10.0.0.1"),
        storage_key("flux:", "login", Policy::Gcra, b"10.0.0.1")
    );

    let err = new(Some("signup"), LimitSpec::default()).unwrap_err();
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
        let (_clock, backend) = still(1_000_000);
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
    let (a, b) = (Arc::new(Backend::memory()), Arc::new(Backend::memory()));
    // The same scope on two memory stores: two separate limits.
    let on_a = Limiter::new(a, &config, "api", None, &rate(1, 60.0)).unwrap();
    let on_b = Limiter::new(b, &config, "api", None, &rate(1, 60.0)).unwrap();
    let request = |limiter, cost| BatchRequest {
        limiter,
        endpoint: None,
        identity: b"k",
        cost,
        op: Op::Decide,
    };
    let answers = apply_batch(&[
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

#[test]
fn a_limit_of_several_rates_keys_each_quota_apart_and_admits_under_all() {
    let config = config("[flux]\njitter_enabled = false\n");
    let (clock, backend) = still(10_000_000);
    let limiter = Limiter::new(backend, &config, "api", None, &rates("2/second;3/minute")).unwrap();
    let keys = limiter.keys(None, b"10.0.0.1");
    assert_eq!(keys.len(), 2);
    assert!(keys[0].starts_with("flux:api:gcra:2per1:{"), "{}", keys[0]);
    assert!(keys[1].starts_with("flux:api:gcra:3per60:{"), "{}", keys[1]);
    assert_eq!(
        flux_core::hash_tag(keys[0].as_bytes()),
        flux_core::hash_tag(keys[1].as_bytes())
    );

    let allowed = |n| {
        (0..n)
            .filter(|_| limiter.decide(b"10.0.0.1", 1).unwrap().allowed)
            .count()
    };
    assert_eq!(allowed(5), 2);
    clock.advance_secs(1.0);
    assert_eq!(
        allowed(5),
        1,
        "the minute's third call; the refusals charged nothing"
    );
    let refused = limiter.decide(b"10.0.0.1", 1).unwrap();
    assert_eq!((refused.allowed, refused.quota_index), (false, 1));
    let err = limiter.decide(b"10.0.0.1", 3).unwrap_err();
    assert!(matches!(err, LimiterError::Cost(_)), "{err}");
}

#[test]
fn a_shadow_limit_admits_what_it_would_refuse_and_charges_only_the_rest() {
    let config = config("[flux]\njitter_enabled = false\n");
    let (clock, backend) = still(10_000_000);
    let spec = LimitSpec {
        shadow: Some(true),
        ..rate(2, 1.0)
    };
    let limiter = Limiter::new(backend.clone(), &config, "api", None, &spec).unwrap();
    let decisions: Vec<_> = (0..4).map(|_| limiter.decide(b"k", 1).unwrap()).collect();
    assert!(decisions.iter().all(|d| d.allowed));
    let sources: Vec<Source> = decisions.iter().map(|d| d.source).collect();
    assert_eq!(
        sources,
        [
            Source::Storage,
            Source::Storage,
            Source::Shadow,
            Source::Shadow
        ]
    );
    // The shadowed calls were not charged: half a second frees exactly one.
    clock.advance_secs(0.5);
    assert_eq!(limiter.decide(b"k", 1).unwrap().source, Source::Storage);
    assert_eq!(limiter.decide(b"k", 1).unwrap().source, Source::Shadow);
    let counted = &backend.analytics().snapshot().endpoints["api"];
    assert_eq!(
        (
            counted.count(Outcome::Allowed),
            counted.count(Outcome::Shadow),
            counted.count(Outcome::Blocked)
        ),
        (3, 3, 0)
    );
}

#[test]
fn peek_refund_and_reset_do_what_they_say_and_count_nothing() {
    let config = config("[flux]\njitter_enabled = false\n");
    let (_clock, backend) = still(10_000_000);
    let limiter = Limiter::new(backend.clone(), &config, "login", None, &rate(2, 60.0)).unwrap();
    let peek = |who: &[u8]| limiter.apply(None, who, 1, Op::Peek).unwrap();
    assert!(peek(b"alice").allowed);
    assert_eq!(peek(b"alice").remaining, 1, "a peek charges nothing");
    limiter.decide(b"alice", 1).unwrap();
    limiter.decide(b"alice", 1).unwrap();
    assert!(!peek(b"alice").allowed);
    let refunded = limiter.apply(None, b"alice", 1, Op::Refund).unwrap();
    assert!(refunded.allowed, "the next call would be admitted");
    assert!(limiter.decide(b"alice", 1).unwrap().allowed);
    assert!(!limiter.decide(b"alice", 1).unwrap().allowed);
    assert_eq!(limiter.reset(None, b"alice").unwrap(), 1);
    assert_eq!(limiter.reset(None, b"bob").unwrap(), 0);
    assert_eq!(peek(b"alice").remaining, 1);
    // Endpoints are limits of their own, reset apart.
    limiter
        .decide_endpoint(Some("search"), b"alice", 2)
        .unwrap();
    assert!(
        !limiter
            .apply(Some("search"), b"alice", 1, Op::Peek)
            .unwrap()
            .allowed
    );
    assert!(peek(b"alice").allowed);
    assert_eq!(limiter.reset(Some("search"), b"alice").unwrap(), 1);
    // Only decisions are counted: 4 under the scope, 1 under the endpoint.
    let snapshot = backend.analytics().snapshot();
    assert_eq!(snapshot.endpoints["login"].total(), 4);
    assert_eq!(snapshot.endpoints["search"].total(), 1);
    let err = limiter.apply(None, b"alice", 0, Op::Refund).unwrap_err();
    assert_eq!(err.to_string(), "cost must be at least 1, got 0");
}
