//! What a backend does with its counters beyond counting them.
//!
//! Every [`Backend`](crate::Backend) counts its decisions (flux-core's
//! `Analytics`: per endpoint, lock-free) whatever the configuration says, so
//! the counters are there whenever someone asks. With `[analytics] enabled`:
//!
//! - on Redis, sampled decisions become events, and a thread of the backend
//!   sends them with the per-endpoint totals to Redis in batches
//!   ([`Flusher`]: one pipeline per flush, every [`FLUSH_INTERVAL`]);
//! - the process serves `/metrics` and `/metrics.json` on `host:port`, from
//!   one server whatever the number of backends (`server.rs`), and at `/` a
//!   page that draws them in the browser (`dashboard.rs`).
//!
//! The same figures are available without the server:
//! [`Backend::metrics_prometheus`](crate::Backend::metrics_prometheus) and
//! [`Backend::metrics_json`](crate::Backend::metrics_json) (the C ABI's
//! `flux_store_metrics`).

mod dashboard;
mod flusher;
mod json;
mod server;

use std::sync::Arc;

use flux_core::analytics::Analytics;
use flux_core::config::AnalyticsConfig;
use flux_core::EventTaker;

pub use flusher::{
    totals_key, FlushReport, Flusher, EVENTS_FORMAT, EVENTS_PER_ENTRY, FLUSH_INTERVAL,
};
pub use server::{metrics_address, PROMETHEUS_CONTENT_TYPE};

use crate::{RedisError, RedisStore};
use flusher::{FlushThread, Sink};
use flux_core::fork::PerProcess;
use server::Registration;

/// A backend's analytics: its counters, and, as configured, its flusher and
/// its hold on the metrics server. Made by [`crate::open`].
#[derive(Debug)]
pub struct Reporting {
    analytics: Arc<Analytics>,
    /// With analytics enabled on Redis: where events and totals go. Dropped
    /// before `registration`, so that the last flush's figures are the ones
    /// the registry keeps.
    flushing: Option<Flushing>,
    _registration: Registration,
}

/// The flusher of a backend: each process sends its own decisions, from a
/// thread and on a connection of its own (see [`flux_core::fork`]).
#[derive(Debug)]
struct Flushing {
    /// What each process's sink is made like; never connects itself.
    blueprint: Sink,
    per_process: PerProcess<Running>,
}

#[derive(Debug)]
struct Running {
    /// `None` in a child that could not start the thread: its events are
    /// then counted as dropped once the queue is full.
    thread: Option<FlushThread>,
    sink: Arc<Sink>,
}

impl Reporting {
    /// Counters for a backend on `redis` (or the memory store, `None`), and
    /// with `config.enabled` the flusher (Redis only) and the server.
    pub fn start(config: &AnalyticsConfig, redis: Option<&RedisStore>) -> Reporting {
        let analytics = Arc::new(Analytics::new(config.sample_rate));
        let mut flushing = None;
        if let (true, Some(store)) = (config.enabled, redis) {
            match start_flusher(&analytics, config, store) {
                Ok(flush) => flushing = Some(flush),
                Err(err) => log::warn!(
                    target: flux_core::LOG_TARGET,
                    "analytics: events will not be sent to Redis ({err}); \
                     counters and /metrics still work"
                ),
            }
        }
        let sink = flushing
            .as_ref()
            .map(|f| f.running(&analytics).sink.clone());
        let serve = config
            .enabled
            .then_some((config.host.as_str(), config.port));
        let registration = server::register(analytics.clone(), sink, serve);
        Reporting {
            analytics,
            flushing,
            _registration: registration,
        }
    }

    pub fn analytics(&self) -> &Arc<Analytics> {
        &self.analytics
    }

    /// Whether a flusher sends sampled decisions to Redis as events.
    pub fn has_flusher(&self) -> bool {
        self.flushing.is_some()
    }

    /// Sends the queued events and totals to Redis now instead of at the
    /// flusher's next turn, on the caller's thread. Does nothing (and
    /// reports nothing) unless analytics is enabled on Redis.
    pub fn flush(&self) -> Result<FlushReport, RedisError> {
        match self.running().and_then(|r| r.thread.as_ref()) {
            Some(thread) => thread.flusher().lock().flush(),
            None => Ok(FlushReport::default()),
        }
    }

    /// The counters in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        self.analytics.snapshot().to_prometheus()
    }

    /// The counters as `/metrics.json` shows them, with the cross-process
    /// totals read from Redis when analytics is enabled there.
    pub fn json(&self) -> String {
        let sinks: Vec<Arc<Sink>> = self.running().map(|r| r.sink.clone()).into_iter().collect();
        json::metrics(&self.analytics.snapshot(), &sinks).to_string()
    }

    fn running(&self) -> Option<&Running> {
        self.flushing.as_ref().map(|f| f.running(&self.analytics))
    }
}

/// Sampled decisions become events when a flusher sends them; in a forked
/// child, the first decision starts the child's own.
impl EventTaker for Reporting {
    fn taking(&self) -> bool {
        self.running().is_some()
    }
}

impl Flushing {
    /// This process's flusher, started now in a child that has none yet.
    fn running(&self, analytics: &Arc<Analytics>) -> &Running {
        self.per_process.get_or_init(|| {
            // The counts and events inherited are the parent's to send: the
            // child sends what it adds from here on.
            analytics.take_events();
            let sink = Arc::new(self.blueprint.fresh());
            let flusher = Flusher::from_now_on(analytics.clone(), sink.clone());
            Running {
                thread: FlushThread::start(flusher).ok(),
                sink,
            }
        })
    }
}

fn start_flusher(
    analytics: &Arc<Analytics>,
    config: &AnalyticsConfig,
    store: &RedisStore,
) -> Result<Flushing, String> {
    let blueprint = Sink::new(store.config(), config).map_err(|e| e.to_string())?;
    let sink = Arc::new(blueprint.fresh());
    let flusher = Flusher::with_sink(analytics.clone(), sink.clone());
    let thread = FlushThread::start(flusher)
        .map_err(|e| format!("cannot start the analytics thread: {e}"))?;
    Ok(Flushing {
        blueprint,
        per_process: PerProcess::new(Running {
            thread: Some(thread),
            sink,
        }),
    })
}
