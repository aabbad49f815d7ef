//! The C functions that decide without waiting: each queues its calls to
//! the thread of their store (worker.rs) and returns.

use std::ffi::c_void;

use crate::completions::flux_completions;
use crate::decide::{flux_request, request_parts};
use crate::decision::flux_decision;
use crate::error::{fail, flux_result};
use crate::ffi::{
    clone_arc, ffi_panic_boundary, slice_parts, try_callback, try_ref_from_ptr, try_slice,
    try_slice_mut,
};
use crate::limiter::{flux_limiter, LimiterInner};
use crate::worker::{
    dispatch, flux_batch_callback, flux_decide_callback, Job, Owned, OwnedRequest, Reply, SendPtr,
};

/// Like `flux_limiter_decide`, but returns at once: the decision is made on
/// a thread owned by the limiter's store, which then calls
/// `callback(user_data, result, decision, message)` exactly once.
///
/// The key is copied, and the limiter is kept alive until the callback, so
/// both may be released as soon as this returns. Requests queued by many
/// threads at the same moment go to Redis as one pipeline. Returns
/// `FLUX_RESULT_OK` when the request was queued; any other result means the
/// callback will not be called.
#[no_mangle]
pub extern "C" fn flux_limiter_decide_async(
    limiter: *const flux_limiter,
    key: *const u8,
    key_len: usize,
    cost: u64,
    callback: flux_decide_callback,
    user_data: *mut c_void,
) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        let key = try_slice!(key, key_len);
        let callback = try_callback!(callback);
        let job = Job {
            requests: vec![Ok(OwnedRequest {
                limiter: limiter.limiter.clone(),
                endpoint: None,
                key: key.to_vec(),
                cost,
            })],
            reply: Reply::One { callback, user_data: SendPtr(user_data) },
        };
        dispatch(Some(limiter.store.worker()), job)
    }
}

/// Like `flux_decide_batch`, but returns at once: the calls are decided on
/// a thread owned by the store of the first request's limiter, which fills
/// `results[i]` (and `decisions[i]` where the result is `FLUX_RESULT_OK`)
/// and then calls `callback(user_data)` exactly once. Inside the callback,
/// `flux_batch_error(i, ...)` gives the message of each request `i` that
/// failed.
///
/// The requests, their keys and endpoints are copied and the limiters kept alive, so
/// they may be released as soon as this returns; `decisions` and `results`
/// (`n` entries each) must stay valid until the callback. When no request
/// has a limiter (`n` is 0, or every limiter is NULL) the arrays are filled
/// and the callback called before this returns, on the calling thread.
/// Returns `FLUX_RESULT_OK` when the batch was accepted; any other result
/// means the callback will not be called.
#[no_mangle]
pub extern "C" fn flux_decide_batch_async(
    reqs: *const flux_request,
    n: usize,
    decisions: *mut flux_decision,
    results: *mut flux_result,
    callback: flux_batch_callback,
    user_data: *mut c_void,
) -> flux_result {
    ffi_panic_boundary! {
        let reqs = try_slice!(reqs, n);
        // Checked now, so a bad array is reported here rather than by the thread.
        let _ = try_slice_mut!(decisions, n);
        let _ = try_slice_mut!(results, n);
        let callback = try_callback!(callback);
        let (requests, store) = owned_requests(reqs);
        let job = Job {
            requests,
            reply: Reply::Batch {
                callback,
                user_data: SendPtr(user_data),
                decisions: SendPtr(decisions),
                results: SendPtr(results),
            },
        };
        dispatch(store.map(|l| l.store.worker()), job)
    }
}

/// Like `flux_decide_batch_async`, but the answers go into `queue` (see
/// `flux_completions`) under `token`, where `flux_completions_pop` takes
/// them, instead of into the caller's arrays through a callback: nothing
/// of the caller's is written to or called from the store's thread.
///
/// `token` is the caller's name for the batch, any value but 0 (which
/// `flux_completions_pop` uses for "none"). The requests, their keys and
/// endpoints are copied and the limiters and the queue kept alive, so all
/// may be released as soon as this returns. When no request has a limiter
/// (`n` is 0, or every limiter is NULL) the batch is answered into the
/// queue before this returns. Returns `FLUX_RESULT_OK` when the batch was
/// accepted; any other result means nothing will be queued for it.
#[no_mangle]
pub extern "C" fn flux_decide_batch_queued(
    reqs: *const flux_request,
    n: usize,
    queue: *const flux_completions,
    token: u64,
) -> flux_result {
    ffi_panic_boundary! {
        let reqs = try_slice!(reqs, n);
        // SAFETY: NULL or a live queue handle, per the contract.
        let Some(queue) = (unsafe { clone_arc(queue) }) else {
            return fail(flux_result::NullArgument, "argument `queue` must not be NULL");
        };
        if let Err(code) = queue.check_process() {
            return code;
        }
        if token == 0 {
            return fail(flux_result::InvalidArgument, "`token` must not be 0: 0 means no batch");
        }
        let (requests, store) = owned_requests(reqs);
        let job = Job { requests, reply: Reply::Queued { queue, token } };
        dispatch(store.map(|l| l.store.worker()), job)
    }
}

/// `flux_decide_batch_queued` for a batch laid out as arrays rather than
/// as `flux_request` records, for callers that pay for every record they
/// fill (an interpreter filling one field at a time): request `i` is
/// decided by `limiters[i]` for the `key_lens[i]` bytes that follow the
/// keys before it in `keys` (all keys back to back), at cost `costs[i]`
/// (NULL: 1 each), for the endpoint made of the `endpoint_lens[i]` bytes
/// that follow the endpoints before it in `endpoints` (both NULL: none;
/// a length of 0: none for that request).
///
/// Everything else is as in `flux_decide_batch_queued`: what is given is
/// copied and the limiters and the queue kept alive; an invalid request
/// fails alone, and its message names it `reqs[i]`; a NULL `keys` or
/// `endpoints` whose lengths are not all 0, or lengths whose sum overflows,
/// fail the whole call with nothing queued.
#[no_mangle]
pub extern "C" fn flux_decide_packed_queued(
    limiters: *const *const flux_limiter,
    keys: *const u8,
    key_lens: *const usize,
    costs: *const u64,
    endpoints: *const u8,
    endpoint_lens: *const usize,
    n: usize,
    queue: *const flux_completions,
    token: u64,
) -> flux_result {
    ffi_panic_boundary! {
        let limiters = try_slice!(limiters, n);
        let key_lens = try_slice!(key_lens, n);
        let costs = if costs.is_null() { &[] } else { try_slice!(costs, n) };
        let endpoint_lens = if endpoint_lens.is_null() { &[] } else { try_slice!(endpoint_lens, n) };
        let keys = match packed(keys, key_lens, "keys", "key_lens") {
            Ok(keys) => keys,
            Err(code) => return code,
        };
        let endpoints = match packed(endpoints, endpoint_lens, "endpoints", "endpoint_lens") {
            Ok(endpoints) => endpoints,
            Err(code) => return code,
        };
        let mut key_at = 0;
        let mut endpoint_at = 0;
        let reqs: Vec<flux_request> = (0..n)
            .map(|i| {
                let key = &keys[key_at..key_at + key_lens[i]];
                key_at += key_lens[i];
                let endpoint_len = endpoint_lens.get(i).copied().unwrap_or(0);
                let endpoint = &endpoints[endpoint_at..endpoint_at + endpoint_len];
                endpoint_at += endpoint_len;
                flux_request {
                    limiter: limiters[i],
                    key: key.as_ptr(),
                    key_len: key.len(),
                    cost: costs.get(i).copied().unwrap_or(1),
                    endpoint: endpoint.as_ptr(),
                    endpoint_len,
                }
            })
            .collect();
        flux_decide_batch_queued(reqs.as_ptr(), n, queue, token)
    }
}

/// The bytes of items laid back to back at `ptr`, `lens` long in all.
fn packed<'a>(
    ptr: *const u8,
    lens: &[usize],
    what: &str,
    lens_name: &str,
) -> Result<&'a [u8], flux_result> {
    let Some(total) = lens
        .iter()
        .try_fold(0usize, |sum, &len| sum.checked_add(len))
    else {
        return Err(fail(
            flux_result::InvalidArgument,
            format!("the lengths in `{lens_name}` add up to more than memory can hold"),
        ));
    };
    match slice_parts(ptr, total) {
        // SAFETY: a non-NULL buffer holds the `total` bytes its lengths say (the C contract).
        Ok(Some((ptr, len))) => Ok(unsafe { std::slice::from_raw_parts(ptr, len) }),
        Ok(None) => Ok(&[]),
        Err(()) => Err(fail(
            flux_result::NullArgument,
            format!("argument `{what}` is NULL but the lengths in `{lens_name}` add up to {total}"),
        )),
    }
}

/// Each request copied and its limiter kept alive, or the reason it is
/// invalid; and the limiter of the first valid one, whose store decides them.
fn owned_requests(reqs: &[flux_request]) -> (Vec<Owned>, Option<&LimiterInner>) {
    let mut first_limiter: Option<&LimiterInner> = None;
    let requests = reqs
        .iter()
        .enumerate()
        .map(|(i, request)| {
            // SAFETY: the caller's requests hold live limiters and keys during this call.
            let parts = unsafe { request_parts(request, i) }?;
            first_limiter.get_or_insert(parts.limiter);
            Ok(OwnedRequest {
                limiter: parts.limiter.limiter.clone(),
                endpoint: parts.endpoint.map(Box::from),
                key: parts.key.to_vec(),
                cost: request.cost,
            })
        })
        .collect();
    (requests, first_limiter)
}
