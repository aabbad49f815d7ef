//! The Lua scripts, and how a decision is asked of them.
//!
//! One script per limit and operation: a header written here with the
//! limit's constants, then `prelude.lua`, `refund.lua` for refunds,
//! `head.lua` (`one_head.lua` for a limit of one quota), the file that
//! decides one quota of the policy inline (`bucket.lua` for gcra,
//! token_bucket and leaky_bucket), `keep.lua` (the TTL of what it stores),
//! then `tail.lua` (`one_tail.lua`); see prelude.lua for KEYS, ARGV and the
//! reply, and why nothing in them is a function. The constants live in the script rather than
//! in ARGV because Redis copies and the script parses every argument of
//! every call: with them in the header a call carries only its keys, the
//! time and its costs, and costs Redis what a minimal hand-written script
//! costs (`make bench`, commandstats). The sources are embedded with
//! `include_str!`; a store makes a limit's scripts once and keeps them
//! ([`ScriptCache`]). A call is an `EVALSHA`; a `NOSCRIPT` answer (a
//! restarted or flushed Redis, a cluster node that never saw the script)
//! loads the script and retries once (see store.rs and cluster.rs).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use flux_core::{Decision, Op, Policy, Quota, Source, MAX_QUOTAS};
use parking_lot::RwLock;
use redis::{Cmd, ConnectionLike, ErrorKind, RedisResult, Script, ServerErrorKind, Value};

use crate::RedisError;

macro_rules! lua {
    ($file:literal) => {
        include_str!(concat!("../lua/", $file))
    };
}

const PRELUDE: &str = lua!("prelude.lua");
const REFUND: &str = lua!("refund.lua");
const HEAD: &str = lua!("head.lua");
const TAIL: &str = lua!("tail.lua");
const ONE_HEAD: &str = lua!("one_head.lua");
const ONE_TAIL: &str = lua!("one_tail.lua");
const KEEP: &str = lua!("keep.lua");

/// The file that decides one quota of `policy` inline.
fn deciding(policy: Policy) -> &'static str {
    match policy {
        Policy::Gcra | Policy::TokenBucket | Policy::LeakyBucket => lua!("bucket.lua"),
        Policy::FixedWindow => lua!("fixed_window.lua"),
        Policy::SlidingWindow => lua!("sliding_window.lua"),
    }
}

/// A limit's script: the hash `EVALSHA` names, and the code `SCRIPT LOAD`
/// sends when Redis does not have it.
#[derive(Debug)]
pub(crate) struct LimitScript {
    script: Script,
    code: String,
}

impl LimitScript {
    pub(crate) fn hash(&self) -> &str {
        self.script.get_hash()
    }

    /// `SCRIPT LOAD` of this script, to send in a pipeline.
    pub(crate) fn load_cmd(&self) -> Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(&self.code);
        cmd
    }

    /// Loads it on `conn` (on every primary of a cluster connection).
    pub(crate) fn load(&self, conn: &mut dyn ConnectionLike) -> RedisResult<()> {
        self.script.load(conn).map(drop)
    }
}

/// The script that applies `op` under `quotas` (one policy, 1 to
/// [`MAX_QUOTAS`] quotas).
pub(crate) fn script(quotas: &[Quota], op: Op) -> LimitScript {
    let policy = quotas[0].policy();
    debug_assert!(quotas.iter().all(|q| q.policy() == policy));
    debug_assert!(!quotas.is_empty() && quotas.len() <= MAX_QUOTAS);
    let code = match op {
        Op::Decide => 'd',
        Op::Peek => 'p',
        Op::Refund => 'r',
    };
    let mut text = format!("-- Flux: {policy}, {}:", op.name());
    for quota in quotas {
        let _ = write!(text, " {} per {} us,", quota.requests(), quota.period_us());
    }
    let _ = write!(
        text,
        " made by flux-redis (scripts.rs)\nlocal POLICY, OP, NQ = '{policy}', '{code}', {}\n",
        quotas.len()
    );
    let constants = |quota: &Quota| -> Vec<u64> {
        if policy.is_bucket() {
            let (unit, rate) = (quota.unit(), quota.rate());
            let capacity = quota.burst() * unit;
            vec![unit, rate, capacity, capacity + quota.max_wait_us() * rate]
        } else {
            vec![quota.requests(), quota.period_us()]
        }
    };
    let join = |numbers: Vec<u64>| {
        numbers
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let first = constants(&quotas[0]);
    let names: Vec<String> = (1..=first.len()).map(|k| format!("K{k}")).collect();
    let _ = writeln!(text, "local {} = {}", names.join(", "), join(first));
    // A table costs every call; only a limit of several quotas (or a
    // refund, which reads it) needs one.
    if quotas.len() > 1 || op == Op::Refund {
        let all = quotas.iter().flat_map(constants).collect();
        let _ = writeln!(text, "local Q = {{{}}}", join(all));
    }
    text.push_str(PRELUDE);
    if op == Op::Refund {
        text.push_str(REFUND);
    }
    let (head, tail) = if quotas.len() == 1 {
        (ONE_HEAD, ONE_TAIL)
    } else {
        (HEAD, TAIL)
    };
    text.push_str(head);
    text.push_str(deciding(policy));
    text.push_str(KEEP);
    text.push_str(tail);
    LimitScript {
        script: Script::new(&text),
        code: text,
    }
}

/// The Lua that applies `op` under `quotas` (one policy, 1 to
/// [`MAX_QUOTAS`] quotas), as a store sends it: for tools that read it and
/// for `benches/scripts.rs`, which holds it to a minimal script's cost.
pub fn script_source(quotas: &[Quota], op: Op) -> String {
    script(quotas, op).code
}

/// Scripts that evicting everything makes room again for: each is a few
/// kilobytes, and only a process making limits without end gets there.
const MAX_CACHED: usize = 4096;

/// A limit's quotas and an operation: what a script is made for.
type ScriptFor = (Op, Box<[Quota]>);

/// A store's scripts, made once per limit and operation.
#[derive(Debug, Default)]
pub(crate) struct ScriptCache {
    scripts: RwLock<HashMap<ScriptFor, Arc<LimitScript>>>,
}

impl ScriptCache {
    pub(crate) fn get(&self, quotas: &[Quota], op: Op) -> Arc<LimitScript> {
        // A tuple key cannot be looked up by borrowed parts; a limit has at
        // most MAX_QUOTAS quotas, so the boxed copy is small.
        let key = (op, Box::<[Quota]>::from(quotas));
        if let Some(script) = self.scripts.read().get(&key) {
            return script.clone();
        }
        let mut scripts = self.scripts.write();
        if scripts.len() >= MAX_CACHED {
            scripts.clear();
        }
        scripts
            .entry(key)
            .or_insert_with(|| Arc::new(script(quotas, op)))
            .clone()
    }

    /// Every script made so far.
    pub(crate) fn all(&self) -> Vec<Arc<LimitScript>> {
        self.scripts.read().values().cloned().collect()
    }
}

/// One call for a script: a caller's keys (one per quota) and its cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub keys: &'a [&'a str],
    pub cost: u64,
}

/// `EVALSHA <sha> <keys> key... now cost...` deciding each entry in order.
/// `now` `None` asks the script to use Redis `TIME`.
pub(crate) fn eval_cmd(script: &LimitScript, entries: &[Entry<'_>], now_us: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    let keys: usize = entries.iter().map(|e| e.keys.len()).sum();
    cmd.arg(script.hash()).arg(keys);
    for entry in entries {
        for key in entry.keys {
            cmd.arg(*key);
        }
    }
    match now_us {
        Some(now) => cmd.arg(now),
        None => cmd.arg(""),
    };
    for entry in entries {
        cmd.arg(entry.cost);
    }
    cmd
}

pub(crate) fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// A script's reply, or the error Redis answered instead. A script answers
/// one flat array of integers, so an error can only be the whole reply (the
/// crate's `Value::extract_error` also rebuilds every array to look inside).
pub(crate) fn reply_or_error(reply: Value) -> redis::RedisResult<Value> {
    match reply {
        Value::ServerError(err) => Err(err.into()),
        reply => Ok(reply),
    }
}

/// A script's reply, six integers per entry, as one decision per entry.
pub(crate) fn decisions(
    reply: Value,
    entries: &[Entry<'_>],
    quotas: &[Quota],
) -> Result<Vec<Result<Decision, RedisError>>, RedisError> {
    let integers = match reply {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Int(field) => Ok(field),
                other => Err(other),
            })
            .collect::<Result<Vec<i64>, Value>>(),
        other => Err(other),
    };
    let fields =
        integers.map_err(|other| RedisError::Reply(format!("expected integers, got {other:?}")))?;
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
        .map(|(fields, entry)| decision(fields, entry, quotas))
        .collect())
}

fn decision(fields: &[i64], entry: &Entry<'_>, quotas: &[Quota]) -> Result<Decision, RedisError> {
    let &[status, index, remaining, reset_after, retry_after, delay] = fields else {
        unreachable!("chunks of six")
    };
    let unsigned = |x: i64| {
        u64::try_from(x).map_err(|_| RedisError::Reply(format!("negative field in {fields:?}")))
    };
    let index = usize::try_from(index)
        .ok()
        .filter(|&i| i < quotas.len())
        .ok_or_else(|| RedisError::Reply(format!("no quota {index} in {fields:?}")))?;
    if status == -1 {
        return Err(RedisError::KeyType {
            key: entry.keys[index].to_owned(),
        });
    }
    Ok(Decision {
        allowed: status == 1,
        limit: quotas[index].limit(),
        remaining: unsigned(remaining)?,
        reset_after_us: unsigned(reset_after)?,
        retry_after_us: unsigned(retry_after)?,
        delay_us: unsigned(delay)?,
        source: Source::Storage,
        quota_index: index,
    })
}
