//! Limiters: a quota and a scope on a store.

use std::ffi::{c_char, CString};
use std::sync::{Arc, LazyLock};

use flux_core::{parse_rates, LimitSpec, Limiter, Policy};

use crate::error::{fail, fail_with, flux_result};
use crate::ffi::{
    arc_into_handle, c_name, c_str, ffi_panic_boundary, free_arc_handle, static_name,
    try_clone_arc, try_opt_str, try_out, try_ref_from_ptr, try_slice_mut, try_str, write_text,
    ArcHandle, Handle,
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
    /// The policy a C caller's `value` names; `None` for no policy.
    fn from_u32(value: u32) -> Option<Policy> {
        Policy::ALL
            .into_iter()
            .find(|&p| flux_policy::of(p) as u32 == value)
    }

    /// What a `flux_policy` value may be, for messages: "FLUX_POLICY_GCRA
    /// (0), ..." from the core's list, so a new policy is named at once.
    fn allowed_values() -> String {
        Policy::ALL
            .map(|p| {
                let code = flux_policy::of(p) as u32;
                format!("FLUX_POLICY_{} ({code})", p.name().to_ascii_uppercase())
            })
            .join(", ")
    }

    /// The C value of `policy`. A new policy must be given a value here
    /// (and in include/flux.h) before anything compiles.
    fn of(policy: Policy) -> flux_policy {
        match policy {
            Policy::Gcra => flux_policy::Gcra,
            Policy::TokenBucket => flux_policy::TokenBucket,
            Policy::LeakyBucket => flux_policy::LeakyBucket,
            Policy::FixedWindow => flux_policy::FixedWindow,
            Policy::SlidingWindow => flux_policy::SlidingWindow,
        }
    }
}

/// Writes the `flux_policy` value of the policy named `name`
/// (NUL-terminated: "gcra", "token_bucket", "leaky_bucket", "fixed_window"
/// or "sliding_window") to `*out`. Returns `FLUX_RESULT_INVALID_LIMIT` with
/// a message listing the names for any other: one list of names, the core's,
/// for every language.
#[no_mangle]
pub extern "C" fn flux_policy_from_name(name: *const c_char, out: *mut u32) -> flux_result {
    ffi_panic_boundary! {
        let name = try_str!(name);
        let out = try_out!(out);
        match name.parse::<Policy>() {
            Ok(policy) => {
                *out = flux_policy::of(policy) as u32;
                flux_result::Ok
            }
            Err(e) => fail(flux_result::InvalidLimit, e.to_string()),
        }
    }
}

/// The name of the policy whose `flux_policy` value is `policy` ("gcra",
/// "token_bucket", ...: the names `flux_policy_from_name` takes), a static
/// NUL-terminated string never to be freed; NULL for any other value. The
/// values are 0, 1, 2, ... without gaps, so a caller can list every policy
/// by asking from 0 until NULL.
#[no_mangle]
pub extern "C" fn flux_policy_name(policy: u32) -> *const c_char {
    ffi_panic_boundary! {
        static NAMES: LazyLock<Vec<(u32, CString)>> = LazyLock::new(|| {
            Policy::ALL
                .map(|p| (flux_policy::of(p) as u32, c_name(p.name())))
                .into()
        });
        static_name(&NAMES, policy)
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
/// `flux_limit_params.set`: `rate` is given.
pub const FLUX_PARAM_RATE: u32 = 32;
/// `flux_limit_params.set`: `shadow` is given.
pub const FLUX_PARAM_SHADOW: u32 = 64;

const FLUX_PARAM_ALL: u32 = FLUX_PARAM_POLICY
    | FLUX_PARAM_REQUESTS
    | FLUX_PARAM_PERIOD
    | FLUX_PARAM_BURST
    | FLUX_PARAM_MAX_WAIT
    | FLUX_PARAM_RATE
    | FLUX_PARAM_SHADOW;

/// Parameters that replace those of the configured limit.
///
/// A field counts only when its bit (`FLUX_PARAM_*`) is set in `set`; the
/// others come from the named limit, or `[rate_limit]`, by the rule every
/// Flux limit given in part follows: `rate` replaces every rate (and goes
/// without `requests` and `period`); a configured `burst` is kept only when
/// neither the rate, `requests` nor `policy` is given (else it defaults to
/// `requests`); a configured `max_wait` only while the policy is
/// leaky_bucket.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
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
    /// One or more rates as text, NUL-terminated UTF-8: "10/second",
    /// "100 per minute", "5/30s", "10/second;1000/day". NULL unless
    /// FLUX_PARAM_RATE is set.
    pub rate: *const c_char,
    /// Admit every call, charging only those the limit admits, and report
    /// the others with source FLUX_SOURCE_SHADOW.
    pub shadow: bool,
}

impl Default for flux_limit_params {
    fn default() -> Self {
        flux_limit_params {
            set: 0,
            policy: 0,
            requests: 0,
            period: 0.0,
            burst: 0,
            max_wait: 0.0,
            rate: std::ptr::null(),
            shadow: false,
        }
    }
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

/// `params` as the parts of a limit, or the message of the first bad field.
fn spec(params: &flux_limit_params) -> Result<LimitSpec, (flux_result, String)> {
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
                    "policy must be one of {}, got {}",
                    flux_policy::allowed_values(),
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
    let rate = match given(FLUX_PARAM_RATE) {
        false => None,
        // SAFETY: a set rate is NULL or NUL-terminated (the C contract).
        true => match unsafe { c_str(params.rate) } {
            None => {
                return Err((
                    flux_result::NullArgument,
                    "params->rate must not be NULL when FLUX_PARAM_RATE is set".to_owned(),
                ))
            }
            Some(Err(e)) => {
                return Err((
                    flux_result::InvalidUtf8,
                    format!(
                        "params->rate is not valid UTF-8 (bad byte at offset {})",
                        e.valid_up_to()
                    ),
                ))
            }
            Some(Ok(text)) => match parse_rates(text) {
                Ok(rates) => Some(rates),
                Err(e) => return invalid(e.to_string()),
            },
        },
    };
    Ok(LimitSpec {
        policy,
        rate,
        requests,
        period: given(FLUX_PARAM_PERIOD).then_some(params.period),
        burst,
        max_wait: given(FLUX_PARAM_MAX_WAIT).then_some(params.max_wait),
        shadow: given(FLUX_PARAM_SHADOW).then_some(params.shadow),
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
        let spec = match spec(&params) {
            Ok(spec) => spec,
            Err((code, message)) => return fail(code, message),
        };
        match Limiter::new(store.backend.clone(), config, scope, name, &spec) {
            Ok(limiter) => {
                let limiter = Arc::new(limiter);
                *out = arc_into_handle(Arc::new(LimiterInner { limiter, store }));
                flux_result::Ok
            }
            Err(e) => fail_with(&e),
        }
    }
}

/// Writes to `buf` (`len` bytes, NUL-terminated) the scope a limiter of the
/// limit `name` of `config` (`[rate_limit]` when NULL) with `params` (may be
/// NULL) is best given when the caller has none: `name` for a limit taken as
/// configured; else `base` (e.g. the function the limit guards; when NULL,
/// `name`, or "default") followed by `@` and the limit's numbers, e.g.
/// "login@5/300s" or "app.views.search@10/1s;1000/86400s", so that limits
/// written in code never share keys.
///
/// Fails as `flux_limiter_new` would for a bad limit. On `FLUX_RESULT_OK`,
/// `*written` is the scope's length (without the NUL); when `len` is too
/// small, returns `FLUX_RESULT_BUFFER_TOO_SMALL` with `*written` the size
/// needed, NUL included.
#[no_mangle]
pub extern "C" fn flux_default_scope(
    config: *const flux_config,
    name: *const c_char,
    params: *const flux_limit_params,
    base: *const c_char,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> flux_result {
    ffi_panic_boundary! {
        let config = try_ref_from_ptr!(config);
        let name = try_opt_str!(name);
        let base = try_opt_str!(base);
        // SAFETY: `params` is NULL or points at a flux_limit_params (the C contract).
        let params = unsafe { params.as_ref() }.copied().unwrap_or_default();
        let written = try_out!(written);
        let spec = match spec(&params) {
            Ok(spec) => spec,
            Err((code, message)) => return fail(code, message),
        };
        match Limiter::default_scope(config, name, &spec, base) {
            Ok(scope) => write_text(&scope, buf, len, written, "the scope"),
            Err(e) => fail_with(&e),
        }
    }
}

/// Writes the first quota of the limit `limiter` applies, resolved, to
/// `*out` (for a limit of several rates, `flux_limiter_quotas` gives them all).
#[no_mangle]
pub extern "C" fn flux_limiter_quota(
    limiter: *const flux_limiter,
    out: *mut flux_quota_info,
) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        let out = try_out!(out);
        *out = quota_info(limiter.limiter.quota());
        flux_result::Ok
    }
}

/// Writes the quotas of the limit `limiter` applies, one per rate in the
/// order written, to `out` (room for `len`), and their number to `*count`.
/// With `len` too small (NULL `out` with `len` 0 included), nothing is
/// written to `out`, `*count` is the number needed, and the result is
/// `FLUX_RESULT_BUFFER_TOO_SMALL`. A limiter has 1 to 8 quotas.
#[no_mangle]
pub extern "C" fn flux_limiter_quotas(
    limiter: *const flux_limiter,
    out: *mut flux_quota_info,
    len: usize,
    count: *mut usize,
) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        let count = try_out!(count);
        let quotas = limiter.limiter.quotas();
        *count = quotas.len();
        if len < quotas.len() {
            return fail(
                flux_result::BufferTooSmall,
                format!("the limiter has {} quotas, the buffer room for {len}", quotas.len()),
            );
        }
        let out = try_slice_mut!(out, len);
        for (slot, quota) in out.iter_mut().zip(quotas) {
            *slot = quota_info(quota);
        }
        flux_result::Ok
    }
}

fn quota_info(quota: &flux_core::Quota) -> flux_quota_info {
    flux_quota_info {
        policy: flux_policy::of(quota.policy()) as u32,
        requests: quota.requests(),
        period: quota.period_us() as f64 / 1e6,
        burst: quota.burst(),
        max_wait: quota.max_wait_us() as f64 / 1e6,
    }
}

/// `FLUX_RESULT_OK` when some moment could admit a call of `cost` under
/// `limiter` (under every quota), else `FLUX_RESULT_INVALID_COST` with a
/// message naming the most it can ever admit: the check
/// `flux_limiter_decide` makes, without deciding.
#[no_mangle]
pub extern "C" fn flux_limiter_check_cost(limiter: *const flux_limiter, cost: u64) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        match limiter.limiter.check_cost(cost) {
            Ok(()) => flux_result::Ok,
            Err(e) => fail_with(&e),
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
