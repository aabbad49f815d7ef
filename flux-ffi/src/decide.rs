//! Deciding calls: one at a time, or many at once.

use flux_core::{apply_batch, BatchRequest, Decision, LimiterError, Op};

use crate::decision::flux_decision;
use crate::error::{code_of, fail, fail_with, flux_result};
use crate::ffi::{
    ffi_panic_boundary, handle_ref, slice_parts, try_out, try_ref_from_ptr, try_slice,
    try_slice_mut, try_str_from_buf,
};
use crate::limiter::{flux_limiter, LimiterInner};

/// One call in a batch: the key is `key_len` bytes at `key`; the endpoint,
/// as in `flux_limiter_decide_endpoint`, `endpoint_len` bytes at `endpoint`
/// (NULL and 0, as a zeroed tail leaves them, for none).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flux_request {
    pub limiter: *const flux_limiter,
    pub key: *const u8,
    pub key_len: usize,
    /// At least 1.
    pub cost: u64,
    pub endpoint: *const u8,
    pub endpoint_len: usize,
}

/// Writes a limiter's answer to `*out`, or leaves its error for
/// `flux_last_error`.
fn answer(answer: Result<Decision, LimiterError>, out: &mut flux_decision) -> flux_result {
    match answer {
        Ok(decision) => {
            *out = decision.into();
            flux_result::Ok
        }
        Err(e) => fail_with(&e),
    }
}

/// Decides one call of `cost` for the caller identified by the `key_len`
/// bytes at `key` (any bytes, NUL included; NULL only with `key_len` 0) and
/// writes the decision to `*out`.
///
/// Returns `FLUX_RESULT_OK` whether the call is allowed or not; see
/// `out->allowed`. `FLUX_RESULT_INVALID_COST` for a cost of 0 or above the
/// limit's capacity. When Redis fails: with `fail_silently` the call is
/// admitted (`FLUX_RESULT_OK`, source `FLUX_SOURCE_FAIL_OPEN`, and a warning
/// in the log), else `FLUX_RESULT_STORAGE`, `FLUX_RESULT_TIMEOUT` or
/// `FLUX_RESULT_UNAVAILABLE`. When every pooled connection stays in use:
/// `FLUX_RESULT_POOL`, whatever `fail_silently` says. Blocks for about
/// `timeout_ms` waiting for a connection, then `timeout_ms` for Redis's
/// answer, at most. Thread-safe.
#[no_mangle]
pub extern "C" fn flux_limiter_decide(
    limiter: *const flux_limiter,
    key: *const u8,
    key_len: usize,
    cost: u64,
    out: *mut flux_decision,
) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        let key = try_slice!(key, key_len);
        let out = try_out!(out);
        answer(limiter.limiter.decide(key, cost), out)
    }
}

/// Decides one call of `cost` for the caller identified by the `key_len`
/// bytes at `key`, to the endpoint named by the `endpoint_len` bytes at
/// `endpoint` (UTF-8, NUL included; NULL only with `endpoint_len` 0), and
/// writes the decision to `*out`.
///
/// Each endpoint is a limit of its own on this one limiter: the caller's
/// state for it is kept under a key that digests the endpoint with the key
/// (no native object per endpoint), and the decision is counted in the
/// metrics and the event stream under the endpoint's name instead of the
/// limiter's scope (100 names per limiter, 1,000 per store, none longer
/// than 128 bytes; the rest are counted as `__other__`). An empty endpoint
/// is the same as `flux_limiter_decide`. Otherwise as `flux_limiter_decide`;
/// an endpoint that is not UTF-8 is `FLUX_RESULT_INVALID_UTF8`.
#[no_mangle]
pub extern "C" fn flux_limiter_decide_endpoint(
    limiter: *const flux_limiter,
    endpoint: *const u8,
    endpoint_len: usize,
    key: *const u8,
    key_len: usize,
    cost: u64,
    out: *mut flux_decision,
) -> flux_result {
    let decide = flux_op::Decide as u32;
    flux_limiter_apply(
        limiter,
        decide,
        endpoint,
        endpoint_len,
        key,
        key_len,
        cost,
        out,
    )
}

/// What `flux_limiter_apply` does.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flux_op {
    /// Decide, and when every quota admits the call, charge every quota:
    /// what `flux_limiter_decide` does.
    Decide = 0,
    /// Answer what deciding would, without charging anything (and without
    /// counting a decision in the metrics).
    Peek = 1,
    /// Give `cost` back to every quota, never below empty, and answer what
    /// the next call of cost 1 would be told.
    Refund = 2,
}

impl flux_op {
    fn from_u32(value: u32) -> Option<Op> {
        Some(match value {
            v if v == flux_op::Decide as u32 => Op::Decide,
            v if v == flux_op::Peek as u32 => Op::Peek,
            v if v == flux_op::Refund as u32 => Op::Refund,
            _ => return None,
        })
    }
}

/// Applies `op` (a `flux_op` value) for one call of `cost` by the caller
/// identified by the `key_len` bytes at `key`, to the endpoint named by the
/// `endpoint_len` bytes at `endpoint` (NULL and 0 for none; as in
/// `flux_limiter_decide_endpoint`), and writes the answer to `*out`.
///
/// `FLUX_OP_DECIDE` is `flux_limiter_decide_endpoint`. `FLUX_OP_PEEK`
/// answers what it would, charging nothing. `FLUX_OP_REFUND` gives back up
/// to `cost` (at least 1, with no upper bound: what a key holds is the
/// bound) and answers what the next call of cost 1 would be told. A refund
/// does not reach another process's cache of refusals: their cached answer
/// stands until its retry_after has passed. Otherwise as
/// `flux_limiter_decide`; an unknown `op` is `FLUX_RESULT_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn flux_limiter_apply(
    limiter: *const flux_limiter,
    op: u32,
    endpoint: *const u8,
    endpoint_len: usize,
    key: *const u8,
    key_len: usize,
    cost: u64,
    out: *mut flux_decision,
) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        let endpoint = try_str_from_buf!(endpoint, endpoint_len);
        let key = try_slice!(key, key_len);
        let out = try_out!(out);
        let Some(op) = flux_op::from_u32(op) else {
            return fail(
                flux_result::InvalidArgument,
                format!(
                    "op must be FLUX_OP_DECIDE (0), FLUX_OP_PEEK (1) or FLUX_OP_REFUND (2), got {op}"
                ),
            );
        };
        let endpoint = (!endpoint.is_empty()).then_some(endpoint);
        answer(limiter.limiter.apply(endpoint, key, cost, op), out)
    }
}

/// Forgets the state of the caller identified by the `key_len` bytes at
/// `key` (for the endpoint of `endpoint_len` bytes at `endpoint`; NULL and
/// 0 for none) under every quota of `limiter`: its next call is decided as
/// its first. Writes how many keys held a state to `*removed`.
#[no_mangle]
pub extern "C" fn flux_limiter_reset(
    limiter: *const flux_limiter,
    endpoint: *const u8,
    endpoint_len: usize,
    key: *const u8,
    key_len: usize,
    removed: *mut u64,
) -> flux_result {
    ffi_panic_boundary! {
        let limiter = try_ref_from_ptr!(limiter);
        let endpoint = try_str_from_buf!(endpoint, endpoint_len);
        let key = try_slice!(key, key_len);
        let removed = try_out!(removed);
        let endpoint = (!endpoint.is_empty()).then_some(endpoint);
        match limiter.limiter.reset(endpoint, key) {
            Ok(n) => {
                *removed = n;
                flux_result::Ok
            }
            Err(e) => fail_with(&e),
        }
    }
}

/// What one `flux_request` asks, borrowed from the caller.
pub(crate) struct RequestParts<'a> {
    pub(crate) limiter: &'a LimiterInner,
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) key: &'a [u8],
}

/// The limiter, endpoint and key of `reqs[index]`, or its error code and message.
///
/// # Safety
/// The request's limiter is NULL or live, and its key and endpoint are each
/// NULL or as many readable bytes as their lengths say, for `'a`.
pub(crate) unsafe fn request_parts<'a>(
    request: &flux_request,
    index: usize,
) -> Result<RequestParts<'a>, (flux_result, String)> {
    // SAFETY: per the contract above.
    let Some(limiter) = (unsafe { handle_ref(request.limiter) }) else {
        let message = format!("reqs[{index}].limiter must not be NULL");
        return Err((flux_result::NullArgument, message));
    };
    // SAFETY: per the contract above.
    let key = unsafe { buffer(request.key, request.key_len) }.ok_or_else(|| {
        let message = format!(
            "reqs[{index}].key is NULL but reqs[{index}].key_len is {}",
            request.key_len
        );
        (flux_result::NullArgument, message)
    })?;
    // SAFETY: per the contract above.
    let endpoint = unsafe { buffer(request.endpoint, request.endpoint_len) }.ok_or_else(|| {
        let message = format!(
            "reqs[{index}].endpoint is NULL but reqs[{index}].endpoint_len is {}",
            request.endpoint_len
        );
        (flux_result::NullArgument, message)
    })?;
    let endpoint = std::str::from_utf8(endpoint).map_err(|e| {
        let message = format!(
            "reqs[{index}].endpoint is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        );
        (flux_result::InvalidUtf8, message)
    })?;
    Ok(RequestParts {
        limiter,
        endpoint: (!endpoint.is_empty()).then_some(endpoint),
        key,
    })
}

/// `len` bytes at `ptr`; empty for a length of 0; `None` for NULL with a length.
///
/// # Safety
/// `ptr` is NULL or `len` readable bytes, for `'a`.
unsafe fn buffer<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    match slice_parts(ptr, len) {
        // SAFETY: per the contract above.
        Ok(Some((ptr, len))) => Some(unsafe { std::slice::from_raw_parts(ptr, len) }),
        Ok(None) => Some(&[]),
        Err(()) => None,
    }
}

/// Decides `n` calls at once, on any mix of limiters and stores, with one
/// round trip (one pipeline) per Redis store.
///
/// For each `i < n`, `results[i]` receives that call's code and, when it is
/// `FLUX_RESULT_OK`, `decisions[i]` its decision. Returns `FLUX_RESULT_OK`
/// when every call was attempted (look at `results`), or an error when the
/// arrays themselves are bad. When some call failed, the calling thread's
/// last error is the message of the first that did.
#[no_mangle]
pub extern "C" fn flux_decide_batch(
    reqs: *const flux_request,
    n: usize,
    decisions: *mut flux_decision,
    results: *mut flux_result,
) -> flux_result {
    ffi_panic_boundary! {
        let reqs = try_slice!(reqs, n);
        let decisions = try_slice_mut!(decisions, n);
        let results = try_slice_mut!(results, n);
        // (index, code, message) of the failed call with the lowest index.
        let mut first_error: Option<(usize, flux_result, String)> = None;
        let mut note = |i: usize, code: flux_result, message: &dyn Fn() -> String| {
            if first_error.as_ref().is_none_or(|(first, _, _)| i < *first) {
                first_error = Some((i, code, message()));
            }
        };
        let mut batch = Vec::with_capacity(n);
        let mut indices = Vec::with_capacity(n);
        for (i, request) in reqs.iter().enumerate() {
            // SAFETY: the caller keeps every request's limiter and key alive during the call.
            match unsafe { request_parts(request, i) } {
                Ok(parts) => {
                    batch.push(BatchRequest {
                        limiter: &parts.limiter.limiter,
                        endpoint: parts.endpoint,
                        identity: parts.key,
                        cost: request.cost,
                        op: Op::Decide,
                    });
                    indices.push(i);
                }
                Err((code, message)) => {
                    results[i] = code;
                    note(i, code, &|| message.clone());
                }
            }
        }
        for (i, answer) in indices.into_iter().zip(apply_batch(&batch)) {
            match answer {
                Ok(decision) => {
                    decisions[i] = decision.into();
                    results[i] = flux_result::Ok;
                }
                Err(e) => {
                    results[i] = code_of(&e);
                    note(i, code_of(&e), &|| e.to_string());
                }
            }
        }
        if let Some((_, code, message)) = first_error {
            fail(code, message);
        }
        flux_result::Ok
    }
}
