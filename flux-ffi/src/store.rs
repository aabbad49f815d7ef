//! The store a configuration chose, shared by many limiters.

use std::ffi::c_char;
use std::sync::Arc;

use flux_core::config::Storage;
use flux_core::fork::PerProcess;
use flux_core::{Backend, LimiterError};
use flux_redis::analytics::Reporting;

use crate::error::{fail, fail_with, flux_result};
use crate::ffi::{
    arc_into_handle, ffi_panic_boundary, free_arc_handle, try_out, try_ref_from_ptr, write_text,
    ArcHandle, Handle,
};
use crate::fork::watch_forks;
use crate::worker::Worker;

/// The storage of a configuration: the in-process memory store, or a Redis
/// connection pool. Also owns the thread that answers the `_async` calls of
/// its limiters.
///
/// Made by `flux_store_new`, freed by `flux_store_free`. Thread-safe: any
/// number of threads and limiters may use one store at once. Each limiter
/// keeps its store alive, so the store may be freed before its limiters;
/// the pool and the thread go when the store and all its limiters are freed.
///
/// Fork-safe: a child process forked after the store was made may use it
/// and its limiters. The child connects to Redis and starts its threads
/// anew at its first call and never touches its parent's connections or
/// threads (freeing the store in the child leaves them to the parent). A
/// memory store is copied into the child with what it had counted, and
/// from then on each process counts on its own. Requests queued by `_async`
/// calls before the fork are answered in the parent only.
#[derive(Debug)]
pub struct flux_store {
    _private: [u8; 0],
}

/// What a `flux_store` stands for.
pub(crate) struct StoreInner {
    /// First, so that it is joined (its queue answered) before the rest goes.
    /// Each process its own (see `flux_core::fork`).
    worker: PerProcess<Worker>,
    pub(crate) backend: Arc<Backend>,
    reporting: Arc<Reporting>,
    key_prefix: String,
}

impl StoreInner {
    /// This process's async thread (not yet started until the first request).
    pub(crate) fn worker(&self) -> &Worker {
        self.worker.get_or_init(Worker::default)
    }
}

impl Handle for flux_store {
    type Target = StoreInner;
}
impl ArcHandle for flux_store {}

/// Values of `flux_store_kind`.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flux_storage {
    /// In this process only.
    Memory = 0,
    /// Redis or Redis Cluster, shared by every process that uses it.
    Redis = 1,
}

/// Makes the store `config` chooses (`[flux] storage`) and writes it to `*out`.
///
/// Connecting to Redis is lazy: an unreachable Redis is not an error here.
/// A decision then fails open (`fail_silently = true`) or returns
/// `FLUX_RESULT_STORAGE`/`FLUX_RESULT_TIMEOUT`. Returns
/// `FLUX_RESULT_CONFIG` when the Redis settings cannot describe a server.
/// Free the result with `flux_store_free`; `config` may be freed at once.
///
/// With `[analytics] enabled`, the process's metrics server (`/metrics`,
/// `/metrics.json` on `host:port`) runs from here on unless it already does
/// (a port in use is a warning in the log, not an error), and on Redis the
/// store gets a thread that sends sampled events and totals to Redis.
#[no_mangle]
pub extern "C" fn flux_store_new(
    config: *const crate::flux_config,
    out: *mut *mut flux_store,
) -> flux_result {
    ffi_panic_boundary! {
        let config = try_ref_from_ptr!(config);
        let out = try_out!(out);
        watch_forks();
        match flux_redis::open(config) {
            Ok(opened) => {
                *out = arc_into_handle(Arc::new(StoreInner {
                    backend: opened.backend,
                    reporting: opened.reporting,
                    key_prefix: config.flux.key_prefix.clone(),
                    worker: PerProcess::new(Worker::default()),
                }));
                flux_result::Ok
            }
            Err(e) => fail_with(&LimiterError::Store(e)),
        }
    }
}

/// Loads the Lua scripts into Redis now rather than at the first decision,
/// so a bad connection shows at start-up. Does nothing on the memory store.
///
/// Returns `FLUX_RESULT_OK`, or a storage error with a message.
#[no_mangle]
pub extern "C" fn flux_store_preload(store: *const flux_store) -> flux_result {
    ffi_panic_boundary! {
        let store = try_ref_from_ptr!(store);
        match store.backend.preload() {
            Ok(()) => flux_result::Ok,
            Err(e) => fail_with(&LimiterError::Store(e)),
        }
    }
}

/// Deletes every key under the configuration's `key_prefix` (on Redis with
/// SCAN, never KEYS) and writes how many to `*deleted`.
///
/// Every limit that uses the prefix starts again from full.
#[no_mangle]
pub extern "C" fn flux_store_clear(store: *const flux_store, deleted: *mut u64) -> flux_result {
    ffi_panic_boundary! {
        let store = try_ref_from_ptr!(store);
        let deleted = try_out!(deleted);
        match store.backend.clear_prefix(&store.key_prefix) {
            Ok(n) => {
                *deleted = n;
                flux_result::Ok
            }
            Err(e) => fail_with(&LimiterError::Store(e)),
        }
    }
}

/// Values of `format` in `flux_store_metrics`.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flux_metrics {
    /// The Prometheus text format (version 0.0.4), as `/metrics` serves it.
    Prometheus = 0,
    /// JSON, as `/metrics.json` serves it.
    Json = 1,
}

/// Writes a snapshot of the store's counters, in `format` (a
/// `flux_metrics` value), into `buf` (`len` bytes), NUL-terminated.
///
/// The counters are those of every limiter on this store: decisions per
/// endpoint (the one a call named, else the limiter's scope; see
/// `flux_limiter_decide_endpoint` for the caps) by outcome (allowed, blocked, fail_open),
/// a histogram of the time each decision took, and the analytics events
/// dropped. They are kept whether or not `[analytics] enabled` is set. In
/// JSON, with analytics enabled on Redis, `redis_totals` also has what every
/// process has counted, read from Redis (a round trip, bounded by
/// `timeout_ms`; a failure is reported inside the JSON, not as a result).
///
/// On `FLUX_RESULT_OK`, `*written` is the text's length (not counting the
/// NUL). When `len` is too small (NULL `buf` with `len` 0 included),
/// returns `FLUX_RESULT_BUFFER_TOO_SMALL` with nothing copied and
/// `*written` set to the size the snapshot needed, NUL included; counters
/// grow, so allow some room when asking again. An unknown `format` is
/// `FLUX_RESULT_INVALID_ARGUMENT`. Thread-safe.
#[no_mangle]
pub extern "C" fn flux_store_metrics(
    store: *const flux_store,
    format: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> flux_result {
    ffi_panic_boundary! {
        let store = try_ref_from_ptr!(store);
        let written = try_out!(written);
        let text = match format {
            f if f == flux_metrics::Prometheus as u32 => store.reporting.prometheus(),
            f if f == flux_metrics::Json as u32 => store.reporting.json(),
            other => {
                return fail(
                    flux_result::InvalidArgument,
                    format!(
                        "format must be FLUX_METRICS_PROMETHEUS (0) or FLUX_METRICS_JSON (1), got {other}"
                    ),
                )
            }
        };
        write_text(&text, buf, len, written, "the metrics snapshot")
    }
}

/// `FLUX_STORAGE_MEMORY` or `FLUX_STORAGE_REDIS`; `UINT32_MAX` when `store`
/// is NULL.
#[no_mangle]
pub extern "C" fn flux_store_kind(store: *const flux_store) -> u32 {
    ffi_panic_boundary! {
        let store = try_ref_from_ptr!(store);
        let kind = match store.backend.storage() {
            Storage::Memory => flux_storage::Memory,
            Storage::Redis => flux_storage::Redis,
        };
        kind as u32
    }
}

/// Releases the caller's reference to a store. NULL is ignored.
///
/// Limiters made on the store keep it alive. The `_free` that releases the
/// last reference (this one or a limiter's) lets the async thread answer
/// every queued request, each callback still called once, and joins it
/// before it returns; then the analytics thread, if any, flushes once more
/// and is joined, and the Redis pool is closed. The metrics server stops
/// with the last store of the process that enabled analytics. (Done from inside a
/// callback, it cannot wait for its own thread, which then stops by itself.)
#[no_mangle]
pub extern "C" fn flux_store_free(store: *mut flux_store) {
    ffi_panic_boundary! {
        // SAFETY: `store` is NULL or came from flux_store_new (the C contract).
        unsafe { free_arc_handle(store) }
    }
}
