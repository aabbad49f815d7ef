//! The boundary against a real redis-server (started on a free port by each
//! test), and against none: failing open or reporting, as configured.

mod support;

use std::ffi::{c_char, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use flux_ffi::*;
use support::*;

fn redis_config(url: &str, prefix: &str, fail_silently: bool, timeout_ms: u64) -> *mut flux_config {
    config(&format!(
        "[redis]\nurl = \"{url}\"\npool_size = 2\ntimeout_ms = {timeout_ms}\n\
         [flux]\nstorage = \"redis\"\nkey_prefix = \"{prefix}\"\nfail_silently = {fail_silently}\n\
         jitter_enabled = false\n"
    ))
}

#[test]
fn decisions_are_kept_in_redis_and_shared_between_stores() {
    let redis = RedisServer::start();
    let config = redis_config(&redis.url(), "t1:", false, 1000);
    let (first, second) = (store(config), store(config));
    assert_eq!(flux_store_kind(first), flux_storage::Redis as u32);
    assert_eq!(
        flux_store_preload(first),
        flux_result::Ok,
        "{}",
        last_error()
    );

    // Two stores stand for two processes: they share one limit through Redis.
    let ten = params(10, 10.0, None);
    let (a, b) = (
        limiter(first, config, "api", &ten),
        limiter(second, config, "api", &ten),
    );
    let mut allowed = 0;
    for call in 0..12 {
        let limiter = if call % 2 == 0 { a } else { b };
        let d = decide(limiter, b"10.0.0.1", 1).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(d.source, flux_source::Storage as u32);
        assert_eq!(d.limit, 10);
        allowed += usize::from(d.allowed);
        if !d.allowed {
            // One emission interval (no jitter here), less the time the
            // calls took.
            assert!((0.5..=1.0).contains(&d.retry_after), "{}", d.retry_after);
        }
    }
    assert_eq!(allowed, 10);
    assert_eq!(count_keys(&redis, "t1:api:gcra:"), 1, "one key, hashed");

    let mut deleted = 0;
    assert_eq!(flux_store_clear(first, &mut deleted), flux_result::Ok);
    assert_eq!((deleted, count_keys(&redis, "t1:")), (1, 0));
    assert!(decide(a, b"10.0.0.1", 1).unwrap().allowed);

    for handle in [a, b] {
        flux_limiter_free(handle);
    }
    flux_store_free(first);
    flux_store_free(second);
    flux_config_free(config);
}

struct Counts {
    done: AtomicUsize,
    allowed: AtomicUsize,
    failed: Mutex<Vec<(u32, String)>>,
}

unsafe extern "C" fn count(
    user_data: *mut c_void,
    result: flux_result,
    decision: *const flux_decision,
    message: *const c_char,
) {
    // SAFETY: a Counts the test keeps alive until it has waited.
    let counts = unsafe { &*(user_data as *const Counts) };
    if result == flux_result::Ok {
        // SAFETY: non-NULL on OK, valid during the call.
        if unsafe { (*decision).allowed } {
            counts.allowed.fetch_add(1, Ordering::SeqCst);
        }
    } else {
        // SAFETY: non-NULL on failure, valid during the call.
        let text = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        counts.failed.lock().unwrap().push((result as u32, text));
    }
    counts.done.fetch_add(1, Ordering::SeqCst);
}

fn wait(counts: &Counts, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts.done.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} callbacks",
            counts.done.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn async_calls_from_many_threads_are_pipelined_and_answered_once_each() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    let redis = RedisServer::start();
    let config = redis_config(&redis.url(), "t2:", false, 2000);
    let store = store(config);
    let limiter = limiter(store, config, "api", &params(1, 3600.0, Some(300)));
    let counts = Counts {
        done: AtomicUsize::new(0),
        allowed: AtomicUsize::new(0),
        failed: Mutex::new(vec![]),
    };
    let user_data = Shared(&counts as *const Counts);
    let shared = Shared(limiter as *const flux_limiter);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(move || {
                let (limiter, user_data) = (shared, user_data);
                for _ in 0..PER_THREAD {
                    let rc = flux_limiter_decide_async(
                        limiter.0,
                        b"k".as_ptr(),
                        1,
                        1,
                        Some(count),
                        user_data.0 as *mut c_void,
                    );
                    assert_eq!(rc, flux_result::Ok);
                }
            });
        }
    });
    wait(&counts, THREADS * PER_THREAD);
    assert_eq!(*counts.failed.lock().unwrap(), vec![]);
    assert_eq!(counts.allowed.load(Ordering::SeqCst), 300);

    // Freeing the last handle waits for every queued callback: after it,
    // none can come, so none came twice.
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
    assert_eq!(
        counts.done.load(Ordering::SeqCst),
        THREADS * PER_THREAD,
        "no callback twice"
    );
}

#[test]
fn a_batch_goes_to_redis_in_one_call() {
    let redis = RedisServer::start();
    let config = redis_config(&redis.url(), "t3:", false, 1000);
    let store = store(config);
    let (one, two) = (
        limiter(store, config, "one", &params(1, 60.0, None)),
        limiter(store, config, "two", &params(2, 60.0, None)),
    );
    let keys: [&[u8]; 3] = [b"a", b"b", b"a"];
    let mut reqs = Vec::new();
    for limiter in [one, two] {
        for key in keys {
            reqs.push(request(limiter, key, 1));
        }
    }
    let mut decisions = vec![flux_decision::default(); reqs.len()];
    let mut results = vec![flux_result::Panic; reqs.len()];
    let rc = flux_decide_batch(
        reqs.as_ptr(),
        reqs.len(),
        decisions.as_mut_ptr(),
        results.as_mut_ptr(),
    );
    assert_eq!(rc, flux_result::Ok);
    assert!(results.iter().all(|r| *r == flux_result::Ok), "{results:?}");
    let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, true, false, true, true, true]);
    assert_eq!(count_keys(&redis, "t3:"), 4);

    for handle in [one, two] {
        flux_limiter_free(handle);
    }
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn without_redis_fail_silently_admits_and_says_so() {
    let dead = DeadPort::new();
    let nowhere = dead.url();
    let config = redis_config(&nowhere, "t4:", true, 100);
    let mut store_out = ptr::null_mut();
    assert_eq!(
        flux_store_new(config, &mut store_out),
        flux_result::Ok,
        "connecting is lazy"
    );
    let store = store_out;
    let limiter = limiter(store, config, "api", &params(10, 10.0, None));

    let started = Instant::now();
    let d = decide(limiter, b"k", 1).expect("fails open");
    assert!(d.allowed);
    assert_eq!(d.source, flux_source::FailOpen as u32);
    assert_eq!((d.limit, d.remaining), (10, 10));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by timeout_ms"
    );

    // A bad cost is still the caller's mistake, Redis or not.
    assert_eq!(
        decide(limiter, b"k", 0).unwrap_err().0,
        flux_result::InvalidCost
    );
    // Preloading is asked for explicitly: it reports rather than failing open.
    assert_eq!(flux_store_preload(store), flux_result::Storage);
    assert!(
        last_error().contains("Connection refused"),
        "{}",
        last_error()
    );

    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn without_redis_fail_closed_reports_a_storage_error() {
    let dead = DeadPort::new();
    let nowhere = dead.url();
    let config = redis_config(&nowhere, "t5:", false, 100);
    let store = store(config);
    let limiter = limiter(store, config, "api", &params(10, 10.0, None));

    let mut decision = flux_decision {
        limit: 42,
        ..Default::default()
    };
    let rc = flux_limiter_decide(limiter, b"k".as_ptr(), 1, 1, &mut decision);
    assert_eq!(rc, flux_result::Storage);
    assert_eq!(decision.limit, 42, "no output on failure");
    let message = last_error();
    assert!(message.starts_with("Redis is unreachable: "), "{message}");
    assert!(message.contains("Connection refused"), "{message}");

    // The same through the async path: the message comes with the callback.
    let counts = Counts {
        done: AtomicUsize::new(0),
        allowed: AtomicUsize::new(0),
        failed: Mutex::new(vec![]),
    };
    let rc = flux_limiter_decide_async(
        limiter,
        b"k".as_ptr(),
        1,
        1,
        Some(count),
        &counts as *const Counts as *mut c_void,
    );
    assert_eq!(rc, flux_result::Ok);
    wait(&counts, 1);
    let failed = counts.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, flux_result::Storage as u32);
    assert_eq!(failed[0].1, message);

    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_redis_that_stops_answering_times_out_then_recovers() {
    let redis = RedisServer::start();
    let closed = redis_config(&redis.url(), "t6:", false, 150);
    let open = redis_config(&redis.url(), "t6:", true, 150);
    let (closed_store, open_store) = (store(closed), store(open));
    let closed_limiter = limiter(closed_store, closed, "api", &params(10, 10.0, None));
    let open_limiter = limiter(open_store, open, "api", &params(10, 10.0, None));
    // Pooled connections first, so the pause meets a command, not a connect.
    assert!(decide(closed_limiter, b"k", 1).unwrap().allowed);
    assert!(decide(open_limiter, b"k", 1).unwrap().allowed);

    redis.pause();
    let started = Instant::now();
    let (code, message) = decide(closed_limiter, b"k", 1).unwrap_err();
    let waited = started.elapsed();
    let d = decide(open_limiter, b"k", 1);
    redis.resume();

    assert_eq!(code, flux_result::Timeout, "{message}");
    assert!(
        message.starts_with("Redis did not answer within 150 ms"),
        "{message}"
    );
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(d.unwrap().source, flux_source::FailOpen as u32);

    // Answering again, the same handles work without being made anew.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match decide(closed_limiter, b"k", 1) {
            Ok(d) => {
                assert_eq!(d.source, flux_source::Storage as u32);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "{e:?}"),
        }
    }

    flux_limiter_free(closed_limiter);
    flux_limiter_free(open_limiter);
    flux_store_free(closed_store);
    flux_store_free(open_store);
    flux_config_free(closed);
    flux_config_free(open);
}
