//! What the limiter did, counted where it happens.
//!
//! Counters are per endpoint and lock-free on the decision path: a limiter
//! finds an `Arc<EndpointStats>` and bumps atomics. A decision's endpoint is
//! the one the call named (`hit(key, endpoint=...)`), else the limiter's
//! scope. Sampled events for the Redis stream wait in a bounded buffer that a
//! background flusher (flux-redis) drains in batches; when the buffer is
//! full, events are dropped and counted, never waited for.
//!
//! # Bounded series
//!
//! Endpoint names may come from outside (a URL path), so the number of
//! series is capped, never the counting: an [`Analytics`] keeps at most
//! [`MAX_SERIES`] names, a limiter names at most [`MAX_SERIES_PER_LIMITER`]
//! endpoints, and an endpoint longer than [`MAX_ENDPOINT_LEN`] bytes is
//! never a name; every decision beyond goes to the series
//! [`OVERFLOW_ENDPOINT`]. Series are never dropped, since counters must not
//! go down, so the first names seen keep their series.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use crate::{Decision, Policy, Quota, Source};

/// Upper bounds of the latency histogram, in nanoseconds (1 µs to 1 s).
pub const LATENCY_BUCKETS_NS: [u64; 13] = [
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    5_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
];

/// Events waiting for the flusher beyond this are dropped (and counted).
const MAX_PENDING_EVENTS: usize = 100_000;

/// The most endpoint names (series) one [`Analytics`] keeps, besides
/// [`OVERFLOW_ENDPOINT`].
pub const MAX_SERIES: usize = 1_000;

/// The most endpoints one limiter counts under their own names.
pub const MAX_SERIES_PER_LIMITER: usize = 100;

/// Endpoints longer than this (in bytes) are counted under [`OVERFLOW_ENDPOINT`].
pub const MAX_ENDPOINT_LEN: usize = 128;

/// The series of the decisions whose endpoint got no series of its own.
pub const OVERFLOW_ENDPOINT: &str = "__other__";

/// What a decision is counted as: the `decision` label of
/// `flux_requests_total`, one per way a call can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Admitted by the store.
    Allowed,
    /// Refused by the store.
    Blocked,
    /// Admitted without a decision: the store failed and `fail_silently` is on.
    FailOpen,
    /// Refused from this process's cache of refusals, without asking the store.
    LocalCache,
    /// Admitted by a shadow limit that would have refused it.
    Shadow,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Allowed,
        Outcome::Blocked,
        Outcome::FailOpen,
        Outcome::LocalCache,
        Outcome::Shadow,
    ];

    /// The label, as `/metrics`, `/metrics.json` and the Redis totals name it.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Blocked => "blocked",
            Outcome::FailOpen => "fail_open",
            Outcome::LocalCache => "local_cache",
            Outcome::Shadow => "shadow",
        }
    }

    /// Whether the call was refused (what a block rate counts).
    pub const fn refused(self) -> bool {
        matches!(self, Outcome::Blocked | Outcome::LocalCache)
    }

    pub fn of(decision: &Decision) -> Outcome {
        match (decision.source, decision.allowed) {
            (Source::FailOpen, _) => Outcome::FailOpen,
            (Source::LocalCache, _) => Outcome::LocalCache,
            (Source::Shadow, _) => Outcome::Shadow,
            (Source::Storage, true) => Outcome::Allowed,
            (Source::Storage, false) => Outcome::Blocked,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A count per [`Outcome`], in the order of [`Outcome::ALL`].
pub type Counts = [u64; Outcome::ALL.len()];

/// One endpoint's counters.
#[derive(Debug)]
pub struct EndpointStats {
    name: Arc<str>,
    counts: [AtomicU64; Outcome::ALL.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_NS.len()],
    latency_sum_ns: AtomicU64,
    latency_count: AtomicU64,
}

impl EndpointStats {
    fn new(name: &str) -> Self {
        EndpointStats {
            name: Arc::from(name),
            counts: Default::default(),
            latency_buckets: Default::default(),
            latency_sum_ns: AtomicU64::default(),
            latency_count: AtomicU64::default(),
        }
    }

    /// The endpoint these count, as `/metrics` labels it and events name it.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn record(&self, decision: &Decision, latency_ns: u64) {
        self.counts[Outcome::of(decision).index()].fetch_add(1, Relaxed);
        // Buckets are stored non-cumulatively; the snapshot adds them up.
        if let Some(i) = LATENCY_BUCKETS_NS.iter().position(|&le| latency_ns <= le) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_sum_ns.fetch_add(latency_ns, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> EndpointSnapshot {
        let mut cumulative = 0;
        let latency_buckets = LATENCY_BUCKETS_NS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(&le, n)| {
                cumulative += n.load(Relaxed);
                (le, cumulative)
            })
            .collect();
        EndpointSnapshot {
            counts: self.counts.each_ref().map(|n| n.load(Relaxed)),
            latency_buckets,
            latency_sum_ns: self.latency_sum_ns.load(Relaxed),
            latency_count: self.latency_count.load(Relaxed),
        }
    }
}

/// A copy of one endpoint's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointSnapshot {
    /// Decisions by outcome, in the order of [`Outcome::ALL`].
    pub counts: Counts,
    /// `(upper bound ns, decisions at or below it)`, cumulative.
    pub latency_buckets: Vec<(u64, u64)>,
    pub latency_sum_ns: u64,
    pub latency_count: u64,
}

impl EndpointSnapshot {
    /// The decisions counted as `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts to these (the latency buckets are the same for all).
    pub fn merge(&mut self, other: &EndpointSnapshot) {
        for (n, m) in self.counts.iter_mut().zip(other.counts) {
            *n += m;
        }
        if self.latency_buckets.is_empty() {
            self.latency_buckets = other.latency_buckets.clone();
        } else {
            for ((_, n), (_, m)) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
                *n += m;
            }
        }
        self.latency_sum_ns += other.latency_sum_ns;
        self.latency_count += other.latency_count;
    }
}

/// A copy of every endpoint's counters, by endpoint name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub endpoints: BTreeMap<String, EndpointSnapshot>,
    pub events_dropped: u64,
}

impl Snapshot {
    /// Adds `other` to this one, endpoint by endpoint: what several stores
    /// of one process (or stores since dropped) counted, as one set of
    /// counters that never go down.
    pub fn merge(&mut self, other: &Snapshot) {
        for (name, ep) in &other.endpoints {
            self.endpoints.entry(name.clone()).or_default().merge(ep);
        }
        self.events_dropped += other.events_dropped;
    }
}

/// One sampled decision bound for the Redis stream. Holds no raw identity:
/// `key` is the storage key, whose last part is a digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts_us: u64,
    pub key: String,
    pub endpoint: Arc<str>,
    pub allowed: bool,
    pub policy: Policy,
    /// Calls of cost 1 in use after this decision: `limit - remaining`.
    pub usage: u64,
    pub requests: u64,
    pub period_secs: f64,
    pub burst: u64,
}

impl Event {
    pub fn new(
        ts_us: u64,
        key: String,
        endpoint: Arc<str>,
        quota: &Quota,
        decision: &Decision,
    ) -> Self {
        Event {
            ts_us,
            key,
            endpoint,
            allowed: decision.allowed,
            policy: quota.policy(),
            usage: decision.limit.saturating_sub(decision.remaining),
            requests: quota.requests(),
            period_secs: quota.period_us() as f64 / 1e6,
            burst: quota.burst(),
        }
    }
}

/// The process's analytics: counters for every endpoint and the sampled
/// events waiting to be flushed.
#[derive(Debug)]
pub struct Analytics {
    endpoints: RwLock<BTreeMap<String, Arc<EndpointStats>>>,
    pending: Mutex<Vec<Event>>,
    dropped: AtomicU64,
    /// Sample when a uniform draw in `0..u64::MAX` falls below this.
    sample_threshold: u64,
    sampler: AtomicU64,
}

impl Default for Analytics {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl Analytics {
    /// `sample_rate` in `0.0..=1.0`: the share of decisions sent as events.
    pub fn new(sample_rate: f64) -> Self {
        let rate = sample_rate.clamp(0.0, 1.0);
        Analytics {
            endpoints: RwLock::default(),
            pending: Mutex::default(),
            dropped: AtomicU64::new(0),
            sample_threshold: if rate >= 1.0 {
                u64::MAX
            } else {
                (rate * u64::MAX as f64) as u64
            },
            sampler: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// The counters for `endpoint`, made on first use; hold on to them.
    /// Once [`MAX_SERIES`] names exist, a new name gets the counters of
    /// [`OVERFLOW_ENDPOINT`] instead.
    pub fn endpoint(&self, endpoint: &str) -> Arc<EndpointStats> {
        if let Some(stats) = self.endpoints.read().get(endpoint) {
            return stats.clone();
        }
        let mut endpoints = self.endpoints.write();
        if let Some(stats) = endpoints.get(endpoint) {
            return stats.clone();
        }
        let named = endpoints.len() - usize::from(endpoints.contains_key(OVERFLOW_ENDPOINT));
        let name = if named < MAX_SERIES {
            endpoint
        } else {
            OVERFLOW_ENDPOINT
        };
        endpoints
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(EndpointStats::new(name)))
            .clone()
    }

    /// Whether the next decision should become an event.
    pub fn sample(&self) -> bool {
        if self.sample_threshold == u64::MAX {
            return true;
        }
        // SplitMix64 over a shared counter: cheap, lock-free, well spread.
        let mut z = self
            .sampler
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) < self.sample_threshold
    }

    /// Queues an event for the flusher, or counts it dropped when the queue is full.
    pub fn push_event(&self, event: Event) {
        let mut pending = self.pending.lock();
        if pending.len() >= MAX_PENDING_EVENTS {
            drop(pending);
            self.dropped.fetch_add(1, Relaxed);
        } else {
            pending.push(event);
        }
    }

    /// Takes every queued event.
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.pending.lock())
    }

    /// Counts events lost elsewhere (a flush that Redis refused).
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            endpoints: self
                .endpoints
                .read()
                .iter()
                .map(|(name, stats)| (name.clone(), stats.snapshot()))
                .collect(),
            events_dropped: self.dropped.load(Relaxed),
        }
    }
}

/// The series one limiter counts under: its scope's for calls that name no
/// endpoint, and one per endpoint named, up to [`MAX_SERIES_PER_LIMITER`]
/// (then [`OVERFLOW_ENDPOINT`]). Series are made at a limiter's first
/// decision, so a limiter made only to check its arguments adds none.
#[derive(Debug)]
pub struct LimiterSeries {
    analytics: Arc<Analytics>,
    scope: Arc<str>,
    own: OnceLock<Arc<EndpointStats>>,
    endpoints: RwLock<HashMap<Box<str>, Arc<EndpointStats>>>,
    overflow: OnceLock<Arc<EndpointStats>>,
}

impl LimiterSeries {
    pub fn new(analytics: Arc<Analytics>, scope: &str) -> Self {
        LimiterSeries {
            analytics,
            scope: Arc::from(scope),
            own: OnceLock::new(),
            endpoints: RwLock::default(),
            overflow: OnceLock::new(),
        }
    }

    /// The counters of a decision for `endpoint` (`None`: the scope's).
    /// Once the limiter is full, an endpoint it has not named costs a read
    /// lock, as one it has: a flood of new names never serialises on a write.
    pub fn get(&self, endpoint: Option<&str>) -> Arc<EndpointStats> {
        let Some(endpoint) = endpoint else {
            return self
                .own
                .get_or_init(|| self.analytics.endpoint(&self.scope))
                .clone();
        };
        if endpoint.len() > MAX_ENDPOINT_LEN {
            return self.overflow();
        }
        {
            let endpoints = self.endpoints.read();
            if let Some(stats) = endpoints.get(endpoint) {
                return stats.clone();
            }
            if endpoints.len() >= MAX_SERIES_PER_LIMITER {
                return self.overflow();
            }
        }
        let mut endpoints = self.endpoints.write();
        if let Some(stats) = endpoints.get(endpoint) {
            return stats.clone();
        }
        if endpoints.len() >= MAX_SERIES_PER_LIMITER {
            return self.overflow();
        }
        endpoints
            .entry(endpoint.into())
            .or_insert_with(|| self.analytics.endpoint(endpoint))
            .clone()
    }

    fn overflow(&self) -> Arc<EndpointStats> {
        self.overflow
            .get_or_init(|| self.analytics.endpoint(OVERFLOW_ENDPOINT))
            .clone()
    }
}

impl Snapshot {
    /// The counters in the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP flux_requests_total Rate-limit decisions by endpoint and outcome.\n");
        out.push_str("# TYPE flux_requests_total counter\n");
        for (name, ep) in &self.endpoints {
            let name = escape_label(name);
            for outcome in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "flux_requests_total{{endpoint=\"{name}\",decision=\"{}\"}} {}",
                    outcome.name(),
                    ep.count(outcome)
                );
            }
        }
        out.push_str("# HELP flux_decision_seconds Time taken to decide, by endpoint.\n");
        out.push_str("# TYPE flux_decision_seconds histogram\n");
        for (name, ep) in &self.endpoints {
            let name = escape_label(name);
            for (le, n) in &ep.latency_buckets {
                let le = *le as f64 / 1e9;
                let _ = writeln!(
                    out,
                    "flux_decision_seconds_bucket{{endpoint=\"{name}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "flux_decision_seconds_bucket{{endpoint=\"{name}\",le=\"+Inf\"}} {}",
                ep.latency_count
            );
            let _ = writeln!(
                out,
                "flux_decision_seconds_sum{{endpoint=\"{name}\"}} {}",
                ep.latency_sum_ns as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "flux_decision_seconds_count{{endpoint=\"{name}\"}} {}",
                ep.latency_count
            );
        }
        out.push_str("# HELP flux_events_dropped_total Analytics events not delivered to Redis.\n");
        out.push_str("# TYPE flux_events_dropped_total counter\n");
        let _ = writeln!(out, "flux_events_dropped_total {}", self.events_dropped);
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool, source: Source) -> Decision {
        Decision {
            allowed,
            source,
            ..Decision::default()
        }
    }

    #[test]
    fn counts_by_outcome_and_latency_bucket() {
        let analytics = Analytics::new(1.0);
        let api = analytics.endpoint("api");
        api.record(&decision(true, Source::Storage), 800);
        api.record(&decision(false, Source::Storage), 30_000);
        api.record(&decision(true, Source::FailOpen), 2_000_000_000);
        let snap = analytics.snapshot();
        let ep = &snap.endpoints["api"];
        assert_eq!(ep.counts, [1, 1, 1, 0, 0]);
        // 800 ns is in the first bucket, 30 µs from the 50 µs bucket on, 2 s in none.
        assert_eq!(ep.latency_buckets[0], (1_000, 1));
        assert_eq!(ep.latency_buckets[3], (25_000, 1));
        assert_eq!(ep.latency_buckets[4], (50_000, 2));
        assert_eq!(ep.latency_buckets.last(), Some(&(1_000_000_000, 2)));
        assert_eq!(ep.latency_count, 3);
    }

    #[test]
    fn a_full_queue_drops_and_counts_exactly_the_overflow() {
        let analytics = Analytics::new(1.0);
        let quota = crate::QuotaSpec::new(crate::Policy::Gcra, 1, 1.0)
            .build()
            .unwrap();
        let event = |ts_us| {
            let allowed = decision(true, Source::Storage);
            Event::new(ts_us, "k".to_owned(), "api".into(), &quota, &allowed)
        };
        let overflow = 7;
        for ts in 0..(MAX_PENDING_EVENTS + overflow) as u64 {
            analytics.push_event(event(ts));
        }
        assert_eq!(analytics.snapshot().events_dropped, overflow as u64);
        let taken = analytics.take_events();
        assert_eq!(taken.len(), MAX_PENDING_EVENTS);
        // The first events are kept, the last dropped.
        assert_eq!(
            taken.last().map(|e| e.ts_us),
            Some(MAX_PENDING_EVENTS as u64 - 1)
        );
        // Emptied, the queue takes events again; the count of those lost stays.
        analytics.push_event(event(0));
        assert_eq!(analytics.take_events().len(), 1);
        assert_eq!(analytics.snapshot().events_dropped, overflow as u64);
    }

    #[test]
    fn sampling_keeps_about_the_rate() {
        let analytics = Analytics::new(0.1);
        let kept = (0..100_000).filter(|_| analytics.sample()).count();
        assert!((9_000..11_000).contains(&kept), "kept {kept}");
        assert!((0..1000).all(|_| Analytics::new(1.0).sample()));
        assert!((0..1000).all(|_| !Analytics::new(0.0).sample()));
    }

    #[test]
    fn snapshots_merge_endpoint_by_endpoint() {
        let (a, b) = (Analytics::new(1.0), Analytics::new(1.0));
        a.endpoint("api")
            .record(&decision(true, Source::Storage), 800);
        b.endpoint("api")
            .record(&decision(false, Source::Storage), 30_000);
        b.endpoint("login")
            .record(&decision(true, Source::FailOpen), 800);
        b.add_dropped(2);
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        let api = &merged.endpoints["api"];
        assert_eq!(api.counts, [1, 1, 0, 0, 0]);
        assert_eq!(api.latency_buckets[0], (1_000, 1));
        assert_eq!(api.latency_buckets[4], (50_000, 2));
        assert_eq!((api.latency_count, api.latency_sum_ns), (2, 30_800));
        assert_eq!(merged.endpoints["login"].count(Outcome::FailOpen), 1);
        assert_eq!(merged.events_dropped, 2);
        // Merging into an empty snapshot copies.
        let mut empty = Snapshot::default();
        empty.merge(&merged);
        assert_eq!(empty, merged);
    }

    #[test]
    fn series_are_capped_per_analytics_with_every_decision_still_counted() {
        let analytics = Analytics::new(1.0);
        for i in 0..MAX_SERIES + 50 {
            let stats = analytics.endpoint(&format!("e{i}"));
            stats.record(&decision(true, Source::Storage), 1);
            let expected = if i < MAX_SERIES {
                format!("e{i}")
            } else {
                OVERFLOW_ENDPOINT.to_owned()
            };
            assert_eq!(&**stats.name(), expected);
        }
        let snap = analytics.snapshot();
        assert_eq!(snap.endpoints.len(), MAX_SERIES + 1);
        assert_eq!(
            snap.endpoints[OVERFLOW_ENDPOINT].count(Outcome::Allowed),
            50
        );
        // A name that has its series keeps it.
        assert_eq!(&**analytics.endpoint("e7").name(), "e7");
    }

    #[test]
    fn a_limiter_names_its_first_endpoints_and_counts_the_rest_as_other() {
        let analytics = Arc::new(Analytics::new(1.0));
        let series = LimiterSeries::new(analytics.clone(), "api");
        assert_eq!(&**series.get(None).name(), "api");
        for i in 0..MAX_SERIES_PER_LIMITER + 10 {
            series
                .get(Some(&format!("/item/{i}")))
                .record(&decision(true, Source::Storage), 1);
        }
        // Those named first keep their names; a long name is never one.
        assert_eq!(&**series.get(Some("/item/3")).name(), "/item/3");
        let long = "x".repeat(MAX_ENDPOINT_LEN + 1);
        assert_eq!(&**series.get(Some(&long)).name(), OVERFLOW_ENDPOINT);
        let other = LimiterSeries::new(analytics.clone(), "other");
        assert_eq!(
            &**other.get(Some(&"y".repeat(MAX_ENDPOINT_LEN))).name(),
            "y".repeat(128)
        );
        let snap = analytics.snapshot();
        assert_eq!(
            snap.endpoints[OVERFLOW_ENDPOINT].count(Outcome::Allowed),
            10
        );
        assert_eq!(snap.endpoints.len(), 1 + MAX_SERIES_PER_LIMITER + 1 + 1);
    }

    #[test]
    fn prometheus_text_escapes_labels() {
        let analytics = Analytics::new(1.0);
        analytics
            .endpoint("a\"b")
            .record(&decision(true, Source::Storage), 1);
        let text = analytics.snapshot().to_prometheus();
        assert!(text.contains("flux_requests_total{endpoint=\"a\\\"b\",decision=\"allowed\"} 1\n"));
        assert!(text.contains("flux_decision_seconds_bucket{endpoint=\"a\\\"b\",le=\"+Inf\"} 1\n"));
        assert!(text.ends_with("flux_events_dropped_total 0\n"));
    }
}
