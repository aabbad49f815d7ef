//! Decisions that return at once and complete through a callback, from a
//! thread owned by the store, so an event loop never waits on Redis.
//!
//! Each store starts its thread at its first async request. The thread takes
//! every request queued at that moment, from any number of callers, and
//! decides them together (one pipeline per Redis store), then writes the
//! outputs and calls each callback exactly once.
//!
//! Each process has its own thread: a forked child starts one at its first
//! async request and leaves its parent's (and what was queued to it) alone.
//! A host about to exit calls `flux_async_shutdown`, after which no output
//! is written and no callback called: an interpreter that is finalizing
//! must not be called into.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, LazyLock, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use flux_core::fork::PerProcess;
use flux_core::Decision;
use flux_core::{apply_batch, BatchRequest, Limiter, LimiterError, Op};

use crate::completions::{Batch, Completions};
use crate::decision::flux_decision;
use crate::error::{code_of, fail, flux_result, with_batch_errors};
use crate::ffi::{ffi_panic_boundary, panic_message};

/// Called once when a `flux_decide_batch_async` has filled its arrays.
/// While it runs, `flux_batch_error` gives the message of each request
/// that failed.
pub type flux_batch_callback = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// Called once with the outcome of a `flux_limiter_decide_async`.
///
/// `decision` is non-NULL only when `result` is `FLUX_RESULT_OK`; `message`
/// is NULL on `FLUX_RESULT_OK`, else the error's text. Both point at memory
/// valid only during the call: copy what you keep.
pub type flux_decide_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        result: flux_result,
        decision: *const flux_decision,
        message: *const c_char,
    ),
>;

/// Most requests decided in one round, so one huge queue does not become one
/// huge pipeline.
const MAX_ROUND: usize = 4096;

/// A caller's pointer, carried to the store's thread. The caller promises it
/// stays valid until its callback.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: the pointee is only touched by the store's thread, before the callback.
unsafe impl<T> Send for SendPtr<T> {}

/// One request, owned: the limiter is kept alive, the endpoint and key copied.
pub(crate) type Owned = Result<OwnedRequest, (flux_result, String)>;

pub(crate) struct OwnedRequest {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) endpoint: Option<Box<str>>,
    pub(crate) key: Vec<u8>,
    pub(crate) cost: u64,
}

pub(crate) enum Reply {
    One {
        callback:
            unsafe extern "C" fn(*mut c_void, flux_result, *const flux_decision, *const c_char),
        user_data: SendPtr<c_void>,
    },
    Batch {
        callback: unsafe extern "C" fn(*mut c_void),
        user_data: SendPtr<c_void>,
        decisions: SendPtr<flux_decision>,
        results: SendPtr<flux_result>,
    },
    /// Into a completion queue, under the caller's token.
    Queued { queue: Arc<Completions>, token: u64 },
}

pub(crate) struct Job {
    pub(crate) requests: Vec<Owned>,
    pub(crate) reply: Reply,
}

/// The store's async thread, started at its first request and joined when
/// the store goes (after it has answered everything queued).
#[derive(Default)]
pub(crate) struct Worker {
    running: Mutex<Option<Running>>,
}

struct Running {
    sender: Sender<Job>,
    thread: JoinHandle<()>,
    /// Tells this worker's thread from others (see [`SERVING`]).
    id: u64,
}

thread_local! {
    /// The id of the worker whose thread this is; 0 on every other thread.
    /// (Not `thread::current()`: on a thread made by C, that allocates a
    /// handle that is never freed.)
    static SERVING: Cell<u64> = const { Cell::new(0) };
}

impl Worker {
    fn submit(&self, job: Job) -> Result<(), (flux_result, String)> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_none() {
            static NEXT_ID: AtomicU64 = AtomicU64::new(1);
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let (sender, receiver) = mpsc::channel();
            let thread = thread::Builder::new()
                .name("flux-async".to_owned())
                .spawn(move || {
                    SERVING.with(|serving| serving.set(id));
                    run_behind_callers();
                    serve(receiver)
                })
                .map_err(|e| {
                    let message = format!("cannot start the thread for async decisions: {e}");
                    (flux_result::Storage, message)
                })?;
            *running = Some(Running { sender, thread, id });
        }
        let running = running.as_ref().expect("started above");
        running.sender.send(job).map_err(|_| {
            let message = "the thread for async decisions has stopped".to_owned();
            (flux_result::Storage, message)
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(Running { sender, thread, id }) = running.take() {
            // Closing the channel lets the thread finish what is queued, then stop.
            drop(sender);
            // The last reference can go inside a callback, on the thread itself;
            // it then stops on its own as soon as the callback returns.
            if SERVING.with(Cell::get) != id {
                let _ = thread.join();
            }
        }
    }
}

/// Lets the thread that queues the work run on when this one wakes (Linux:
/// `SCHED_BATCH`, which takes from a woken thread its claim to preempt the
/// one running, and nothing of its share of the CPU). This thread wakes for
/// every batch and every reply; on a busy CPU, preempting the event loop
/// that queues the batches each time cost the loop and this thread twice
/// the context switches and CPU, for batches no sooner answered. Failing
/// leaves the thread as it was.
fn run_behind_callers() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is valid during the call; pid 0 is the calling thread.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

fn serve(receiver: Receiver<Job>) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        let mut queued = jobs[0].requests.len();
        while queued < MAX_ROUND {
            match receiver.try_recv() {
                Ok(job) => {
                    queued += job.requests.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        answer(jobs);
    }
}

/// Decides every request of `jobs` in one batch, then replies to each job.
fn answer(jobs: Vec<Job>) {
    let decided = catch_unwind(AssertUnwindSafe(|| {
        let batch: Vec<BatchRequest<'_>> = jobs
            .iter()
            .flat_map(|job| job.requests.iter())
            .filter_map(|r| r.as_ref().ok())
            .map(|r| BatchRequest {
                limiter: &r.limiter,
                endpoint: r.endpoint.as_deref(),
                identity: &r.key,
                cost: r.cost,
                op: Op::Decide,
            })
            .collect();
        apply_batch(&batch)
    }));
    let mut answers = match decided {
        Ok(answers) => answers.into_iter(),
        Err(payload) => {
            let message = panic_message(&*payload);
            for job in jobs {
                let outcomes = job
                    .requests
                    .iter()
                    .map(|_| Err((flux_result::Panic, message.clone())));
                reply(job.reply, outcomes.collect());
            }
            return;
        }
    };
    for job in jobs {
        let outcomes = job
            .requests
            .into_iter()
            .map(|request| match request {
                Err(invalid) => Err(invalid),
                Ok(_) => match answers.next() {
                    Some(Ok(decision)) => Ok(decision),
                    Some(Err(e)) => Err(error_parts(&e)),
                    None => Err((flux_result::Panic, "a decision went missing".to_owned())),
                },
            })
            .collect();
        reply(job.reply, outcomes);
    }
}

fn error_parts(error: &LimiterError) -> (flux_result, String) {
    (code_of(error), error.to_string())
}

/// Whether callers may still be called back: closed for good by
/// `flux_async_shutdown`, which waits for the callbacks already running.
/// Each process has its own (a callback running in the parent when it
/// forked runs on in the parent only).
struct Gate {
    state: Mutex<GateState>,
    idle: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    /// Replies being written and called back right now.
    running: usize,
}

thread_local! {
    /// Whether this thread is inside a reply (so a shutdown called from a
    /// callback does not wait for itself).
    static REPLYING: Cell<bool> = const { Cell::new(false) };
}

fn gate() -> &'static Gate {
    static GATE: LazyLock<PerProcess<Gate>> = LazyLock::new(|| PerProcess::new(Gate::new()));
    GATE.get_or_init(Gate::new)
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new(GateState::default()),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Runs `reply` unless the gate is closed.
    fn pass(&self, reply: impl FnOnce()) {
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.running += 1;
        }
        REPLYING.with(|r| r.set(true));
        // Counted down even if the callback unwinds.
        struct Done<'a>(&'a Gate);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                REPLYING.with(|r| r.set(false));
                let mut state = self.0.lock();
                state.running -= 1;
                if state.running == 0 {
                    self.0.idle.notify_all();
                }
            }
        }
        let _done = Done(self);
        reply();
    }

    /// Closes the gate, then waits up to `timeout` for the replies running
    /// on other threads; true when none is left.
    fn close(&self, timeout: Duration) -> bool {
        let own = usize::from(REPLYING.with(Cell::get));
        let mut state = self.lock();
        state.closed = true;
        let (state, _) = self
            .idle
            .wait_timeout_while(state, timeout, |s| s.running > own)
            .unwrap_or_else(PoisonError::into_inner);
        state.running <= own
    }
}

/// Writes a job's outputs and calls its callback, exactly once, unless
/// `flux_async_shutdown` was called: then neither.
fn reply(reply: Reply, outcomes: Vec<Result<Decision, (flux_result, String)>>) {
    gate().pass(|| write_and_call(reply, outcomes));
}

fn write_and_call(reply: Reply, outcomes: Vec<Result<Decision, (flux_result, String)>>) {
    match reply {
        Reply::One {
            callback,
            user_data,
        } => {
            let outcome = outcomes.into_iter().next().unwrap_or(Err((
                flux_result::Panic,
                "a decision went missing".to_owned(),
            )));
            match outcome {
                Ok(decision) => {
                    let decision = flux_decision::from(decision);
                    // SAFETY: a C function pointer given for this; user_data is the caller's.
                    unsafe { callback(user_data.0, flux_result::Ok, &decision, std::ptr::null()) }
                }
                Err((code, message)) => {
                    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
                    // SAFETY: as above; `message` outlives the call.
                    unsafe { callback(user_data.0, code, std::ptr::null(), message.as_ptr()) }
                }
            }
        }
        Reply::Batch {
            callback,
            user_data,
            decisions,
            results,
        } => {
            let mut messages = Vec::with_capacity(outcomes.len());
            for (i, outcome) in outcomes.into_iter().enumerate() {
                // SAFETY: the caller keeps both arrays (one slot per request) valid
                // until the callback, which comes after this.
                unsafe {
                    match outcome {
                        Ok(decision) => {
                            *decisions.0.add(i) = decision.into();
                            *results.0.add(i) = flux_result::Ok;
                            messages.push(None);
                        }
                        Err((code, message)) => {
                            *results.0.add(i) = code;
                            messages.push(Some(message));
                        }
                    }
                }
            }
            // SAFETY: a C function pointer given for this; user_data is the caller's.
            with_batch_errors(messages, || unsafe { callback(user_data.0) })
        }
        Reply::Queued { queue, token } => {
            let outcomes = outcomes
                .into_iter()
                .map(|outcome| outcome.map(flux_decision::from))
                .collect();
            queue.push(Batch { token, outcomes });
        }
    }
}

/// Sends `job` to `worker` (the thread of the store its requests name), or
/// answers it here when no request names one.
pub(crate) fn dispatch(worker: Option<&Worker>, job: Job) -> flux_result {
    if gate().closed() {
        return fail(
            flux_result::ShutDown,
            "flux_async_shutdown was called: async decisions are no longer taken",
        );
    }
    match worker {
        Some(worker) => match worker.submit(job) {
            Ok(()) => flux_result::Ok,
            Err((code, message)) => fail(code, message),
        },
        None => {
            answer(vec![job]);
            flux_result::Ok
        }
    }
}

/// Stops every async callback of the process, for a host about to exit
/// (Python calls it from `atexit`, before the interpreter finalizes).
///
/// From the moment it is called, no `_async` call writes its outputs or
/// calls its callback any more, and new `_async` calls return
/// `FLUX_RESULT_SHUT_DOWN`; requests already queued are still decided (so a
/// store freed afterwards still joins its thread) but not answered. It then
/// waits up to `timeout_ms` for the callbacks that other threads are running
/// right now, and returns true when none is left (false when one still runs
/// after `timeout_ms`). Called from inside a callback, it does not wait for
/// that callback. Synchronous calls are not affected. It cannot be undone.
#[no_mangle]
pub extern "C" fn flux_async_shutdown(timeout_ms: u64) -> bool {
    ffi_panic_boundary! {
        gate().close(Duration::from_millis(timeout_ms))
    }
}
