//! The local deny cache through a limiter: refusals answered without a store
//! call until their `retry_after` has passed, with the fields the store would
//! give; cleared by refunds and resets made through the limiter; never for
//! shadow limits, other endpoints, other costs or other limits; counted as
//! `local_cache` in the metrics. The store is a memory store that counts the
//! calls it gets. (Against Redis: flux-redis/tests/local_cache.rs.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flux_core::analytics::{Analytics, Outcome};
use flux_core::config::{Config, Storage};
use flux_core::{
    apply_batch, Backend, BatchRequest, Call, Decision, LimitSpec, Limiter, ManualClock,
    MemoryStore, Op, Policy, Source, Store, StoreError,
};

/// A memory store that counts the calls it is asked.
#[derive(Debug)]
struct Counting {
    inner: MemoryStore,
    calls: AtomicU64,
}

impl Store for Counting {
    fn apply(&self, call: &Call<'_>) -> Result<Decision, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.apply(call)
    }

    fn remove(&self, keys: &[&str]) -> Result<u64, StoreError> {
        self.inner.remove(keys)
    }

    fn clear_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.clear_prefix(prefix)
    }

    fn storage(&self) -> Storage {
        Storage::Memory
    }
}

struct Setup {
    clock: ManualClock,
    store: Arc<Counting>,
    backend: Arc<Backend>,
    config: Config,
}

impl Setup {
    /// A counting store and a deny cache of `size` on one manual clock;
    /// `flux` is the `[flux]` table's text.
    fn new(size: usize, flux: &str) -> Setup {
        let clock = ManualClock::new(1_000_000_000);
        let store = Arc::new(Counting {
            inner: MemoryStore::with_clock(Arc::new(clock.clone())),
            calls: AtomicU64::new(0),
        });
        let backend = Backend::new(store.clone(), Arc::new(Analytics::default()))
            .with_local_cache(size, Arc::new(clock.clone()));
        let config = Config::from_toml_str(&format!("[flux]\n{flux}\n"), None).unwrap();
        Setup {
            clock,
            store,
            backend: Arc::new(backend),
            config,
        }
    }

    fn limiter(&self, scope: &str, spec: LimitSpec) -> Limiter {
        Limiter::new(self.backend.clone(), &self.config, scope, None, &spec).unwrap()
    }

    fn calls(&self) -> u64 {
        self.store.calls.load(Ordering::Relaxed)
    }
}

fn rate(policy: Policy, requests: u64, period: f64) -> LimitSpec {
    LimitSpec {
        policy: Some(policy),
        requests: Some(requests),
        period: Some(period),
        ..LimitSpec::default()
    }
}

#[test]
fn a_refusal_is_answered_in_process_until_its_retry_after_has_passed() {
    let s = Setup::new(100, "jitter_enabled = false");
    let limiter = s.limiter("api", rate(Policy::Gcra, 2, 1.0));
    assert!(limiter.decide(b"alice", 1).unwrap().allowed);
    assert!(limiter.decide(b"alice", 1).unwrap().allowed);
    let refused = limiter.decide(b"alice", 1).unwrap();
    assert_eq!((refused.allowed, refused.source), (false, Source::Storage));
    assert_eq!(refused.retry_after_us, 500_000);
    assert_eq!(s.calls(), 3);

    s.clock.advance_us(200_000);
    let cached = limiter.decide(b"alice", 1).unwrap();
    assert_eq!(s.calls(), 3, "no store call");
    assert_eq!(
        cached,
        Decision {
            source: Source::LocalCache,
            retry_after_us: 300_000,
            reset_after_us: refused.reset_after_us - 200_000,
            ..refused
        }
    );
    // A peek is answered the same way.
    let peeked = limiter.apply(None, b"alice", 1, Op::Peek).unwrap();
    assert_eq!((peeked.source, s.calls()), (Source::LocalCache, 3));

    // When the store would admit it again, the store is asked again.
    s.clock.advance_us(300_000);
    let admitted = limiter.decide(b"alice", 1).unwrap();
    assert_eq!((admitted.allowed, admitted.source), (true, Source::Storage));
    assert_eq!(s.calls(), 4);

    let snapshot = s.backend.analytics().snapshot();
    assert_eq!(snapshot.endpoints["api"].count(Outcome::LocalCache), 1);
    assert_eq!(snapshot.endpoints["api"].count(Outcome::Blocked), 1);
    assert_eq!(snapshot.endpoints["api"].count(Outcome::Allowed), 3);
}

#[test]
fn only_the_same_limit_caller_endpoint_and_cost_are_answered() {
    let s = Setup::new(100, "jitter_enabled = false");
    let limiter = s.limiter("api", rate(Policy::FixedWindow, 3, 60.0));
    for _ in 0..3 {
        limiter.decide(b"alice", 1).unwrap();
    }
    assert!(!limiter.decide(b"alice", 1).unwrap().allowed);
    let before = s.calls();
    assert_eq!(
        limiter.decide(b"alice", 1).unwrap().source,
        Source::LocalCache
    );
    assert_eq!(s.calls(), before);

    // A larger cost is refused too, but told a later retry_after by the store.
    assert_eq!(limiter.decide(b"alice", 2).unwrap().source, Source::Storage);
    assert!(limiter.decide(b"bob", 1).unwrap().allowed);
    let other_endpoint = limiter
        .decide_endpoint(Some("search"), b"alice", 1)
        .unwrap();
    assert_eq!(other_endpoint.source, Source::Storage);
    // Another limit on the same keys (same scope and policy, another rate).
    let wider = s.limiter("api", rate(Policy::FixedWindow, 30, 60.0));
    assert!(wider.decide(b"alice", 1).unwrap().allowed);
    assert_eq!(s.calls(), before + 4);
}

#[test]
fn refunds_and_resets_through_the_limiter_clear_what_they_change() {
    let s = Setup::new(100, "jitter_enabled = false");
    let limiter = s.limiter("api", rate(Policy::TokenBucket, 1, 60.0));
    assert!(limiter.decide(b"alice", 1).unwrap().allowed);
    assert!(!limiter.decide(b"alice", 1).unwrap().allowed);
    assert_eq!(
        limiter.decide(b"alice", 1).unwrap().source,
        Source::LocalCache
    );
    limiter.apply(None, b"alice", 1, Op::Refund).unwrap();
    assert!(
        limiter.decide(b"alice", 1).unwrap().allowed,
        "the refund is seen"
    );

    assert!(!limiter.decide(b"alice", 1).unwrap().allowed);
    assert_eq!(
        limiter.decide(b"alice", 1).unwrap().source,
        Source::LocalCache
    );
    assert_eq!(limiter.reset(None, b"alice").unwrap(), 1);
    assert!(
        limiter.decide(b"alice", 1).unwrap().allowed,
        "the reset is seen"
    );

    // A refund and a call in one batch: the call sees the refund.
    assert!(!limiter.decide(b"alice", 1).unwrap().allowed);
    let request = |op| BatchRequest {
        limiter: &limiter,
        endpoint: None,
        identity: b"alice",
        cost: 1,
        op,
    };
    let answers = apply_batch(&[request(Op::Refund), request(Op::Decide)]);
    assert!(answers[1].as_ref().unwrap().allowed);

    // Clearing the store's keys clears the cache too.
    assert!(!limiter.decide(b"alice", 1).unwrap().allowed);
    s.backend.clear_prefix("flux:").unwrap();
    assert!(limiter.decide(b"alice", 1).unwrap().allowed);
}

#[test]
fn an_admission_through_the_limiter_clears_what_it_makes_stale() {
    let s = Setup::new(100, "jitter_enabled = false");
    let limiter = s.limiter("api", rate(Policy::Gcra, 4, 1.0));
    limiter.decide(b"alice", 3).unwrap();
    // Cost 2 refused with 1 remaining: kept (remaining == cost - 1).
    let refused = limiter.decide(b"alice", 2).unwrap();
    assert_eq!((refused.allowed, refused.remaining), (false, 1));
    assert_eq!(
        limiter.decide(b"alice", 2).unwrap().source,
        Source::LocalCache
    );
    // Cost 1 admitted: the cost-2 refusal would now say a later retry_after.
    assert!(limiter.decide(b"alice", 1).unwrap().allowed);
    let after = limiter.decide(b"alice", 2).unwrap();
    assert_eq!(after.source, Source::Storage);
    assert_eq!(after.retry_after_us, refused.retry_after_us + 250_000);
}

#[test]
fn shadow_limits_and_a_cache_of_zero_never_answer_from_it() {
    let s = Setup::new(100, "jitter_enabled = false");
    let shadow = s.limiter(
        "api",
        LimitSpec {
            shadow: Some(true),
            ..rate(Policy::Gcra, 1, 60.0)
        },
    );
    shadow.decide(b"alice", 1).unwrap();
    for _ in 0..3 {
        assert_eq!(shadow.decide(b"alice", 1).unwrap().source, Source::Shadow);
    }
    assert_eq!(s.calls(), 4);

    let off = Setup::new(0, "jitter_enabled = false");
    assert_eq!(off.backend.local_cache_capacity(), 0);
    let limiter = off.limiter("api", rate(Policy::Gcra, 1, 60.0));
    for _ in 0..4 {
        assert_ne!(
            limiter.decide(b"alice", 1).unwrap().source,
            Source::LocalCache
        );
    }
    assert_eq!(off.calls(), 4);
}

#[test]
fn cached_refusals_get_jitter_but_expire_by_the_stores_retry_after() {
    let s = Setup::new(100, "jitter_max_ms = 400");
    let limiter = s.limiter("api", rate(Policy::Gcra, 1, 1.0));
    limiter.decide(b"alice", 1).unwrap();
    let refused = limiter.decide(b"alice", 1).unwrap();
    assert!((1_000_000..=1_400_000).contains(&refused.retry_after_us));
    let mut spread = std::collections::HashSet::new();
    for _ in 0..50 {
        let cached = limiter.decide(b"alice", 1).unwrap();
        assert_eq!(cached.source, Source::LocalCache);
        assert!((1_000_000..=1_400_000).contains(&cached.retry_after_us));
        spread.insert(cached.retry_after_us);
    }
    assert!(spread.len() > 1, "each answer gets its own jitter");
    // Admitted when the store's un-jittered retry_after has passed.
    s.clock.advance_us(1_000_000);
    assert!(limiter.decide(b"alice", 1).unwrap().allowed);
}

#[test]
fn a_full_cache_stays_bounded() {
    let s = Setup::new(64, "jitter_enabled = false");
    assert_eq!(s.backend.local_cache_capacity(), 64);
    let limiter = s.limiter("api", rate(Policy::FixedWindow, 1, 60.0));
    for i in 0..1_000u32 {
        let who = i.to_be_bytes();
        limiter.decide(&who, 1).unwrap();
        assert!(!limiter.decide(&who, 1).unwrap().allowed);
    }
    // Every caller is still refused, from the cache or by the store.
    let before = s.calls();
    let hits = (0..1_000u32)
        .filter(|i| {
            let decision = limiter.decide(&i.to_be_bytes(), 1).unwrap();
            assert!(!decision.allowed);
            decision.source == Source::LocalCache
        })
        .count() as u64;
    assert!(hits <= 64, "{hits} answered from a cache of 64");
    assert_eq!(s.calls() - before, 1_000 - hits);
}
