//! Limiters: a quota and a scope on a store.

use std::ffi::c_char;
use std::sync::Arc;

use flux_core::Policy;
use flux_redis::{LimitOverrides, Limiter, LimiterError};

use crate::error::{fail, fail_with, flux_result};
use crate::ffi::{
    arc_into_handle, ffi_panic_boundary, free_arc_handle, try_clone_arc, try_opt_str, try_out,
    try_ref_from_ptr, try_str, ArcHandle, Handle,
};
use crate::flux_config;
use crate::store::{flux_store, StoreInner};

/// One limit (policy, requests, period, burst, max_wait) applied per key
/// within a scope, on a store.
///
/// Made by `flux_limiter_new`, freed by `flux_limiter_free`. Thread-safe:
/// one limiter may decide from any number of threads at once. It keeps its
/// store alive.
#[derive(Debug)]
pub struct flux_limiter {
    _private: [u8; 0],
}

/// What a `flux_limiter` stands for: the limiter, and the store whose
/// thread answers its `_async` calls.
///
/// Queued async requests hold the `Limiter` (and so its backend) but not the
/// store: freeing the last handle of a store therefore finds its thread's
/// queue complete, and joins it after the last callback.
pub(crate) struct LimiterInner {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) store: Arc<StoreInner>,
}

impl Handle for flux_limiter {
    type Target = LimiterInner;
}
impl ArcHandle for flux_limiter {}

/// The admission policies, as `flux_limit_params.policy` and
/// `flux_quota_info.policy` carry them.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flux_policy {
    /// Generic Cell Rate Algorithm: a burst, then one call per period/requests.
    Gcra = 0,
    /// Tokens refilled continuously; admits what gcra admits.
    TokenBucket = 1,
    /// A draining bucket; with max_wait it delays calls instead of refusing.
    LeakyBucket = 2,
    /// requests per window of period, opened by the key's first call.
    FixedWindow = 3,
    /// requests in any window of period, from two counters.
    SlidingWindow = 4,
}

impl flux_policy {
    const ALL: [flux_policy; 5] = [
        flux_policy::Gcra,
        flux_policy::TokenBucket,
        flux_policy::LeakyBucket,
        flux_policy::FixedWindow,
        flux_policy::SlidingWindow,
    ];

    fn from_u32(value: u32) -> Option<Policy> {
        Self::ALL
            .into_iter()
            .find(|p| *p as u32 == value)
            .map(flux_policy::to_policy)
    }

    fn to_policy(self) -> Policy {
        match self {
            flux_policy::Gcra => Policy::Gcra,
            flux_policy::TokenBucket => Policy::TokenBucket,
            flux_policy::LeakyBucket => Policy::LeakyBucket,
            flux_policy::FixedWindow => Policy::FixedWindow,
            flux_policy::SlidingWindow => Policy::SlidingWindow,
        }
    }

    fn from_policy(policy: Policy) -> flux_policy {
        Self::ALL
            .into_iter()
            .find(|p| p.to_policy() == policy)
            .unwrap_or(flux_policy::Gcra)
    }
}

/// `flux_limit_params.set`: `policy` is given.
pub const FLUX_PARAM_POLICY: u32 = 1;
/// `flux_limit_params.set`: `requests` is given.
pub const FLUX_PARAM_REQUESTS: u32 = 2;
/// `flux_limit_params.set`: `period` is given.
pub const FLUX_PARAM_PERIOD: u32 = 4;
/// `flux_limit_params.set`: `burst` is given.
pub const FLUX_PARAM_BURST: u32 = 8;
/// `flux_limit_params.set`: `max_wait` is given.
pub const FLUX_PARAM_MAX_WAIT: u32 = 16;

const FLUX_PARAM_ALL: u32 = FLUX_PARAM_POLICY
    | FLUX_PARAM_REQUESTS
    | FLUX_PARAM_PERIOD
    | FLUX_PARAM_BURST
    | FLUX_PARAM_MAX_WAIT;

/// Parameters that replace those of the configured limit.
///
/// A field counts only when its bit (`FLUX_PARAM_*`) is set in `set`; the
/// others come from the named limit, or `[rate_limit]`. A configured `burst`
/// is kept only when neither `requests` nor `policy` is given (else it
/// defaults to `requests`); a configured `max_wait` only while the policy is
/// leaky_bucket.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct flux_limit_params {
    /// Which fields below are given: FLUX_PARAM_* bits, or-ed.
    pub set: u32,
    /// A `flux_policy` value.
    pub policy: u32,
    /// Calls admitted per period; at least 1.
    pub requests: i64,
    /// Seconds, fractions allowed; more than 0.
    pub period: f64,
    /// The largest burst, at least 1 (gcra, token_bucket and leaky_bucket only).
    pub burst: i64,
    /// Seconds a leaky_bucket call may be delayed instead of refused; 0 refuses.
    pub max_wait: f64,
}

/// The limit a limiter applies, resolved: what `RateLimit-Policy` headers
/// and the like report.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct flux_quota_info {
    /// A `flux_policy` value.
    pub policy: u32,
    pub requests: u64,
    /// Seconds.
    pub period: f64,
    /// The burst in force (`requests` unless set otherwise).
    pub burst: u64,
    /// Seconds.
    pub max_wait: f64,
}

/// `params` as overrides, or the message of the first bad field.
fn overrides(params: &flux_limit_params) -> Result<LimitOverrides, (flux_result, String)> {
    let given = |bit: u32| params.set & bit != 0;
    if params.set & !FLUX_PARAM_ALL != 0 {
        return Err((
            flux_result::InvalidArgument,
            format!(
                "set has unknown bits 0x{:x}; allowed are the FLUX_PARAM_* values",
                params.set & !FLUX_PARAM_ALL
            ),
        ));
    }
    let invalid = |message: String| Err((flux_result::InvalidLimit, message));
    let policy = match given(FLUX_PARAM_POLICY) {
        false => None,
        true => match flux_policy::from_u32(params.policy) {
            Some(policy) => Some(policy),
            None => {
                return invalid(format!(
                    "policy must be one of FLUX_POLICY_GCRA (0), FLUX_POLICY_TOKEN_BUCKET (1), \
                     FLUX_POLICY_LEAKY_BUCKET (2), FLUX_POLICY_FIXED_WINDOW (3), \
                     FLUX_POLICY_SLIDING_WINDOW (4), got {}",
                    params.policy
                ))
            }
        },
    };
    let requests = match given(FLUX_PARAM_REQUESTS) {
        false => None,
        true if params.requests >= 1 => Some(params.requests as u64),
        true => {
            return invalid(format!(
                "requests must be a whole number of at least 1, got {}",
                params.requests
            ))
        }
    };
    let burst = match given(FLUX_PARAM_BURST) {
        false => None,
        true if params.burst >= 1 => Some(params.burst as u64),
        true => return invalid(format!("burst must be at least 1, got {}", params.burst)),
    };
    Ok(LimitOverrides {
        policy,
        requests,
        period: given(FLUX_PARAM_PERIOD).then_some(params.period),
        burst,
        max_wait: given(FLUX_PARAM_MAX_WAIT).then_some(params.max_wait),
    })
}

/// Makes a limiter on `store` for `scope` (NUL-terminated UTF-8, not empty:
/// the endpoint's name, part of every key) and writes it to `*out`.
///
/// The limit is `[rate_limits.<name>]` of `config` when `name` is not NULL,
/// else `[rate_limit]`, with the fields given in `params` (may be NULL)
/// replacing the configured ones. `key_prefix`, `fail_silently` and jitter
/// come from `config`, which may be freed once this returns.
///
/// Returns `FLUX_RESULT_UNKNOWN_LIMIT` (the message lists the names defined)
/// for an unknown `name`; `FLUX_RESULT_INVALID_LIMIT` with a message that
/// starts with the field's name for a bad parameter, e.g. "requests must be
/// a whole number of at least 1, got 0"; `FLUX_RESULT_INVALID_ARGUMENT` for
/// an empty scope or unknown bits in `params->set`. Free the result with
/// `flux_limiter_free`.
#[no_mangle]
pub extern "C" fn flux_limiter_new(
    store: *const flux_store,
    config: *const flux_config,
    scope: *const c_char,
    name: *const c_char,
    params: *const flux_limit_params,
    out: *mut *mut flux_limiter,
) -> flux_result {
    ffi_panic_boundary! {
        let store = try_clone_arc!(store);
        let config = try_ref_from_ptr!(config);
        let scope = try_str!(scope);
        let name = try_opt_str!(name);
        // SAFETY: `params` is NULL or points at a flux_limit_params (the C contract).
        let params = unsafe { params.as_ref() }.copied().unwrap_or_default();
        let out = try_out!(out);
        let overrides = match overrides(&params) {
            Ok(overrides) => overrides,
            Err((code, message)) => return fail(code, message),
        };
        match Limiter::new(store.backend.clone(), config, scope, name, &overrides) {
            Ok(limiter) => {
                let limiter = Arc::new(limiter);
                *out = arc_into_handle(Arc::new(LimiterInner { limiter, store }));
                flux_result::Ok
            }
            Err(e) => fail_with(&e),
        }
    }
}

/// Writes the limit `limiter` applies, resolved, to `*out`.
#[no_mangle]
pub extern "C" fn flux_limiter_quota(
    limiter: *const flux_limiter,
    out: *mut flux_quota_info,
) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        let out = try_out!(out);
        let quota = limiter.limiter.quota();
        *out = flux_quota_info {
            policy: flux_policy::from_policy(quota.policy()) as u32,
            requests: quota.requests(),
            period: quota.period_us() as f64 / 1e6,
            burst: quota.burst(),
            max_wait: quota.max_wait_us() as f64 / 1e6,
        };
        flux_result::Ok
    }
}

/// `FLUX_RESULT_OK` when some moment could admit a call of `cost` under
/// `limiter`, else `FLUX_RESULT_INVALID_COST` with a message naming the most
/// it can ever admit: the check `flux_limiter_decide` makes, without deciding.
#[no_mangle]
pub extern "C" fn flux_limiter_check_cost(limiter: *const flux_limiter, cost: u64) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        match limiter.limiter.quota().check_cost(cost) {
            Ok(()) => flux_result::Ok,
            Err(e) => fail_with(&LimiterError::Cost(e)),
        }
    }
}

/// Releases the caller's reference to a limiter. NULL is ignored.
///
/// Requests already queued by `_async` calls keep what they need and still
/// complete.
#[no_mangle]
pub extern "C" fn flux_limiter_free(limiter: *mut flux_limiter) {
    ffi_panic_boundary! {
        // SAFETY: `limiter` is NULL or came from flux_limiter_new (the C contract).
        unsafe { free_arc_handle(limiter) }
    }
}
