//! Result codes and the calling thread's last error message.

use std::cell::RefCell;

use flux_core::{LimiterError, StoreError, Unavailable};

/// What a fallible `flux_*` function returns. `FLUX_RESULT_OK` is 0; every
/// other code comes with a message, read with `flux_last_error`.
///
/// Codes are grouped (1-99 the call itself, 100-199 configuration and
/// limits, 200-299 storage) and never reused.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum flux_result {
    Ok = 0,
    /// Rust panicked inside the call; the panic was caught at the boundary.
    Panic = 1,
    /// A pointer argument that must not be NULL was NULL, or a NULL buffer
    /// came with a nonzero length.
    NullArgument = 2,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 3,
    /// An argument had a value outside the ones allowed.
    InvalidArgument = 4,
    /// The caller's buffer was too small; the size needed was written out.
    BufferTooSmall = 5,
    /// An `_async` call after `flux_async_shutdown`.
    ShutDown = 6,
    /// The configuration could not be read, parsed or validated.
    Config = 100,
    /// A limit's policy, requests, period, burst or max_wait is invalid.
    InvalidLimit = 101,
    /// A cost of 0, or one above what the limit can ever admit.
    InvalidCost = 102,
    /// No `[rate_limits.NAME]` with that name in the configuration.
    UnknownLimit = 103,
    /// Redis could not be reached (or the connection broke), or failed the
    /// command.
    Storage = 200,
    /// Redis did not answer within `timeout_ms`.
    Timeout = 201,
    /// Every pooled connection stayed in use while the call waited its turn
    /// for `timeout_ms`: back-pressure, not Redis failing. Returned whatever
    /// `fail_silently` says: admitting the call could over-admit.
    Pool = 202,
    /// Redis answered that it cannot serve now (OOM, BUSY, LOADING,
    /// READONLY, NOREPLICAS, MISCONF, a cluster down); the message carries
    /// its reply. With `fail_silently` the call is admitted instead.
    Unavailable = 203,
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as the calling thread's last error and returns `code`,
/// so a failing path reads `return fail(code, message)`.
pub(crate) fn fail(code: flux_result, message: impl Into<String>) -> flux_result {
    let message = message.into();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
    code
}

/// The code a limiter or store error is reported with.
pub(crate) fn code_of(error: &LimiterError) -> flux_result {
    match error {
        LimiterError::Limit(_) => flux_result::InvalidLimit,
        LimiterError::Cost(_) => flux_result::InvalidCost,
        LimiterError::UnknownLimit(_) => flux_result::UnknownLimit,
        LimiterError::Argument(_) => flux_result::InvalidArgument,
        LimiterError::Store(e) => store_code(e),
    }
}

/// The code a store error is reported with.
pub(crate) fn store_code(error: &StoreError) -> flux_result {
    match error {
        StoreError::Quota(_) => flux_result::InvalidCost,
        StoreError::Settings(_) => flux_result::Config,
        StoreError::Unavailable { why, .. } => match why {
            Unavailable::Timeout => flux_result::Timeout,
            Unavailable::Refusing => flux_result::Unavailable,
            Unavailable::Unreachable => flux_result::Storage,
        },
        StoreError::Busy { .. } => flux_result::Pool,
        StoreError::Foreign { .. } | StoreError::Failed { .. } => flux_result::Storage,
    }
}

/// Records a limiter or store error and returns its code.
pub(crate) fn fail_with(error: &LimiterError) -> flux_result {
    fail(code_of(error), error.to_string())
}

/// The calling thread's last error message (empty when nothing failed yet).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn last_error() -> String {
    LAST_ERROR.with(|last| last.borrow().clone())
}

/// Runs `read` on the calling thread's last error message.
pub(crate) fn read_last_error<R>(read: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|last| read(&last.borrow()))
}

thread_local! {
    /// The message of each request of the batch whose callback runs on this
    /// thread (`None` where it succeeded); `None` outside such a callback.
    static BATCH_ERRORS: RefCell<Option<Vec<Option<String>>>> = const { RefCell::new(None) };
}

/// Runs `callback` with `messages` readable through `flux_batch_error`
/// on this thread, then puts back what was readable before (a callback
/// may run a batch of its own, whose callback runs inside it).
pub(crate) fn with_batch_errors(messages: Vec<Option<String>>, callback: impl FnOnce()) {
    struct Restore(Option<Vec<Option<String>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BATCH_ERRORS.with(|errors| *errors.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(BATCH_ERRORS.with(|errors| errors.replace(Some(messages))));
    callback();
}

/// Runs `read` on the message of request `index` of the batch whose
/// callback runs on this thread: `None` where it succeeded, beyond the
/// batch, or outside a batch callback.
pub(crate) fn read_batch_error<R>(index: usize, read: impl FnOnce(Option<&str>) -> R) -> R {
    BATCH_ERRORS.with(|errors| {
        let errors = errors.borrow();
        read(
            errors
                .as_ref()
                .and_then(|e| e.get(index))
                .and_then(Option::as_deref),
        )
    })
}
