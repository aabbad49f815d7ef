//! The C functions that decide without waiting: each queues its calls to
//! the thread of their store (worker.rs) and returns.

use std::ffi::c_void;

use crate::completions::flux_completions;
use crate::decide::{flux_request, request_parts};
use crate::decision::flux_decision;
use crate::error::{fail, flux_result};
use crate::ffi::{
    clone_arc, ffi_panic_boundary, try_callback, try_ref_from_ptr, try_slice, try_slice_mut,
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
