//! Batches, and the non-blocking calls: every callback comes exactly once,
//! from a thread owned by Flux, with the outputs written before it.

mod support;

use std::ffi::{c_char, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use flux_ffi::*;
use support::*;

/// What the callbacks saw, per request and in total. Callbacks never panic
/// (that would abort, being called from C's side of the boundary): they
/// count, and the test asserts afterwards.
struct Tracker {
    calls: Vec<AtomicU32>,
    codes: Vec<AtomicU32>,
    allowed: AtomicUsize,
    done: AtomicUsize,
    on_flux_thread: AtomicUsize,
    malformed: AtomicUsize,
    messages: Mutex<Vec<String>>,
}

impl Tracker {
    fn new(n: usize) -> Self {
        Tracker {
            calls: (0..n).map(|_| AtomicU32::new(0)).collect(),
            codes: (0..n).map(|_| AtomicU32::new(u32::MAX)).collect(),
            allowed: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            on_flux_thread: AtomicUsize::new(0),
            malformed: AtomicUsize::new(0),
            messages: Mutex::new(Vec::new()),
        }
    }

    fn tickets(&self) -> Vec<Ticket> {
        (0..self.calls.len())
            .map(|index| Ticket {
                tracker: self,
                index,
            })
            .collect()
    }

    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.done.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} callbacks came",
                self.done.load(Ordering::SeqCst)
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn assert_each_called_once(&self) {
        for (i, calls) in self.calls.iter().enumerate() {
            assert_eq!(calls.load(Ordering::SeqCst), 1, "callback of request {i}");
        }
        assert_eq!(self.malformed.load(Ordering::SeqCst), 0);
        assert_eq!(self.on_flux_thread.load(Ordering::SeqCst), self.calls.len());
    }
}

/// The user_data of one request.
struct Ticket {
    tracker: *const Tracker,
    index: usize,
}
// SAFETY: a Ticket only reads its Tracker, which is Sync and outlives it.
unsafe impl Sync for Ticket {}

unsafe extern "C" fn on_decision(
    user_data: *mut c_void,
    result: flux_result,
    decision: *const flux_decision,
    message: *const c_char,
) {
    // SAFETY: user_data is a Ticket that the test keeps alive until it has waited.
    let ticket = unsafe { &*(user_data as *const Ticket) };
    let tracker = unsafe { &*ticket.tracker };
    tracker.calls[ticket.index].fetch_add(1, Ordering::SeqCst);
    tracker.codes[ticket.index].store(result as u32, Ordering::SeqCst);
    match (result, decision.is_null(), message.is_null()) {
        (flux_result::Ok, false, true) => {
            // SAFETY: non-NULL and valid during the callback.
            if unsafe { (*decision).allowed } {
                tracker.allowed.fetch_add(1, Ordering::SeqCst);
            }
        }
        (code, true, false) if code != flux_result::Ok => {
            // SAFETY: a NUL-terminated message, valid during the callback.
            let text = unsafe { CStr::from_ptr(message) }
                .to_string_lossy()
                .into_owned();
            tracker.messages.lock().unwrap().push(text);
        }
        _ => {
            tracker.malformed.fetch_add(1, Ordering::SeqCst);
        }
    }
    if thread::current().name() == Some("flux-async") {
        tracker.on_flux_thread.fetch_add(1, Ordering::SeqCst);
    }
    tracker.done.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_batch(user_data: *mut c_void) {
    // SAFETY: as in on_decision.
    let ticket = unsafe { &*(user_data as *const Ticket) };
    let tracker = unsafe { &*ticket.tracker };
    tracker.calls[ticket.index].fetch_add(1, Ordering::SeqCst);
    if thread::current().name() == Some("flux-async") {
        tracker.on_flux_thread.fetch_add(1, Ordering::SeqCst);
    }
    tracker.done.fetch_add(1, Ordering::SeqCst);
}

fn decide_async(
    limiter: *const flux_limiter,
    key: &[u8],
    cost: u64,
    ticket: &Ticket,
) -> flux_result {
    let user_data = ticket as *const Ticket as *mut c_void;
    flux_limiter_decide_async(
        limiter,
        key.as_ptr(),
        key.len(),
        cost,
        Some(on_decision),
        user_data,
    )
}

#[test]
fn many_submitters_get_every_result_exactly_once() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 500;
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    // A burst of 1000, then one call an hour: exactly 1000 of 4000 are admitted.
    let limiter = limiter(store, config, "async", &params(1, 3600.0, Some(1000)));
    let tracker = Tracker::new(THREADS * PER_THREAD);
    let tickets = tracker.tickets();
    let shared = Shared(limiter as *const flux_limiter);
    thread::scope(|s| {
        for chunk in tickets.chunks(PER_THREAD) {
            s.spawn(move || {
                let limiter = shared;
                for ticket in chunk {
                    assert_eq!(
                        decide_async(limiter.0, b"one key", 1, ticket),
                        flux_result::Ok
                    );
                }
            });
        }
    });
    tracker.wait_for(THREADS * PER_THREAD);
    tracker.assert_each_called_once();
    assert_eq!(tracker.allowed.load(Ordering::SeqCst), 1000);

    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn errors_come_through_the_callback_with_their_message() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "async", &params(10, 10.0, None));
    let tracker = Tracker::new(2);
    let tickets = tracker.tickets();
    assert_eq!(decide_async(limiter, b"k", 0, &tickets[0]), flux_result::Ok);
    assert_eq!(
        decide_async(limiter, b"k", 11, &tickets[1]),
        flux_result::Ok
    );
    tracker.wait_for(2);
    tracker.assert_each_called_once();
    for code in &tracker.codes {
        assert_eq!(code.load(Ordering::SeqCst), flux_result::InvalidCost as u32);
    }
    let mut messages = tracker.messages.lock().unwrap().clone();
    messages.sort();
    assert_eq!(
        messages,
        [
            "cost 11 can never be admitted: the limit holds at most 10 at once",
            "cost must be at least 1, got 0"
        ]
    );

    // Refused at the call: the callback never comes.
    let mut never = Ticket {
        tracker: &tracker,
        index: 0,
    };
    let rc = flux_limiter_decide_async(limiter, b"k".as_ptr(), 1, 1, None, ptr::null_mut());
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(last_error(), "argument `callback` must not be NULL");
    let rc = flux_limiter_decide_async(
        ptr::null(),
        b"k".as_ptr(),
        1,
        1,
        Some(on_decision),
        &mut never as *mut Ticket as *mut c_void,
    );
    assert_eq!(rc, flux_result::NullArgument);
    let rc = flux_limiter_decide_async(
        limiter,
        ptr::null(),
        1,
        1,
        Some(on_decision),
        &mut never as *mut Ticket as *mut c_void,
    );
    assert_eq!(rc, flux_result::NullArgument);

    // Freeing the last handle waits for every queued callback: after it,
    // none can come, and only the two accepted calls were answered.
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
    assert_eq!(tracker.done.load(Ordering::SeqCst), 2);
}

#[test]
fn freeing_the_last_handle_waits_for_every_queued_callback() {
    const N: usize = 2000;
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    // A burst of 100, then one call an hour: nothing refills while the test runs.
    let limiter = limiter(store, config, "async", &params(1, 3600.0, Some(100)));
    let tracker = Tracker::new(N);
    let tickets = tracker.tickets();
    for (i, ticket) in tickets.iter().enumerate() {
        // Keys are copied: this one is gone before the decision is made.
        let key = format!("caller {}", i % 10).into_bytes();
        assert_eq!(decide_async(limiter, &key, 1, ticket), flux_result::Ok);
    }
    flux_store_free(store);
    flux_config_free(config);
    // The limiter holds the last reference to the store: freeing it joins the
    // store's thread, which answers everything queued first.
    flux_limiter_free(limiter);
    assert_eq!(tracker.done.load(Ordering::SeqCst), N);
    tracker.assert_each_called_once();
    // 10 callers with a burst of 100 each.
    assert_eq!(tracker.allowed.load(Ordering::SeqCst), 1000);
}

#[test]
fn a_batch_decides_each_request_across_limiters_and_stores() {
    let config = config(MEMORY_NO_JITTER);
    let (store_a, store_b) = (store(config), store(config));
    let two = limiter(store_a, config, "two", &params(2, 60.0, None));
    let one = limiter(store_b, config, "one", &params(1, 60.0, None));
    let reqs = [
        request(two, b"k", 1),
        request(one, b"k", 1),
        request(two, b"k", 1),
        request(one, b"k", 1),
        request(two, b"k", 1),
        request(two, b"k", 3),
        flux_request {
            limiter: ptr::null(),
            key: ptr::null(),
            key_len: 0,
            cost: 1,
            endpoint: ptr::null(),
            endpoint_len: 0,
        },
        flux_request {
            limiter: one,
            key: ptr::null(),
            key_len: 4,
            cost: 1,
            endpoint: ptr::null(),
            endpoint_len: 0,
        },
    ];
    let mut decisions = [flux_decision {
        limit: 77,
        ..Default::default()
    }; 8];
    let mut results = [flux_result::Panic; 8];
    let rc = flux_decide_batch(
        reqs.as_ptr(),
        reqs.len(),
        decisions.as_mut_ptr(),
        results.as_mut_ptr(),
    );
    assert_eq!(rc, flux_result::Ok);
    use flux_result::{InvalidCost, NullArgument, Ok as OK};
    assert_eq!(
        results,
        [OK, OK, OK, OK, OK, InvalidCost, NullArgument, NullArgument]
    );
    let allowed: Vec<bool> = decisions[..5].iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, true, true, false, false]);
    assert_eq!((decisions[0].limit, decisions[1].limit), (2, 1));
    assert!(
        decisions[5..].iter().all(|d| d.limit == 77),
        "no output on failure"
    );
    assert_eq!(
        last_error(),
        "cost 3 can never be admitted: the limit holds at most 2 at once"
    );

    // The same through the store's thread.
    let tracker = Tracker::new(1);
    let tickets = tracker.tickets();
    let mut decisions = [flux_decision::default(); 8];
    let mut results = [flux_result::Panic; 8];
    let rc = flux_decide_batch_async(
        reqs.as_ptr(),
        reqs.len(),
        decisions.as_mut_ptr(),
        results.as_mut_ptr(),
        Some(on_batch),
        &tickets[0] as *const Ticket as *mut c_void,
    );
    assert_eq!(rc, flux_result::Ok);
    tracker.wait_for(1);
    tracker.assert_each_called_once();
    assert_eq!(
        results,
        [OK, OK, OK, OK, OK, InvalidCost, NullArgument, NullArgument]
    );
    assert!(
        decisions[..5].iter().all(|d| !d.allowed),
        "all used up by the first batch"
    );

    // Bad arrays are refused at the call.
    let rc = flux_decide_batch(reqs.as_ptr(), 2, ptr::null_mut(), results.as_mut_ptr());
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(last_error(), "argument `decisions` is NULL but `n` is 2");

    for handle in [two, one] {
        flux_limiter_free(handle);
    }
    flux_store_free(store_a);
    flux_store_free(store_b);
    flux_config_free(config);
}

/// What a batch callback read with `flux_batch_error`, per request.
struct BatchErrors {
    n: usize,
    messages: Mutex<Option<Vec<Option<String>>>>,
}

/// `flux_batch_error(index)`, whole: `None` for a length of 0.
fn batch_error(index: usize) -> Option<String> {
    let len = flux_batch_error(index, ptr::null_mut(), 0);
    if len == 0 {
        return None;
    }
    let mut buf = vec![0u8; len + 1];
    let full = flux_batch_error(index, buf.as_mut_ptr().cast::<c_char>(), buf.len());
    assert_eq!(full, len);
    buf.truncate(len);
    Some(String::from_utf8(buf).expect("messages are UTF-8"))
}

unsafe extern "C" fn read_batch_errors(user_data: *mut c_void) {
    // SAFETY: the test keeps its BatchErrors alive until `messages` is set.
    let errors = unsafe { &*(user_data as *const BatchErrors) };
    // One index beyond the batch too: it has no message.
    let messages = (0..=errors.n).map(batch_error).collect();
    *errors.messages.lock().unwrap() = Some(messages);
}

#[test]
fn a_batch_callback_reads_the_message_of_each_failed_request() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let two = limiter(store, config, "two", &params(2, 60.0, None));
    let reqs = [
        request(two, b"k", 1),
        request(two, b"k", 0),
        flux_request {
            key: ptr::null(),
            key_len: 4,
            ..request(two, b"k", 1)
        },
        request(two, b"k", 3),
    ];
    let errors = BatchErrors {
        n: reqs.len(),
        messages: Mutex::new(None),
    };
    let mut decisions = [flux_decision::default(); 4];
    let mut results = [flux_result::Panic; 4];
    let rc = flux_decide_batch_async(
        reqs.as_ptr(),
        reqs.len(),
        decisions.as_mut_ptr(),
        results.as_mut_ptr(),
        Some(read_batch_errors),
        &errors as *const BatchErrors as *mut c_void,
    );
    assert_eq!(rc, flux_result::Ok);
    let deadline = Instant::now() + Duration::from_secs(20);
    let messages = loop {
        if let Some(messages) = errors.messages.lock().unwrap().take() {
            break messages;
        }
        assert!(Instant::now() < deadline, "the callback never came");
        thread::sleep(Duration::from_millis(1));
    };
    use flux_result::{InvalidCost, NullArgument, Ok as OK};
    assert_eq!(results, [OK, InvalidCost, NullArgument, InvalidCost]);
    // Each message is the one the same call alone leaves for flux_last_error.
    let alone = |cost| decide(two, b"k", cost).unwrap_err().1;
    assert_eq!(
        messages,
        [
            None,
            Some(alone(0)),
            Some("reqs[2].key is NULL but reqs[2].key_len is 4".to_owned()),
            Some(alone(3)),
            None,
        ]
    );
    assert_eq!(alone(0), "cost must be at least 1, got 0");
    // Outside a batch callback there is nothing to read.
    assert_eq!(batch_error(1), None);

    flux_limiter_free(two);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn batched_requests_may_name_an_endpoint() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let one = limiter(store, config, "one", &params(1, 60.0, None));
    let at = |endpoint: &'static [u8]| flux_request {
        endpoint: endpoint.as_ptr(),
        endpoint_len: endpoint.len(),
        ..request(one, b"k", 1)
    };
    let reqs = [
        at(b"search"),
        at(b"search"),
        at(b"se\0arch"),
        request(one, b"k", 1),
        at(b""),
        at(b"\xff"),
        flux_request {
            endpoint: ptr::null(),
            endpoint_len: 2,
            ..request(one, b"k", 1)
        },
    ];
    let run = |reqs: &[flux_request]| {
        let mut decisions = [flux_decision::default(); 7];
        let mut results = [flux_result::Panic; 7];
        let tracker = Tracker::new(1);
        let tickets = tracker.tickets();
        let rc = flux_decide_batch_async(
            reqs.as_ptr(),
            reqs.len(),
            decisions.as_mut_ptr(),
            results.as_mut_ptr(),
            Some(on_batch),
            &tickets[0] as *const Ticket as *mut c_void,
        );
        assert_eq!(rc, flux_result::Ok);
        tracker.wait_for(1);
        (decisions.map(|d| d.allowed), results)
    };
    use flux_result::{InvalidUtf8, NullArgument, Ok as OK};
    let (allowed, results) = run(&reqs);
    assert_eq!(results, [OK, OK, OK, OK, OK, InvalidUtf8, NullArgument]);
    assert_eq!(allowed[..5], [true, false, true, true, false]);

    let mut decisions = [flux_decision::default(); 7];
    let mut results = [flux_result::Panic; 7];
    let rc = flux_decide_batch(
        reqs.as_ptr(),
        reqs.len(),
        decisions.as_mut_ptr(),
        results.as_mut_ptr(),
    );
    assert_eq!(rc, flux_result::Ok);
    assert_eq!(results, [OK, OK, OK, OK, OK, InvalidUtf8, NullArgument]);
    assert!(decisions[..5].iter().all(|d| !d.allowed), "all used up");
    assert_eq!(
        last_error(),
        "reqs[5].endpoint is not valid UTF-8 (bad byte at offset 0)"
    );

    flux_limiter_free(one);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn an_empty_batch_completes_at_once() {
    let tracker = Tracker::new(1);
    let tickets = tracker.tickets();
    let user_data = &tickets[0] as *const Ticket as *mut c_void;
    assert_eq!(
        flux_decide_batch(ptr::null(), 0, ptr::null_mut(), ptr::null_mut()),
        flux_result::Ok
    );
    let rc = flux_decide_batch_async(
        ptr::null(),
        0,
        ptr::null_mut(),
        ptr::null_mut(),
        Some(on_batch),
        user_data,
    );
    assert_eq!(rc, flux_result::Ok);
    // Called before the function returned, on this thread.
    assert_eq!(tracker.done.load(Ordering::SeqCst), 1);
    assert_eq!(tracker.on_flux_thread.load(Ordering::SeqCst), 0);
}

struct FreeInCallback {
    limiter: *mut flux_limiter,
    done: AtomicUsize,
}

unsafe extern "C" fn free_limiter_then_count(
    user_data: *mut c_void,
    _result: flux_result,
    _decision: *const flux_decision,
    _message: *const c_char,
) {
    // SAFETY: the test keeps this alive until `done` is set.
    let state = unsafe { &*(user_data as *const FreeInCallback) };
    flux_limiter_free(state.limiter);
    state.done.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn the_last_handle_may_be_freed_inside_a_callback() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "async", &params(10, 10.0, None));
    flux_store_free(store);
    flux_config_free(config);
    let state = FreeInCallback {
        limiter,
        done: AtomicUsize::new(0),
    };
    let user_data = &state as *const FreeInCallback as *mut c_void;
    let rc = flux_limiter_decide_async(
        limiter,
        b"k".as_ptr(),
        1,
        1,
        Some(free_limiter_then_count),
        user_data,
    );
    assert_eq!(rc, flux_result::Ok);
    // The store's thread cannot join itself: it finishes and stops on its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.done.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the callback never came");
        thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(target_os = "linux")]
unsafe extern "C" fn record_policy(
    user_data: *mut c_void,
    _result: flux_result,
    _decision: *const flux_decision,
    _message: *const c_char,
) {
    // SAFETY: user_data is the test's AtomicI32, which outlives the wait for it.
    let policy = unsafe { &*(user_data as *const std::sync::atomic::AtomicI32) };
    // SAFETY: asks about the calling thread only.
    policy.store(unsafe { libc::sched_getscheduler(0) }, Ordering::SeqCst);
}

/// Woken for a batch or a reply, the store's thread does not preempt the
/// thread that queued the work (the event loop): it runs as SCHED_BATCH.
#[cfg(target_os = "linux")]
#[test]
fn the_stores_thread_does_not_preempt_its_callers() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "policy", &params(10, 60.0, None));
    let policy = std::sync::atomic::AtomicI32::new(-1);
    let rc = flux_limiter_decide_async(
        limiter,
        b"k".as_ptr(),
        1,
        1,
        Some(record_policy),
        &policy as *const _ as *mut c_void,
    );
    assert_eq!(rc, flux_result::Ok);
    let deadline = Instant::now() + Duration::from_secs(20);
    while policy.load(Ordering::SeqCst) == -1 {
        assert!(Instant::now() < deadline, "the callback never came");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(policy.load(Ordering::SeqCst), libc::SCHED_BATCH);
    // SAFETY: asks about the calling thread only.
    assert_eq!(
        unsafe { libc::sched_getscheduler(0) },
        libc::SCHED_OTHER,
        "the caller's own is left alone"
    );

    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}
