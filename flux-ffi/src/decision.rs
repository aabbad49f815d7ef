//! What a decision tells its caller, as C reads it.

use std::ffi::{c_char, CString};
use std::sync::LazyLock;

use flux_core::{Decision, Source};

use crate::ffi::{c_name, ffi_panic_boundary, static_name};

/// Where a decision came from (`flux_decision.source`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flux_source {
    /// The store applied the limit.
    Storage = 0,
    /// The store could not be reached and `fail_silently` admitted the call.
    FailOpen = 1,
    /// Answered from a process-local cache of refusals, without the store.
    LocalCache = 2,
    /// A shadow limit would have refused the call: admitted, not charged.
    Shadow = 3,
}

/// Whether a call is admitted, and what to tell its caller. A plain value:
/// nothing to free.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct flux_decision {
    pub allowed: bool,
    /// The most calls of cost 1 the limit holds at once.
    pub limit: u64,
    /// Calls of cost 1 that would still be admitted now.
    pub remaining: u64,
    /// Seconds until the key is back to full.
    pub reset_after: f64,
    /// Seconds until this call would be admitted; 0 when allowed. Includes a
    /// random jitter (up to `jitter_max_ms`) when `jitter_enabled`.
    pub retry_after: f64,
    /// Seconds an admitted leaky_bucket call should wait before it runs.
    pub delay: f64,
    /// A `flux_source` value.
    pub source: u32,
    /// Which of the limiter's quotas (in the order of `flux_limiter_quotas`)
    /// the decision reports: the one closest to refusing, or the one that
    /// refused. 0 for a limit of one rate.
    pub quota: u32,
}

impl flux_source {
    /// The C value of `source`. A new source must be given a value here
    /// (and in include/flux.h) before anything compiles.
    fn of(source: Source) -> flux_source {
        match source {
            Source::Storage => flux_source::Storage,
            Source::FailOpen => flux_source::FailOpen,
            Source::LocalCache => flux_source::LocalCache,
            Source::Shadow => flux_source::Shadow,
        }
    }
}

/// The name of the source whose `flux_source` value is `source`
/// ("storage", "fail_open", "local_cache", "shadow": what metrics and
/// logs call it), a static NUL-terminated string never to be freed; NULL
/// for any other value. The values are 0, 1, 2, ... without gaps.
#[no_mangle]
pub extern "C" fn flux_source_name(source: u32) -> *const c_char {
    ffi_panic_boundary! {
        static NAMES: LazyLock<Vec<(u32, CString)>> = LazyLock::new(|| {
            Source::ALL
                .map(|s| (flux_source::of(s) as u32, c_name(s.name())))
                .into()
        });
        static_name(&NAMES, source)
    }
}

impl From<Decision> for flux_decision {
    fn from(d: Decision) -> Self {
        let source = flux_source::of(d.source);
        flux_decision {
            allowed: d.allowed,
            limit: d.limit,
            remaining: d.remaining,
            reset_after: d.reset_after_secs(),
            retry_after: d.retry_after_secs(),
            delay: d.delay_secs(),
            source: source as u32,
            quota: d.quota_index as u32,
        }
    }
}
