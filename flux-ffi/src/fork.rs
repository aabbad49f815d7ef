//! Telling the library that the process forked, so that a child makes its
//! own connections and threads (see `flux_core::fork`).

use std::sync::Once;

/// Registers, once per process, a `pthread_atfork` child handler that
/// bumps the process generation in every child forked from now on. Called
/// by `flux_store_new`: a fork before the first store leaves nothing to
/// renew.
pub(crate) fn watch_forks() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        extern "C" fn in_child() {
            flux_core::fork::child_started();
        }
        // SAFETY: registers a handler that only bumps an atomic counter,
        // which is async-signal-safe as a child handler must be. It fails
        // only without memory (ENOMEM); stores then still work, but not
        // across fork.
        let _ = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}
