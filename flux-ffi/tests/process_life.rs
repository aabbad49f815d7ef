//! A store across fork(2), and `flux_async_shutdown`: a forked child
//! decides on connections and a thread of its own, leaves its parent's
//! alone, and frees the store without waiting on threads it does not have;
//! after a shutdown no callback comes.
//!
//! Each test forks: all hold one lock, so that none forks while another is
//! half-way through a call on another thread.

mod support;

use std::ffi::{c_char, c_void};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use flux_ffi::*;
use support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Stores made by the parent, and again by each child, in
/// `children_start_threads_of_their_own_without_hanging`.
const STORES: usize = 4;

/// Generous for a loaded machine: a child still running then is stuck.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `child` in a forked child process; fails the test with what went
/// wrong there (a panic, false, or no end before the deadline).
fn in_child(child: impl FnOnce() -> bool) {
    let report = std::env::temp_dir().join(format!("flux-fork-test-{}", std::process::id()));
    let _ = std::fs::remove_file(&report);
    // SAFETY: the child only runs `child` and then `_exit`s; it never
    // returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let failure = match catch_unwind(AssertUnwindSafe(child)) {
            Ok(true) => None,
            Ok(false) => Some("the child's checks returned false".to_owned()),
            Err(payload) => Some(
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the child panicked".to_owned()),
            ),
        };
        if let Some(failure) = &failure {
            let _ = std::fs::write(&report, failure);
        }
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(i32::from(failure.is_some())) };
    }
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut status = 0;
    // SAFETY (each call below): waits for, or kills, our own child.
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
        if Instant::now() > deadline {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child did not finish within {CHILD_DEADLINE:?}: it hung");
        }
        thread::sleep(Duration::from_millis(10));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let failure = std::fs::read_to_string(&report)
            .unwrap_or_else(|_| format!("the child died (wait status {status})"));
        let _ = std::fs::remove_file(&report);
        panic!("in the child: {failure}");
    }
}

/// Counts the callbacks of `flux_limiter_decide_async` and the limits they saw.
#[derive(Default)]
struct Answers {
    calls: AtomicUsize,
    limit: AtomicUsize,
    storage: AtomicUsize,
}

unsafe extern "C" fn on_decision(
    user_data: *mut c_void,
    result: flux_result,
    decision: *const flux_decision,
    _message: *const c_char,
) {
    // SAFETY: user_data is an Answers the test keeps alive until it has waited.
    let answers = unsafe { &*(user_data as *const Answers) };
    if result == flux_result::Ok {
        // SAFETY: non-NULL on FLUX_RESULT_OK, valid during the callback.
        let decision = unsafe { &*decision };
        answers
            .limit
            .store(decision.limit as usize, Ordering::SeqCst);
        if decision.source == flux_source::Storage as u32 {
            answers.storage.fetch_add(1, Ordering::SeqCst);
        }
    }
    answers.calls.fetch_add(1, Ordering::SeqCst);
}

fn decide_async(limiter: *const flux_limiter, key: &[u8], answers: &Answers) -> flux_result {
    flux_limiter_decide_async(
        limiter,
        key.as_ptr(),
        key.len(),
        1,
        Some(on_decision),
        answers as *const Answers as *mut c_void,
    )
}

/// Decides once asynchronously and waits for the answer: (limit, from storage).
fn decide_async_and_wait(limiter: *const flux_limiter, key: &[u8]) -> (u64, bool) {
    let answers = Answers::default();
    assert_eq!(decide_async(limiter, key, &answers), flux_result::Ok);
    let deadline = Instant::now() + Duration::from_secs(20);
    while answers.calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the async decision never came");
        thread::sleep(Duration::from_millis(1));
    }
    (
        answers.limit.load(Ordering::SeqCst) as u64,
        answers.storage.load(Ordering::SeqCst) == 1,
    )
}

/// (limit, from storage) of one synchronous decision.
fn decide_sync(limiter: *const flux_limiter, key: &[u8]) -> (u64, bool) {
    let d = decide(limiter, key, 1).unwrap_or_else(|e| panic!("{e:?}"));
    (d.limit, d.source == flux_source::Storage as u32)
}

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_child_decides_on_its_own_and_leaves_its_parent_alone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = RedisServer::start();
    let metrics_port = free_port();
    let config = config(&format!(
        "[redis]\nurl = \"{}\"\ntimeout_ms = 5000\n\
         [flux]\nstorage = \"redis\"\njitter_enabled = false\n\
         [analytics]\nenabled = true\nport = {metrics_port}\n",
        server.url()
    ));
    let store = store(config);
    let seven = limiter(store, config, "seven", &params(7, 3600.0, None));
    let nine = limiter(store, config, "nine", &params(9, 3600.0, None));
    // The parent leaves pooled connections, its async thread, its analytics
    // thread and the metrics server behind.
    assert_eq!(decide_sync(seven, b"parent"), (7, true));
    assert_eq!(decide_sync(nine, b"parent"), (9, true));
    assert_eq!(decide_async_and_wait(seven, b"parent"), (7, true));

    let (seven_c, nine_c, store_c) = (
        Shared(seven.cast_const()),
        Shared(nine.cast_const()),
        Shared(store.cast_const()),
    );
    in_child(move || {
        for i in 0..20 {
            let key = format!("child{i}");
            assert_eq!(decide_sync(seven_c.0, key.as_bytes()), (7, true));
            assert_eq!(decide_sync(nine_c.0, key.as_bytes()), (9, true));
        }
        assert_eq!(decide_async_and_wait(seven_c.0, b"child"), (7, true));
        // Frees what the child made; waits on no thread of the parent.
        flux_limiter_free(seven_c.0.cast_mut());
        flux_limiter_free(nine_c.0.cast_mut());
        flux_store_free(store_c.0.cast_mut());
        true
    });

    // The parent's connections, threads and server are as they were.
    assert_eq!(decide_sync(seven, b"parent-after"), (7, true));
    assert_eq!(decide_sync(nine, b"parent-after"), (9, true));
    assert_eq!(decide_async_and_wait(seven, b"parent-after"), (7, true));
    assert!(get(metrics_port, "/metrics").starts_with("HTTP/1.1 200"));
    flux_limiter_free(seven);
    flux_limiter_free(nine);
    flux_store_free(store);
    flux_config_free(config);

    // Each process sent only its own decisions to the totals: the child's
    // 21 on "seven" and the parent's 4, not the parent's twice.
    let totals = server.cli(&["HGETALL", "{flux:events}:totals"]);
    let fields: Vec<&str> = totals.lines().collect();
    let count = |field: &str| -> u64 {
        fields
            .chunks(2)
            .find(|pair| pair[0] == field)
            .map_or(0, |pair| pair[1].parse().unwrap())
    };
    assert_eq!(
        count("seven:allowed") + count("seven:blocked"),
        25,
        "{totals}"
    );
}

#[test]
fn children_start_threads_of_their_own_without_hanging() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = RedisServer::start();
    let toml = format!(
        "[redis]\nurl = \"{}\"\ntimeout_ms = 5000\n[flux]\nstorage = \"redis\"\n",
        server.url()
    );
    // The parent's stores have connected: whatever threads their pools keep
    // are waiting for work when the process forks.
    let config = config(&toml);
    let parents: Vec<_> = (0..STORES).map(|_| store(config)).collect();
    for &store in &parents {
        let limiter = limiter(store, config, "parent", &params(1000, 60.0, None));
        assert_eq!(decide_sync(limiter, b"parent"), (1000, true));
        flux_limiter_free(limiter);
    }
    // Each child starts threads (its pools', its async threads, its own),
    // which take the place of the threads it did not inherit.
    for round in 0..10 {
        in_child(move || {
            let stores: Vec<_> = (0..STORES).map(|_| store(config)).collect();
            let limiters: Vec<_> = stores
                .iter()
                .map(|&s| {
                    Shared(limiter(s, config, "child", &params(1000, 60.0, None)).cast_const())
                })
                .collect();
            let threads: Vec<_> = (0..2 * STORES)
                .map(|t| {
                    let limiter = limiters[t % STORES];
                    thread::spawn(move || {
                        let limiter = limiter; // the whole, not its raw field
                        for i in 0..20 {
                            let key = format!("{round}-{t}-{i}");
                            assert_eq!(decide_sync(limiter.0, key.as_bytes()), (1000, true));
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            for (limiter, store) in limiters.into_iter().zip(stores) {
                assert_eq!(decide_async_and_wait(limiter.0, b"child"), (1000, true));
                flux_limiter_free(limiter.0.cast_mut());
                flux_store_free(store);
            }
            true
        });
    }
    for store in parents {
        flux_store_free(store);
    }
    flux_config_free(config);
}

#[test]
fn after_shutdown_no_callback_comes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = RedisServer::start();
    let redis = &server;
    // Shutting down is for good: done in a child, so the test process keeps
    // its callbacks.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        in_child(|| {
            let config = support::config(&format!(
                "[redis]\nurl = \"{}\"\ntimeout_ms = 5000\n[flux]\nstorage = \"redis\"\n",
                redis.url()
            ));
            let store = store(config);
            let limiter = limiter(store, config, "api", &params(5, 60.0, None));
            assert_eq!(decide_async_and_wait(limiter, b"before").0, 5);
            // One request waiting on a stopped Redis when the shutdown comes.
            redis.pause();
            let in_flight = Answers::default();
            let queued = decide_async(limiter, b"in-flight", &in_flight);
            assert_eq!(queued, flux_result::Ok);
            let answers = new_queue();
            let asked = request(limiter, b"in-flight-queued", 1);
            assert_eq!(
                flux_decide_batch_queued(&asked, 1, answers, 1),
                flux_result::Ok
            );
            assert!(flux_async_shutdown(5000), "no callback was running");
            let after = Answers::default();
            let refused = decide_async(limiter, b"after", &after);
            assert_eq!(refused, flux_result::ShutDown);
            assert!(last_error().contains("flux_async_shutdown"));
            let refused = flux_decide_batch_queued(&asked, 1, answers, 2);
            assert_eq!(refused, flux_result::ShutDown);
            redis.resume();
            // Synchronous calls go on.
            assert_eq!(decide_sync(limiter, b"sync"), (5, true));
            // Joins the async thread once it has decided the request in flight.
            flux_limiter_free(limiter);
            flux_store_free(store);
            flux_config_free(config);
            assert_eq!(in_flight.calls.load(Ordering::SeqCst), 0, "called back");
            assert_eq!(after.calls.load(Ordering::SeqCst), 0, "called back");
            assert_eq!(taken_token(answers), Ok(0), "answered into the queue");
            flux_completions_free(answers);
            true
        })
    }));
    // Whatever happened in the child, Redis runs again.
    server.resume();
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure);
    }
}

fn new_queue() -> *mut flux_completions {
    let mut queue = std::ptr::null_mut();
    assert_eq!(flux_completions_new(&mut queue), flux_result::Ok);
    queue
}

/// The token of the batch `flux_completions_pop` takes now (0: none waits).
fn taken_token(queue: *const flux_completions) -> Result<u64, flux_result> {
    let mut decision = flux_decision::default();
    let mut result = flux_result::Panic;
    let (mut token, mut n) = (0, 0);
    match flux_completions_pop(queue, &mut token, &mut decision, &mut result, 1, &mut n) {
        flux_result::Ok => Ok(token),
        code => Err(code),
    }
}

/// Waits up to 20 s for a batch in `queue`; its token.
fn wait_for_batch(queue: *const flux_completions) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match taken_token(queue) {
            Ok(0) => assert!(Instant::now() < deadline, "no batch was answered"),
            Ok(token) => return token,
            Err(code) => panic!("pop failed: {code:?}: {}", last_error()),
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_completion_queue_belongs_to_the_process_that_made_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "l", &params(100, 60.0, None));
    let answers = new_queue();
    let asked = request(limiter, b"k", 1);
    assert_eq!(
        flux_decide_batch_queued(&asked, 1, answers, 1),
        flux_result::Ok
    );
    assert_eq!(wait_for_batch(answers), 1);

    let (limiter_c, answers_c) = (Shared(limiter.cast_const()), Shared(answers.cast_const()));
    in_child(move || {
        let asked = request(limiter_c.0, b"k", 1);
        // Its byte would wake the parent's loop; its pop would take the parent's.
        let refused = flux_decide_batch_queued(&asked, 1, answers_c.0, 2);
        assert_eq!(refused, flux_result::InvalidArgument);
        assert!(
            last_error().contains("make a new one in the child"),
            "{}",
            last_error()
        );
        assert_eq!(taken_token(answers_c.0), Err(flux_result::InvalidArgument));
        let own = new_queue();
        assert_eq!(flux_decide_batch_queued(&asked, 1, own, 3), flux_result::Ok);
        assert_eq!(wait_for_batch(own), 3);
        flux_completions_free(own);
        true
    });

    // The parent's queue serves on.
    assert_eq!(
        flux_decide_batch_queued(&asked, 1, answers, 4),
        flux_result::Ok
    );
    assert_eq!(wait_for_batch(answers), 4);
    flux_completions_free(answers);
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}
