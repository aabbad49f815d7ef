//! What every store offers: apply a limit to one caller's keys, atomically.
//!
//! A [`Limiter`](crate::Limiter) holds its store as `Arc<dyn Store>`: the
//! in-process [`MemoryStore`](crate::MemoryStore) here, or flux-redis's
//! Redis store, chosen by the configuration, with the same answers.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::config::Storage;
use crate::{Decision, Op, Quota, QuotaError};

/// One call on one caller: its keys (one per quota of the limit, sharing a
/// hash tag), the limit's quotas, a cost and what to do.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub keys: &'a [&'a str],
    pub quotas: &'a [Quota],
    pub cost: u64,
    pub op: Op,
}

/// One decision asked of a store under a limit of one quota.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub key: &'a str,
    pub quota: &'a Quota,
    pub cost: u64,
}

impl Request<'_> {
    /// Runs `apply` on the calls that decide `requests`, in order: how a
    /// store answers [`Store::decide_many`] with its `apply_many`.
    pub fn decide_all<T>(requests: &[Request<'_>], apply: impl FnOnce(&[Call<'_>]) -> T) -> T {
        let keys: Vec<[&str; 1]> = requests.iter().map(|r| [r.key]).collect();
        let calls: Vec<Call<'_>> = requests
            .iter()
            .zip(&keys)
            .map(|(r, key)| Call {
                keys: key,
                quotas: std::slice::from_ref(r.quota),
                cost: r.cost,
                op: Op::Decide,
            })
            .collect();
        apply(&calls)
    }
}

/// A place where per-key state lives and limits are applied atomically.
/// Thread-safe: share it in an `Arc`.
pub trait Store: Send + Sync + fmt::Debug {
    /// Applies `call.op` to the caller's keys under every quota at once
    /// ([`crate::apply`]): all or nothing.
    fn apply(&self, call: &Call<'_>) -> Result<Decision, StoreError>;

    /// Many calls, in order; a store with round trips makes one.
    fn apply_many(&self, calls: &[Call<'_>]) -> Vec<Result<Decision, StoreError>> {
        calls.iter().map(|call| self.apply(call)).collect()
    }

    /// Forgets `keys` (one caller's state under a limit); returns how many
    /// held a state.
    fn remove(&self, keys: &[&str]) -> Result<u64, StoreError>;

    /// Forgets every key that starts with `prefix`; returns how many.
    fn clear_prefix(&self, prefix: &str) -> Result<u64, StoreError>;

    /// Makes ready whatever deciding under `limits` (each the quotas of one
    /// limit) needs, ahead of their first call: Redis loads their scripts.
    fn preload(&self, limits: &[&[Quota]]) -> Result<(), StoreError> {
        let _ = limits;
        Ok(())
    }

    /// Which kind of store this is.
    fn storage(&self) -> Storage;

    /// Where the store is, for log lines: "Redis at <url without password>".
    fn place(&self) -> String {
        "the memory store".to_owned()
    }

    /// Decides one call of `cost` against `quota` for `key`.
    fn decide(&self, key: &str, quota: &Quota, cost: u64) -> Result<Decision, StoreError> {
        self.apply(&Call {
            keys: &[key],
            quotas: std::slice::from_ref(quota),
            cost,
            op: Op::Decide,
        })
    }

    /// Decides many calls under limits of one quota, in order.
    fn decide_many(&self, requests: &[Request<'_>]) -> Vec<Result<Decision, StoreError>> {
        Request::decide_all(requests, |calls| self.apply_many(calls))
    }
}

/// Why a store gave no decision. The variants say what a limiter may do
/// about it: [`StoreError::Unavailable`] is the store failing (a limiter
/// with `fail_silently` admits the call); [`StoreError::Busy`] is
/// back-pressure, never answered by admitting; the rest are mistakes that
/// waiting will not fix.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The cost cannot be decided against this limit (0, or above what it
    /// can ever admit).
    #[error(transparent)]
    Quota(#[from] QuotaError),

    /// The store could not serve the call: unreachable, too slow, or
    /// answering that it cannot serve now (Redis OOM, BUSY, LOADING,
    /// READONLY...).
    #[error("{message}")]
    Unavailable {
        why: Unavailable,
        message: String,
        #[source]
        source: Option<Cause>,
    },

    /// Every connection stayed in use for as long as a call may wait: the
    /// process asks more than its connections carry.
    #[error("{message}")]
    Busy {
        message: String,
        #[source]
        source: Option<Cause>,
    },

    /// The store's settings cannot work (a bad URL, a pool of 0 connections).
    #[error("{0}")]
    Settings(String),

    /// A key holds a value Flux did not write; it is left alone.
    #[error("key {key} holds a value Flux did not write; delete it or use another key_prefix")]
    Foreign { key: String },

    /// Anything else: bad settings, a script error, an unexpected reply.
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

/// How an unavailable store failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unavailable {
    /// It could not be reached, or the connection broke.
    Unreachable,
    /// It did not answer within the call's bound.
    Timeout,
    /// It answered that it cannot serve now.
    Refusing,
}

/// The error underneath a [`StoreError`], kept for `source()`.
#[derive(Clone)]
pub struct Cause(pub Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl StoreError {
    /// The store failed: what `fail_silently` answers by admitting the call.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
