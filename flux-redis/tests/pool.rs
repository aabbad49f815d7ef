//! A busy pool is back-pressure, not Redis failing: with every connection
//! in use, a call waits its turn for up to `timeout_ms`, then fails with
//! `RedisError::Busy`, whatever `fail_silently` says. It never fails open,
//! so a limit admits exactly its bound however many threads share the pool;
//! and the log says it was back-pressure.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use flux_core::config::{Config, Storage};
use flux_core::{LimitSpec, Limiter, LimiterError, Source, StoreError};
use support::{take_warnings, Proxy, RedisServer};

const THREADS: usize = 16;
const BOUND: u64 = 10;

#[derive(Debug, Default)]
struct Outcomes {
    admitted: AtomicU64,
    refused: AtomicU64,
    failed_open: AtomicU64,
    busy: AtomicU64,
}

#[test]
fn a_busy_pool_never_admits_beyond_the_limit() {
    let server = RedisServer::start();
    // Each reply takes 40 ms, and there is one connection for 16 threads:
    // most calls find it in use for longer than timeout_ms.
    let proxy = Proxy::start(server.port);
    let mut config = Config::default();
    config.flux.storage = Storage::Redis;
    config.flux.fail_silently = true;
    config.redis.port = proxy.port;
    config.redis.pool_size = 1;
    config.redis.timeout_ms = 150;
    let backend = flux_redis::open(&config).unwrap().backend;
    backend.preload().unwrap();
    proxy.set_delay(Duration::from_millis(40));
    let rate = LimitSpec {
        requests: Some(BOUND),
        period: Some(3600.0),
        ..LimitSpec::default()
    };
    let limiter = Arc::new(Limiter::new(backend, &config, "busy", None, &rate).unwrap());

    take_warnings();
    let outcomes = Arc::new(Outcomes::default());
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (limiter, outcomes, start) = (limiter.clone(), outcomes.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                // Until this thread has seen the limit refuse it.
                for _ in 0..40 {
                    let counter = match limiter.decide(b"one client", 1) {
                        Ok(d) if d.source == Source::FailOpen => &outcomes.failed_open,
                        Ok(d) if d.allowed => &outcomes.admitted,
                        Ok(_) => {
                            outcomes.refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Err(LimiterError::Store(StoreError::Busy { .. })) => &outcomes.busy,
                        Err(e) => panic!("neither a decision nor a busy pool: {e}"),
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    let count = |c: &AtomicU64| c.load(Ordering::SeqCst);
    assert_eq!(count(&outcomes.failed_open), 0, "{outcomes:?}");
    assert_eq!(count(&outcomes.admitted), BOUND, "{outcomes:?}");
    assert_eq!(count(&outcomes.refused), THREADS as u64, "{outcomes:?}");
    assert!(
        count(&outcomes.busy) > 0,
        "the pool never stayed busy: {outcomes:?}"
    );

    // Said once (the interval is a minute), as what it was.
    let warnings = take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "Redis at redis://127.0.0.1:{}/0: all 1 Redis connections stayed in use for 150 ms",
            proxy.port
        )) && warnings[0].contains("back-pressure, not a Redis failure"),
        "{}",
        warnings[0]
    );
}
