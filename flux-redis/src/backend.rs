//! The store a configuration chooses, memory or Redis, assembled with its
//! analytics: the one place that knows both stores.

use std::sync::Arc;

use flux_core::config::{Config, Storage};
use flux_core::{Backend, MemoryStore, MonotonicClock, Store, StoreError};

use crate::analytics::Reporting;
use crate::RedisStore;

/// A configuration's backend, and what reports its counters.
#[derive(Debug)]
pub struct Opened {
    /// What limiters decide through (`flux_core::Limiter::new`).
    pub backend: Arc<Backend>,
    /// Its counters as `/metrics` and `/metrics.json` show them, and a flush
    /// on demand. The backend keeps it alive too, so its flusher (on Redis
    /// with `[analytics] enabled`) makes its last flush after the last
    /// limiter is gone.
    pub reporting: Arc<Reporting>,
}

/// The store `config.flux.storage` names, with `config.analytics`. Redis is
/// connected lazily, so an unreachable Redis is not an error here but at the
/// first decision; settings that cannot work are.
///
/// ```
/// use std::sync::Arc;
/// use flux_core::config::Config;
/// use flux_core::{LimitSpec, Limiter};
///
/// let config = Config::default();
/// let opened = flux_redis::open(&config).unwrap();
/// let spec = LimitSpec { requests: Some(2), period: Some(1.0), ..LimitSpec::default() };
/// let limiter = Limiter::new(opened.backend, &config, "login", None, &spec).unwrap();
/// assert!(limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
/// assert!(limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
/// assert!(!limiter.decide(b"10.0.0.1", 1).unwrap().allowed);
/// ```
pub fn open(config: &Config) -> Result<Opened, StoreError> {
    let (store, redis): (Arc<dyn Store>, Option<Arc<RedisStore>>) = match config.flux.storage {
        Storage::Memory => (Arc::new(MemoryStore::new()), None),
        Storage::Redis => {
            let redis = Arc::new(RedisStore::connect(&config.redis)?);
            (redis.clone(), Some(redis))
        }
    };
    Ok(assemble(store, redis.as_deref(), config))
}

/// A backend on `store` (which is `redis` when it is a Redis store), with
/// the analytics and the limits `config` names, and on Redis the local deny
/// cache of `[flux] local_cache_size` refusals. (On the memory store a
/// refusal answered from the cache costs about what deciding it does, so
/// there is none.)
pub fn assemble(store: Arc<dyn Store>, redis: Option<&RedisStore>, config: &Config) -> Opened {
    let reporting = Arc::new(Reporting::start(&config.analytics, redis));
    let mut backend = Backend::new(store, reporting.analytics().clone()).with_configured(config);
    if redis.is_some() {
        let clock = Arc::new(MonotonicClock::new());
        backend = backend.with_local_cache(config.flux.local_cache_size, clock);
    }
    let backend = if reporting.has_flusher() {
        backend.with_events(reporting.clone())
    } else {
        backend.keeping(reporting.clone())
    };
    Opened {
        backend: Arc::new(backend),
        reporting,
    }
}
