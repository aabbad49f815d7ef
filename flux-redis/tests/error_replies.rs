//! Redis answering "I cannot serve" (OOM, BUSY, LOADING, READONLY,
//! NOREPLICAS, MISCONF), produced for real on a redis-server this test
//! starts: a limiter with `fail_silently` admits the call (`fail_open`), one
//! without it gets `RedisError::Unavailable` carrying Redis's code; either
//! way the connection, which an error reply leaves healthy, is kept, and
//! what Redis said reaches the log once per interval, not once per call.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flux_core::config::{Config, Storage};
use flux_core::{
    Backend, LimitSpec, Limiter, LimiterError, ManualClock, Source, StoreError, Unavailable,
    WARNING_INTERVAL,
};
use flux_redis::RedisError;
use support::{take_warnings, DeadPort, RedisServer};

const TIMEOUT_MS: u64 = 2_000;

/// A port where no master will ever answer, for as long as the test runs.
fn nowhere() -> &'static DeadPort {
    static NOWHERE: std::sync::OnceLock<DeadPort> = std::sync::OnceLock::new();
    NOWHERE.get_or_init(DeadPort::new)
}

/// A limiter of 1000 a day on one pool of one connection, failing open or not.
fn limiter(backend: &Arc<Backend>, port: u16, fail_silently: bool) -> Limiter {
    let mut config = Config::default();
    config.flux.storage = Storage::Redis;
    config.flux.fail_silently = fail_silently;
    config.flux.jitter_enabled = false;
    config.redis.port = port;
    let rate = LimitSpec {
        requests: Some(1000),
        period: Some(86_400.0),
        ..LimitSpec::default()
    };
    Limiter::new(backend.clone(), &config, "replies", None, &rate).unwrap()
}

fn backend(port: u16, clock: &ManualClock) -> Arc<Backend> {
    let mut config = Config::default();
    config.flux.storage = Storage::Redis;
    config.redis.port = port;
    config.redis.pool_size = 1;
    config.redis.timeout_ms = TIMEOUT_MS;
    let opened = flux_redis::open(&config).unwrap();
    let backend = Arc::into_inner(opened.backend).expect("the only handle");
    Arc::new(backend.with_warning_clock(Arc::new(clock.clone())))
}

/// The ids of the clients connected, but for the redis-cli asking.
fn pool_clients(server: &RedisServer) -> Vec<String> {
    server
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How each refusal is brought about, and undone.
struct Case {
    code: &'static str,
    start: fn(&RedisServer) -> Option<Child>,
    stop: fn(&RedisServer, Option<Child>),
}

fn ok(server: &RedisServer, args: &[&str]) {
    assert_eq!(server.cli(args), "OK", "{args:?}");
}

fn background_cli(server: &RedisServer, args: &[&str]) -> Child {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli")
}

fn finish(child: Option<Child>) {
    if let Some(mut child) = child {
        child.wait().expect("reap redis-cli");
    }
}

const CASES: &[Case] = &[
    Case {
        code: "OOM",
        start: |s| {
            ok(s, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
            ok(s, &["CONFIG", "SET", "maxmemory", "1"]);
            None
        },
        stop: |s, _| ok(s, &["CONFIG", "SET", "maxmemory", "0"]),
    },
    Case {
        code: "NOREPLICAS",
        start: |s| {
            ok(s, &["CONFIG", "SET", "min-replicas-to-write", "1"]);
            None
        },
        stop: |s, _| ok(s, &["CONFIG", "SET", "min-replicas-to-write", "0"]),
    },
    Case {
        code: "READONLY",
        // A replica of a master that is not there: it keeps serving reads.
        start: |s| {
            ok(s, &["REPLICAOF", "127.0.0.1", &nowhere().port.to_string()]);
            None
        },
        stop: |s, _| ok(s, &["REPLICAOF", "NO", "ONE"]),
    },
    Case {
        code: "MISCONF",
        // Snapshots on, into a directory nobody can write: BGSAVE fails, and
        // stop-writes-on-bgsave-error (the default) refuses writes.
        start: |s| {
            ok(s, &["CONFIG", "SET", "save", "3600 1"]);
            ok(s, &["CONFIG", "SET", "dir", "/proc"]);
            s.cli(&["BGSAVE"]);
            wait_until("a failed BGSAVE", || {
                let info = s.cli(&["INFO", "persistence"]);
                info.contains("rdb_last_bgsave_status:err")
                    && info.contains("rdb_bgsave_in_progress:0")
            });
            None
        },
        stop: |s, _| {
            ok(s, &["CONFIG", "SET", "dir", s.dir().to_str().unwrap()]);
            s.cli(&["BGSAVE"]);
            wait_until("a good BGSAVE", || {
                let info = s.cli(&["INFO", "persistence"]);
                info.contains("rdb_last_bgsave_status:ok")
                    && info.contains("rdb_bgsave_in_progress:0")
            });
            ok(s, &["CONFIG", "SET", "save", ""]);
        },
    },
    Case {
        code: "BUSY",
        // A script that never ends; past busy-reply-threshold Redis answers
        // BUSY to everyone else until SCRIPT KILL.
        start: |s| {
            ok(s, &["CONFIG", "SET", "busy-reply-threshold", "50"]);
            let child = background_cli(s, &["EVAL", "while true do end", "0"]);
            wait_until("BUSY", || s.cli(&["PING"]).starts_with("BUSY"));
            Some(child)
        },
        stop: |s, child| {
            ok(s, &["SCRIPT", "KILL"]);
            finish(child);
            wait_until("PONG", || s.cli(&["PING"]) == "PONG");
        },
    },
    Case {
        code: "LOADING",
        // DEBUG RELOAD of 3000 keys at 1 ms each, serving other clients
        // (with LOADING) between every 1 KiB of the file.
        start: |s| {
            assert_eq!(s.cli(&["DEBUG", "POPULATE", "3000", "filler"]), "OK");
            ok(
                s,
                &[
                    "CONFIG",
                    "SET",
                    "loading-process-events-interval-bytes",
                    "1024",
                ],
            );
            ok(s, &["CONFIG", "SET", "key-load-delay", "1000"]);
            let child = background_cli(s, &["DEBUG", "RELOAD"]);
            wait_until("LOADING", || s.cli(&["PING"]).starts_with("LOADING"));
            Some(child)
        },
        stop: |s, child| {
            finish(child);
            wait_until("PONG", || s.cli(&["PING"]) == "PONG");
            ok(s, &["CONFIG", "SET", "key-load-delay", "0"]);
        },
    },
];

#[test]
fn error_replies_fail_open_or_raise_and_keep_the_connection() {
    let server = RedisServer::start_with(&[
        "--enable-debug-command",
        "yes",
        "--enable-protected-configs",
        "yes",
    ]);
    take_warnings();
    let clock = ManualClock::new(0);
    let backend = backend(server.port, &clock);
    let open = limiter(&backend, server.port, true);
    let closed = limiter(&backend, server.port, false);
    backend.preload().unwrap();
    assert_eq!(open.decide(b"warm", 1).unwrap().source, Source::Storage);
    let clients = pool_clients(&server);
    assert_eq!(clients.len(), 1, "one pooled connection");

    for (n, case) in CASES.iter().enumerate() {
        let code = case.code;
        let running = (case.start)(&server);
        clock.advance_us(WARNING_INTERVAL.as_micros() as u64);
        // A fresh identity each time, so the script has to write.
        for i in 0..2 {
            let identity = format!("{code}-open-{i}");
            let d = open.decide(identity.as_bytes(), 1);
            let d = d.unwrap_or_else(|e| panic!("{code}: fail_silently must admit: {e}"));
            assert!(d.allowed && d.source == Source::FailOpen, "{code}: {d:?}");
        }
        let err = closed
            .decide(format!("{code}-closed").as_bytes(), 1)
            .expect_err(code);
        match &err {
            LimiterError::Store(StoreError::Unavailable {
                why: Unavailable::Refusing,
                source: Some(cause),
                ..
            }) => match cause.0.downcast_ref::<RedisError>() {
                Some(RedisError::Unavailable(e)) => assert_eq!(e.code(), Some(code), "{err}"),
                other => panic!("{code}: expected Redis's reply, got {other:?}"),
            },
            other => panic!("{code}: expected Unavailable, got {other:?}"),
        }
        assert!(err.to_string().contains(code), "{err}");
        (case.stop)(&server, running);

        // Two calls failed open: one warning, with what Redis said. Each
        // case after the first also counts the call held back before it.
        let warnings = take_warnings();
        assert_eq!(warnings.len(), 1, "{code}: {warnings:?}");
        let said = &warnings[0];
        assert!(
            said.starts_with(&format!(
                "Redis at redis://127.0.0.1:{}/0 failed: Redis cannot serve now: {code} ",
                server.port
            )),
            "{said}"
        );
        assert!(said.contains("fail_silently = true"), "{said}");
        let held = if n == 0 {
            ""
        } else {
            "; 1 more since the last warning"
        };
        assert!(
            said.ends_with(&format!("{held}. Said at most once every 60 s.")),
            "{said}"
        );

        let d = open.decide(format!("{code}-after").as_bytes(), 1).unwrap();
        assert_eq!(d.source, Source::Storage, "{code}");
        assert_eq!(
            pool_clients(&server),
            clients,
            "{code}: connection {n} replaced"
        );
    }
}
