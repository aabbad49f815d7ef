//! The Redis store: `flux_core::Store` over an r2d2 pool and the Lua scripts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flux_core::{Clock, Decision, Policy, Quota, Request, Store};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Connection, ConnectionLike, RedisResult, ServerErrorKind, Value};

use crate::connection::{ClusterLink, Health, Link, Manager};
use crate::error::breaks_connection;
use crate::scripts::Entry;
use crate::{cluster, scripts, RedisConfig, RedisError};

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
/// Each decision is one `EVALSHA` on one key (so it works on a cluster), in
/// one round trip; [`Store::decide_many`] decides many in one round trip too
/// (on one Redis, one script call per policy; on a cluster, one pipeline per
/// primary). Every key written carries a TTL. Thread-safe: share it behind
/// an `Arc`.
///
/// Connecting is lazy: [`RedisStore::connect`] fails only on settings that cannot work, and
/// a Redis that is down (or comes back after a restart) is found by the calls
/// themselves, each bounded by about `timeout_ms`.
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
    pool: r2d2::Pool<Manager>,
    health: Arc<Health>,
    config: RedisConfig,
    cluster: bool,
    time: TimeSource,
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
        let health = manager.health().clone();
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            // Connections are made when calls need them, not kept topped up.
            .min_idle(Some(0))
            // A PING per checkout would double a decision's latency; broken
            // connections are found by their errors instead (connection.rs).
            .test_on_check_out(false)
            .connection_timeout(config.timeout())
            // Failures reach the caller as errors; r2d2 would also log each
            // background reconnect attempt.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(RedisStore {
            pool,
            health,
            config: config.clone(),
            cluster,
            time: TimeSource::Redis,
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

    /// Loads every policy's script (on every node of a cluster), so the first
    /// decisions do not pay for a `NOSCRIPT` round trip. Also a quick check
    /// that Redis is there.
    pub fn preload_scripts(&self) -> Result<(), RedisError> {
        self.with_conn(Resend::Idempotent, |link| {
            for script in scripts::all() {
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
        self.decide_with(key, quota, cost, Some(now_us))
    }

    /// [`Store::decide_many`] at `now_us`: for tests, like [`TimeSource::Clock`].
    pub fn decide_many_at(
        &self,
        requests: &[Request<'_>],
        now_us: u64,
    ) -> Vec<Result<Decision, RedisError>> {
        self.decide_many_with(requests, Some(now_us))
    }

    /// Deletes every key that starts with `prefix` (`SCAN` + `UNLINK`, on
    /// every primary of a cluster); returns how many. Never `KEYS`, so Redis
    /// keeps serving while it runs.
    pub fn clear_prefix(&self, prefix: &str) -> Result<u64, RedisError> {
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

    fn decide_with(
        &self,
        key: &str,
        quota: &Quota,
        cost: u64,
        now_us: Option<u64>,
    ) -> Result<Decision, RedisError> {
        if self.cluster {
            // A batch of one: redirects are followed within timeout_ms there.
            let request = Request { key, quota, cost };
            let mut decisions = self.decide_many_with(&[request], now_us);
            return decisions.pop().expect("one decision per request");
        }
        quota.check_cost(cost)?;
        let entries = [Entry { key, quota, cost }];
        let cmd = scripts::eval_cmd(quota, &entries, now_us);
        let timeout = self.config.timeout();
        let reply = self.with_conn(Resend::Never, |link| {
            let Link::Single(conn) = link else {
                unreachable!("a cluster decides in batches")
            };
            let deadline = Instant::now() + timeout;
            match conn.req_command(&cmd).and_then(Value::extract_error) {
                // It did not run: load the script and send it again, in
                // what is left of timeout_ms.
                Err(err) if scripts::is_noscript(&err) => within(conn, deadline, timeout, |conn| {
                    scripts::script(quota.policy()).load(conn)?;
                    conn.req_command(&cmd).and_then(Value::extract_error)
                }),
                reply => reply,
            }
        })?;
        scripts::decisions(reply, &entries)?
            .pop()
            .expect("one decision per entry")
    }

    fn decide_many_with(
        &self,
        requests: &[Request<'_>],
        now_us: Option<u64>,
    ) -> Vec<Result<Decision, RedisError>> {
        let mut results: Vec<Option<Result<Decision, RedisError>>> = vec![None; requests.len()];
        let mut valid: Vec<(usize, Entry<'_>)> = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            match r.quota.check_cost(r.cost) {
                Ok(()) => valid.push((
                    i,
                    Entry {
                        key: r.key,
                        quota: r.quota,
                        cost: r.cost,
                    },
                )),
                Err(e) => results[i] = Some(Err(e.into())),
            }
        }
        let calls: Vec<Call<'_>> = if self.cluster {
            // One key per script call: a call's keys must share a slot.
            valid
                .into_iter()
                .map(|entry| Call::new(vec![entry], now_us))
                .collect()
        } else if let Some(groups) = by_quota(&valid) {
            // One script call per quota (in chunks), so Redis runs the script
            // once for many decisions; each key keeps its calls' order.
            groups
                .iter()
                .flat_map(|group| group.chunks(MAX_KEYS_PER_CALL))
                .map(|chunk| Call::new(chunk.to_vec(), now_us))
                .collect()
        } else {
            // A key under two quotas in one batch: grouping would reorder its
            // calls, so each goes alone, in order (still one pipeline).
            valid
                .into_iter()
                .map(|entry| Call::new(vec![entry], now_us))
                .collect()
        };

        if !calls.is_empty() {
            let timeout_ms = self.config.timeout_ms;
            let timeout = self.config.timeout();
            let batch = self.with_conn(Resend::Never, |link| {
                // Every step of the batch, retries included, within timeout_ms.
                run_batch(link, &calls, Instant::now() + timeout, timeout)
            });
            match batch {
                Ok(replies) => {
                    for (call, reply) in calls.iter().zip(replies) {
                        let entries: Vec<Entry<'_>> =
                            call.entries.iter().map(|(_, e)| *e).collect();
                        match reply
                            .map_err(|e| RedisError::from_redis(e, timeout_ms))
                            .and_then(|value| scripts::decisions(value, &entries))
                        {
                            Ok(decisions) => {
                                for ((i, _), decision) in call.entries.iter().zip(decisions) {
                                    results[*i] = Some(decision);
                                }
                            }
                            Err(err) => {
                                for (i, _) in &call.entries {
                                    results[*i] = Some(Err(err.clone()));
                                }
                            }
                        }
                    }
                }
                Err(err) => {
                    for call in &calls {
                        for (i, _) in &call.entries {
                            results[*i] = Some(Err(err.clone()));
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
    /// for one, then `f` within its own bounds.
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
        let mut tries = self.config.pool_size + 1;
        loop {
            let mut conn = self.checkout()?;
            match conn.run(&mut f) {
                Ok(value) => return Ok(value),
                Err(err) => {
                    tries -= 1;
                    if is_dead(&err) {
                        // Those that sat idle as long may be dead too (a
                        // restarted Redis): each is checked before its next call.
                        self.health.found_dead();
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
    /// that may have died while idle answers a `PING` first: nothing of the
    /// caller's has been sent on it yet, so a dead one is dropped and the
    /// next taken.
    fn checkout(&self) -> Result<r2d2::PooledConnection<Manager>, RedisError> {
        let mut checks = self.config.pool_size;
        loop {
            let mut conn = self.pool.get().map_err(|_| self.no_connection())?;
            if checks == 0 || !self.health.suspects(&conn) {
                return Ok(conn);
            }
            checks -= 1;
            match conn.run(|link| redis::cmd("PING").query::<()>(link.as_dyn())) {
                Err(err) if conn.is_broken() => {
                    if !is_dead(&err) {
                        // Not dead but silent (a timeout): the next would be too.
                        return Err(RedisError::from_redis(err, self.config.timeout_ms));
                    }
                }
                // An answer, even an error reply, proves the socket works.
                _ => {
                    self.health.clear(&mut conn);
                    return Ok(conn);
                }
            }
        }
    }

    /// Why the pool gave no connection within `timeout_ms`: the last attempt
    /// to make one failed (Redis unreachable), or every connection was in
    /// use (back-pressure), or the one being made did not finish in time.
    fn no_connection(&self) -> RedisError {
        let timeout_ms = self.config.timeout_ms;
        if let Some(err) = self.health.connect_error() {
            return match RedisError::from_redis(err, timeout_ms) {
                // Whatever Redis answered while we connected, it was not serving us.
                RedisError::Redis(err) => RedisError::Unreachable(err),
                other => other,
            };
        }
        if self.pool.state().connections >= self.config.pool_size {
            return RedisError::Busy {
                pool_size: self.config.pool_size,
                timeout_ms,
            };
        }
        RedisError::Timeout {
            source: timed_out(),
            timeout_ms,
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

impl Store for RedisStore {
    type Error = RedisError;

    fn decide(&self, key: &str, quota: &Quota, cost: u64) -> Result<Decision, RedisError> {
        self.decide_with(key, quota, cost, self.time.now_us())
    }

    /// One pipeline, one round trip (per node of a cluster), whatever the
    /// number of requests; results in the order of `requests`.
    fn decide_many(&self, requests: &[Request<'_>]) -> Vec<Result<Decision, RedisError>> {
        self.decide_many_with(requests, self.time.now_us())
    }
}

/// Decisions one script call makes on a single Redis: long enough to pay for
/// the call many times over, short enough that no call holds Redis for long.
const MAX_KEYS_PER_CALL: usize = 128;

/// One script call of a batch: its entries (with their place in the batch),
/// all of one policy.
pub(crate) struct Call<'a> {
    entries: Vec<(usize, Entry<'a>)>,
    pub(crate) policy: Policy,
    pub(crate) cmd: Cmd,
}

impl<'a> Call<'a> {
    fn new(entries: Vec<(usize, Entry<'a>)>, now_us: Option<u64>) -> Self {
        let quota = entries[0].1.quota;
        let plain: Vec<Entry<'_>> = entries.iter().map(|(_, e)| *e).collect();
        let cmd = scripts::eval_cmd(quota, &plain, now_us);
        Call {
            entries,
            policy: quota.policy(),
            cmd,
        }
    }

    /// The key that routes the call on a cluster (its only one there).
    pub(crate) fn key(&self) -> &str {
        self.entries[0].1.key
    }
}

/// The batch's entries grouped by quota, in order of first appearance; `None`
/// when some key comes with two different quotas.
#[allow(clippy::type_complexity)]
fn by_quota<'a>(entries: &[(usize, Entry<'a>)]) -> Option<Vec<Vec<(usize, Entry<'a>)>>> {
    let mut groups: Vec<Vec<(usize, Entry<'a>)>> = Vec::new();
    let mut quota_of_key: HashMap<&str, &Quota> = HashMap::with_capacity(entries.len());
    for &(i, entry) in entries {
        if *quota_of_key.entry(entry.key).or_insert(entry.quota) != entry.quota {
            return None;
        }
        match groups.iter_mut().find(|g| g[0].1.quota == entry.quota) {
            Some(group) => group.push((i, entry)),
            None => groups.push(vec![(i, entry)]),
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
    calls: &[Call<'_>],
    deadline: Instant,
    timeout: Duration,
) -> RedisResult<Vec<RedisResult<Value>>> {
    let replies = match link {
        Link::Single(conn) => run_single(conn, calls, deadline, timeout)?,
        Link::Cluster(link) => cluster::run(link, calls, deadline)?,
    };
    Ok(replies
        .into_iter()
        .map(|reply| reply.and_then(Value::extract_error))
        .collect())
}

fn run_single(
    conn: &mut Connection,
    calls: &[Call<'_>],
    deadline: Instant,
    timeout: Duration,
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
    let again = within(conn, deadline, timeout, |conn| {
        let mut policies: Vec<Policy> = missing.iter().map(|&i| calls[i].policy).collect();
        policies.sort_by_key(|p| p.name());
        policies.dedup();
        for policy in policies {
            scripts::script(policy).load(conn)?;
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
    conn: &mut Connection,
    calls: &[Call<'_>],
    which: &[usize],
) -> RedisResult<Vec<Value>> {
    let mut packed = Vec::new();
    for &i in which {
        calls[i].cmd.write_packed_command(&mut packed);
    }
    conn.req_packed_commands(&packed, 0, which.len())
}

/// Runs `f` on `conn` with its reads and writes bounded by what is left
/// until `deadline` (a timeout error if nothing is), then gives the
/// connection its own `timeout` back.
pub(crate) fn within<T>(
    conn: &mut Connection,
    deadline: Instant,
    timeout: Duration,
    f: impl FnOnce(&mut Connection) -> RedisResult<T>,
) -> RedisResult<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    conn.set_read_timeout(Some(left))?;
    conn.set_write_timeout(Some(left))?;
    let result = f(conn);
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    result
}

/// The error of a call that ran out of time.
pub(crate) fn timed_out() -> redis::RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
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
