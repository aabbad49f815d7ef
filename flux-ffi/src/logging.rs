//! Flux's log records, handed to the host: the library logs through the
//! `log` facade (target `flux`), and this is the one logger of the C
//! library, which calls the host's callback.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::error::{fail, flux_result};
use crate::ffi::ffi_panic_boundary;

/// How much a log record matters (the `log` crate's levels).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flux_log_level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Receives one log record: its level and its message, a NUL-terminated
/// UTF-8 string valid only during the call (copy what you keep).
pub type flux_log_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: flux_log_level, message: *const c_char),
>;

/// Sets the function that receives Flux's log records (warnings such as
/// "Redis failed, calls are admitted without a decision", each kind at most
/// once a minute per store), replacing any set before; NULL stops them.
/// Records at `FLUX_LOG_LEVEL_INFO` and above are passed; none are written
/// anywhere else.
///
/// Threading: `callback` is called on whatever thread logs: a thread
/// calling `flux_limiter_decide`, or a thread of Flux's own (a store's async
/// worker, its analytics flusher, the metrics server), possibly on several
/// at once, so it must be thread-safe. `user_data` is passed as given.
///
/// When this returns, the callback set before is no longer running on any
/// thread and will not be called again: a host can unset it before it
/// tears down what the callback uses (flux-py does so at interpreter exit).
/// Hence the calling thread must not hold anything the callback waits for
/// (in Python, call it with the GIL released, as `ctypes.CDLL` does), and
/// calling it from inside the callback fails with
/// `FLUX_RESULT_INVALID_ARGUMENT`. Records logged from inside the callback
/// (it called Flux, which logged) are dropped rather than passed back in.
///
/// In a Rust program that links flux-ffi and installed a `log` logger of its
/// own, records go to that logger and the callback is never called.
#[no_mangle]
pub extern "C" fn flux_set_log_callback(
    callback: flux_log_callback,
    user_data: *mut c_void,
) -> flux_result {
    ffi_panic_boundary! {
        if IN_CALLBACK.get() {
            return fail(
                flux_result::InvalidArgument,
                "flux_set_log_callback cannot be called from inside the log callback",
            );
        }
        // Fails only when the program installed a logger of its own,
        // whose level is then left alone.
        let ours = *INSTALLED.get_or_init(|| log::set_logger(&HostLog).is_ok());
        let mut host = lock();
        host.callback = callback.map(|callback| Callback { callback, user_data: user_data.into() });
        if ours {
            log::set_max_level(if host.callback.is_some() {
                log::LevelFilter::Info
            } else {
                log::LevelFilter::Off
            });
        }
        while host.running > 0 {
            host = IDLE.wait(host).unwrap_or_else(PoisonError::into_inner);
        }
        flux_result::Ok
    }
}

/// Whether `HostLog` is the process's logger.
static INSTALLED: OnceLock<bool> = OnceLock::new();
static HOST: Mutex<Host> = Mutex::new(Host {
    callback: None,
    running: 0,
    pid: 0,
});
/// Signalled when the last running call of the callback returns.
static IDLE: Condvar = Condvar::new();

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

struct Host {
    callback: Option<Callback>,
    /// Calls of the callback in progress, on any thread.
    running: usize,
    /// The process `running` was counted in: a child made by `fork` starts
    /// with the count of threads it does not have.
    pid: u32,
}

#[derive(Clone, Copy)]
struct Callback {
    callback: unsafe extern "C" fn(*mut c_void, flux_log_level, *const c_char),
    user_data: UserData,
}

/// The host's pointer, handed back to it on any thread, as documented.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: Flux never dereferences it; the host promised it may be used from any thread.
unsafe impl Send for UserData {}

impl From<*mut c_void> for UserData {
    fn from(ptr: *mut c_void) -> Self {
        UserData(ptr)
    }
}

fn lock() -> MutexGuard<'static, Host> {
    let mut host = HOST.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if host.pid != pid {
        host.pid = pid;
        host.running = 0;
    }
    host
}

struct HostLog;

impl log::Log for HostLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info && metadata.target().starts_with("flux")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || IN_CALLBACK.get() {
            return;
        }
        let callback = {
            let mut host = lock();
            let Some(callback) = host.callback else {
                return;
            };
            host.running += 1;
            callback
        };
        // A NUL inside would cut the message short: show it instead.
        let text = record.args().to_string().replace('\0', "\\0");
        let message = CString::new(text).expect("NULs replaced");
        IN_CALLBACK.set(true);
        // SAFETY: a C function pointer given for this, with the host's user_data.
        unsafe {
            (callback.callback)(
                callback.user_data.0,
                level(record.level()),
                message.as_ptr(),
            )
        };
        IN_CALLBACK.set(false);
        let mut host = lock();
        host.running = host.running.saturating_sub(1);
        if host.running == 0 {
            IDLE.notify_all();
        }
    }

    fn flush(&self) {}
}

fn level(level: log::Level) -> flux_log_level {
    match level {
        log::Level::Error => flux_log_level::Error,
        log::Level::Warn => flux_log_level::Warn,
        log::Level::Info => flux_log_level::Info,
        log::Level::Debug => flux_log_level::Debug,
        log::Level::Trace => flux_log_level::Trace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SEEN: Mutex<Vec<(flux_log_level, String)>> = Mutex::new(Vec::new());

    /// Keeps the records this test logged (they start with "t:"), and counts calls.
    unsafe extern "C" fn record(
        user_data: *mut c_void,
        level: flux_log_level,
        message: *const c_char,
    ) {
        // SAFETY: the test passes a pointer to a static AtomicUsize.
        let calls = unsafe { &*user_data.cast::<AtomicUsize>() };
        calls.fetch_add(1, Ordering::SeqCst);
        // SAFETY: Flux passes a NUL-terminated string valid during the call.
        let text = unsafe { std::ffi::CStr::from_ptr(message) }
            .to_str()
            .unwrap();
        if let Some(text) = text.strip_prefix("t:") {
            SEEN.lock().unwrap().push((level, text.to_owned()));
        }
        // Logging from inside the callback is dropped, and setting it is refused.
        log::warn!(target: "flux", "from inside");
        assert_eq!(
            flux_set_log_callback(None, std::ptr::null_mut()),
            flux_result::InvalidArgument
        );
    }

    #[test]
    fn records_reach_the_callback_until_it_is_unset() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let data = &CALLS as *const AtomicUsize as *mut c_void;
        assert_eq!(flux_set_log_callback(Some(record), data), flux_result::Ok);

        log::warn!(target: "flux", "t:Redis at {} failed", "redis://h:1/0");
        log::info!(target: "flux_redis::store", "t:a nul \0 inside");
        log::debug!(target: "flux", "t:too fine to pass");
        log::warn!(target: "r2d2", "t:another crate's");
        std::thread::spawn(|| log::error!(target: "flux", "t:from another thread"))
            .join()
            .unwrap();
        assert_eq!(
            *SEEN.lock().unwrap(),
            [
                (
                    flux_log_level::Warn,
                    "Redis at redis://h:1/0 failed".to_owned()
                ),
                (flux_log_level::Info, "a nul \\0 inside".to_owned()),
                (flux_log_level::Error, "from another thread".to_owned()),
            ]
        );

        assert_eq!(
            flux_set_log_callback(None, std::ptr::null_mut()),
            flux_result::Ok
        );
        let calls = CALLS.load(Ordering::SeqCst);
        assert!(calls >= 3, "{calls}");
        log::warn!(target: "flux", "t:nobody listens");
        assert_eq!(CALLS.load(Ordering::SeqCst), calls);
    }
}
