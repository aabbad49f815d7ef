//! `/metrics.json`: the Prometheus figures for tools, plus the totals that
//! every process has flushed to Redis.
//!
//! ```json
//! {
//!   "endpoints": {
//!     "login": {
//!       "allowed": 3, "blocked": 2, "fail_open": 0, "local_cache": 0, "shadow": 0,
//!       "total": 5, "block_rate": 0.4,
//!       "latency": {"count": 5, "sum_seconds": 0.00021,
//!                   "buckets": [{"le": 1e-06, "count": 0}, ..., {"le": "+Inf", "count": 5}]}
//!     }
//!   },
//!   "events_dropped": 0,
//!   "redis_totals": [
//!     {"redis": "redis://127.0.0.1:6379/0", "stream": "flux:events",
//!      "totals_key": "{flux:events}:totals", "error": null,
//!      "endpoints": {"login": {"allowed": 30, "blocked": 20, "fail_open": 0, ...,
//!                              "total": 50, "block_rate": 0.4}}}
//!   ]
//! }
//! ```
//!
//! `endpoints` are this process's counters. `redis_totals` has one entry per
//! Redis (and totals hash) this process flushes to, empty on the memory
//! store or with analytics off; when Redis cannot be read, `error` says why
//! and `endpoints` is empty.

use std::collections::BTreeMap;
use std::sync::Arc;

use flux_core::analytics::{Counts, EndpointSnapshot, Outcome, Snapshot};
use serde_json::{json, Map, Value};

use super::flusher::Sink;

/// The document above, reading the totals of each of `sinks` from Redis.
pub(crate) fn metrics(snapshot: &Snapshot, sinks: &[Arc<Sink>]) -> Value {
    let endpoints: Map<String, Value> = snapshot
        .endpoints
        .iter()
        .map(|(name, ep)| (name.clone(), endpoint(ep)))
        .collect();
    let totals: Vec<Value> = sinks.iter().map(|sink| redis_totals(sink)).collect();
    json!({
        "endpoints": endpoints,
        "events_dropped": snapshot.events_dropped,
        "redis_totals": totals,
    })
}

/// A count per outcome by its name, the total, and the block rate: the
/// share refused, by the store or from the local cache of refusals.
fn counts(counts: &Counts) -> Map<String, Value> {
    let total: u64 = counts.iter().sum();
    let refused: u64 = Outcome::ALL
        .iter()
        .zip(counts)
        .filter(|(outcome, _)| outcome.refused())
        .map(|(_, n)| n)
        .sum();
    let block_rate = if total == 0 {
        0.0
    } else {
        refused as f64 / total as f64
    };
    let mut map = Map::new();
    for (outcome, n) in Outcome::ALL.iter().zip(counts) {
        map.insert(outcome.name().into(), (*n).into());
    }
    map.insert("total".into(), total.into());
    map.insert("block_rate".into(), block_rate.into());
    map
}

fn endpoint(ep: &EndpointSnapshot) -> Value {
    let mut buckets: Vec<Value> = ep
        .latency_buckets
        .iter()
        .map(|&(le, n)| json!({"le": le as f64 / 1e9, "count": n}))
        .collect();
    buckets.push(json!({"le": "+Inf", "count": ep.latency_count}));
    let mut map = counts(&ep.counts);
    map.insert(
        "latency".into(),
        json!({
            "count": ep.latency_count,
            "sum_seconds": ep.latency_sum_ns as f64 / 1e9,
            "buckets": buckets,
        }),
    );
    Value::Object(map)
}

fn redis_totals(sink: &Sink) -> Value {
    let (endpoints, error) = match sink.totals() {
        Ok(totals) => (totals, None),
        Err(err) => (BTreeMap::new(), Some(err.to_string())),
    };
    let endpoints: Map<String, Value> = endpoints
        .into_iter()
        .map(|(name, n): (String, Counts)| (name, Value::Object(counts(&n))))
        .collect();
    json!({
        "redis": sink.redis,
        "stream": sink.stream,
        "totals_key": sink.totals_key,
        "endpoints": endpoints,
        "error": error,
    })
}
