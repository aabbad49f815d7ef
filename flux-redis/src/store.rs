//! The Redis store: `flux_core::Store` over a pool of connections and the Lua scripts.

use std::collections::HashMap;
use std::sync::Arc;

use flux_core::{Clock, Decision, Policy, Quota, Request, Store};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionLike, RedisResult, ServerErrorKind, Value};

use crate::connection::{ClusterLink, Link, Manager};
use crate::error::breaks_connection;
use crate::fork::PerProcess;
use crate::pool::{Pool, PoolError};
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
/// Each process has its own pool: a forked child (see [`crate::fork`]) makes
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
        self.with_conn(|link| {
            for script in scripts::all() {
                script.load(link.as_dyn())?;
            }
            Ok(())
        })
    }

    /// One `PING` (to every primary of a cluster) through the pool.
    pub fn ping(&self) -> Result<(), RedisError> {
        self.with_conn(|link| redis::cmd("PING").query::<()>(link.as_dyn()))
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
        self.with_conn(|link| match link {
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
        quota.check_cost(cost)?;
        let entries = [Entry { key, quota, cost }];
        let cmd = scripts::eval_cmd(quota, &entries, now_us);
        let reply = self.with_conn(|link| scripts::eval(link.as_dyn(), quota.policy(), &cmd))?;
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
            match self.with_conn(|link| run_batch(link, &calls)) {
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

    /// Runs `f` on a pooled connection, bounded by `timeout_ms` to get one
    /// and `timeout_ms` for each reply.
    fn with_conn<T>(
        &self,
        mut f: impl FnMut(&mut Link) -> RedisResult<T>,
    ) -> Result<T, RedisError> {
        let timeout_ms = self.config.timeout_ms;
        let pool = self
            .pool
            .get_or_init(|| new_pool(&self.manager, &self.config));
        // A connection that sat in the pool while Redis restarted fails at
        // once with a reset, before its command reached the new server: try
        // the next one, as many times as the pool has connections.
        let mut tries = self.config.pool_size + 1;
        loop {
            let mut conn = pool.get().map_err(|e| {
                // Live connections but none free: the pool is too small for
                // the load. Else Redis cannot be reached.
                let busy = matches!(e, PoolError::Busy { .. });
                RedisError::from_pool(e, timeout_ms, busy)
            })?;
            let reused = conn.uses() > 0;
            match conn.run(&mut f) {
                Ok(value) => return Ok(value),
                Err(err) => {
                    tries -= 1;
                    if reused && tries > 0 && is_stale(&err) {
                        continue;
                    }
                    return Err(RedisError::from_redis(err, timeout_ms));
                }
            }
        }
    }
}

/// A pool of `config.pool_size` connections made by `manager`, for the
/// calling process.
fn new_pool(manager: &Arc<Manager>, config: &RedisConfig) -> Pool {
    Pool::new(manager.clone(), config.pool_size, config.timeout())
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
struct Call<'a> {
    entries: Vec<(usize, Entry<'a>)>,
    policy: Policy,
    cmd: Cmd,
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
    fn key(&self) -> &str {
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

/// Sends `calls` as one pipeline (one per primary on a cluster). Calls
/// answered `NOSCRIPT` did not run, so they are sent again once their script
/// is loaded; on a cluster, calls redirected by `MOVED` or `ASK` did not run
/// either and are sent again to the right node.
fn run_batch(link: &mut Link, calls: &[Call<'_>]) -> RedisResult<Vec<RedisResult<Value>>> {
    let all: Vec<usize> = (0..calls.len()).collect();
    let mut replies = send(link, calls, &all)?;

    let missing: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| reply_error(&replies[i]) == Some(ServerErrorKind::NoScript))
        .collect();
    if !missing.is_empty() {
        let mut policies: Vec<Policy> = missing.iter().map(|&i| calls[i].policy).collect();
        policies.sort_by_key(|p| p.name());
        policies.dedup();
        for policy in policies {
            scripts::script(policy).load(link.as_dyn())?;
        }
        let again = send(link, calls, &missing)?;
        for (i, reply) in missing.into_iter().zip(again) {
            replies[i] = reply;
        }
    }
    Ok(replies
        .into_iter()
        .map(|reply| reply.and_then(Value::extract_error))
        .collect())
}

/// Replies to `calls[i]` for each `i` in `which`, in that order.
fn send(
    link: &mut Link,
    calls: &[Call<'_>],
    which: &[usize],
) -> RedisResult<Vec<RedisResult<Value>>> {
    match link {
        Link::Single(conn) => {
            let mut packed = Vec::new();
            for &i in which {
                calls[i].cmd.write_packed_command(&mut packed);
            }
            Ok(conn
                .req_packed_commands(&packed, 0, which.len())?
                .into_iter()
                .map(Ok)
                .collect())
        }
        Link::Cluster(link) => send_cluster(link, calls, which),
    }
}

/// Rounds of one pipeline per primary, by our slot map, over plain
/// connections: every part is written before any reply is read, so a round
/// costs one round trip. A call answered `MOVED` did not run: the map is
/// fetched again and the call goes in the next round. After three rounds, or
/// on `ASK`/`TRYAGAIN`, or for a slot the map does not cover, a call goes
/// alone through the cluster connection, which follows the redirect.
fn send_cluster(
    link: &mut ClusterLink,
    calls: &[Call<'_>],
    which: &[usize],
) -> RedisResult<Vec<RedisResult<Value>>> {
    let mut replies: Vec<Option<RedisResult<Value>>> = vec![None; calls.len()];
    let mut pending = which.to_vec();
    let mut alone = Vec::new();
    for _round in 0..3 {
        if pending.is_empty() {
            break;
        }
        if link.slots.is_empty() {
            link.refresh_slots()?;
        }
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for &i in &pending {
            match link.primary(cluster::slot(calls[i].key().as_bytes())) {
                Some(node) => match groups.iter_mut().find(|(n, _)| n == node) {
                    Some((_, group)) => group.push(i),
                    None => groups.push((node.to_owned(), vec![i])),
                },
                None => alone.push(i),
            }
        }
        for (node, group) in &groups {
            let mut packed = Vec::new();
            for &i in group {
                calls[i].cmd.write_packed_command(&mut packed);
            }
            link.node(node)?.send_packed_command(&packed)?;
        }
        let mut moved = Vec::new();
        for (node, group) in groups {
            let conn = link.node(&node)?;
            for i in group {
                let value = conn.recv_response()?;
                if server_error(&value) == Some(ServerErrorKind::Moved) {
                    moved.push(i);
                } else {
                    replies[i] = Some(Ok(value));
                }
            }
        }
        if !moved.is_empty() {
            link.slots.clear();
        }
        pending = moved;
    }
    alone.extend(pending);
    alone.extend(which.iter().copied().filter(|&i| {
        matches!(
            replies[i].as_ref().and_then(reply_error),
            Some(ServerErrorKind::Ask | ServerErrorKind::TryAgain)
        )
    }));
    for i in alone {
        replies[i] = Some(eval_alone(link, &calls[i])?);
    }
    Ok(which
        .iter()
        .map(|&i| replies[i].take().unwrap_or(Ok(Value::Nil)))
        .collect())
}

/// One call on its own, the redis crate following `MOVED` and `ASK`. An
/// error that leaves the connection unusable fails the batch; any other is
/// this call's answer.
fn eval_alone(link: &mut ClusterLink, call: &Call<'_>) -> RedisResult<RedisResult<Value>> {
    match scripts::eval(&mut link.conn, call.policy, &call.cmd) {
        Err(err) if breaks_connection(&err) => Err(err),
        reply => Ok(reply),
    }
}

fn server_error(value: &Value) -> Option<ServerErrorKind> {
    match value {
        Value::ServerError(err) => err.kind(),
        _ => None,
    }
}

fn reply_error(reply: &RedisResult<Value>) -> Option<ServerErrorKind> {
    match reply {
        Ok(value) => server_error(value),
        Err(err) => match err.kind() {
            redis::ErrorKind::Server(kind) => Some(kind),
            _ => None,
        },
    }
}

/// A pooled connection found dead on use: worth one more try on another.
fn is_stale(err: &redis::RedisError) -> bool {
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
