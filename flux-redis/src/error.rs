//! One error type for everything the Redis store can fail at.

use std::sync::Arc;

use flux_core::QuotaError;
use redis::{ErrorKind, ServerErrorKind};
use thiserror::Error;

use crate::pool::PoolError;

/// Why a Redis decision (or a maintenance call) failed.
///
/// [`RedisError::is_connectivity`] tells the failures where Redis could not be
/// reached or did not answer in time: those are the ones a limiter may answer
/// by failing open. The rest are mistakes to report (a bad cost, a bad URL, a
/// script error, a key holding something else).
#[derive(Debug, Clone, Error)]
pub enum RedisError {
    /// The settings cannot describe a Redis deployment (bad URL, pool size 0, ...).
    #[error("invalid Redis configuration: {0}")]
    Config(String),

    /// No connection could be had from the pool within `timeout_ms`: Redis is
    /// down, unreachable or refusing us (e.g. a wrong password), or, when
    /// `busy`, every one of `pool_size` live connections stayed in use.
    #[error("no Redis connection within {timeout_ms} ms{}: {source}", if *.busy { " (all in use)" } else { "" })]
    Pool {
        #[source]
        source: Arc<PoolError>,
        timeout_ms: u64,
        busy: bool,
    },

    /// A command was sent but its reply did not come within `timeout_ms`.
    #[error("Redis did not answer within {timeout_ms} ms ({source})")]
    Timeout {
        #[source]
        source: redis::RedisError,
        timeout_ms: u64,
    },

    /// The connection broke, or Redis said it cannot serve right now
    /// (loading, cluster down, failover in progress).
    #[error("Redis is unavailable: {0}")]
    Unavailable(#[source] redis::RedisError),

    /// Redis answered with an error that retrying will not fix.
    #[error("Redis refused the command: {0}")]
    Redis(#[source] redis::RedisError),

    /// The key holds a value of another type, which Flux did not write; it is
    /// left alone.
    #[error(
        "Redis key {key} holds a value Flux did not write; delete it or use another key_prefix"
    )]
    KeyType { key: String },

    /// A Flux script answered something other than its integers.
    #[error("unexpected reply from a Flux script: {0}")]
    Reply(String),

    /// The cost cannot be decided against this quota (0, or above what it can ever admit).
    #[error(transparent)]
    Quota(#[from] QuotaError),
}

impl RedisError {
    /// Redis could not be reached or did not answer in time: a limiter that
    /// fails open admits the call; one that fails closed reports it.
    pub fn is_connectivity(&self) -> bool {
        matches!(
            self,
            RedisError::Pool { .. } | RedisError::Timeout { .. } | RedisError::Unavailable(_)
        )
    }

    /// The failure was a timeout (no connection, or no reply, within `timeout_ms`).
    pub fn is_timeout(&self) -> bool {
        matches!(self, RedisError::Pool { .. } | RedisError::Timeout { .. })
    }

    /// Sorts an error from the redis crate into the variants above.
    pub(crate) fn from_redis(err: redis::RedisError, timeout_ms: u64) -> Self {
        if err.is_timeout() {
            RedisError::Timeout {
                source: err,
                timeout_ms,
            }
        } else if is_unavailable(&err) {
            RedisError::Unavailable(err)
        } else {
            RedisError::Redis(err)
        }
    }

    pub(crate) fn from_pool(err: PoolError, timeout_ms: u64, busy: bool) -> Self {
        RedisError::Pool {
            source: Arc::new(err),
            timeout_ms,
            busy,
        }
    }
}

/// Errors that say nothing about the command, only that Redis could not serve it.
fn is_unavailable(err: &redis::RedisError) -> bool {
    match err.kind() {
        ErrorKind::Io | ErrorKind::Parse | ErrorKind::ClusterConnectionNotFound => true,
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        ),
        _ => false,
    }
}

/// Whether a connection that returned `err` must not be used again: anything
/// but a clean error reply may leave a reply unread on the socket (a timeout)
/// or the socket dead, and the next caller would read the wrong answer.
pub(crate) fn breaks_connection(err: &redis::RedisError) -> bool {
    !matches!(err.kind(), ErrorKind::Server(_))
}
