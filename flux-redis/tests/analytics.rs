//! Analytics: counters per endpoint, and the flusher against redis-servers
//! started here: the stream, its sampling and trimming, the totals hash, one
//! round trip per flush, and a Redis that goes away.
//!
//! (The HTTP server is process-wide, so it has a test binary of its own:
//! tests/analytics_server.rs.)

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flux_core::analytics::{Analytics, Event, Outcome, MAX_SERIES_PER_LIMITER, OVERFLOW_ENDPOINT};
use flux_core::config::{AnalyticsConfig, Config};
use flux_core::{
    apply_batch, Backend, BatchRequest, Decision, LimitSpec, Limiter, LimiterError, Op, Policy,
    QuotaSpec, Source,
};
use flux_redis::analytics::{totals_key, Flusher};
use flux_redis::RedisConfig;
use serde_json::{json, Value};
use support::{free_port, RedisCluster, RedisServer};

fn rate(requests: u64, period: f64) -> LimitSpec {
    LimitSpec {
        requests: Some(requests),
        period: Some(period),
        ..LimitSpec::default()
    }
}

/// Redis storage at `url` with analytics enabled (the metrics server on a
/// free port, so tests never meet a real one on 4444).
fn analytics_config(url: &str, stream: &str, retention: u64, sample_rate: f64) -> Config {
    Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"{url}\"\ntimeout_ms = 200\n\
             [flux]\nstorage = \"redis\"\nkey_prefix = \"{stream}:\"\njitter_enabled = false\n\
             [analytics]\nenabled = true\nport = {port}\nstream = \"{stream}\"\n\
             retention = {retention}\nsample_rate = {sample_rate:?}\n",
            port = free_port(),
        ),
        None,
    )
    .expect("valid")
}

fn connection(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn xlen(redis: &RedisServer, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query(&mut connection(redis))
        .unwrap()
}

/// An event's fields, in the order format 1 writes them.
const EVENT_FIELDS: [&str; 9] = ["ts", "key", "ep", "d", "p", "u", "mr", "mp", "mb"];

/// Every event in `stream`, oldest first, by field name, read as a reader
/// of format 1 would (README, "Analytics"); checks on the way that each
/// entry has exactly the fields `v` (1), `n` and `events`, a JSON array of
/// `n` events (1 to 64) of nine values each.
fn stream_events(redis: &RedisServer, stream: &str) -> Vec<HashMap<&'static str, Value>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut connection(redis))
        .unwrap();
    let mut events = Vec::new();
    for entry in reply.ids {
        let mut names: Vec<&str> = entry.map.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["events", "n", "v"], "entry {}", entry.id);
        assert_eq!(entry.get::<String>("v").unwrap(), "1");
        let n: usize = entry.get("n").unwrap();
        let json: String = entry.get("events").unwrap();
        let Value::Array(entry_events) = serde_json::from_str(&json).unwrap() else {
            panic!("entry {}: events is not a JSON array: {json}", entry.id);
        };
        assert_eq!(entry_events.len(), n, "entry {}: n", entry.id);
        assert!((1..=64).contains(&n), "entry {}: {n} events", entry.id);
        for event in entry_events {
            let Value::Array(values) = event else {
                panic!("entry {}: an event is not an array: {json}", entry.id);
            };
            assert_eq!(values.len(), EVENT_FIELDS.len(), "{json}");
            events.push(EVENT_FIELDS.into_iter().zip(values).collect());
        }
    }
    events
}

fn totals(redis: &RedisServer, stream: &str) -> HashMap<String, u64> {
    redis::cmd("HGETALL")
        .arg(totals_key(stream))
        .query(&mut connection(redis))
        .unwrap()
}

/// `login` admits 3 per minute; `api` 1.
fn counted(backend: &Arc<Backend>, config: &Config) -> (Limiter, Limiter) {
    let login = Limiter::new(backend.clone(), config, "login", None, &rate(3, 60.0)).unwrap();
    let api = Limiter::new(backend.clone(), config, "api", None, &rate(1, 60.0)).unwrap();
    (login, api)
}

#[test]
fn every_decision_is_counted_by_endpoint_and_outcome() {
    let config = Config::from_toml_str("[flux]\njitter_enabled = false\n", None).unwrap();
    let backend = flux_redis::open(&config).unwrap();
    let (login, api) = counted(&backend.backend, &config);
    let _unused = Limiter::new(
        backend.backend.clone(),
        &config,
        "unused",
        None,
        &rate(1, 1.0),
    )
    .unwrap();

    let allowed: Vec<bool> = (0..5)
        .map(|_| login.decide(b"10.0.0.1", 1).unwrap().allowed)
        .collect();
    assert_eq!(allowed, [true, true, true, false, false]);
    assert!(login.decide(b"10.0.0.2", 1).unwrap().allowed);
    // A call that gets no decision is not counted.
    let err = login.decide(b"10.0.0.3", 100).unwrap_err();
    assert!(matches!(err, LimiterError::Cost(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cost 100 can never be admitted: the limit holds at most 3 at once"
    );
    // Each decision of a batch counts.
    let request = |identity: &'static [u8]| BatchRequest {
        limiter: &api,
        endpoint: None,
        identity,
        cost: 1,
        op: Op::Decide,
    };
    let batch = apply_batch(&[request(b"a"), request(b"a"), request(b"b")]);
    let batch: Vec<bool> = batch.into_iter().map(|d| d.unwrap().allowed).collect();
    assert_eq!(batch, [true, false, true]);
    assert!(!api.decide(b"b", 1).unwrap().allowed);

    let snapshot = backend.backend.analytics().snapshot();
    let names: Vec<&str> = snapshot.endpoints.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["api", "login"],
        "a limiter that never decided is not listed"
    );
    let login = &snapshot.endpoints["login"];
    assert_eq!(
        (
            login.count(Outcome::Allowed),
            login.count(Outcome::Blocked),
            login.count(Outcome::FailOpen)
        ),
        (4, 2, 0)
    );
    assert_eq!(login.latency_count, 6);
    let api = &snapshot.endpoints["api"];
    assert_eq!(
        (
            api.count(Outcome::Allowed),
            api.count(Outcome::Blocked),
            api.count(Outcome::FailOpen)
        ),
        (2, 2, 0)
    );
    assert_eq!(api.latency_count, 4);

    let text = backend.reporting.prometheus();
    for line in [
        "flux_requests_total{endpoint=\"login\",decision=\"allowed\"} 4\n",
        "flux_requests_total{endpoint=\"login\",decision=\"blocked\"} 2\n",
        "flux_requests_total{endpoint=\"api\",decision=\"fail_open\"} 0\n",
        "flux_decision_seconds_count{endpoint=\"login\"} 6\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}

#[test]
fn decisions_that_fail_open_are_counted_as_such() {
    // Nothing listens there: every call fails open (fail_silently defaults to true).
    let config = Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"redis://127.0.0.1:{}\"\ntimeout_ms = 100\n[flux]\nstorage = \"redis\"\n",
            free_port()
        ),
        None,
    )
    .unwrap();
    let backend = flux_redis::open(&config).unwrap();
    let (login, _) = counted(&backend.backend, &config);
    for _ in 0..3 {
        assert_eq!(login.decide(b"k", 1).unwrap().source, Source::FailOpen);
    }
    let login = &backend.backend.analytics().snapshot().endpoints["login"];
    assert_eq!(
        (
            login.count(Outcome::Allowed),
            login.count(Outcome::Blocked),
            login.count(Outcome::FailOpen)
        ),
        (0, 0, 3)
    );
}

#[test]
fn every_decision_is_an_event_at_sample_rate_one() {
    let redis = RedisServer::start();
    let config = analytics_config(&redis.url(), "s1", 100_000, 1.0);
    let backend = flux_redis::open(&config).unwrap();
    let (login, _) = counted(&backend.backend, &config);
    for i in 0..200 {
        login
            .decide(format!("user{}", i % 20).as_bytes(), 1)
            .unwrap();
    }
    let identities: Vec<Vec<u8>> = (0..50).map(|i| format!("other{i}").into_bytes()).collect();
    let batch: Vec<BatchRequest<'_>> = identities
        .iter()
        .map(|identity| BatchRequest {
            limiter: &login,
            endpoint: None,
            identity,
            cost: 1,
            op: Op::Decide,
        })
        .collect();
    apply_batch(&batch);
    backend.reporting.flush().unwrap();
    let events = stream_events(&redis, "s1");
    assert_eq!(events.len(), 250);
    // Entries of up to 64 events: at least 4 for 250 (more if the flusher's
    // thread sent some before the flush above).
    assert!(xlen(&redis, "s1") >= 4);

    // The first event, field by field: no raw identity, only the key's digest.
    let first = &events[0];
    assert_eq!(first["key"], json!(login.key(b"user0")));
    assert!(!first["key"].as_str().unwrap().contains("user0"));
    let ts = first["ts"].as_u64().unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now_ms - ts < 60_000,
        "ts {ts} is milliseconds since the epoch"
    );
    let expected = json!({
        "ts": ts, "key": login.key(b"user0"), "ep": "login", "d": 1, "p": "gcra",
        "u": 1, "mr": 3, "mp": 60, "mb": 3,
    });
    assert_eq!(json!(first), expected);
    // The fourth call of user0 was refused: 3 in use.
    let fourth = events
        .iter()
        .filter(|e| e["key"] == first["key"])
        .nth(3)
        .unwrap();
    assert_eq!((&fourth["d"], &fourth["u"]), (&json!(0), &json!(3)));
    // The batch's events, in the batch's order, after the single calls'.
    let batch_keys: Vec<&Value> = events[200..].iter().map(|e| &e["key"]).collect();
    let expected_keys: Vec<Value> = identities.iter().map(|i| json!(login.key(i))).collect();
    assert_eq!(batch_keys, expected_keys.iter().collect::<Vec<_>>());

    // As many refusals in the stream as counted: by Redis, or (repeated
    // refusals of one caller) from the local deny cache.
    let refused = events.iter().filter(|e| e["d"] == json!(0)).count() as u64;
    let login = &backend.backend.analytics().snapshot().endpoints["login"];
    assert_eq!(
        refused,
        login.count(Outcome::Blocked) + login.count(Outcome::LocalCache)
    );
    assert_eq!(
        login.count(Outcome::Blocked),
        20,
        "one per caller reached Redis"
    );
    assert_eq!(refused, 200 - 20 * 3);
}

/// The `ep` field of every event in `stream`, oldest first.
fn stream_endpoints(redis: &RedisServer, stream: &str) -> Vec<String> {
    stream_events(redis, stream)
        .into_iter()
        .map(|event| event["ep"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_call_that_names_an_endpoint_is_limited_counted_and_streamed_under_it() {
    let redis = RedisServer::start();
    let config = analytics_config(&redis.url(), "s-ep", 100_000, 1.0);
    let backend = flux_redis::open(&config).unwrap();
    let (login, _) = counted(&backend.backend, &config);
    let allowed: Vec<bool> = (0..5)
        .map(|_| {
            let decision = login.decide_endpoint(Some("search"), b"k", 1);
            decision.unwrap().allowed
        })
        .collect();
    assert_eq!(allowed, [true, true, true, false, false]);
    // Its own limit: the scope's and another endpoint's are untouched.
    assert!(login.decide(b"k", 1).unwrap().allowed);
    assert!(login.decide_endpoint(Some(""), b"k", 1).unwrap().allowed);
    let batch = apply_batch(&[BatchRequest {
        limiter: &login,
        endpoint: Some("browse"),
        identity: b"k",
        cost: 1,
        op: Op::Decide,
    }]);
    assert!(batch[0].as_ref().unwrap().allowed);

    let snapshot = backend.backend.analytics().snapshot();
    let search = &snapshot.endpoints["search"];
    // The second refusal came from the local deny cache.
    assert_eq!(
        (
            search.count(Outcome::Allowed),
            search.count(Outcome::Blocked),
            search.count(Outcome::LocalCache)
        ),
        (3, 1, 1)
    );
    assert_eq!(snapshot.endpoints["login"].count(Outcome::Allowed), 2);
    assert_eq!(snapshot.endpoints["browse"].count(Outcome::Allowed), 1);
    let text = backend.reporting.prometheus();
    assert!(text.contains("flux_requests_total{endpoint=\"search\",decision=\"blocked\"} 1\n"));
    assert!(text.contains("flux_requests_total{endpoint=\"search\",decision=\"local_cache\"} 1\n"));

    backend.reporting.flush().unwrap();
    assert_eq!(
        stream_endpoints(&redis, "s-ep"),
        ["search", "search", "search", "search", "search", "login", "login", "browse"]
    );
    let totals = totals(&redis, "s-ep");
    assert_eq!(
        (
            totals["search:allowed"],
            totals["search:blocked"],
            totals["search:local_cache"]
        ),
        (3, 1, 1)
    );
    // No endpoint name is stored in a key.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("s-ep:*")
        .query(&mut connection(&redis))
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys
        .iter()
        .all(|k| !k.contains("search") && !k.contains("browse")));
}

#[test]
fn fifty_thousand_endpoints_keep_the_series_bounded() {
    let config = Config::from_toml_str(
        "[flux]
jitter_enabled = false
",
        None,
    )
    .unwrap();
    let backend = flux_redis::open(&config).unwrap();
    let api = Limiter::new(
        backend.backend.clone(),
        &config,
        "api",
        None,
        &rate(1, 60.0),
    )
    .unwrap();
    for i in 0..50_000 {
        let endpoint = format!("/item/{i}");
        assert!(
            api.decide_endpoint(Some(&endpoint), b"k", 1)
                .unwrap()
                .allowed
        );
    }
    assert!(
        !api.decide_endpoint(Some("/item/49999"), b"k", 1)
            .unwrap()
            .allowed
    );
    let snapshot = backend.backend.analytics().snapshot();
    assert_eq!(snapshot.endpoints.len(), MAX_SERIES_PER_LIMITER + 1);
    let other = &snapshot.endpoints[OVERFLOW_ENDPOINT];
    assert_eq!(
        (other.count(Outcome::Allowed), other.count(Outcome::Blocked)),
        (50_000 - MAX_SERIES_PER_LIMITER as u64, 1)
    );
    // 101 series, whatever the number of endpoints.
    let text = backend.reporting.prometheus();
    assert_eq!(
        text.matches("flux_requests_total{").count(),
        Outcome::ALL.len() * 101
    );
    assert!(text.len() < 200_000, "{} bytes", text.len());
}

#[test]
fn about_a_tenth_of_decisions_are_events_at_sample_rate_a_tenth() {
    let redis = RedisServer::start();
    let config = analytics_config(&redis.url(), "s2", 100_000, 0.1);
    let backend = flux_redis::open(&config).unwrap();
    let limiter = Limiter::new(
        backend.backend.clone(),
        &config,
        "api",
        None,
        &rate(1000, 1.0),
    )
    .unwrap();
    let identities: Vec<Vec<u8>> = (0..2000).map(|i| format!("u{i}").into_bytes()).collect();
    for chunk in identities.chunks(100) {
        let batch: Vec<BatchRequest<'_>> = chunk
            .iter()
            .map(|identity| BatchRequest {
                limiter: &limiter,
                endpoint: None,
                identity,
                cost: 1,
                op: Op::Decide,
            })
            .collect();
        apply_batch(&batch);
    }
    backend.reporting.flush().unwrap();
    // Binomial(2000, 0.1): 200 ± 13.4; these bounds are beyond 3.5 sigma.
    let events = stream_events(&redis, "s2").len();
    assert!((150..=250).contains(&events), "{events} events");
    // The counters count everything, sampled or not.
    assert_eq!(
        backend.backend.analytics().snapshot().endpoints["api"].total(),
        2000
    );
    assert_eq!(totals(&redis, "s2")["api:allowed"], 2000);
}

/// A flusher of its own analytics to `stream` on `redis`, without a
/// thread: each flush sends what the test queued, all of it.
fn flusher_alone(redis: &RedisServer, stream: &str, retention: u64) -> (Arc<Analytics>, Flusher) {
    let analytics = Arc::new(Analytics::new(1.0));
    let config = AnalyticsConfig {
        stream: stream.into(),
        retention,
        ..AnalyticsConfig::default()
    };
    let flusher = Flusher::new(
        analytics.clone(),
        &RedisConfig::from_url(redis.url()),
        &config,
    );
    (analytics, flusher.unwrap())
}

/// Queues `n` events of distinct callers.
fn queue_events(analytics: &Analytics, n: usize) {
    let quota = QuotaSpec::new(Policy::Gcra, 10, 60.0).build().unwrap();
    let decision = Decision {
        allowed: true,
        ..Decision::default()
    };
    for i in 0..n {
        let key = format!("flux:api:gcra:{{{i:032x}}}");
        analytics.push_event(Event::new(1, key, "api".into(), &quota, &decision));
    }
}

#[test]
fn a_busy_stream_keeps_about_retention_events() {
    let redis = RedisServer::start();
    let (analytics, mut flusher) = flusher_alone(&redis, "busy", 1000);
    for _ in 0..20 {
        queue_events(&analytics, 250);
        assert_eq!(flusher.flush().unwrap().events, 250);
    }
    // Each flush: 4 entries of 62 or 63 events, trimmed to the 16 entries
    // that hold 1,000 at that fill. An entry this big is a node of the
    // stream by itself, so MAXLEN ~ trims it exactly.
    assert_eq!(stream_events(&redis, "busy").len(), 1000);
    assert_eq!(xlen(&redis, "busy"), 16);

    // One flush of 5,000 events (79 entries: 23 of 64, then 56 of 63) is trimmed too,
    // by an approximate trim that removes at most 100 nodes per XADD
    // (LIMIT): the 2 entries that hold at least 100 at that fill.
    let (analytics, mut flusher) = flusher_alone(&redis, "burst", 100);
    queue_events(&analytics, 5_000);
    assert_eq!(flusher.flush().unwrap().events, 5_000);
    assert_eq!(stream_events(&redis, "burst").len(), 63 + 63);
}

#[test]
fn a_quiet_stream_keeps_about_retention_events_and_never_twice_that() {
    let redis = RedisServer::start();
    // MAXLEN ~ removes whole nodes of the stream's radix tree only: small
    // entries are kept until a node's worth (at most stream-node-max-entries)
    // is past the length.
    redis.cli(&["CONFIG", "SET", "stream-node-max-entries", "10"]);
    let (analytics, mut flusher) = flusher_alone(&redis, "quiet", 640);
    let events = || stream_events(&redis, "quiet").len();
    // Busy first: 10 full entries per flush, 640 events kept.
    for _ in 0..5 {
        queue_events(&analytics, 640);
        flusher.flush().unwrap();
    }
    assert_eq!(events(), 640);
    // Then quiet: an event per flush, an entry per event, up to 640 entries.
    // Until the busy entries have aged out, the stream holds both: never
    // more than twice retention (and a node).
    let mut most = 0;
    for flush in 1..=700 {
        queue_events(&analytics, 1);
        flusher.flush().unwrap();
        if flush % 50 == 0 {
            most = most.max(events());
        }
    }
    assert!((640..1280 + 10).contains(&most), "at most {most} events");
    assert!((640..650).contains(&events()), "{} events", events());
}

#[test]
fn totals_add_up_across_processes() {
    let redis = RedisServer::start();
    let config = analytics_config(&redis.url(), "s4", 1000, 0.0);
    // Two backends on one Redis stand for two processes.
    let one = flux_redis::open(&config).unwrap();
    let two = flux_redis::open(&config).unwrap();
    let (login_one, api_one) = counted(&one.backend, &config);
    let (login_two, _) = counted(&two.backend, &config);
    for i in 0..5 {
        login_one
            .decide(format!("a{}", i % 2).as_bytes(), 1)
            .unwrap();
        login_two.decide(b"b", 1).unwrap();
    }
    api_one.decide(b"a", 1).unwrap();
    one.reporting.flush().unwrap();
    two.reporting.flush().unwrap();

    let mut expected: HashMap<String, u64> = HashMap::new();
    let mut add = |backend: &Backend| {
        for (name, ep) in backend.analytics().snapshot().endpoints {
            for (outcome, n) in [
                ("allowed", ep.count(Outcome::Allowed)),
                ("blocked", ep.count(Outcome::Blocked)),
                ("local_cache", ep.count(Outcome::LocalCache)),
            ] {
                *expected.entry(format!("{name}:{outcome}")).or_default() += n;
            }
        }
    };
    add(&one.backend);
    add(&two.backend);
    let stored = totals(&redis, "s4");
    expected.retain(|_, n| *n > 0);
    assert_eq!(stored, expected);
    // Every key gets 3 per minute: one process admitted all 5 calls (two
    // keys), the other 3 of its 5 (one key).
    assert_eq!(stored["login:allowed"], 5 + 3);
    // The second refusal of "b" came from the second process's deny cache.
    assert_eq!(
        (stored["login:blocked"], stored["login:local_cache"]),
        (1, 1)
    );

    // A later flush adds what changed since, not everything again.
    login_two.decide(b"b", 1).unwrap();
    let report = two.reporting.flush().unwrap();
    assert_eq!((report.totals, report.round_trips), (1, 1));
    assert_eq!(totals(&redis, "s4")["login:local_cache"], 2);
    assert_eq!(two.reporting.flush().unwrap().round_trips, 0, "nothing new");

    // /metrics.json gives the same cross-process totals.
    let json: serde_json::Value = serde_json::from_str(&one.reporting.json()).unwrap();
    let redis_totals = &json["redis_totals"][0];
    assert_eq!(redis_totals["totals_key"], "{s4}:totals");
    assert_eq!(redis_totals["endpoints"]["login"]["allowed"], 8);
    assert_eq!(redis_totals["endpoints"]["login"]["blocked"], 1);
    assert_eq!(redis_totals["endpoints"]["login"]["local_cache"], 2);
    assert_eq!(redis_totals["endpoints"]["login"]["total"], 11);
    assert_eq!(redis_totals["endpoints"]["api"]["allowed"], 1);
    assert_eq!(json["endpoints"]["login"]["total"], 5, "this process's own");
}

#[test]
fn a_failing_redis_costs_the_events_not_the_totals_nor_the_decisions() {
    let mut redis = RedisServer::start();
    let config = analytics_config(&redis.url(), "s5", 1000, 1.0);
    let backend = flux_redis::open(&config).unwrap();
    let (login, _) = counted(&backend.backend, &config);
    login.decide(b"k", 1).unwrap();
    backend.reporting.flush().unwrap();
    assert_eq!(stream_events(&redis, "s5").len(), 1);

    redis.kill();
    for _ in 0..4 {
        let started = Instant::now();
        let decision = login.decide(b"k", 1).unwrap();
        assert_eq!(decision.source, Source::FailOpen);
        // Bounded by timeout_ms (200), whatever the flusher is doing.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    // This flush (or the thread's, before it) fails and drops the 4 events.
    let _ = backend.reporting.flush();
    assert_eq!(backend.backend.analytics().snapshot().events_dropped, 4);
    assert!(backend
        .reporting
        .prometheus()
        .ends_with("flux_events_dropped_total 4\n"));

    // Back, empty (no persistence): the totals not yet sent arrive, the
    // dropped events do not.
    redis.restart();
    login.decide(b"k2", 1).unwrap();
    backend.reporting.flush().unwrap();
    let stored = totals(&redis, "s5");
    assert_eq!(stored.get("login:fail_open"), Some(&4));
    assert_eq!(stored.get("login:allowed"), Some(&1), "only the one since");
    assert_eq!(stream_events(&redis, "s5").len(), 1);
}

/// A TCP proxy in front of Redis that counts round trips: each time the
/// client speaks after the server has answered, a new one begins.
struct RoundTripCounter {
    port: u16,
    round_trips: Arc<AtomicU64>,
}

impl RoundTripCounter {
    fn start(upstream: u16) -> RoundTripCounter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = round_trips.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let client = client.unwrap();
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                // true: the client spoke last; false: the server did (or nobody yet).
                let client_spoke = Arc::new(AtomicBool::new(false));
                let (c_in, s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (spoke, counter) = (client_spoke.clone(), counter.clone());
                thread::spawn(move || {
                    pump(c_in, s_out, |_| {
                        if !spoke.swap(true, Ordering::SeqCst) {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                });
                // Marked before the reply is passed on, so the client's next
                // request always finds it.
                thread::spawn(move || {
                    pump(server, client, |_| {
                        client_spoke.store(false, Ordering::SeqCst)
                    })
                });
            }
        });
        RoundTripCounter { port, round_trips }
    }

    fn count(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, mut on_data: impl FnMut(usize)) {
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        on_data(n);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn info_calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[test]
fn a_flush_is_one_round_trip() {
    let redis = RedisServer::start();
    let proxy = RoundTripCounter::start(redis.port);
    let analytics = Arc::new(Analytics::new(1.0));
    let config = AnalyticsConfig {
        stream: "s6".into(),
        retention: 10_000,
        ..AnalyticsConfig::default()
    };
    let options = RedisConfig::from_url(format!("redis://127.0.0.1:{}", proxy.port));
    let mut flusher = Flusher::new(analytics.clone(), &options, &config).unwrap();
    let quota = QuotaSpec::new(Policy::Gcra, 10, 60.0).build().unwrap();
    let endpoints = ["login", "api", "search"];
    let decide = |n: usize| {
        for i in 0..n {
            let allowed = i % 2 == 0;
            let decision = Decision {
                allowed,
                source: Source::Storage,
                ..Decision::default()
            };
            let endpoint = endpoints[i % endpoints.len()];
            analytics.endpoint(endpoint).record(&decision, 1_000);
            analytics.push_event(Event::new(
                1,
                format!("flux:{endpoint}:gcra:{i:064x}"),
                endpoint.into(),
                &quota,
                &decision,
            ));
        }
    };

    // The first flush also connects (and the client may say hello): not counted.
    decide(5);
    flusher.flush().unwrap();
    let (before, xadds, hincrbys) = (
        proxy.count(),
        info_calls(&redis, "xadd"),
        info_calls(&redis, "hincrby"),
    );

    let mut entries = 0;
    let mut fields = 0;
    for n in [20, 7, 130] {
        decide(n);
        let report = flusher.flush().unwrap();
        assert_eq!((report.events, report.dropped), (n as u64, 0));
        assert_eq!(report.round_trips, 1);
        entries += n.div_ceil(64) as u64;
        fields += report.totals;
    }
    assert_eq!(flusher.flush().unwrap().round_trips, 0, "nothing to send");
    assert_eq!(proxy.count() - before, 3, "one round trip per flush");
    // Every command of those three round trips reached Redis: an XADD per
    // entry of up to 64 events (1, 1 and 3), an HINCRBY per field.
    assert_eq!(info_calls(&redis, "xadd") - xadds, entries);
    assert_eq!(entries, 5);
    assert_eq!(info_calls(&redis, "hincrby") - hincrbys, fields);
    // Three endpoints, each allowed and blocked moved in every flush.
    assert_eq!(fields, 3 * 2 * 3);
}

#[test]
fn on_a_cluster_a_flush_is_one_pipeline_to_the_streams_node() {
    let cluster = RedisCluster::start(3);
    let config = Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"{}\"\ntimeout_ms = 2000\n[flux]\nstorage = \"redis\"\n\
             jitter_enabled = false\n[analytics]\nenabled = true\nport = {}\n",
            cluster.url(),
            free_port()
        ),
        None,
    )
    .unwrap();
    let backend = flux_redis::open(&config).unwrap();
    let (login, _) = counted(&backend.backend, &config);
    // Keys on every primary; the events all go to the stream's node.
    for i in 0..60 {
        login
            .decide(format!("client-{}", i % 30).as_bytes(), 1)
            .unwrap();
    }
    backend.reporting.flush().unwrap();
    assert_eq!(backend.backend.analytics().snapshot().events_dropped, 0);

    let stream = "flux:events";
    let owner = cluster
        .nodes
        .iter()
        .find(|node| node.cli(&["EXISTS", stream]) == "1")
        .expect("the stream is on one node");
    assert_eq!(stream_events(owner, stream).len(), 60);
    assert_eq!(
        owner.cli(&["HGET", &totals_key(stream), "login:allowed"]),
        "60"
    );
    // The totals hash is beside the stream: same node, same slot.
    assert_eq!(
        owner.cli(&["CLUSTER", "KEYSLOT", stream]),
        owner.cli(&["CLUSTER", "KEYSLOT", &totals_key(stream)])
    );
}
