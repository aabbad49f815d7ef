//! A limiter: one quota and scope on a store, as Rust programs and the C ABI
//! use it.
//!
//! [`Backend`] is the store a configuration chose (memory or Redis); several
//! [`Limiter`]s share one through an `Arc`. A limiter turns a caller's
//! identity into its storage key, asks the store, and applies what the
//! configuration says around the store's answer: failing open when Redis
//! cannot be reached and `fail_silently` is set, and spreading the
//! `retry_after` of refused calls by a random jitter.
//!
//! ```
//! use std::sync::Arc;
//! use flux_core::config::Config;
//! use flux_redis::{Backend, LimitOverrides, Limiter};
//!
//! let config = Config::default();
//! let backend = Arc::new(Backend::from_config(&config).unwrap());
//! let overrides = LimitOverrides { requests: Some(2), period: Some(1.0), ..Default::default() };
//! let limiter = Limiter::new(backend, &config, "login", None, &overrides).unwrap();
//! assert!(limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
//! assert!(limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
//! assert!(!limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
//! ```

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use flux_core::analytics::{Analytics, EndpointStats, Event};
use flux_core::config::{AnalyticsConfig, Config, ConfigError, Storage};
use flux_core::{
    storage_key, Decision, MemoryStore, Policy, Quota, QuotaError, QuotaSpec, Request, Store,
};
use rand::Rng;
use thiserror::Error;

use crate::analytics::{now_us, FlushReport, Reporting};
use crate::fork;
use crate::{RedisError, RedisStore};

/// The store a configuration chose, and what it counts. Thread-safe; share
/// it in an `Arc`.
///
/// Every decision of its limiters is counted per endpoint (see
/// [`crate::analytics`]); with `[analytics] enabled` the backend also sends
/// sampled events and totals to Redis from a thread of its own, joined when
/// the backend is dropped, and holds the process's metrics server.
#[derive(Debug)]
pub struct Backend {
    store: BackendStore,
    reporting: Reporting,
}

/// Where a backend keeps its limits' state.
#[derive(Debug)]
pub enum BackendStore {
    /// Per process: `[flux] storage = "memory"`.
    Memory(MemoryStore),
    /// Shared through Redis or Redis Cluster: `[flux] storage = "redis"`.
    Redis(RedisStore),
}

impl Backend {
    /// The store `config.flux.storage` names, with `config.analytics`. Redis
    /// is connected lazily, so an unreachable Redis is not an error here but
    /// at the first decision.
    pub fn from_config(config: &Config) -> Result<Backend, LimiterError> {
        let store = match config.flux.storage {
            Storage::Memory => BackendStore::Memory(MemoryStore::new()),
            Storage::Redis => RedisStore::connect(&config.redis)
                .map(BackendStore::Redis)
                .map_err(LimiterError::Redis)?,
        };
        Ok(Backend::new(store, &config.analytics))
    }

    /// A backend on `store`. With `analytics.enabled` it serves `/metrics`
    /// (unless this process already does) and, on Redis, starts its flusher.
    pub fn new(store: BackendStore, analytics: &AnalyticsConfig) -> Backend {
        let redis = match &store {
            BackendStore::Memory(_) => None,
            BackendStore::Redis(store) => Some(store),
        };
        let reporting = Reporting::new(analytics, redis);
        Backend { store, reporting }
    }

    /// A backend on a memory store, counting but not serving its decisions.
    pub fn memory(store: MemoryStore) -> Backend {
        Backend::new(BackendStore::Memory(store), &AnalyticsConfig::default())
    }

    pub fn store(&self) -> &BackendStore {
        &self.store
    }

    pub fn storage(&self) -> Storage {
        match self.store {
            BackendStore::Memory(_) => Storage::Memory,
            BackendStore::Redis(_) => Storage::Redis,
        }
    }

    /// The counters of every limiter on this backend.
    pub fn analytics(&self) -> &Arc<Analytics> {
        self.reporting.analytics()
    }

    /// Sends the queued events and totals to Redis now instead of at the
    /// flusher's next turn. Does nothing (and reports nothing) unless
    /// analytics is enabled on Redis.
    pub fn flush_analytics(&self) -> Result<FlushReport, RedisError> {
        self.reporting.flush()
    }

    /// This backend's counters in the Prometheus text format.
    pub fn metrics_prometheus(&self) -> String {
        self.reporting.prometheus()
    }

    /// This backend's counters as `/metrics.json` shows them, with the
    /// cross-process totals read from Redis when analytics is enabled there.
    pub fn metrics_json(&self) -> String {
        self.reporting.json().to_string()
    }

    /// Loads the Lua scripts ahead of the first decision; nothing to do in memory.
    pub fn preload_scripts(&self) -> Result<(), LimiterError> {
        match &self.store {
            BackendStore::Memory(_) => Ok(()),
            BackendStore::Redis(store) => store.preload_scripts().map_err(LimiterError::Redis),
        }
    }

    /// Forgets every key under `prefix`; returns how many.
    pub fn clear_prefix(&self, prefix: &str) -> Result<u64, LimiterError> {
        match &self.store {
            BackendStore::Memory(store) => Ok(store.clear_prefix(prefix) as u64),
            BackendStore::Redis(store) => store.clear_prefix(prefix).map_err(LimiterError::Redis),
        }
    }

    fn decide_many(&self, requests: &[Request<'_>]) -> Vec<Result<Decision, StoreError>> {
        match &self.store {
            BackendStore::Memory(store) => store
                .decide_many(requests)
                .into_iter()
                .map(|r| r.map_err(StoreError::Quota))
                .collect(),
            BackendStore::Redis(store) => store
                .decide_many(requests)
                .into_iter()
                .map(|r| r.map_err(StoreError::Redis))
                .collect(),
        }
    }

    fn decide(&self, key: &str, quota: &Quota, cost: u64) -> Result<Decision, StoreError> {
        match &self.store {
            BackendStore::Memory(store) => {
                store.decide(key, quota, cost).map_err(StoreError::Quota)
            }
            BackendStore::Redis(store) => store.decide(key, quota, cost).map_err(StoreError::Redis),
        }
    }
}

/// What a store said instead of a decision.
enum StoreError {
    /// The memory store refuses only costs, which a limiter checks first.
    Quota(QuotaError),
    Redis(RedisError),
}

/// Why a limiter could not be made or could not decide.
#[derive(Debug, Error)]
pub enum LimiterError {
    /// A parameter of the limit is invalid; the message names it.
    #[error(transparent)]
    Limit(QuotaError),
    /// A cost of 0, or above what the limit can ever admit.
    #[error(transparent)]
    Cost(QuotaError),
    /// The named limit is not in the configuration; the message lists those that are.
    #[error(transparent)]
    UnknownLimit(ConfigError),
    /// An argument other than the limit's numbers is invalid.
    #[error("{0}")]
    Argument(String),
    /// Redis failed, or its settings cannot work. With `fail_silently`, a
    /// limiter answers a connectivity failure by admitting the call instead.
    #[error(transparent)]
    Redis(RedisError),
}

/// Parameters given next to (or instead of) a configured limit; each `Some`
/// replaces the configured value.
///
/// The named limit (or `[rate_limit]`) provides the rest, with the rules a
/// `[rate_limits.NAME]` table follows: `burst` belongs to the `requests` it
/// was written for, so it is kept only when neither `requests` nor `policy`
/// is replaced (else it defaults to `requests`); `max_wait` is kept only
/// while the policy is `leaky_bucket`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitOverrides {
    pub policy: Option<Policy>,
    pub requests: Option<u64>,
    pub period: Option<f64>,
    pub burst: Option<u64>,
    pub max_wait: Option<f64>,
}

impl LimitOverrides {
    /// `base` with these overrides applied, before validation.
    pub fn apply(&self, base: &QuotaSpec) -> QuotaSpec {
        let policy = self.policy.unwrap_or(base.policy);
        let keeps_burst = self.requests.is_none() && self.policy.is_none();
        let inherited_wait = if policy == Policy::LeakyBucket {
            base.max_wait
        } else {
            0.0
        };
        QuotaSpec {
            policy,
            requests: self.requests.unwrap_or(base.requests),
            period: self.period.unwrap_or(base.period),
            burst: self.burst.or(base.burst.filter(|_| keeps_burst)),
            max_wait: self.max_wait.unwrap_or(inherited_wait),
        }
    }
}

/// One quota and scope on a store. Thread-safe: share it freely.
///
/// Its decisions are counted under its scope, the endpoint's name.
#[derive(Debug)]
pub struct Limiter {
    backend: Arc<Backend>,
    quota: Quota,
    scope: String,
    endpoint: Arc<str>,
    /// Made at the first decision, so that a limiter made only to check
    /// its arguments leaves no endpoint behind in the metrics.
    stats: OnceLock<Arc<EndpointStats>>,
    key_prefix: String,
    fail_silently: bool,
    /// The largest random delay added to a refused call's `retry_after`; 0 adds none.
    jitter_max_us: u64,
}

impl Limiter {
    /// A limiter for `scope` (the endpoint's name, part of every key) with
    /// the limit `name` from `config` (`[rate_limit]` when `None`), changed
    /// by `overrides`.
    pub fn new(
        backend: Arc<Backend>,
        config: &Config,
        scope: &str,
        name: Option<&str>,
        overrides: &LimitOverrides,
    ) -> Result<Limiter, LimiterError> {
        if scope.is_empty() {
            return Err(LimiterError::Argument(
                "scope must not be empty: it keeps this limit's keys apart from other limits'"
                    .to_owned(),
            ));
        }
        let base = config.limit(name).map_err(LimiterError::UnknownLimit)?;
        let quota = overrides
            .apply(&base)
            .build()
            .map_err(LimiterError::Limit)?;
        let flux = &config.flux;
        Ok(Limiter {
            backend,
            quota,
            scope: scope.to_owned(),
            endpoint: Arc::from(scope),
            stats: OnceLock::new(),
            key_prefix: flux.key_prefix.clone(),
            fail_silently: flux.fail_silently,
            jitter_max_us: if flux.jitter_enabled {
                flux.jitter_max_ms.saturating_mul(1000)
            } else {
                0
            },
        })
    }

    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Where `identity`'s state is stored.
    pub fn key(&self, identity: &[u8]) -> String {
        storage_key(&self.key_prefix, &self.scope, self.quota.policy(), identity)
    }

    /// Decides one call of `cost` by the caller `identity` (any bytes).
    pub fn decide(&self, identity: &[u8], cost: u64) -> Result<Decision, LimiterError> {
        self.quota.check_cost(cost).map_err(LimiterError::Cost)?;
        let key = self.key(identity);
        let started = Instant::now();
        let answer = self.backend.decide(&key, &self.quota, cost);
        let latency = started.elapsed();
        let decision = self.finish(answer);
        if let Ok(decision) = &decision {
            self.record(&key, decision, latency);
        }
        decision
    }

    /// Counts a decision (and queues it as an event when sampled). Calls
    /// that got no decision (an error) are not counted.
    fn record(&self, key: &str, decision: &Decision, latency: Duration) {
        let reporting = &self.backend.reporting;
        // Before counting: a forked child's flusher starts from the counts
        // it finds, and sends only what is added after.
        let events = reporting.events();
        let stats = self
            .stats
            .get_or_init(|| self.backend.analytics().endpoint(&self.scope));
        stats.record(decision, latency.as_nanos().try_into().unwrap_or(u64::MAX));
        if events && reporting.analytics().sample() {
            reporting.analytics().push_event(Event::new(
                now_us(),
                key.to_owned(),
                self.endpoint.clone(),
                &self.quota,
                decision,
            ));
        }
    }

    /// The store's answer, with fail-open and jitter applied.
    fn finish(&self, answer: Result<Decision, StoreError>) -> Result<Decision, LimiterError> {
        match answer {
            Ok(decision) if !decision.allowed && self.jitter_max_us > 0 => {
                let jitter = jitter_us(self.jitter_max_us);
                Ok(Decision {
                    retry_after_us: decision.retry_after_us + jitter,
                    ..decision
                })
            }
            Ok(decision) => Ok(decision),
            Err(StoreError::Quota(e)) | Err(StoreError::Redis(RedisError::Quota(e))) => {
                Err(LimiterError::Cost(e))
            }
            // The decision's source says it failed open; the caller logs it
            // as often as it likes (flux-py: once a minute).
            Err(StoreError::Redis(e)) if self.fail_silently && e.is_connectivity() => {
                Ok(Decision::fail_open(self.quota.capacity()))
            }
            Err(StoreError::Redis(e)) => Err(LimiterError::Redis(e)),
        }
    }
}

/// A random delay in `0..=max_us`. Each process draws its own: the
/// thread that forked would otherwise give the same delays in every child
/// (the thread's generator is copied with it), and refused clients of
/// sibling workers would come back together.
fn jitter_us(max_us: u64) -> u64 {
    thread_local! {
        /// The process generation this thread's generator was seeded in.
        static SEEDED_IN: Cell<u64> = const { Cell::new(0) };
    }
    let mut rng = rand::rng();
    let now = fork::generation();
    if SEEDED_IN.replace(now) != now {
        // Without a new seed the draws are the parent's: still a delay.
        let _ = rng.reseed();
    }
    rng.random_range(0..=max_us)
}

/// One call in a [`decide_batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchRequest<'a> {
    pub limiter: &'a Limiter,
    pub identity: &'a [u8],
    pub cost: u64,
}

/// Decides many calls, on any mix of limiters, with one `decide_many` (one
/// pipeline on Redis) per store. Results are in the order of `requests`.
pub fn decide_batch(requests: &[BatchRequest<'_>]) -> Vec<Result<Decision, LimiterError>> {
    let mut results: Vec<Option<Result<Decision, LimiterError>>> =
        requests.iter().map(|_| None).collect();
    // Keys are made up front so the store requests can borrow them.
    let keys: Vec<String> = requests.iter().map(|r| r.limiter.key(r.identity)).collect();
    let mut pending: Vec<usize> = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        match request.limiter.quota.check_cost(request.cost) {
            Ok(()) => pending.push(i),
            Err(e) => results[i] = Some(Err(LimiterError::Cost(e))),
        }
    }
    while let Some(&first) = pending.first() {
        let backend = &requests[first].limiter.backend;
        let (group, rest): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| Arc::ptr_eq(&requests[i].limiter.backend, backend));
        let store_requests: Vec<Request<'_>> = group
            .iter()
            .map(|&i| Request {
                key: &keys[i],
                quota: &requests[i].limiter.quota,
                cost: requests[i].cost,
            })
            .collect();
        let started = Instant::now();
        let answers = backend.decide_many(&store_requests);
        // Each decision of a batch waited for the whole batch.
        let latency = started.elapsed();
        debug_assert_eq!(answers.len(), group.len());
        for (&i, answer) in group.iter().zip(answers) {
            let limiter = requests[i].limiter;
            let decision = limiter.finish(answer);
            if let Ok(decision) = &decision {
                limiter.record(&keys[i], decision, latency);
            }
            results[i] = Some(decision);
        }
        pending = rest;
    }
    results
        .into_iter()
        .map(|r| r.expect("every request is answered"))
        .collect()
}
