//! Where `flux_decide_batch_queued` puts its answers: a queue that an event
//! loop drains on its own thread, woken through a file descriptor.
//!
//! A callback runs on the store's thread, so a host whose code needs a lock
//! of its own to run (Python's GIL) must take it there, and hand the result
//! to its event loop's thread after that: two threads contending for one
//! lock on every batch. With a queue, the store's thread only stores the
//! answers and, when the queue was empty, writes one byte that makes the
//! descriptor readable; the loop, which already waits on descriptors, takes
//! the answers when it sees it. Nothing of the host runs on Flux's thread,
//! and the answers live in the queue, not in the caller's memory, so a
//! caller that goes away before its batch is answered leaves nothing to
//! write into.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flux_core::fork;

use crate::decision::flux_decision;
use crate::error::{fail, flux_result};
use crate::ffi::{
    arc_into_handle, copy_message, ffi_panic_boundary, free_arc_handle, try_out, try_ref_from_ptr,
    ArcHandle, Handle,
};

/// A queue that batches decided by `flux_decide_batch_queued` are answered
/// into, with a file descriptor that is readable while it holds answers.
///
/// Made by `flux_completions_new`, freed by `flux_completions_free` (batches
/// still being decided keep what they need alive: freeing never waits and
/// their answers are dropped). Any thread may queue batches into it; one
/// thread at a time takes them out (an event loop, which watches
/// `flux_completions_fd`). It belongs to the process that made it: a forked
/// child makes its own.
#[derive(Debug)]
pub struct flux_completions {
    _private: [u8; 0],
}

/// What a `flux_completions` stands for.
pub(crate) struct Completions {
    answered: Mutex<Answered>,
    /// Holds one byte while `answered.batches` is not empty: written when a
    /// batch goes into an empty queue, read when the last one is taken out,
    /// both under the lock, so it is readable exactly while answers wait.
    readable: UnixStream,
    wake: UnixStream,
    /// The process that made the queue (`flux_core::fork::generation`).
    generation: u64,
}

#[derive(Default)]
struct Answered {
    batches: VecDeque<Batch>,
    /// The messages of the batch taken last, by request (`None` where it
    /// succeeded), for `flux_completions_error`.
    taken: Vec<Option<String>>,
}

/// One answered batch: the caller's token and an outcome per request.
pub(crate) struct Batch {
    pub(crate) token: u64,
    pub(crate) outcomes: Vec<Result<flux_decision, (flux_result, String)>>,
}

impl Handle for flux_completions {
    type Target = Completions;
}
impl ArcHandle for flux_completions {}

impl Completions {
    fn new() -> std::io::Result<Completions> {
        let (readable, wake) = UnixStream::pair()?;
        readable.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        Ok(Completions {
            answered: Mutex::default(),
            readable,
            wake,
            generation: fork::generation(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Answered> {
        self.answered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails unless the calling process made the queue: a child's byte
    /// would wake its parent's loop, and a child taking from the queue
    /// would take the parent's wake-up.
    pub(crate) fn check_process(&self) -> Result<(), flux_result> {
        if self.generation == fork::generation() {
            Ok(())
        } else {
            Err(fail(
                flux_result::InvalidArgument,
                "this flux_completions was made before the process forked: it belongs to the \
                 parent; make a new one in the child",
            ))
        }
    }

    /// Queues an answered batch, waking the reader if it was the first.
    pub(crate) fn push(&self, batch: Batch) {
        let mut answered = self.lock();
        if answered.batches.is_empty() {
            // One byte into an empty socket buffer cannot block; should it
            // ever fail, the next batch tries again.
            let _ = (&self.wake).write(&[1]);
        }
        answered.batches.push_back(batch);
    }

    /// Takes the oldest batch, and the wake-up with the last one; leaves it
    /// queued and answers its size when it has more than `cap` requests.
    fn pop(&self, cap: usize) -> Result<Option<Batch>, usize> {
        let mut answered = self.lock();
        match answered.batches.front() {
            None => return Ok(None),
            Some(next) if next.outcomes.len() > cap => return Err(next.outcomes.len()),
            Some(_) => {}
        }
        let batch = answered.batches.pop_front().expect("a batch is waiting");
        if answered.batches.is_empty() {
            let mut byte = [0u8; 8];
            loop {
                match (&self.readable).read(&mut byte) {
                    Ok(n) if n > 0 => continue,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
        }
        answered.taken = batch
            .outcomes
            .iter()
            .map(|o| o.as_ref().err().map(|(_, message)| message.clone()))
            .collect();
        Ok(Some(batch))
    }
}

/// Makes a queue for `flux_decide_batch_queued` and writes it to `*out`.
/// Fails with `FLUX_RESULT_STORAGE` when the system gives no descriptors.
#[no_mangle]
pub extern "C" fn flux_completions_new(out: *mut *mut flux_completions) -> flux_result {
    ffi_panic_boundary! {
        let out = try_out!(out);
        match Completions::new() {
            Ok(queue) => {
                *out = arc_into_handle(Arc::new(queue));
                flux_result::Ok
            }
            Err(e) => fail(flux_result::Storage, format!("cannot make a completion queue: {e}")),
        }
    }
}

/// The descriptor that is readable while `queue` holds answered batches
/// (-1 for NULL). Watch it for reading, never read it: taking the last
/// batch with `flux_completions_pop` empties it. It stays open until the
/// queue is freed.
#[no_mangle]
pub extern "C" fn flux_completions_fd(queue: *const flux_completions) -> c_int {
    ffi_panic_boundary! {
        // SAFETY: NULL or a live handle, per the contract.
        match unsafe { crate::ffi::handle_ref(queue) } {
            Some(queue) => queue.readable.as_raw_fd(),
            None => -1,
        }
    }
}

/// Takes the oldest batch answered into `queue`: writes the token it was
/// queued with to `*token`, its size to `*n`, and for each request `i` its
/// result to `results[i]` and, where that is `FLUX_RESULT_OK`, its decision
/// to `decisions[i]`. When no batch is waiting, writes 0 to both `*token`
/// and `*n` and returns `FLUX_RESULT_OK`. Until the next call,
/// `flux_completions_error` gives the message of each request that failed.
///
/// `decisions` and `results` hold `cap` entries each; a batch bigger than
/// `cap` stays queued and `FLUX_RESULT_BUFFER_TOO_SMALL` is returned with
/// its size in `*n`. Call it until `*token` is 0: the descriptor stays
/// readable while batches wait.
#[no_mangle]
pub extern "C" fn flux_completions_pop(
    queue: *const flux_completions,
    token: *mut u64,
    decisions: *mut flux_decision,
    results: *mut flux_result,
    cap: usize,
    n: *mut usize,
) -> flux_result {
    ffi_panic_boundary! {
        let queue = try_ref_from_ptr!(queue);
        let token = try_out!(token);
        let n = try_out!(n);
        if let Err(code) = queue.check_process() {
            return code;
        }
        let decisions = crate::ffi::try_slice_mut!(decisions, cap);
        let results = crate::ffi::try_slice_mut!(results, cap);
        match queue.pop(cap) {
            Err(size) => {
                *n = size;
                return fail(
                    flux_result::BufferTooSmall,
                    format!("the next answered batch has {size} requests; the arrays hold {cap}"),
                );
            }
            Ok(None) => {
                *token = 0;
                *n = 0;
            }
            Ok(Some(batch)) => {
                *token = batch.token;
                *n = batch.outcomes.len();
                for (i, outcome) in batch.outcomes.into_iter().enumerate() {
                    match outcome {
                        Ok(decision) => {
                            decisions[i] = decision;
                            results[i] = flux_result::Ok;
                        }
                        Err((code, _)) => results[i] = code,
                    }
                }
            }
        }
        flux_result::Ok
    }
}

/// Copies the message of request `index` of the batch the last
/// `flux_completions_pop` took (the message that request alone would have
/// left for `flux_last_error`) into `buf` of `len` bytes, NUL-terminated and
/// truncated at a character boundary, and returns its full length. 0 (and
/// nothing copied) for a request that succeeded or an `index` beyond the batch.
#[no_mangle]
pub extern "C" fn flux_completions_error(
    queue: *const flux_completions,
    index: usize,
    buf: *mut c_char,
    len: usize,
) -> usize {
    ffi_panic_boundary! {
        // SAFETY: NULL or a live handle, per the contract.
        let Some(queue) = (unsafe { crate::ffi::handle_ref(queue) }) else {
            return 0;
        };
        let answered = queue.lock();
        match answered.taken.get(index) {
            Some(Some(message)) => copy_message(message, buf, len),
            _ => 0,
        }
    }
}

/// Releases a queue made by `flux_completions_new` (NULL is ignored). Its
/// descriptor is closed once no batch being decided refers to it.
#[no_mangle]
pub extern "C" fn flux_completions_free(queue: *mut flux_completions) {
    ffi_panic_boundary! {
        // SAFETY: NULL or made by flux_completions_new, per the contract.
        unsafe { free_arc_handle(queue) }
    }
}
