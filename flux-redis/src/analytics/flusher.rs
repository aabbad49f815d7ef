//! Sampled events and per-endpoint totals, sent to Redis in batches.
//!
//! A decision never waits for this: it bumps its counters and, when sampled,
//! queues an [`Event`] in memory. A thread of the backend wakes every
//! [`FLUSH_INTERVAL`] and, when there is something to send, writes every
//! queued event (`XADD stream [MAXLEN ~ retention] * ts .. key .. ep .. d ..
//! p .. u .. mr .. mp .. mb ..`, trimming by every 64th and the last) and
//! what each endpoint's counters grew by since the last flush (`HINCRBY
//! totals "<endpoint>:<outcome>" n`) as one pipeline: one round trip per
//! flush, on a connection of its own.
//!
//! The totals hash holds what every process has added, so it is the
//! cross-process count. Its key is the stream's name in a hash tag
//! (`{flux:events}:totals`), so on a Redis Cluster it lives in the stream's
//! slot and a flush is still one pipeline to one node.
//!
//! When Redis fails, the flush's events are dropped and counted
//! (`flux_events_dropped_total`); the totals deltas stay, to be added by the
//! next flush that gets through, so the totals stay exact.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flux_core::analytics::{Analytics, Counts, Event, Outcome};
use flux_core::config::AnalyticsConfig;
use parking_lot::Mutex;
use redis::{RedisResult, ServerErrorKind, Value};

use crate::connection::{Conn, Link, Manager};
use crate::{RedisConfig, RedisError};

/// How often the flusher looks for something to send.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Every how many events of a flush an `XADD` trims the stream.
const TRIM_EVERY: usize = 64;

/// Where events and totals go, and a connection of its own to get there, so
/// a slow flush never holds a connection a decision is waiting for. Shared
/// by the flusher and the metrics server (which reads the totals).
pub(crate) struct Sink {
    /// Shared with the sinks of forked children: settings only.
    manager: Arc<Manager>,
    conn: Mutex<Option<Conn>>,
    pub(crate) stream: String,
    pub(crate) totals_key: String,
    retention: u64,
    timeout_ms: u64,
    /// The Redis URL without its password: tells sinks apart, and says where.
    pub(crate) redis: String,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("redis", &self.redis)
            .field("stream", &self.stream)
            .field("totals_key", &self.totals_key)
            .field("retention", &self.retention)
            .finish()
    }
}

impl Sink {
    pub(crate) fn new(redis: &RedisConfig, config: &AnalyticsConfig) -> Result<Sink, RedisError> {
        let manager = Manager::new(crate::target::resolve(redis)?, redis.timeout())
            .map_err(|e| RedisError::Config(format!("{}: {e}", redis.display_url())))?;
        Ok(Sink {
            manager: Arc::new(manager),
            conn: Mutex::new(None),
            stream: config.stream.clone(),
            totals_key: totals_key(&config.stream),
            retention: config.retention,
            timeout_ms: redis.timeout_ms,
            redis: redis.display_url(),
        })
    }

    /// Runs `f` on this sink's connection, connecting first when there is
    /// none. A connection that broke is dropped; one found dead on first use
    /// after sitting idle (Redis restarted) is replaced and `f` tried once
    /// more, as nothing reached the server.
    fn run<T>(&self, mut f: impl FnMut(&mut Link) -> RedisResult<T>) -> Result<T, RedisError> {
        let mut slot = self.conn.lock();
        for attempt in 0..2 {
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => slot.insert(
                    self.manager
                        .connect(self.manager.timeout())
                        .map_err(|e| RedisError::from_redis(e, self.timeout_ms))?,
                ),
            };
            let reused = conn.uses() > 0;
            let result = conn.run(&mut f);
            if result.is_err() && self.manager.has_broken(conn) {
                *slot = None;
            }
            match result {
                Err(err) if attempt == 0 && reused && is_stale(&err) => continue,
                result => return result.map_err(|e| RedisError::from_redis(e, self.timeout_ms)),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// A sink to the same place with no connection yet: for a forked child,
    /// which must not use its parent's.
    pub(crate) fn fresh(&self) -> Sink {
        Sink {
            manager: self.manager.clone(),
            conn: Mutex::new(None),
            stream: self.stream.clone(),
            totals_key: self.totals_key.clone(),
            retention: self.retention,
            timeout_ms: self.timeout_ms,
            redis: self.redis.clone(),
        }
    }

    /// Forgets the connection (after a `MOVED`: a new one reads the slot map anew).
    fn reset(&self) {
        *self.conn.lock() = None;
    }

    /// The totals every process has flushed here, by endpoint.
    pub(crate) fn totals(&self) -> Result<BTreeMap<String, Counts>, RedisError> {
        let fields: Vec<(String, u64)> = self.run(|link| {
            redis::cmd("HGETALL")
                .arg(&self.totals_key)
                .query(link.as_dyn())
        })?;
        let mut totals: BTreeMap<String, Counts> = BTreeMap::new();
        for (field, n) in fields {
            let Some((endpoint, outcome)) = field.rsplit_once(':') else {
                continue;
            };
            if let Some(i) = Outcome::ALL.iter().position(|o| o.name() == outcome) {
                totals.entry(endpoint.to_owned()).or_default()[i] += n;
            }
        }
        Ok(totals)
    }
}

/// The totals hash beside `stream`: `{flux:events}:totals` for the stream
/// `flux:events`, so that on a Redis Cluster it is in the stream's slot. A
/// stream name with a hash tag of its own keeps it (`{app}:events:totals`).
pub fn totals_key(stream: &str) -> String {
    let tagged = stream
        .find('{')
        .and_then(|open| stream[open + 1..].find('}'))
        .is_some_and(|len| len > 0);
    // A `}` outside any tag cannot be put inside one: such a name keeps
    // its own slot and its totals another (fine on a single Redis).
    if tagged || stream.contains('}') {
        format!("{stream}:totals")
    } else {
        format!("{{{stream}}}:totals")
    }
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Events added to the stream.
    pub events: u64,
    /// Events Redis did not take, now counted in `flux_events_dropped_total`.
    pub dropped: u64,
    /// Totals fields incremented (one per endpoint and outcome that moved).
    pub totals: u64,
    /// Round trips to Redis: 1 when there was something to send, else 0.
    pub round_trips: u64,
}

/// Sends a backend's queued events and totals deltas to Redis, one
/// pipeline per [`Flusher::flush`]. A backend runs one on a thread of its
/// own when `[analytics] enabled` and the store is Redis; make one yourself
/// only to flush by hand.
#[derive(Debug)]
pub struct Flusher {
    analytics: Arc<Analytics>,
    sink: Arc<Sink>,
    /// Each endpoint's counters as the totals hash last received them.
    sent: HashMap<String, Counts>,
}

impl Flusher {
    /// A flusher of `analytics` to the Redis of `redis`, into the stream
    /// and retention of `config`. Connects at its first flush.
    pub fn new(
        analytics: Arc<Analytics>,
        redis: &RedisConfig,
        config: &AnalyticsConfig,
    ) -> Result<Flusher, RedisError> {
        Ok(Self::with_sink(
            analytics,
            Arc::new(Sink::new(redis, config)?),
        ))
    }

    pub(crate) fn with_sink(analytics: Arc<Analytics>, sink: Arc<Sink>) -> Flusher {
        Flusher {
            analytics,
            sink,
            sent: HashMap::new(),
        }
    }

    /// A flusher that adds to the totals only what `analytics` counts from
    /// now on: for a forked child, whose inherited counts its parent sends.
    pub(crate) fn from_now_on(analytics: Arc<Analytics>, sink: Arc<Sink>) -> Flusher {
        let sent = analytics
            .snapshot()
            .endpoints
            .into_iter()
            .map(|(endpoint, ep)| (endpoint, ep.counts))
            .collect();
        Flusher {
            analytics,
            sink,
            sent,
        }
    }

    /// Sends every queued event and every totals delta in one pipeline, or
    /// nothing (no round trip) when there is nothing new.
    ///
    /// On an error the events are dropped and counted, and the deltas kept
    /// for the next flush.
    pub fn flush(&mut self) -> Result<FlushReport, RedisError> {
        let events = self.analytics.take_events();
        let deltas = self.deltas();
        if events.is_empty() && deltas.is_empty() {
            return Ok(FlushReport::default());
        }
        // Most of a flush's own work is writing the commands: straight into
        // one buffer, rather than a `redis::Cmd` and its allocations each.
        let mut packed = Resp::with_capacity(events.len() * 256 + deltas.len() * 64);
        let retention = self.sink.retention.to_string();
        let mut period = (f64::NAN, String::new());
        for (i, event) in events.iter().enumerate() {
            if event.period_secs.to_bits() != period.0.to_bits() {
                // Display: 60 for 60.0, 0.5 for 0.5.
                period = (event.period_secs, event.period_secs.to_string());
            }
            // Trimmed by every TRIM_EVERY-th XADD and the last, rather than
            // by each: an event then costs Redis a tenth less. One trim
            // removes up to 100 nodes of the stream (Redis's default LIMIT
            // for `~`), so the stream still keeps near `retention`.
            let trim = (i + 1) % TRIM_EVERY == 0 || i + 1 == events.len();
            let retention = trim.then_some(retention.as_str());
            xadd(&mut packed, &self.sink.stream, retention, &period.1, event);
        }
        for (endpoint, outcome, delta, _) in &deltas {
            let field = format!("{endpoint}:{}", Outcome::ALL[*outcome].name());
            packed.command(4);
            packed.bulk(b"HINCRBY");
            packed.bulk(self.sink.totals_key.as_bytes());
            packed.bulk(field.as_bytes());
            packed.number(*delta);
        }
        let (packed, count) = packed.finish();
        debug_assert_eq!(count, events.len() + deltas.len());
        let replies = match self
            .sink
            .run(|link| link.as_dyn().req_packed_commands(&packed, 0, count))
        {
            Ok(replies) => replies,
            Err(err) => {
                self.analytics.add_dropped(events.len() as u64);
                return Err(err);
            }
        };
        let mut report = FlushReport {
            round_trips: 1,
            ..FlushReport::default()
        };
        let mut moved = false;
        let (event_replies, totals_replies) = replies.split_at(events.len().min(replies.len()));
        for reply in event_replies {
            match reply {
                Value::ServerError(err) => {
                    moved |= err.kind() == Some(ServerErrorKind::Moved);
                    report.dropped += 1;
                }
                _ => report.events += 1,
            }
        }
        // Events without a reply at all did not make it either.
        report.dropped += (events.len() - event_replies.len()) as u64;
        for ((endpoint, outcome, _, now), reply) in deltas.iter().zip(totals_replies) {
            match reply {
                Value::ServerError(err) => moved |= err.kind() == Some(ServerErrorKind::Moved),
                _ => {
                    report.totals += 1;
                    self.sent.entry(endpoint.clone()).or_default()[*outcome] = *now;
                }
            }
        }
        if moved {
            self.sink.reset();
        }
        self.analytics.add_dropped(report.dropped);
        Ok(report)
    }

    /// `(endpoint, outcome index, delta, counter now)` for every counter
    /// that grew since the totals hash last received it.
    fn deltas(&self) -> Vec<(String, usize, u64, u64)> {
        let snapshot = self.analytics.snapshot();
        let mut deltas = Vec::new();
        for (endpoint, ep) in snapshot.endpoints {
            let now = ep.counts;
            let sent = self.sent.get(&endpoint).copied().unwrap_or_default();
            for (i, (&now, &sent)) in now.iter().zip(&sent).enumerate() {
                if now > sent {
                    deltas.push((endpoint.clone(), i, now - sent, now));
                }
            }
        }
        deltas
    }
}

/// `XADD stream [MAXLEN ~ retention] * ts .. key .. ep .. d .. p .. u .. mr
/// .. mp .. mb ..`
fn xadd(packed: &mut Resp, stream: &str, retention: Option<&str>, period: &str, event: &Event) {
    packed.command(3 + 3 * usize::from(retention.is_some()) + 2 * 9);
    packed.bulk(b"XADD");
    packed.bulk(stream.as_bytes());
    if let Some(retention) = retention {
        for arg in [&b"MAXLEN"[..], b"~", retention.as_bytes()] {
            packed.bulk(arg);
        }
    }
    packed.bulk(b"*");
    let mut digits = [0u8; 20];
    packed.field(b"ts", decimal(event.ts_us / 1000, &mut digits));
    packed.field(b"key", event.key.as_bytes());
    packed.field(b"ep", event.endpoint.as_bytes());
    packed.field(b"d", if event.allowed { b"1" } else { b"0" });
    packed.field(b"p", event.policy.name().as_bytes());
    packed.field(b"u", decimal(event.usage, &mut digits));
    packed.field(b"mr", decimal(event.requests, &mut digits));
    packed.field(b"mp", period.as_bytes());
    packed.field(b"mb", decimal(event.burst, &mut digits));
}

/// Commands in the Redis protocol (RESP), appended to one buffer: what
/// `redis::Cmd::write_packed_command` writes, without its allocations.
struct Resp {
    buf: Vec<u8>,
    commands: usize,
}

impl Resp {
    fn with_capacity(bytes: usize) -> Resp {
        Resp {
            buf: Vec::with_capacity(bytes),
            commands: 0,
        }
    }

    /// Starts a command of `argc` arguments (its name included), each then
    /// given by `bulk`, `number` or `field`.
    fn command(&mut self, argc: usize) {
        self.buf.push(b'*');
        self.digits(argc as u64);
        self.buf.extend_from_slice(b"\r\n");
        self.commands += 1;
    }

    fn bulk(&mut self, arg: &[u8]) {
        self.buf.push(b'$');
        self.digits(arg.len() as u64);
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(arg);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn number(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        self.bulk(decimal(n, &mut digits));
    }

    /// A stream entry's field and its value.
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.bulk(name);
        self.bulk(value);
    }

    fn digits(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        self.buf.extend_from_slice(decimal(n, &mut digits));
    }

    /// The bytes and the number of commands in them.
    fn finish(self) -> (Vec<u8>, usize) {
        (self.buf, self.commands)
    }
}

/// `n` in decimal, in the tail of `out`.
fn decimal(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
    }
}

/// A pooled-style connection found dead on use: worth one more try.
fn is_stale(err: &redis::RedisError) -> bool {
    err.is_connection_dropped() && !err.is_timeout()
}

/// The thread that runs a [`Flusher`] every [`FLUSH_INTERVAL`]. Dropping it
/// stops the thread after one last flush, and joins it.
#[derive(Debug)]
pub(crate) struct FlushThread {
    flusher: Arc<Mutex<Flusher>>,
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl FlushThread {
    pub(crate) fn start(flusher: Flusher) -> std::io::Result<FlushThread> {
        let flusher = Arc::new(Mutex::new(flusher));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = flusher.clone();
        let handle = std::thread::Builder::new()
            .name("flux-analytics".into())
            .spawn(move || {
                let mut next = Instant::now() + FLUSH_INTERVAL;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    let last = match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => false,
                        // Asked to stop, or the backend is gone.
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    // A failed flush has counted what it dropped; nobody to tell.
                    let _ = shared.lock().flush();
                    if last {
                        return;
                    }
                    next = Instant::now() + FLUSH_INTERVAL;
                }
            })?;
        Ok(FlushThread {
            flusher,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    pub(crate) fn flusher(&self) -> &Arc<Mutex<Flusher>> {
        &self.flusher
    }
}

impl Drop for FlushThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::slot;

    #[test]
    fn commands_are_written_as_the_redis_crate_writes_them() {
        let quota = flux_core::QuotaSpec::new(flux_core::Policy::SlidingWindow, 120, 0.5)
            .build()
            .unwrap();
        let decision = flux_core::Decision {
            allowed: false,
            limit: 120,
            remaining: 7,
            ..flux_core::Decision::default()
        };
        let event = Event::new(
            1_700_000_000_123_456,
            "flux:api:sliding_window:00ff".into(),
            "api".into(),
            &quota,
            &decision,
        );
        let mut packed = Resp::with_capacity(0);
        xadd(&mut packed, "flux:events", Some("100000"), "0.5", &event);
        xadd(&mut packed, "flux:events", None, "0.5", &event);
        packed.command(4);
        packed.bulk(b"HINCRBY");
        packed.bulk(b"{flux:events}:totals");
        packed.bulk(b"api:blocked");
        packed.number(0);
        let (bytes, count) = packed.finish();

        let mut expected = Vec::new();
        let mut fields = |cmd: &mut redis::Cmd| {
            cmd.arg("*")
                .arg("ts")
                .arg(1_700_000_000_123u64)
                .arg("key")
                .arg("flux:api:sliding_window:00ff")
                .arg("ep")
                .arg("api")
                .arg("d")
                .arg(0)
                .arg("p")
                .arg("sliding_window")
                .arg("u")
                .arg(113)
                .arg("mr")
                .arg(120)
                .arg("mp")
                .arg("0.5")
                .arg("mb")
                .arg(120)
                .write_packed_command(&mut expected);
        };
        fields(
            redis::cmd("XADD")
                .arg("flux:events")
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000),
        );
        fields(redis::cmd("XADD").arg("flux:events"));
        redis::cmd("HINCRBY")
            .arg("{flux:events}:totals")
            .arg("api:blocked")
            .arg(0)
            .write_packed_command(&mut expected);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        assert_eq!(count, 3);
    }

    #[test]
    fn the_totals_hash_is_in_the_streams_cluster_slot() {
        for stream in ["flux:events", "events", "{app}:events", "a{b}c"] {
            let key = totals_key(stream);
            assert_eq!(
                slot(key.as_bytes()),
                slot(stream.as_bytes()),
                "{stream} -> {key}"
            );
        }
        assert_eq!(totals_key("flux:events"), "{flux:events}:totals");
        assert_eq!(totals_key("{app}:events"), "{app}:events:totals");
    }
}
