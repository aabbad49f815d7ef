//! A limiter: one limit and scope on a store, as Rust programs, the C ABI
//! and Python use it.
//!
//! A [`Backend`] is a store (memory or Redis, as `Arc<dyn Store>`) with its
//! counters; several [`Limiter`]s share one through an `Arc`. A limiter
//! turns a caller's identity into its keys (one per quota), asks the store,
//! and applies what the configuration says around the store's answer:
//! failing open when the store is unavailable and `fail_silently` is set,
//! admitting what a shadow limit would refuse, and spreading the
//! `retry_after` of refused calls by a random jitter. A backend may keep a
//! local deny cache ([`Backend::with_local_cache`]): refusals are then
//! answered in-process until their `retry_after` has passed, exactly as the
//! store would answer them (see `local_cache.rs` for why that is exact).
//!
//! ```
//! use std::sync::Arc;
//! use flux_core::config::Config;
//! use flux_core::{parse_rates, Backend, LimitSpec, Limiter};
//!
//! let config = Config::default();
//! let backend = Arc::new(Backend::memory());
//! let spec = LimitSpec { rate: Some(parse_rates("2/second;3/minute").unwrap()), ..LimitSpec::default() };
//! let limiter = Limiter::new(backend, &config, "login", None, &spec).unwrap();
//! assert!(limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
//! assert!(limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
//! assert!(!limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
//! ```

use std::any::Any;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use thiserror::Error;

use crate::analytics::{Analytics, Event, LimiterSeries};
use crate::config::{Config, ConfigError, Storage};
use crate::fork;
use crate::key::{key_in, IdentityTag};
use crate::local_cache::{limit_fingerprint, LocalCache};
use crate::warnings::Warnings;
use crate::{
    Call, Clock, Decision, Limit, LimitSpec, MemoryStore, Op, Quota, QuotaError, Source, Store,
    StoreError, MAX_QUOTAS,
};

/// A store and what it counts. Thread-safe; share it in an `Arc`.
///
/// Every decision of its limiters is counted per endpoint (see
/// [`crate::analytics`]); when something sends them on (flux-redis's
/// flusher), sampled decisions also become events.
pub struct Backend {
    store: Arc<dyn Store>,
    analytics: Arc<Analytics>,
    /// What takes sampled decisions as events (a flusher), when something does.
    events: Option<Arc<dyn EventTaker>>,
    /// What lives as long as the backend: a flusher thread, a hold on the
    /// process's metrics server.
    _keep: Option<Arc<dyn Any + Send + Sync>>,
    /// The quotas of the limits the configuration names, which a preload
    /// makes ready.
    configured: Vec<Vec<Quota>>,
    /// Failing open and a busy store, said in the log once per interval.
    warnings: Warnings,
    /// Refusals answered without asking the store; `None` when off.
    local_cache: Option<LocalCache>,
}

/// What takes a backend's sampled decisions from its analytics' event queue
/// and sends them on (flux-redis's flusher).
pub trait EventTaker: Send + Sync {
    /// Whether this process takes events now. Asked before each decision is
    /// counted, so a taker that belongs to one process may start its own in a
    /// forked child here, from the counts it finds.
    fn taking(&self) -> bool;
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("store", &self.store)
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend on `store`, counting into `analytics`.
    pub fn new(store: Arc<dyn Store>, analytics: Arc<Analytics>) -> Backend {
        Backend {
            store,
            analytics,
            events: None,
            _keep: None,
            configured: Vec::new(),
            warnings: Warnings::default(),
            local_cache: None,
        }
    }

    /// The same backend spacing its warnings by `clock` (a `ManualClock` in
    /// tests) rather than by the process's monotonic clock.
    pub fn with_warning_clock(mut self, clock: Arc<dyn Clock>) -> Backend {
        self.warnings = Warnings::with_clock(clock);
        self
    }

    /// The same backend answering refusals from a local deny cache of
    /// `size` entries (0: none) until their `retry_after` has passed, timed
    /// by `clock` (a [`crate::MonotonicClock`] outside tests; the same
    /// `ManualClock` as the store's in tests).
    ///
    /// It saves a store call per refusal, so it pays on a store with round
    /// trips (Redis); on the memory store a cache hit costs about what
    /// deciding does, and it is better left off.
    pub fn with_local_cache(mut self, size: usize, clock: Arc<dyn Clock>) -> Backend {
        self.local_cache = LocalCache::new(size, clock);
        self
    }

    /// How many refusals the local deny cache can hold (0 when it is off).
    pub fn local_cache_capacity(&self) -> usize {
        self.local_cache.as_ref().map_or(0, LocalCache::capacity)
    }

    /// A backend on a fresh memory store, counting every decision.
    pub fn memory() -> Backend {
        Backend::new(Arc::new(MemoryStore::new()), Arc::new(Analytics::default()))
    }

    /// The same backend queueing sampled decisions as events in its
    /// analytics for `taker` (a flusher), which lives as long as the
    /// backend, so its last flush sees every decision.
    pub fn with_events(mut self, taker: Arc<dyn EventTaker>) -> Backend {
        self.events = Some(taker);
        self
    }

    /// The same backend keeping `keep` alive (a hold on a metrics server).
    pub fn keeping(mut self, keep: Arc<dyn Any + Send + Sync>) -> Backend {
        self._keep = Some(keep);
        self
    }

    /// The same backend knowing the limits `config` names, for
    /// [`Backend::preload`].
    pub fn with_configured(mut self, config: &Config) -> Backend {
        self.configured = std::iter::once(&config.rate_limit)
            .chain(config.rate_limits.values())
            .filter_map(|limit| limit.quotas().ok())
            .collect();
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn storage(&self) -> Storage {
        self.store.storage()
    }

    /// The counters of every limiter on this backend.
    pub fn analytics(&self) -> &Arc<Analytics> {
        &self.analytics
    }

    /// Makes the configured limits ready ahead of their first call (Redis
    /// loads their scripts, and those of every limit decided so far).
    pub fn preload(&self) -> Result<(), StoreError> {
        let limits: Vec<&[Quota]> = self.configured.iter().map(Vec::as_slice).collect();
        self.store.preload(&limits)
    }

    /// Forgets every key under `prefix`; returns how many.
    pub fn clear_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let cleared = self.store.clear_prefix(prefix);
        if let Some(cache) = &self.local_cache {
            cache.clear();
        }
        cleared
    }
}

/// Why a limiter could not be made or could not decide.
#[derive(Debug, Error)]
pub enum LimiterError {
    /// A part of the limit is invalid; the message names it.
    #[error(transparent)]
    Limit(QuotaError),
    /// A cost of 0, or above what the limit can ever admit.
    #[error(transparent)]
    Cost(QuotaError),
    /// The named limit is not in the configuration; the message lists those that are.
    #[error(transparent)]
    UnknownLimit(ConfigError),
    /// An argument other than the limit's parts is invalid.
    #[error("{0}")]
    Argument(String),
    /// The store failed, or its settings cannot work. With `fail_silently`,
    /// a limiter answers an unavailable store by admitting the call instead.
    #[error(transparent)]
    Store(StoreError),
}

/// One limit and scope on a store. Thread-safe: share it freely.
///
/// A call may name an endpoint, which gives its caller a separate limit per
/// endpoint on this one limiter, and counts the decision under the
/// endpoint's name rather than the scope's (within the caps of
/// [`crate::analytics`]).
#[derive(Debug)]
pub struct Limiter {
    backend: Arc<Backend>,
    limit: Limit,
    quotas: Vec<Quota>,
    /// Per quota, the start of its keys: `{prefix}{scope}:{policy}:`, and
    /// with several quotas the quota's label (`10per1:`), so each has a key.
    heads: Vec<String>,
    scope: String,
    series: LimiterSeries,
    fail_silently: bool,
    /// The largest random delay added to a refused call's `retry_after`; 0 adds none.
    jitter_max_us: u64,
    /// The limit's quotas, hashed: which limit an entry of the local deny
    /// cache belongs to.
    fingerprint: u64,
}

impl Limiter {
    /// A limiter for `scope` (part of every key) with the limit `name` of
    /// `config` (`[rate_limit]` when `None`), changed by `spec` (see
    /// [`LimitSpec::over`]).
    pub fn new(
        backend: Arc<Backend>,
        config: &Config,
        scope: &str,
        name: Option<&str>,
        spec: &LimitSpec,
    ) -> Result<Limiter, LimiterError> {
        if scope.is_empty() {
            return Err(LimiterError::Argument(
                "scope must not be empty: it keeps this limit's keys apart from other limits'"
                    .to_owned(),
            ));
        }
        let (limit, quotas) = resolve(config, name, spec)?;
        let flux = &config.flux;
        let policy = limit.policy.name();
        let heads = limit
            .rates
            .iter()
            .map(|rate| match quotas.len() {
                1 => format!("{}{scope}:{policy}:", flux.key_prefix),
                _ => format!("{}{scope}:{policy}:{}:", flux.key_prefix, rate.label()),
            })
            .collect();
        Ok(Limiter {
            fingerprint: limit_fingerprint(&quotas),
            series: LimiterSeries::new(backend.analytics().clone(), scope),
            backend,
            limit,
            quotas,
            heads,
            scope: scope.to_owned(),
            fail_silently: flux.fail_silently,
            jitter_max_us: if flux.jitter_enabled {
                flux.jitter_max_ms.saturating_mul(1000)
            } else {
                0
            },
        })
    }

    /// The scope [`Limiter::new`] is best given for the limit `name` of
    /// `config` changed by `spec`, when the caller has none of its own (see
    /// [`Limit::default_scope`]): `name` for a limit taken as configured,
    /// else `base` (e.g. the function it guards; default: `name`, or
    /// `"default"`) tagged with its numbers. Fails as `new` would on a bad
    /// limit.
    pub fn default_scope(
        config: &Config,
        name: Option<&str>,
        spec: &LimitSpec,
        base: Option<&str>,
    ) -> Result<String, LimiterError> {
        let (limit, _) = resolve(config, name, spec)?;
        let in_code = name.is_none() || !spec.is_empty();
        let head = match (in_code, base) {
            (true, Some(base)) => base,
            _ => name.unwrap_or("default"),
        };
        Ok(limit.default_scope(head, in_code))
    }

    /// The limit, resolved.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// The limit's quotas, one per rate, in order.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// The first quota: what a single-rate view of the limit reports.
    pub fn quota(&self) -> &Quota {
        &self.quotas[0]
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Where `identity`'s state lives, one key per quota; with an `endpoint`
    /// (`None` or `""` for none), its state for that endpoint (see
    /// [`IdentityTag::for_endpoint`]).
    pub fn keys(&self, endpoint: Option<&str>, identity: &[u8]) -> Vec<String> {
        let (endpoint, tag) = match endpoint.filter(|e| !e.is_empty()) {
            Some(endpoint) => (
                Some(endpoint.as_bytes()),
                IdentityTag::for_endpoint(endpoint.as_bytes(), identity),
            ),
            None => (None, IdentityTag::new(identity)),
        };
        self.heads
            .iter()
            .map(|head| key_in(head, endpoint, &tag))
            .collect()
    }

    /// The key of `identity` under the first quota.
    pub fn key(&self, identity: &[u8]) -> String {
        self.keys(None, identity).swap_remove(0)
    }

    /// A cost is valid when it is at least 1 and some moment could admit it
    /// under every quota.
    pub fn check_cost(&self, cost: u64) -> Result<(), LimiterError> {
        self.quotas
            .iter()
            .try_for_each(|q| q.check_cost(cost))
            .map_err(LimiterError::Cost)
    }

    /// Decides one call of `cost` by the caller `identity` (any bytes).
    pub fn decide(&self, identity: &[u8], cost: u64) -> Result<Decision, LimiterError> {
        self.apply(None, identity, cost, Op::Decide)
    }

    /// Decides one call of `cost` by `identity` to `endpoint`: each endpoint
    /// is a separate limit, counted under its own name. `None` or `""` is
    /// the same as [`Limiter::decide`].
    pub fn decide_endpoint(
        &self,
        endpoint: Option<&str>,
        identity: &[u8],
        cost: u64,
    ) -> Result<Decision, LimiterError> {
        self.apply(endpoint, identity, cost, Op::Decide)
    }

    /// Applies `op` for one call: [`Op::Decide`] decides and charges (and is
    /// counted in the analytics), [`Op::Peek`] answers what deciding would
    /// without charging, [`Op::Refund`] gives `cost` back to every quota
    /// (never below empty) and answers what the next call would be told.
    pub fn apply(
        &self,
        endpoint: Option<&str>,
        identity: &[u8],
        cost: u64,
        op: Op,
    ) -> Result<Decision, LimiterError> {
        // One call takes the path of a batch of one, without its vectors:
        // this is the hot path of every synchronous decision.
        let request = BatchRequest {
            limiter: self,
            endpoint,
            identity,
            cost,
            op,
        };
        request.check()?;
        let keys = self.keys(endpoint, identity);
        if let Some(decision) = request.cached_refusal(&keys[0]) {
            return request.answer_cached(&keys, decision);
        }
        let mut refs = [""; MAX_QUOTAS];
        for (slot, key) in refs.iter_mut().zip(&keys) {
            *slot = key;
        }
        let backend = &self.backend;
        let asked_at = backend.local_cache.as_ref().map(LocalCache::now);
        let started = Instant::now();
        let answer = backend.store.apply(&Call {
            keys: &refs[..keys.len()],
            quotas: &self.quotas,
            cost,
            op,
        });
        request.settle(&keys, asked_at, answer, started.elapsed())
    }

    /// Forgets `identity`'s state (for `endpoint`) under every quota: its
    /// next call is decided as its first. Returns how many keys held one.
    pub fn reset(&self, endpoint: Option<&str>, identity: &[u8]) -> Result<u64, LimiterError> {
        let keys = self.keys(endpoint, identity);
        let removed = {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.backend.store.remove(&keys)
        };
        self.forget_refusals(&keys[0]);
        removed.map_err(LimiterError::Store)
    }

    /// The local deny cache, when refusals of this limiter may be answered
    /// from it: never for a shadow limit, whose refusals admit.
    fn local_cache(&self) -> Option<&LocalCache> {
        match self.limit.shadow {
            true => None,
            false => self.backend.local_cache.as_ref(),
        }
    }

    /// Forgets the cached refusals of the caller whose first key is `key`.
    fn forget_refusals(&self, key: &str) {
        if let Some(cache) = self.local_cache() {
            cache.forget(key, self.fingerprint);
        }
    }

    /// Counts a decision under its endpoint's series (and queues it as an
    /// event, labelled alike, when sampled). Calls that got no decision (an
    /// error) are not counted.
    fn record(
        &self,
        endpoint: Option<&str>,
        keys: &[String],
        decision: &Decision,
        latency: Duration,
    ) {
        // Before counting: a forked child's taker starts from the counts it
        // finds, and sends only what is added after.
        let events = self.backend.events.as_ref().is_some_and(|t| t.taking());
        let stats = self.series.get(endpoint.filter(|e| !e.is_empty()));
        stats.record(decision, latency.as_nanos().try_into().unwrap_or(u64::MAX));
        let analytics = self.backend.analytics();
        if events && analytics.sample() {
            let index = decision.quota_index.min(self.quotas.len() - 1);
            analytics.push_event(Event::new(
                now_us(),
                keys[index].clone(),
                stats.name().clone(),
                &self.quotas[index],
                decision,
            ));
        }
    }

    /// The store's answer, with fail-open, shadow and jitter applied.
    fn finish(
        &self,
        answer: Result<Decision, StoreError>,
        op: Op,
    ) -> Result<Decision, LimiterError> {
        match answer {
            Ok(decision) if decision.allowed || op == Op::Refund => Ok(decision),
            Ok(decision) if self.limit.shadow => Ok(Decision {
                allowed: true,
                source: Source::Shadow,
                ..decision
            }),
            Ok(decision) if self.jitter_max_us > 0 => {
                let jitter = jitter_us(self.jitter_max_us);
                Ok(Decision {
                    retry_after_us: decision.retry_after_us + jitter,
                    ..decision
                })
            }
            Ok(decision) => Ok(decision),
            Err(StoreError::Quota(e)) => Err(LimiterError::Cost(e)),
            Err(e) if self.fail_silently && e.is_unavailable() => {
                let backend = &self.backend;
                backend.warnings.failed_open(&backend.store.place(), &e);
                Ok(Decision::fail_open(self.quotas[0].limit()))
            }
            Err(e) => {
                if let StoreError::Busy { .. } = e {
                    let backend = &self.backend;
                    backend.warnings.busy(&backend.store.place(), &e);
                }
                Err(LimiterError::Store(e))
            }
        }
    }
}

/// One call in an [`apply_batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchRequest<'a> {
    pub limiter: &'a Limiter,
    /// As in [`Limiter::decide_endpoint`].
    pub endpoint: Option<&'a str>,
    pub identity: &'a [u8],
    pub cost: u64,
    pub op: Op,
}

impl BatchRequest<'_> {
    /// Whether the cost can be applied at all: a decision or a peek needs a
    /// cost some moment could admit, a refund any cost above 0.
    fn check(&self) -> Result<(), LimiterError> {
        match self.op {
            Op::Refund if self.cost == 0 => Err(LimiterError::Cost(QuotaError::CostZero)),
            Op::Refund => Ok(()),
            Op::Decide | Op::Peek => self.limiter.check_cost(self.cost),
        }
    }

    /// The answer for a refusal the local deny cache holds, counted as a
    /// decision that waited for nothing.
    fn answer_cached(&self, keys: &[String], cached: Decision) -> Result<Decision, LimiterError> {
        let decision = self.limiter.finish(Ok(cached), self.op);
        if let (Ok(decision), Op::Decide) = (&decision, self.op) {
            self.limiter
                .record(self.endpoint, keys, decision, Duration::ZERO);
        }
        decision
    }

    /// The answer for what the store said (asked at `asked_at` by the local
    /// cache's clock, after `latency`): the cache told, fail-open, shadow and
    /// jitter applied, the decision counted.
    fn settle(
        &self,
        keys: &[String],
        asked_at: Option<u64>,
        answer: Result<Decision, StoreError>,
        latency: Duration,
    ) -> Result<Decision, LimiterError> {
        if let Some(asked_at) = asked_at {
            self.remember(&keys[0], asked_at, &answer);
        }
        let decision = self.limiter.finish(answer, self.op);
        if let (Ok(decision), Op::Decide) = (&decision, self.op) {
            self.limiter.record(self.endpoint, keys, decision, latency);
        }
        decision
    }

    /// The refusal the local deny cache holds for this call, if any;
    /// `first_key` is the caller's key under the first quota.
    fn cached_refusal(&self, first_key: &str) -> Option<Decision> {
        let cache = self.limiter.local_cache()?;
        match self.op {
            Op::Decide | Op::Peek => cache.get(first_key, self.limiter.fingerprint, self.cost),
            Op::Refund => None,
        }
    }

    /// Tells the local deny cache what the store answered, asked at
    /// `asked_at`: a refusal may be kept; a refund or an admission clears
    /// the caller's entries, since the store would now tell a refused call
    /// other fields (a refund perhaps no refusal at all).
    fn remember(&self, first_key: &str, asked_at: u64, answer: &Result<Decision, StoreError>) {
        let Some(cache) = self.limiter.local_cache() else {
            return;
        };
        let fingerprint = self.limiter.fingerprint;
        match (self.op, answer) {
            (Op::Refund, _) | (Op::Decide, Ok(Decision { allowed: true, .. })) => {
                cache.forget(first_key, fingerprint)
            }
            (Op::Decide | Op::Peek, Ok(decision)) => {
                cache.put(first_key, fingerprint, self.cost, asked_at, decision)
            }
            (_, Err(_)) => {}
        }
    }
}

/// Applies many calls, on any mix of limiters, with one `apply_many` (one
/// round trip on Redis) per store. Results are in the order of `requests`.
pub fn apply_batch(requests: &[BatchRequest<'_>]) -> Vec<Result<Decision, LimiterError>> {
    let mut results: Vec<Option<Result<Decision, LimiterError>>> =
        requests.iter().map(|_| None).collect();
    // Keys are made up front so the store calls can borrow them.
    let keys: Vec<Vec<String>> = requests
        .iter()
        .map(|r| r.limiter.keys(r.endpoint, r.identity))
        .collect();
    let key_refs: Vec<Vec<&str>> = keys
        .iter()
        .map(|keys| keys.iter().map(String::as_str).collect())
        .collect();
    let mut pending: Vec<usize> = Vec::with_capacity(requests.len());
    // A call whose caller comes earlier in the batch is not answered from
    // the cache: what the earlier one does (admitted, refunded) would
    // change the answer.
    let mut callers: HashSet<&str> = HashSet::new();
    for (i, request) in requests.iter().enumerate() {
        if let Err(e) = request.check() {
            results[i] = Some(Err(e));
            continue;
        }
        let first_key = keys[i][0].as_str();
        let repeated = requests.len() > 1 && !callers.insert(first_key);
        let cached = match repeated {
            false => request.cached_refusal(first_key),
            true => None,
        };
        match cached {
            Some(decision) => results[i] = Some(request.answer_cached(&keys[i], decision)),
            None => pending.push(i),
        }
    }
    while let Some(&first) = pending.first() {
        let backend = &requests[first].limiter.backend;
        let (group, rest): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| Arc::ptr_eq(&requests[i].limiter.backend, backend));
        let calls: Vec<Call<'_>> = group
            .iter()
            .map(|&i| Call {
                keys: &key_refs[i],
                quotas: &requests[i].limiter.quotas,
                cost: requests[i].cost,
                op: requests[i].op,
            })
            .collect();
        let asked_at = backend.local_cache.as_ref().map(LocalCache::now);
        let started = Instant::now();
        let answers = backend.store.apply_many(&calls);
        // Each decision of a batch waited for the whole batch.
        let latency = started.elapsed();
        debug_assert_eq!(answers.len(), group.len());
        for (&i, answer) in group.iter().zip(answers) {
            results[i] = Some(requests[i].settle(&keys[i], asked_at, answer, latency));
        }
        pending = rest;
    }
    results
        .into_iter()
        .map(|r| r.expect("every request is answered"))
        .collect()
}

/// Microseconds since the Unix epoch, for an event's `ts`.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The limit `name` of `config` changed by `spec`, and its quotas.
fn resolve(
    config: &Config,
    name: Option<&str>,
    spec: &LimitSpec,
) -> Result<(Limit, Vec<Quota>), LimiterError> {
    let base = config.limit(name).map_err(LimiterError::UnknownLimit)?;
    let limit = spec.over(base).map_err(LimiterError::Limit)?;
    let quotas = limit.quotas().map_err(LimiterError::Limit)?;
    Ok((limit, quotas))
}

/// A random delay in `0..=max_us`. Each process draws its own: the thread
/// that forked would otherwise give the same delays in every child (the
/// thread's generator is copied with it), and refused clients of sibling
/// workers would come back together.
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
