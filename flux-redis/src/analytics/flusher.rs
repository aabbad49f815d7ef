//! Sampled events and per-endpoint totals, sent to Redis in batches.
//!
//! A decision never waits for this: it bumps its counters and, when sampled,
//! queues an [`Event`] in memory. A thread of the backend wakes every
//! [`FLUSH_INTERVAL`] and, when there is something to send, writes the
//! queued events as stream entries of up to [`EVENTS_PER_ENTRY`] events each
//! (`XADD stream MAXLEN ~ <entries> * v 1 n <events> events <json>`, the
//! format below) and what each endpoint's counters grew by since the last
//! flush (`HINCRBY totals "<endpoint>:<outcome>" n`) as one pipeline: one
//! round trip per flush, on a connection of its own.
//!
//! # The stream's entries (format 1)
//!
//! Each entry holds the events of one part of a flush, oldest first, in
//! three fields:
//!
//! - `v`: the format, `1`; a reader skips entries of a format it does not
//!   know;
//! - `n`: how many events the entry holds (1 to [`EVENTS_PER_ENTRY`]);
//! - `events`: a JSON array of `n` events, each an array of nine values in
//!   this order: `ts` (milliseconds since the epoch), `key` (the storage
//!   key: the caller's identity only as a digest), `ep` (the endpoint, as
//!   `/metrics` labels it), `d` (1 admitted, 0 refused), `p` (the policy),
//!   `u` (calls in use after the decision), `mr`, `mp`, `mb` (the quota's
//!   requests, period in seconds and burst):
//!   `[[1700000000123,"flux:api:gcra:{9f86..}","api",1,"gcra",1,100,60,100]]`.
//!
//! An entry per event (the format before) cost Redis an `XADD` of nine
//! fields per event, 0.67 µs of its time against 2.4 µs for a decision in a
//! batch of 64; an entry of 64 costs it about 0.04 µs per event. JSON,
//! because every language reads it with what it ships (Python's `json`,
//! JavaScript, Go, Ruby, PHP, .NET, and Redis's own Lua through `cjson`),
//! and the endpoint is any text a request brought: a plain separated format
//! would need an escaping rule of its own that every reader must write.
//!
//! `retention` counts events: a flush of `E` events in `k` entries trims
//! the stream to about `retention * k / E` entries (`MAXLEN ~`), so while
//! flushes are alike the stream keeps about `retention` events, whether its
//! entries are full (busy) or hold one event each (quiet). When busy turns
//! quiet, the stream holds up to about twice that until the full entries
//! age out (tests/analytics.rs).
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
use std::ops::Range;
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

/// The most events one stream entry holds. A flush spreads its events
/// evenly over as few entries as this allows.
pub const EVENTS_PER_ENTRY: usize = 64;

/// The format of the stream's entries, their field `v` (see the module's
/// documentation).
pub const EVENTS_FORMAT: u32 = 1;

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
        let mut packed = Resp::with_capacity(events.len() * 160 + deltas.len() * 64);
        let entries = entries(events.len());
        let maxlen = entries_kept(self.sink.retention, events.len(), entries.len()).to_string();
        let mut encoder = Encoder::default();
        for entry in &entries {
            let json = encoder.events(&events[entry.clone()]);
            xadd(&mut packed, &self.sink.stream, &maxlen, entry.len(), json);
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
        debug_assert_eq!(count, entries.len() + deltas.len());
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
        let (entry_replies, totals_replies) = replies.split_at(entries.len().min(replies.len()));
        for (i, entry) in entries.iter().enumerate() {
            // Entries without a reply at all did not make it either.
            match entry_replies.get(i) {
                Some(Value::ServerError(err)) => {
                    moved |= err.kind() == Some(ServerErrorKind::Moved);
                    report.dropped += entry.len() as u64;
                }
                Some(_) => report.events += entry.len() as u64,
                None => report.dropped += entry.len() as u64,
            }
        }
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

/// How a flush of `events` events is cut into entries: as few as
/// [`EVENTS_PER_ENTRY`] allows, of sizes that differ by one at most (130
/// events are 44, 43 and 43), so that the entries of a flush hold alike and
/// [`entries_kept`] counts events well.
fn entries(events: usize) -> Vec<Range<usize>> {
    let count = events.div_ceil(EVENTS_PER_ENTRY);
    let mut start = 0;
    (0..count)
        .map(|i| {
            let len = events / count + usize::from(i < events % count);
            start += len;
            start - len..start
        })
        .collect()
}

/// The `MAXLEN ~` of a flush that writes `events` events in `entries`
/// entries: the entries that hold about `retention` events at this flush's
/// events per entry, rounded up (so at least `retention` events, and at
/// least one entry).
fn entries_kept(retention: u64, events: usize, entries: usize) -> u64 {
    let (events, entries) = (events.max(1) as u128, entries as u128);
    let kept = (u128::from(retention) * entries).div_ceil(events);
    u64::try_from(kept).unwrap_or(u64::MAX).max(1)
}

/// Writes events as the JSON of an entry's `events` field (see the module's
/// documentation), into a buffer it keeps from one entry to the next.
#[derive(Default)]
struct Encoder {
    json: Vec<u8>,
    /// The last period written (its bits) and its text: most events of a
    /// flush share it.
    period: Option<u64>,
    period_text: String,
}

impl Encoder {
    fn events(&mut self, events: &[Event]) -> &[u8] {
        self.json.clear();
        self.json.push(b'[');
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                self.json.push(b',');
            }
            self.event(event);
        }
        self.json.push(b']');
        &self.json
    }

    /// `[ts,"key","ep",d,"p",u,mr,mp,mb]`
    fn event(&mut self, event: &Event) {
        let bits = event.period_secs.to_bits();
        if self.period != Some(bits) {
            // Display: 60 for 60.0, 0.5 for 0.5, never an exponent: a JSON number.
            self.period = Some(bits);
            self.period_text = event.period_secs.to_string();
        }
        let json = &mut self.json;
        let mut digits = [0u8; 20];
        json.push(b'[');
        json.extend_from_slice(decimal(event.ts_us / 1000, &mut digits));
        json.push(b',');
        json_string(json, &event.key);
        json.push(b',');
        json_string(json, &event.endpoint);
        json.extend_from_slice(if event.allowed { b",1," } else { b",0," });
        json_string(json, event.policy.name());
        for n in [event.usage, event.requests] {
            json.push(b',');
            json.extend_from_slice(decimal(n, &mut digits));
        }
        json.push(b',');
        json.extend_from_slice(self.period_text.as_bytes());
        json.push(b',');
        json.extend_from_slice(decimal(event.burst, &mut digits));
        json.push(b']');
    }
}

/// `text` as a JSON string: quoted, with `"`, `\` and control characters escaped.
fn json_string(json: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(json, text).expect("a Vec takes any bytes");
}

/// `XADD stream MAXLEN ~ maxlen * v 1 n <events> events <json>`
fn xadd(packed: &mut Resp, stream: &str, maxlen: &str, events: usize, json: &[u8]) {
    packed.command(3 + 3 + 2 * 3);
    for arg in [
        &b"XADD"[..],
        stream.as_bytes(),
        b"MAXLEN",
        b"~",
        maxlen.as_bytes(),
        b"*",
    ] {
        packed.bulk(arg);
    }
    let mut digits = [0u8; 20];
    packed.field(b"v", decimal(u64::from(EVENTS_FORMAT), &mut digits));
    packed.field(b"n", decimal(events as u64, &mut digits));
    packed.field(b"events", json);
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

    fn event(key: &str, endpoint: &str, allowed: bool) -> Event {
        let quota = flux_core::QuotaSpec::new(flux_core::Policy::SlidingWindow, 120, 0.5)
            .build()
            .unwrap();
        let decision = flux_core::Decision {
            allowed,
            limit: 120,
            remaining: 7,
            ..flux_core::Decision::default()
        };
        Event::new(
            1_700_000_000_123_456,
            key.into(),
            endpoint.into(),
            &quota,
            &decision,
        )
    }

    #[test]
    fn commands_are_written_as_the_redis_crate_writes_them() {
        let events = [
            event("flux:api:sliding_window:00ff", "api", false),
            event("flux:api:sliding_window:01ff", "api", true),
        ];
        let mut encoder = Encoder::default();
        let mut packed = Resp::with_capacity(0);
        xadd(
            &mut packed,
            "flux:events",
            "1563",
            2,
            encoder.events(&events),
        );
        packed.command(4);
        packed.bulk(b"HINCRBY");
        packed.bulk(b"{flux:events}:totals");
        packed.bulk(b"api:blocked");
        packed.number(0);
        let (bytes, count) = packed.finish();

        let mut expected = Vec::new();
        redis::cmd("XADD")
            .arg("flux:events")
            .arg("MAXLEN")
            .arg("~")
            .arg(1563)
            .arg("*")
            .arg("v")
            .arg(1)
            .arg("n")
            .arg(2)
            .arg("events")
            .arg(
                "[[1700000000123,\"flux:api:sliding_window:00ff\",\"api\",0,\"sliding_window\",113,120,0.5,120],\
                 [1700000000123,\"flux:api:sliding_window:01ff\",\"api\",1,\"sliding_window\",113,120,0.5,120]]",
            )
            .write_packed_command(&mut expected);
        redis::cmd("HINCRBY")
            .arg("{flux:events}:totals")
            .arg("api:blocked")
            .arg(0)
            .write_packed_command(&mut expected);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        assert_eq!(count, 2);
    }

    #[test]
    fn any_endpoint_text_reads_back_from_the_json() {
        let endpoints = [
            "quote\" back\\slash",
            "tab\tnew\nline\r\u{1}\u{1f}",
            "é ☃ 😀",
            "]],[",
        ];
        let events: Vec<Event> = endpoints.iter().map(|ep| event("k", ep, true)).collect();
        let mut encoder = Encoder::default();
        let json: serde_json::Value = serde_json::from_slice(encoder.events(&events)).unwrap();
        let read: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event[2].as_str().unwrap())
            .collect();
        assert_eq!(read, endpoints);
    }

    #[test]
    fn a_flush_is_cut_into_entries_of_alike_sizes() {
        let sizes = |events| -> Vec<usize> { entries(events).iter().map(Range::len).collect() };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(65), [33, 32]);
        assert_eq!(sizes(130), [44, 43, 43]);
        for events in 0..1000 {
            let entries = entries(events);
            assert_eq!(entries.len(), events.div_ceil(EVENTS_PER_ENTRY));
            // In order, end to end, each a size within one of the others'.
            assert!(entries.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(entries.last().map_or(0, |e| e.end), events);
            let (least, most) = (
                entries.iter().map(Range::len).min(),
                entries.iter().map(Range::len).max(),
            );
            assert!(most.zip(least).is_none_or(|(m, l)| m - l <= 1 && l >= 1));
        }
    }

    #[test]
    fn the_stream_keeps_about_retention_events_whatever_fills_its_entries() {
        // Quiet: an event per flush, an event per entry.
        assert_eq!(entries_kept(100_000, 1, 1), 100_000);
        // Busy: full entries.
        assert_eq!(entries_kept(100_000, 640, 10), 1_563);
        // 130 events in 3 entries: 44, 43, 43 events each; 3 entries hold 130.
        assert_eq!(entries_kept(100, 130, 3), 3);
        assert_eq!(entries_kept(1, 5_000, 79), 1);
        assert_eq!(entries_kept(u64::MAX, 1, 1), u64::MAX);
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
