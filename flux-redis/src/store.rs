//! The Redis store: `flux_core::Store` over a pool of connections and the Lua scripts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use flux_core::config::Storage;
use flux_core::{Call, Clock, Decision, Op, Quota, Request, Store, StoreError, MAX_QUOTAS};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionLike, RedisResult, ServerErrorKind, Value};

use crate::connection::{ClusterLink, Link, Manager};
use crate::error::{breaks_connection, is_readonly};
use crate::node::{timed_out, Node};
use crate::pool::{Pool, Pooled};
use crate::scripts::{Entry, LimitScript, ScriptCache};
use crate::signals::HeldSignals;
use crate::{cluster, scripts, RedisConfig, RedisError};
use flux_core::fork::PerProcess;

/// Where a decision's "now" comes from.
#[derive(Debug, Clone, Default)]
pub enum TimeSource {
    /// Redis `TIME`, read inside the script: every app server agrees on the
    /// time whatever its own clock says. The one to use outside tests.
    #[default]
    Redis,
    /// A clock of this process, e.g. a `ManualClock` shared with a
    /// `MemoryStore` so both decide at the same instants. For tests: keys
    /// written this way stay in Redis at least a minute, since Redis expires
    /// them by its own clock (a stale key decides like no key).
    Clock(Arc<dyn Clock>),
}

impl TimeSource {
    fn now_us(&self) -> Option<u64> {
        match self {
            TimeSource::Redis => None,
            TimeSource::Clock(clock) => Some(clock.now_us()),
        }
    }
}

/// Rate-limit state in Redis or Redis Cluster, decided by Lua scripts that
/// reproduce flux-core's policies exactly.
///
/// Each call is one `EVALSHA` on one caller's keys (one per quota of its
/// limit, sharing a hash slot, so it works on a cluster), in one round trip;
/// [`Store::apply_many`] applies many in one round trip too (on one Redis,
/// one script call per limit and operation; on a cluster, one pipeline per
/// primary). Every key written carries a TTL. Thread-safe: share it behind
/// an `Arc`.
///
/// Connecting is lazy: [`RedisStore::connect`] fails only on settings that cannot work, and
/// a Redis that is down (or comes back after a restart) is found by the calls
/// themselves, each bounded by about `timeout_ms`.
///
/// Each process has its own pool: a forked child (see [`flux_core::fork`]) makes
/// a new one at its first call and never touches its parent's connections.
///
/// ```no_run
/// use flux_core::{storage_key, Policy, QuotaSpec, Store};
/// use flux_redis::{RedisConfig, RedisStore};
///
/// let store = RedisStore::connect(&RedisConfig::from_url("redis://127.0.0.1:6379"))?;
/// let quota = QuotaSpec::new(Policy::Gcra, 100, 60.0).build()?;
/// let key = storage_key("flux:", "api", quota.policy(), b"10.0.0.1");
/// let decision = store.decide(&key, &quota, 1)?;
/// println!("allowed: {}, remaining: {}", decision.allowed, decision.remaining);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisStore {
    pool: PerProcess<Pool>,
    /// What each process's pool connects with: settings only, no connection.
    manager: Arc<Manager>,
    config: RedisConfig,
    cluster: bool,
    time: TimeSource,
    scripts: ScriptCache,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.config.display_url())
            .field("cluster", &self.cluster)
            .field("pool_size", &self.config.pool_size)
            .field("timeout_ms", &self.config.timeout_ms)
            .field("time", &self.time)
            .finish()
    }
}

impl RedisStore {
    /// A store for these settings. Does not talk to Redis: it fails only when
    /// they cannot work (bad URL, pool size 0, timeout 0).
    pub fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        let target = crate::target::resolve(config)?;
        let cluster = matches!(target, crate::target::Target::Cluster(_));
        let manager = Manager::new(target, config.timeout())
            .map_err(|e| RedisError::Config(format!("{}: {e}", config.display_url())))?;
        let manager = Arc::new(manager);
        Ok(RedisStore {
            pool: PerProcess::new(new_pool(&manager, config)),
            manager,
            config: config.clone(),
            cluster,
            time: TimeSource::Redis,
            scripts: ScriptCache::default(),
        })
    }

    /// The same store reading its time from `time` (tests; see [`TimeSource`]).
    pub fn with_time_source(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Loads the decision scripts of `limits` (each the quotas of one limit)
    /// and of every limit this store has decided for so far (on every node
    /// of a cluster), so their first decisions do not pay for a `NOSCRIPT`
    /// round trip. Also a quick check that Redis is there.
    pub fn preload_scripts(&self, limits: &[&[Quota]]) -> Result<(), RedisError> {
        for quotas in limits {
            self.scripts.get(quotas, Op::Decide);
        }
        let scripts = self.scripts.all();
        self.with_conn(Resend::Idempotent, |link| {
            for script in &scripts {
                script.load(link.as_dyn())?;
            }
            Ok(())
        })
    }

    /// One `PING` (to every primary of a cluster) through the pool.
    pub fn ping(&self) -> Result<(), RedisError> {
        self.with_conn(Resend::Idempotent, |link| {
            redis::cmd("PING").query::<()>(link.as_dyn())
        })
    }

    /// Decides at `now_us` (µs since the Unix epoch) instead of Redis `TIME`:
    /// for tests, like [`TimeSource::Clock`].
    pub fn decide_at(
        &self,
        key: &str,
        quota: &Quota,
        cost: u64,
        now_us: u64,
    ) -> Result<Decision, RedisError> {
        let call = Call {
            keys: &[key],
            quotas: std::slice::from_ref(quota),
            cost,
            op: Op::Decide,
        };
        self.apply_with(&call, Some(now_us))
    }

    /// [`Store::decide_many`] at `now_us`: for tests, like [`TimeSource::Clock`].
    pub fn decide_many_at(
        &self,
        requests: &[Request<'_>],
        now_us: u64,
    ) -> Vec<Result<Decision, RedisError>> {
        Request::decide_all(requests, |calls| self.apply_many_with(calls, Some(now_us)))
    }

    /// [`Store::apply`] at `now_us`: for tests, like [`TimeSource::Clock`].
    pub fn apply_at(&self, call: &Call<'_>, now_us: u64) -> Result<Decision, RedisError> {
        self.apply_with(call, Some(now_us))
    }

    /// [`Store::apply_many`] at `now_us`: for tests.
    pub fn apply_many_at(
        &self,
        calls: &[Call<'_>],
        now_us: u64,
    ) -> Vec<Result<Decision, RedisError>> {
        self.apply_many_with(calls, Some(now_us))
    }

    /// Deletes one caller's keys (a reset); returns how many existed. The
    /// keys must share a hash tag on a cluster.
    pub fn remove_keys(&self, keys: &[&str]) -> Result<u64, RedisError> {
        self.with_conn(Resend::Idempotent, |link| {
            redis::cmd("UNLINK").arg(keys).query(link.as_dyn())
        })
    }

    /// Deletes every key that starts with `prefix` (`SCAN` + `UNLINK`, on
    /// every primary of a cluster); returns how many. Never `KEYS`, so Redis
    /// keeps serving while it runs.
    pub fn clear_keys(&self, prefix: &str) -> Result<u64, RedisError> {
        if prefix.is_empty() {
            return Err(RedisError::Config(
                "clear_prefix needs a prefix: an empty one would clear the whole database".into(),
            ));
        }
        let pattern = format!("{}*", glob_escape(prefix));
        self.with_conn(Resend::Idempotent, |link| match link {
            Link::Single(conn) => clear_node(conn, &pattern, |conn, keys| {
                redis::cmd("UNLINK").arg(keys).query(conn)
            }),
            Link::Cluster(link) => clear_cluster(link, &pattern),
        })
    }

    fn apply_with(&self, call: &Call<'_>, now_us: Option<u64>) -> Result<Decision, RedisError> {
        if self.cluster {
            // A batch of one: redirects are followed within timeout_ms there.
            let mut decisions = self.apply_many_with(std::slice::from_ref(call), now_us);
            return decisions.pop().expect("one decision per call");
        }
        check(call)?;
        let script = self.scripts.get(call.quotas, call.op);
        let entries = [Entry {
            keys: call.keys,
            cost: call.cost,
        }];
        let cmd = scripts::eval_cmd(&script, &entries, now_us);
        let timeout = self.config.timeout();
        let reply = self.with_conn(Resend::Never, |link| {
            let Link::Single(conn) = link else {
                unreachable!("a cluster decides in batches")
            };
            let deadline = Instant::now() + timeout;
            match conn.req_command(&cmd).and_then(scripts::reply_or_error) {
                // It did not run: load the script and send it again, in
                // what is left of timeout_ms.
                Err(err) if scripts::is_noscript(&err) => conn.within(deadline, |conn| {
                    script.load(conn)?;
                    conn.req_command(&cmd).and_then(scripts::reply_or_error)
                }),
                reply => reply,
            }
        })?;
        scripts::decisions(reply, &entries, call.quotas)?
            .pop()
            .expect("one decision per entry")
    }

    fn apply_many_with(
        &self,
        requests: &[Call<'_>],
        now_us: Option<u64>,
    ) -> Vec<Result<Decision, RedisError>> {
        let mut results: Vec<Option<Result<Decision, RedisError>>> = vec![None; requests.len()];
        let mut valid: Vec<usize> = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            match check(r) {
                Ok(()) => valid.push(i),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let calls: Vec<ScriptCall<'_>> = if self.cluster {
            // One caller per script call: a call's keys must share a slot.
            valid
                .into_iter()
                .map(|i| ScriptCall::new(&self.scripts, requests, vec![i], now_us))
                .collect()
        } else if let Some(groups) = by_limit(requests, &valid) {
            // One script call per limit and operation (in chunks), so Redis
            // runs the script once for many decisions; each key keeps its
            // calls' order.
            groups
                .iter()
                .flat_map(|group| {
                    let per_call = MAX_KEYS_PER_CALL / requests[group[0]].keys.len();
                    group.chunks(per_call.max(1))
                })
                .map(|chunk| ScriptCall::new(&self.scripts, requests, chunk.to_vec(), now_us))
                .collect()
        } else {
            // A key under two limits or operations in one batch: grouping
            // would reorder its calls, so each goes alone, in order (still
            // one pipeline).
            valid
                .into_iter()
                .map(|i| ScriptCall::new(&self.scripts, requests, vec![i], now_us))
                .collect()
        };

        if !calls.is_empty() {
            let timeout_ms = self.config.timeout_ms;
            let timeout = self.config.timeout();
            let batch = self.with_conn(Resend::Never, |link| {
                // Every step of the batch, retries included, within timeout_ms.
                run_batch(link, &calls, Instant::now() + timeout)
            });
            match batch {
                Ok(replies) => {
                    for (call, reply) in calls.iter().zip(replies) {
                        let entries: Vec<Entry<'_>> = call
                            .members
                            .iter()
                            .map(|&i| Entry {
                                keys: requests[i].keys,
                                cost: requests[i].cost,
                            })
                            .collect();
                        let quotas = requests[call.members[0]].quotas;
                        match reply
                            .map_err(|e| RedisError::from_redis(e, timeout_ms))
                            .and_then(|value| scripts::decisions(value, &entries, quotas))
                        {
                            Ok(decisions) => {
                                for (&i, decision) in call.members.iter().zip(decisions) {
                                    results[i] = Some(decision);
                                }
                            }
                            Err(err) => {
                                for &i in &call.members {
                                    results[i] = Some(Err(err.clone()));
                                }
                            }
                        }
                    }
                }
                Err(err) => {
                    for call in &calls {
                        for &i in &call.members {
                            results[i] = Some(Err(err.clone()));
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect()
    }

    /// Runs `f` on a pooled connection: up to `timeout_ms` waiting in turn
    /// for one, then `f` within its own bounds, with the thread's signals
    /// held meanwhile on a cluster (see [`HeldSignals`]; elsewhere each
    /// call would pay two system calls for nothing).
    ///
    /// A connection that breaks after the request was written may have
    /// carried it to Redis, which may have run it: a decision is then not
    /// sent again (it would count twice) but fails. Work that may run twice
    /// ([`Resend::Idempotent`]) is tried again on the next connection, as
    /// many times as the pool has connections.
    fn with_conn<T>(
        &self,
        resend: Resend,
        mut f: impl FnMut(&mut Link) -> RedisResult<T>,
    ) -> Result<T, RedisError> {
        let _held = self.cluster.then(HeldSignals::hold);
        let mut tries = self.config.pool_size + 1;
        loop {
            let mut conn = self.checkout()?;
            match conn.run(&mut f) {
                Ok(value) => return Ok(value),
                Err(err) => {
                    tries -= 1;
                    if is_dead(&err) || (conn.is_broken() && is_readonly(&err)) {
                        // Those that sat idle as long may be dead too (a
                        // restarted Redis), or connected to a master that a
                        // failover demoted: each is checked before its next call.
                        self.manager.health().found_dead();
                        if resend == Resend::Idempotent && tries > 0 {
                            continue;
                        }
                    }
                    return Err(RedisError::from_redis(err, self.config.timeout_ms));
                }
            }
        }
    }

    /// A connection from the pool, waiting up to `timeout_ms` for one. One
    /// that may have died while idle answers a `PING` (a `ROLE` on Sentinel)
    /// first: nothing of the caller's has been sent on it yet, so a dead one
    /// (or one to a demoted master) is dropped and the next taken.
    fn checkout(&self) -> Result<Pooled<'_>, RedisError> {
        let pool = self
            .pool
            .get_or_init(|| new_pool(&self.manager, &self.config));
        let health = self.manager.health();
        // One wait in all, however many connections are found dead on the way.
        let deadline = Instant::now() + self.config.timeout();
        let mut checks = self.config.pool_size;
        loop {
            let mut conn = pool.get(deadline).map_err(|e| {
                RedisError::from_pool(e, self.config.pool_size, self.config.timeout_ms)
            })?;
            if checks == 0 || !health.suspects(&conn) {
                return Ok(conn);
            }
            checks -= 1;
            match conn.probe() {
                Err(err) if conn.is_broken() => {
                    if !is_dead(&err) && !is_readonly(&err) {
                        // Not dead but silent (a timeout): the next would be too.
                        return Err(RedisError::from_redis(err, self.config.timeout_ms));
                    }
                }
                // An answer, even an error reply, proves the socket works.
                _ => {
                    health.clear(&mut conn);
                    return Ok(conn);
                }
            }
        }
    }
}

/// Whether a call may be sent again after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// A decision: Redis may have run it before the connection broke.
    Never,
    /// Reads, script loads, deletes: running twice changes nothing.
    Idempotent,
}

/// A pool of `config.pool_size` connections made by `manager`, for the
/// calling process.
fn new_pool(manager: &Arc<Manager>, config: &RedisConfig) -> Pool {
    Pool::new(manager.clone(), config.pool_size)
}

impl Store for RedisStore {
    fn apply(&self, call: &Call<'_>) -> Result<Decision, StoreError> {
        self.apply_with(call, self.time.now_us())
            .map_err(Into::into)
    }

    /// One pipeline, one round trip (per node of a cluster), whatever the
    /// number of calls; results in the order of `calls`.
    fn apply_many(&self, calls: &[Call<'_>]) -> Vec<Result<Decision, StoreError>> {
        self.apply_many_with(calls, self.time.now_us())
            .into_iter()
            .map(|r| r.map_err(Into::into))
            .collect()
    }

    fn remove(&self, keys: &[&str]) -> Result<u64, StoreError> {
        self.remove_keys(keys).map_err(Into::into)
    }

    fn clear_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        self.clear_keys(prefix).map_err(Into::into)
    }

    fn preload(&self, limits: &[&[Quota]]) -> Result<(), StoreError> {
        self.preload_scripts(limits).map_err(Into::into)
    }

    fn storage(&self) -> Storage {
        Storage::Redis
    }

    fn place(&self) -> String {
        format!("Redis at {}", self.config.display_url())
    }
}

/// Keys one script call takes on a single Redis: long enough to pay for the
/// call many times over, short enough that no call holds Redis for long.
const MAX_KEYS_PER_CALL: usize = 128;

/// What the store checks before a call reaches Redis: one key per quota, a
/// limit of one policy, and a cost the limit can take.
fn check(call: &Call<'_>) -> Result<(), RedisError> {
    let (keys, quotas) = (call.keys, call.quotas);
    assert!(
        !quotas.is_empty() && quotas.len() <= MAX_QUOTAS && keys.len() == quotas.len(),
        "a call names 1 to {MAX_QUOTAS} quotas and one key each"
    );
    assert!(
        quotas.iter().all(|q| q.policy() == quotas[0].policy()),
        "the quotas of a limit share one policy"
    );
    match call.op {
        Op::Refund if call.cost == 0 => Err(flux_core::QuotaError::CostZero.into()),
        Op::Refund => Ok(()),
        Op::Decide | Op::Peek => quotas
            .iter()
            .try_for_each(|q| q.check_cost(call.cost))
            .map_err(Into::into),
    }
}

/// One script call of a batch: the calls it decides (their place in the
/// batch), all under one limit and operation.
pub(crate) struct ScriptCall<'a> {
    members: Vec<usize>,
    pub(crate) script: Arc<LimitScript>,
    pub(crate) cmd: Cmd,
    /// The first key: it routes the call on a cluster (where a script call
    /// is one caller, whose keys share a slot).
    key: &'a str,
}

impl<'a> ScriptCall<'a> {
    fn new(
        scripts: &ScriptCache,
        requests: &[Call<'a>],
        members: Vec<usize>,
        now_us: Option<u64>,
    ) -> Self {
        let first = &requests[members[0]];
        let script = scripts.get(first.quotas, first.op);
        let entries: Vec<Entry<'_>> = members
            .iter()
            .map(|&i| Entry {
                keys: requests[i].keys,
                cost: requests[i].cost,
            })
            .collect();
        let cmd = scripts::eval_cmd(&script, &entries, now_us);
        ScriptCall {
            members,
            script,
            cmd,
            key: first.keys[0],
        }
    }

    /// The key that routes the call on a cluster.
    pub(crate) fn key(&self) -> &str {
        self.key
    }
}

/// The batch's valid calls grouped by limit and operation, in order of
/// first appearance; `None` when some key comes under two of them.
fn by_limit(requests: &[Call<'_>], valid: &[usize]) -> Option<Vec<Vec<usize>>> {
    let same = |a: &Call<'_>, b: &Call<'_>| a.op == b.op && a.quotas == b.quotas;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut limit_of_key: HashMap<&str, usize> = HashMap::with_capacity(valid.len());
    for &i in valid {
        let request = &requests[i];
        for key in request.keys {
            let first = *limit_of_key.entry(key).or_insert(i);
            if !same(&requests[first], request) {
                return None;
            }
        }
        match groups.iter_mut().find(|g| same(&requests[g[0]], request)) {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    Some(groups)
}

/// Sends `calls` as one pipeline (one per primary on a cluster, see
/// cluster.rs), all by `deadline`: on one Redis, calls answered `NOSCRIPT`
/// did not run, so they are sent again once their script is loaded, if
/// time is left. Error replies become each call's error.
fn run_batch(
    link: &mut Link,
    calls: &[ScriptCall<'_>],
    deadline: Instant,
) -> RedisResult<Vec<RedisResult<Value>>> {
    let replies = match link {
        Link::Single(conn) => {
            let replies = run_single(conn, calls, deadline)?;
            // A replica's answer (a failover demoted this server) is the
            // connection's, not one call's: every call of the batch fails
            // with it, and the connection is told (see connection.rs).
            let readonly = replies.iter().find_map(|reply| match reply {
                Ok(Value::ServerError(e)) if e.kind() == Some(ServerErrorKind::ReadOnly) => {
                    Some(Value::ServerError(e.clone()).extract_error())
                }
                _ => None,
            });
            if let Some(Err(err)) = readonly {
                return Err(err);
            }
            replies
        }
        Link::Cluster(link) => cluster::run(link, calls, deadline)?,
    };
    Ok(replies
        .into_iter()
        .map(|reply| reply.and_then(scripts::reply_or_error))
        .collect())
}

fn run_single(
    conn: &mut Node,
    calls: &[ScriptCall<'_>],
    deadline: Instant,
) -> RedisResult<Vec<RedisResult<Value>>> {
    let all: Vec<usize> = (0..calls.len()).collect();
    let first = send_single(conn, calls, &all)?;
    let missing: Vec<usize> = all
        .into_iter()
        .filter(|&i| matches!(&first[i], Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript)))
        .collect();
    let mut replies: Vec<RedisResult<Value>> = first.into_iter().map(Ok).collect();
    if missing.is_empty() {
        return Ok(replies);
    }
    if Instant::now() >= deadline {
        for i in missing {
            replies[i] = Err(timed_out());
        }
        return Ok(replies);
    }
    // The first send had the connection's own timeout; what follows has
    // what is left of it.
    let again = conn.within(deadline, |conn| {
        let mut loaded: Vec<&str> = Vec::new();
        for &i in &missing {
            let script = &calls[i].script;
            if !loaded.contains(&script.hash()) {
                script.load(conn)?;
                loaded.push(script.hash());
            }
        }
        send_single(conn, calls, &missing)
    });
    match again {
        Ok(again) => {
            for (i, reply) in missing.into_iter().zip(again) {
                replies[i] = Ok(reply);
            }
        }
        Err(err) if breaks_connection(&err) => return Err(err),
        Err(err) => {
            for i in missing {
                replies[i] = Err(err.clone());
            }
        }
    }
    Ok(replies)
}

/// Replies to `calls[i]` for each `i` in `which`, in that order, as one pipeline.
fn send_single(
    conn: &mut Node,
    calls: &[ScriptCall<'_>],
    which: &[usize],
) -> RedisResult<Vec<Value>> {
    let mut packed = Vec::new();
    for &i in which {
        calls[i].cmd.write_packed_command(&mut packed);
    }
    conn.req_packed_commands(&packed, 0, which.len())
}

/// A connection found closed or reset on use (not merely slow).
fn is_dead(err: &redis::RedisError) -> bool {
    err.is_connection_dropped() && !err.is_timeout()
}

/// `SCAN` one node for `pattern`, deleting what it finds with `unlink`.
fn clear_node<C: redis::ConnectionLike>(
    conn: &mut C,
    pattern: &str,
    mut unlink: impl FnMut(&mut C, &[Vec<u8>]) -> RedisResult<u64>,
) -> RedisResult<u64> {
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        if !keys.is_empty() {
            deleted += unlink(conn, &keys)?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(deleted);
        }
    }
}

/// `SCAN` every primary (a cluster's `SCAN` is per node) and `UNLINK` each key
/// through its slot.
fn clear_cluster(link: &mut ClusterLink, pattern: &str) -> RedisResult<u64> {
    let mut deleted = 0;
    for (host, port) in link.primaries()? {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(link.conn.route_command(&scan, route.clone())?)?;
            for key in &keys {
                deleted += redis::cmd("UNLINK").arg(key).query::<u64>(&mut link.conn)?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// `prefix` as a literal in a `SCAN MATCH` glob.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
