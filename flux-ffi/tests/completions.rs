//! `flux_decide_batch_queued` and `flux_completions`: batches answered into
//! a queue whose descriptor is readable exactly while answers wait, taken
//! out in order with each failed request's message.

mod support;

use std::ffi::c_char;
use std::ptr;
use std::time::{Duration, Instant};

use flux_ffi::*;
use support::*;

fn new_queue() -> *mut flux_completions {
    let mut queue = ptr::null_mut();
    assert_eq!(flux_completions_new(&mut queue), flux_result::Ok);
    queue
}

/// Whether the queue's descriptor is readable within `wait`.
fn readable(queue: *const flux_completions, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: flux_completions_fd(queue),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, on a descriptor the queue keeps open.
    let ready = unsafe { libc::poll(&mut fd, 1, wait.as_millis() as libc::c_int) };
    ready == 1 && fd.revents & libc::POLLIN != 0
}

/// One batch taken out: its token, and per request the result and decision.
struct Taken {
    token: u64,
    results: Vec<flux_result>,
    decisions: Vec<flux_decision>,
}

/// `flux_completions_pop` with arrays of `cap`: the batch, `None` when none waits.
fn pop(queue: *const flux_completions, cap: usize) -> Result<Option<Taken>, (flux_result, usize)> {
    let mut decisions = vec![flux_decision::default(); cap];
    let mut results = vec![flux_result::Panic; cap];
    let (mut token, mut n) = (7_u64, 7_usize);
    let rc = flux_completions_pop(
        queue,
        &mut token,
        decisions.as_mut_ptr(),
        results.as_mut_ptr(),
        cap,
        &mut n,
    );
    if rc != flux_result::Ok {
        return Err((rc, n));
    }
    if token == 0 {
        assert_eq!(n, 0, "no batch, no size");
        return Ok(None);
    }
    results.truncate(n);
    decisions.truncate(n);
    Ok(Some(Taken {
        token,
        results,
        decisions,
    }))
}

/// Waits up to 20 s for the next batch.
fn next(queue: *const flux_completions) -> Taken {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no batch was answered");
        if readable(queue, Duration::from_millis(100)) {
            if let Some(taken) = pop(queue, 16).expect("pop") {
                return taken;
            }
        }
    }
}

/// `flux_completions_error(index)`, whole: `None` for a length of 0.
fn message(queue: *const flux_completions, index: usize) -> Option<String> {
    let len = flux_completions_error(queue, index, ptr::null_mut(), 0);
    if len == 0 {
        return None;
    }
    let mut buf = vec![0u8; len + 1];
    let full = flux_completions_error(queue, index, buf.as_mut_ptr().cast::<c_char>(), buf.len());
    assert_eq!(full, len);
    buf.truncate(len);
    Some(String::from_utf8(buf).expect("messages are UTF-8"))
}

#[test]
fn a_batch_is_answered_into_the_queue_which_is_readable_until_it_is_taken() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let two = limiter(store, config, "two", &params(2, 60.0, None));
    let queue = new_queue();
    assert!(flux_completions_fd(queue) >= 0);
    assert!(!readable(queue, Duration::ZERO), "empty: not readable");
    assert!(pop(queue, 4).expect("pop").is_none());

    let reqs = [
        request(two, b"k", 1),
        request(two, b"k", 0),
        request(two, b"k", 1),
        flux_request {
            key: ptr::null(),
            key_len: 4,
            ..request(two, b"k", 1)
        },
        request(two, b"k", 1),
    ];
    let rc = flux_decide_batch_queued(reqs.as_ptr(), reqs.len(), queue, 41);
    assert_eq!(rc, flux_result::Ok);
    let taken = next(queue);
    assert!(!readable(queue, Duration::ZERO), "the only batch was taken");
    assert!(pop(queue, 4).expect("pop").is_none());

    use flux_result::{InvalidCost, NullArgument, Ok as OK};
    assert_eq!(taken.token, 41);
    assert_eq!(taken.results, [OK, InvalidCost, OK, NullArgument, OK]);
    let allowed: Vec<bool> = [0, 2, 4]
        .iter()
        .map(|&i| taken.decisions[i].allowed)
        .collect();
    assert_eq!(allowed, [true, true, false]);
    assert_eq!(taken.decisions[0].remaining, 1);
    assert_eq!(taken.decisions[0].limit, 2);
    // Each message is the one the same call alone leaves for flux_last_error.
    let alone = decide(two, b"other", 0).unwrap_err().1;
    assert_eq!(
        (0..=5).map(|i| message(queue, i)).collect::<Vec<_>>(),
        [
            None,
            Some(alone),
            None,
            Some("reqs[3].key is NULL but reqs[3].key_len is 4".to_owned()),
            None,
            None, // beyond the batch
        ]
    );

    flux_completions_free(queue);
    flux_limiter_free(two);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn batches_wait_in_order_and_arrays_too_small_are_told_the_size() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "many", &params(100, 60.0, None));
    let queue = new_queue();
    // A batch that names no limiter is answered before the call returns.
    assert_eq!(
        flux_decide_batch_queued(ptr::null(), 0, queue, 3),
        flux_result::Ok
    );
    assert!(readable(queue, Duration::ZERO));
    let three = [
        request(limiter, b"a", 1),
        request(limiter, b"b", 1),
        request(limiter, b"c", 1),
    ];
    assert_eq!(
        flux_decide_batch_queued(three.as_ptr(), 3, queue, 1),
        flux_result::Ok
    );
    assert_eq!(
        flux_decide_batch_queued(three.as_ptr(), 1, queue, 2),
        flux_result::Ok
    );

    let empty = pop(queue, 2).expect("pop").expect("answered at once");
    assert_eq!((empty.token, empty.results.len()), (3, 0));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !readable(queue, Duration::from_millis(100)) {
        assert!(Instant::now() < deadline, "no batch was answered");
    }
    assert_eq!(pop(queue, 2).err(), Some((flux_result::BufferTooSmall, 3)));
    assert_eq!(
        last_error(),
        "the next answered batch has 3 requests; the arrays hold 2"
    );
    assert!(readable(queue, Duration::ZERO), "the batch still waits");
    let first = pop(queue, 3).expect("pop").expect("still there");
    assert_eq!(first.token, 1);
    assert_eq!(first.results, [flux_result::Ok; 3]);
    let second = next(queue);
    assert_eq!((second.token, second.results.len()), (2, 1));
    assert_eq!(second.decisions[0].remaining, 98, "a's second call");
    assert!(!readable(queue, Duration::ZERO));

    flux_completions_free(queue);
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_token_of_zero_and_missing_arguments_are_refused() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "l", &params(1, 60.0, None));
    let queue = new_queue();
    let reqs = [request(limiter, b"k", 1)];
    assert_eq!(
        flux_decide_batch_queued(reqs.as_ptr(), 1, queue, 0),
        flux_result::InvalidArgument
    );
    assert_eq!(last_error(), "`token` must not be 0: 0 means no batch");
    assert_eq!(
        flux_decide_batch_queued(reqs.as_ptr(), 1, ptr::null(), 5),
        flux_result::NullArgument
    );
    assert_eq!(last_error(), "argument `queue` must not be NULL");
    assert_eq!(flux_completions_fd(ptr::null()), -1);
    assert_eq!(
        flux_completions_new(ptr::null_mut()),
        flux_result::NullArgument
    );
    let mut token = 0;
    let mut n = 0;
    let rc = flux_completions_pop(
        queue,
        &mut token,
        ptr::null_mut(),
        ptr::null_mut(),
        4,
        &mut n,
    );
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(last_error(), "argument `decisions` is NULL but `cap` is 4");
    // Nothing was queued by the refused calls.
    assert!(pop(queue, 1).expect("pop").is_none());
    flux_completions_free(ptr::null_mut());

    flux_completions_free(queue);
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_queue_freed_with_batches_in_flight_is_released_by_them() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let limiter = limiter(store, config, "l", &params(2000, 3600.0, None));
    let reqs: Vec<flux_request> = (0..64).map(|_| request(limiter, b"k", 1)).collect();
    for round in 1..=20 {
        let queue = new_queue();
        assert_eq!(
            flux_decide_batch_queued(reqs.as_ptr(), reqs.len(), queue, round),
            flux_result::Ok
        );
        flux_completions_free(queue);
    }
    // Every batch was still decided: the thread answers in order, so when
    // one more is answered, the 20 × 64 before it were counted.
    let queue = new_queue();
    assert_eq!(
        flux_decide_batch_queued(reqs.as_ptr(), 1, queue, 99),
        flux_result::Ok
    );
    let last = next(queue);
    assert_eq!((last.token, last.results[0]), (99, flux_result::Ok));
    assert_eq!(last.decisions[0].remaining, 2000 - 20 * 64 - 1);

    flux_completions_free(queue);
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

/// `flux_decide_packed_queued` with the keys, endpoints and costs of
/// `calls` laid out as its arrays.
fn packed(
    queue: *const flux_completions,
    token: u64,
    calls: &[(*const flux_limiter, &[u8], u64, &[u8])],
) -> flux_result {
    let limiters: Vec<_> = calls.iter().map(|c| c.0).collect();
    let keys: Vec<u8> = calls.iter().flat_map(|c| c.1.iter().copied()).collect();
    let key_lens: Vec<usize> = calls.iter().map(|c| c.1.len()).collect();
    let costs: Vec<u64> = calls.iter().map(|c| c.2).collect();
    let endpoints: Vec<u8> = calls.iter().flat_map(|c| c.3.iter().copied()).collect();
    let endpoint_lens: Vec<usize> = calls.iter().map(|c| c.3.len()).collect();
    flux_decide_packed_queued(
        limiters.as_ptr(),
        keys.as_ptr(),
        key_lens.as_ptr(),
        costs.as_ptr(),
        endpoints.as_ptr(),
        endpoint_lens.as_ptr(),
        calls.len(),
        queue,
        token,
    )
}

#[test]
fn a_packed_batch_is_decided_request_by_request_like_records() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let two = limiter(store, config, "two", &params(2, 60.0, None));
    let five = limiter(store, config, "five", &params(5, 60.0, None));
    let queue = new_queue();

    let calls: [(*const flux_limiter, &[u8], u64, &[u8]); 7] = [
        (two, b"a", 1, b""),
        (five, b"bbb", 3, b""),
        (two, b"a", 0, b""),
        (two, b"", 1, b""),
        (two, b"a", 1, b"search"),
        (two, b"a", 1, b"\xff"),
        (two, b"a", 1, b""),
    ];
    assert_eq!(packed(queue, 9, &calls), flux_result::Ok);
    let taken = next(queue);
    use flux_result::{InvalidCost, InvalidUtf8, Ok as OK};
    assert_eq!(taken.token, 9);
    assert_eq!(
        taken.results,
        [OK, OK, InvalidCost, OK, OK, InvalidUtf8, OK]
    );
    let told: Vec<(bool, u64)> = [0, 1, 3, 4, 6]
        .iter()
        .map(|&i| (taken.decisions[i].allowed, taken.decisions[i].remaining))
        .collect();
    // "a" twice on `two` (the refused call in between charged nothing), the
    // empty key and "a" on the endpoint each their own; "bbb" on `five`.
    assert_eq!(
        told,
        [(true, 1), (true, 2), (true, 1), (true, 1), (true, 0)]
    );
    assert_eq!(
        message(queue, 5),
        Some("reqs[5].endpoint is not valid UTF-8 (bad byte at offset 0)".to_owned())
    );

    // No costs: each call costs 1; no endpoints: none has one.
    let limiters = [five.cast_const(), five];
    let (keys, key_lens) = (b"bbbc", [3_usize, 1]);
    let rc = flux_decide_packed_queued(
        limiters.as_ptr(),
        keys.as_ptr(),
        key_lens.as_ptr(),
        ptr::null(),
        ptr::null(),
        ptr::null(),
        2,
        queue,
        10,
    );
    assert_eq!(rc, flux_result::Ok);
    let taken = next(queue);
    assert_eq!(taken.results, [OK, OK]);
    assert_eq!(
        [taken.decisions[0].remaining, taken.decisions[1].remaining],
        [1, 4]
    );

    flux_completions_free(queue);
    flux_limiter_free(two);
    flux_limiter_free(five);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_packed_batch_whose_arrays_do_not_hold_what_they_say_queues_nothing() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let one = limiter(store, config, "one", &params(1, 60.0, None));
    let queue = new_queue();
    let limiters = [one.cast_const(), one];
    let call =
        |keys: *const u8, key_lens: &[usize], endpoints: *const u8, endpoint_lens: *const usize| {
            flux_decide_packed_queued(
                limiters.as_ptr(),
                keys,
                key_lens.as_ptr(),
                ptr::null(),
                endpoints,
                endpoint_lens,
                2,
                queue,
                5,
            )
        };

    assert_eq!(
        call(ptr::null(), &[1, 0], ptr::null(), ptr::null()),
        flux_result::NullArgument
    );
    assert_eq!(
        last_error(),
        "argument `keys` is NULL but the lengths in `key_lens` add up to 1"
    );
    assert_eq!(
        call(b"k".as_ptr(), &[usize::MAX, 2], ptr::null(), ptr::null()),
        flux_result::InvalidArgument
    );
    assert_eq!(
        last_error(),
        "the lengths in `key_lens` add up to more than memory can hold"
    );
    let endpoint_lens = [0_usize, 4];
    assert_eq!(
        call(b"kk".as_ptr(), &[1, 1], ptr::null(), endpoint_lens.as_ptr()),
        flux_result::NullArgument
    );
    assert_eq!(
        last_error(),
        "argument `endpoints` is NULL but the lengths in `endpoint_lens` add up to 4"
    );
    assert!(
        !readable(queue, Duration::from_millis(200)),
        "nothing was queued"
    );
    // Neither call charged the limit of one.
    assert_eq!(decide(one, b"k", 1).map(|d| d.allowed), Ok(true));

    flux_completions_free(queue);
    flux_limiter_free(one);
    flux_store_free(store);
    flux_config_free(config);
}
