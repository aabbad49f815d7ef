//! What the boundary tests share: handles made the way a C caller makes
//! them, the last error as a String, and redis-server processes.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::ffi::{c_char, CString};
use std::ptr;

use flux_ffi::*;

/// The calling thread's last error, read through `flux_last_error`.
pub fn last_error() -> String {
    let len = flux_last_error(ptr::null_mut(), 0);
    let mut buf = vec![0u8; len + 1];
    let full = flux_last_error(buf.as_mut_ptr().cast::<c_char>(), buf.len());
    assert_eq!(full, len);
    buf.truncate(len);
    String::from_utf8(buf).expect("messages are UTF-8")
}

/// A config from TOML text; panics with the message when it does not load.
pub fn config(toml: &str) -> *mut flux_config {
    let mut out = ptr::null_mut();
    let rc = flux_config_from_toml(toml.as_ptr().cast(), toml.len(), ptr::null(), &mut out);
    assert_eq!(rc, flux_result::Ok, "{}", last_error());
    out
}

pub fn store(config: *const flux_config) -> *mut flux_store {
    let mut out = ptr::null_mut();
    let rc = flux_store_new(config, &mut out);
    assert_eq!(rc, flux_result::Ok, "{}", last_error());
    out
}

/// A `flux_request` of `cost` for `key`, with no endpoint.
pub fn request(limiter: *const flux_limiter, key: &[u8], cost: u64) -> flux_request {
    flux_request {
        limiter,
        key: key.as_ptr(),
        key_len: key.len(),
        cost,
        endpoint: ptr::null(),
        endpoint_len: 0,
    }
}

/// Parameters with requests, period and (when given) burst set.
pub fn params(requests: i64, period: f64, burst: Option<i64>) -> flux_limit_params {
    flux_limit_params {
        set: FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD | burst.map_or(0, |_| FLUX_PARAM_BURST),
        requests,
        period,
        burst: burst.unwrap_or(0),
        ..flux_limit_params::default()
    }
}

/// `flux_limiter_new`, with the code and message on failure.
pub fn try_limiter(
    store: *const flux_store,
    config: *const flux_config,
    scope: &str,
    name: Option<&str>,
    params: Option<&flux_limit_params>,
) -> Result<*mut flux_limiter, (flux_result, String)> {
    let scope = CString::new(scope).unwrap();
    let name = name.map(|n| CString::new(n).unwrap());
    let mut out = ptr::null_mut();
    let rc = flux_limiter_new(
        store,
        config,
        scope.as_ptr(),
        name.as_ref().map_or(ptr::null(), |n| n.as_ptr()),
        params.map_or(ptr::null(), |p| p as *const _),
        &mut out,
    );
    match rc {
        flux_result::Ok => Ok(out),
        code => {
            assert!(out.is_null(), "no output on failure");
            Err((code, last_error()))
        }
    }
}

pub fn limiter(
    store: *const flux_store,
    config: *const flux_config,
    scope: &str,
    params: &flux_limit_params,
) -> *mut flux_limiter {
    try_limiter(store, config, scope, None, Some(params)).unwrap_or_else(|e| panic!("{e:?}"))
}

/// `flux_limiter_decide`, with the code and message on failure.
pub fn decide(
    limiter: *const flux_limiter,
    key: &[u8],
    cost: u64,
) -> Result<flux_decision, (flux_result, String)> {
    let mut out = flux_decision::default();
    match flux_limiter_decide(limiter, key.as_ptr(), key.len(), cost, &mut out) {
        flux_result::Ok => Ok(out),
        code => Err((code, last_error())),
    }
}

/// A memory-store configuration without jitter, so retry_after is exact.
pub const MEMORY_NO_JITTER: &str = "[flux]\nstorage = \"memory\"\njitter_enabled = false\n";

/// A handle that tests move between threads, as C callers share pointers.
pub struct Shared<T>(pub *const T);
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: the handles under test are documented thread-safe; that is what is tested.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

/// redis-server processes, from flux-redis's tests (one helper for both crates).
#[path = "../../../flux-redis/tests/support/mod.rs"]
mod redis_server;
#[allow(unused_imports)] // DeadPort is for the tests that need a port nothing listens on
pub use redis_server::{free_port, DeadPort, RedisServer};

/// Keys under `prefix` in `server`, by redis-cli (which the test did not write through).
pub fn count_keys(server: &RedisServer, prefix: &str) -> usize {
    server
        .cli(&["--scan", "--pattern", &format!("{prefix}*")])
        .lines()
        .count()
}
