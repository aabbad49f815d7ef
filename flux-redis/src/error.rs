//! One error type for everything the Redis store can fail at.

use std::sync::Arc;

use flux_core::{Cause, QuotaError, StoreError, Unavailable};
use redis::{ErrorKind, ServerErrorKind};
use thiserror::Error;

use crate::pool::PoolError;

/// Why a Redis decision (or a maintenance call) failed.
///
/// [`RedisError::redis_failed`] tells the failures that are Redis's: it could
/// not be reached, did not answer in time, or answered that it cannot serve
/// now. Those are the ones a limiter may answer by failing open. A busy pool
/// ([`RedisError::Busy`]) is not one of them: Redis may be fine, the process
/// asks more of it at once than `pool_size` allows, and admitting the call
/// would over-admit. The rest are mistakes to report (a bad cost, a bad URL,
/// a script error, a key holding something else).
#[derive(Debug, Clone, Error)]
pub enum RedisError {
    /// The settings cannot describe a Redis deployment (bad URL, pool size 0, ...).
    #[error("invalid Redis configuration: {0}")]
    Config(String),

    /// Every one of the `pool_size` connections stayed in use while the call
    /// waited its turn for `timeout_ms`: back-pressure, not Redis failing.
    #[error(
        "all {pool_size} Redis connections stayed in use for {timeout_ms} ms: the call was not \
         decided (back-pressure, not a Redis failure; raise pool_size or lower the load)"
    )]
    Busy { pool_size: u32, timeout_ms: u64 },

    /// Redis could not be reached (refused, reset, a wrong password), or the
    /// connection broke during the call.
    #[error("Redis is unreachable: {0}")]
    Unreachable(#[source] redis::RedisError),

    /// No connection, or no reply, within `timeout_ms`.
    #[error("Redis did not answer within {timeout_ms} ms ({source})")]
    Timeout {
        #[source]
        source: redis::RedisError,
        timeout_ms: u64,
    },

    /// Redis answered that it cannot serve now: out of memory (`OOM`), busy
    /// with a script (`BUSY`), loading its data (`LOADING`), a read-only
    /// replica (`READONLY`), too few replicas (`NOREPLICAS`), failing to
    /// persist (`MISCONF`), or a cluster that is down or failing over. The
    /// connection is fine; the reply's code is [`redis::RedisError::code`].
    #[error("Redis cannot serve now: {}", reply(.0))]
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
    /// Redis failed: it could not be reached, did not answer in time, or
    /// answered that it cannot serve now. A limiter with `fail_silently`
    /// admits the call; one without reports it.
    pub fn redis_failed(&self) -> bool {
        matches!(
            self,
            RedisError::Unreachable(_) | RedisError::Timeout { .. } | RedisError::Unavailable(_)
        )
    }

    /// Sorts an error from the redis crate into the variants above, by its
    /// kind and, for error replies, by the reply's code.
    pub(crate) fn from_redis(err: redis::RedisError, timeout_ms: u64) -> Self {
        if err.is_timeout() {
            RedisError::Timeout {
                source: err,
                timeout_ms,
            }
        } else if cannot_serve(&err) {
            RedisError::Unavailable(err)
        } else if matches!(
            err.kind(),
            ErrorKind::Io
                | ErrorKind::Parse
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound
        ) {
            RedisError::Unreachable(err)
        } else {
            RedisError::Redis(err)
        }
    }

    /// Sorts the reason a call got no connection from the pool.
    pub(crate) fn from_pool(err: PoolError, pool_size: u32, timeout_ms: u64) -> Self {
        match err {
            PoolError::Busy => RedisError::Busy {
                pool_size,
                timeout_ms,
            },
            PoolError::Connect(err) => match RedisError::from_redis(err, timeout_ms) {
                // Whatever Redis answered while we connected, it was not serving us.
                RedisError::Redis(err) => RedisError::Unreachable(err),
                other => other,
            },
            PoolError::Waiting => RedisError::Timeout {
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the other calls were still connecting",
                )
                .into(),
                timeout_ms,
            },
        }
    }
}

/// An error reply as Redis wrote it: its code, then its text.
fn reply(err: &redis::RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => err.to_string(),
    }
}

/// Error replies by which Redis says it cannot serve now, whatever the
/// command: the server's state, not the call, is at fault, and the same call
/// succeeds once it passes.
const CANNOT_SERVE: &[&str] = &["OOM", "BUSY", "NOREPLICAS", "MISCONF"];

fn cannot_serve(err: &redis::RedisError) -> bool {
    match err.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::TryAgain
                // Still redirected after every round a batch may make: the
                // cluster's slot map does not settle.
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        ),
        ErrorKind::Extension => err.code().is_some_and(|code| CANNOT_SERVE.contains(&code)),
        _ => false,
    }
}

/// A `READONLY` reply: the server is a replica (after a failover, the old
/// master).
pub(crate) fn is_readonly(err: &redis::RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// Whether a connection that returned `err` must not be used again: anything
/// but a clean error reply may leave a reply unread on the socket (a timeout)
/// or the socket dead, and the next caller would read the wrong answer.
pub(crate) fn breaks_connection(err: &redis::RedisError) -> bool {
    !matches!(err.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// What a limiter makes of a Redis failure: an unreachable, slow or
/// refusing Redis is unavailable (failing open answers it); every pooled
/// connection busy is back-pressure; the rest are mistakes.
impl From<RedisError> for StoreError {
    fn from(error: RedisError) -> StoreError {
        let message = error.to_string();
        let why = match &error {
            RedisError::Quota(e) => return StoreError::Quota(e.clone()),
            RedisError::KeyType { key } => return StoreError::Foreign { key: key.clone() },
            RedisError::Busy { .. } => {
                return StoreError::Busy {
                    message,
                    source: Some(Cause(Arc::new(error))),
                }
            }
            RedisError::Timeout { .. } => Unavailable::Timeout,
            RedisError::Unreachable(_) => Unavailable::Unreachable,
            RedisError::Unavailable(_) => Unavailable::Refusing,
            RedisError::Config(_) => return StoreError::Settings(message),
            RedisError::Redis(_) | RedisError::Reply(_) => {
                return StoreError::Failed {
                    message,
                    source: Some(Cause(Arc::new(error))),
                }
            }
        };
        StoreError::Unavailable {
            why,
            message,
            source: Some(Cause(Arc::new(error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: &str, text: &str) -> redis::RedisError {
        // How the redis crate reads an error reply off the wire.
        let wire = format!("-{code} {text}\r\n");
        let value = redis::parse_redis_value(wire.as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn replies_that_mean_redis_cannot_serve_are_redis_failing() {
        for code in [
            "OOM",
            "BUSY",
            "LOADING",
            "READONLY",
            "NOREPLICAS",
            "MISCONF",
            "MASTERDOWN",
            "CLUSTERDOWN",
            "TRYAGAIN",
            "MOVED",
            "ASK",
        ] {
            let err = reply(code, "the text Redis gives");
            assert!(!breaks_connection(&err), "{code}: the socket is fine");
            let err = RedisError::from_redis(err, 200);
            assert!(
                matches!(&err, RedisError::Unavailable(e) if e.code() == Some(code)),
                "{code}: {err:?}"
            );
            assert!(err.redis_failed(), "{code}");
            assert_eq!(
                err.to_string(),
                format!("Redis cannot serve now: {code} the text Redis gives")
            );
        }
    }

    #[test]
    fn replies_about_the_call_itself_are_not() {
        for code in ["ERR", "WRONGTYPE", "NOPERM", "NOSCRIPT", "CROSSSLOT"] {
            let err = reply(code, "something about the command");
            assert!(!breaks_connection(&err), "{code}");
            let err = RedisError::from_redis(err, 200);
            assert!(
                matches!(err, RedisError::Redis(_)) && !err.redis_failed(),
                "{code}: {err:?}"
            );
        }
    }

    #[test]
    fn a_busy_pool_is_not_redis_failing() {
        let err = RedisError::Busy {
            pool_size: 1,
            timeout_ms: 200,
        };
        assert!(!err.redis_failed());
        assert!(err.to_string().contains("back-pressure"), "{err}");
    }
}
