//! The Lua scripts, one per policy, and how a decision is asked of them.
//!
//! Each script is `common.lua` (arguments, clock, load/save), then for the
//! bucket policies `bucket.lua` (their shared level math), then the policy's
//! own file. They are assembled at compile time and hashed once; a call is an
//! `EVALSHA`, and a `NOSCRIPT` answer (a restarted or flushed Redis, a cluster
//! node that never saw the script) loads the script and retries once (see
//! store.rs and cluster.rs).

use std::sync::OnceLock;

use flux_core::{Decision, Policy, Quota, Source};
use redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value};

use crate::RedisError;

macro_rules! lua {
    ($($file:literal),+) => {
        concat!($(include_str!(concat!("../lua/", $file))),+)
    };
}

const SOURCES: [(Policy, &str); 5] = [
    (Policy::Gcra, lua!("common.lua", "bucket.lua", "gcra.lua")),
    (
        Policy::TokenBucket,
        lua!("common.lua", "bucket.lua", "token_bucket.lua"),
    ),
    (
        Policy::LeakyBucket,
        lua!("common.lua", "bucket.lua", "leaky_bucket.lua"),
    ),
    (Policy::FixedWindow, lua!("common.lua", "fixed_window.lua")),
    (
        Policy::SlidingWindow,
        lua!("common.lua", "sliding_window.lua"),
    ),
];

/// The script that decides `policy`, hashed once per process.
pub(crate) fn script(policy: Policy) -> &'static Script {
    static SCRIPTS: OnceLock<Vec<(Policy, Script)>> = OnceLock::new();
    let scripts = SCRIPTS.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(policy, source)| (*policy, Script::new(source)))
            .collect()
    });
    scripts
        .iter()
        .find_map(|(p, script)| (*p == policy).then_some(script))
        .expect("a script for every policy")
}

pub(crate) fn all() -> impl Iterator<Item = &'static Script> {
    Policy::ALL.into_iter().map(script)
}

/// One call for a script: its key and what to decide there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub key: &'a str,
    pub quota: &'a Quota,
    pub cost: u64,
}

/// `EVALSHA <sha> <n> key... now constants... cost...` deciding each entry in
/// order; all entries share `quota`. `now` empty asks the script to use Redis
/// `TIME`. The constants are burst, unit, rate, max_wait_us for the bucket
/// policies, requests, period_us for the window policies (see lua/).
pub(crate) fn eval_cmd(quota: &Quota, entries: &[Entry<'_>], now_us: Option<u64>) -> Cmd {
    let policy = quota.policy();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script(policy).get_hash()).arg(entries.len());
    for entry in entries {
        debug_assert_eq!(entry.quota, quota);
        cmd.arg(entry.key);
    }
    match now_us {
        Some(now) => cmd.arg(now),
        None => cmd.arg(""),
    };
    if policy.is_bucket() {
        cmd.arg(quota.burst())
            .arg(quota.unit())
            .arg(quota.rate())
            .arg(quota.max_wait_us());
    } else {
        cmd.arg(quota.requests()).arg(quota.period_us());
    }
    for entry in entries {
        cmd.arg(entry.cost);
    }
    cmd
}

pub(crate) fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// `SCRIPT LOAD` of `policy`'s script, to send in a pipeline.
pub(crate) fn load_cmd(policy: Policy) -> Cmd {
    let source = SOURCES
        .iter()
        .find_map(|(p, source)| (*p == policy).then_some(*source))
        .expect("a script for every policy");
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(source);
    cmd
}

/// A script's reply, six integers per entry, as one decision per entry.
pub(crate) fn decisions(
    reply: Value,
    entries: &[Entry<'_>],
) -> Result<Vec<Result<Decision, RedisError>>, RedisError> {
    let fields: Vec<i64> =
        redis::from_redis_value(reply).map_err(|e| RedisError::Reply(e.to_string()))?;
    if fields.len() != 6 * entries.len() {
        return Err(RedisError::Reply(format!(
            "expected {} integers, got {}",
            6 * entries.len(),
            fields.len()
        )));
    }
    Ok(fields
        .chunks_exact(6)
        .zip(entries)
        .map(|(fields, entry)| decision(fields, entry.key))
        .collect())
}

fn decision(fields: &[i64], key: &str) -> Result<Decision, RedisError> {
    let &[allowed, limit, remaining, reset_after, retry_after, delay] = fields else {
        unreachable!("chunks of six")
    };
    if allowed == -1 {
        return Err(RedisError::KeyType {
            key: key.to_owned(),
        });
    }
    let unsigned = |x: i64| {
        u64::try_from(x).map_err(|_| RedisError::Reply(format!("negative field in {fields:?}")))
    };
    Ok(Decision {
        allowed: allowed == 1,
        limit: unsigned(limit)?,
        remaining: unsigned(remaining)?,
        reset_after_us: unsigned(reset_after)?,
        retry_after_us: unsigned(retry_after)?,
        delay_us: unsigned(delay)?,
        source: Source::Storage,
    })
}
