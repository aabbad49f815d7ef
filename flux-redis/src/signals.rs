//! A host's signals wait while a call talks to a Redis Cluster.
//!
//! Every connection Flux makes has a receive timeout, and a socket read
//! with a timeout is not restarted after a signal handler has run, whatever
//! `SA_RESTART` says: it fails with `EINTR`. Hosts have handlers (Python's
//! own, a web server's `SIGCHLD` or `SIGWINCH`, a profiler's `SIGPROF`),
//! and the kernel gives a signal for the process to any thread that does
//! not block it, Flux's own threads included. Flux's own connections wait
//! on through `EINTR` (socket.rs), as they must for a stop, which no mask
//! holds off, so a call to one Redis (directly or through Sentinel) needs
//! no mask. The redis crate's cluster connection (slot maps, script loads)
//! takes `EINTR` for a reply that did not come and sends again only twice,
//! and each handler run mid-call costs a retry. So on a cluster the calling
//! thread blocks the asynchronous signals for the call: each is delivered
//! the moment the call ends, at most `timeout_ms` or so later. The signals
//! a fault raises (`SIGSEGV` and the like) and `SIGABRT` are never blocked.
#[cfg(unix)]
mod held {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};

    /// The signals of faults, which must reach their handler at once.
    const NEVER_HELD: [Signal; 7] = [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGTRAP,
        Signal::SIGSYS,
        Signal::SIGABRT,
    ];

    /// The calling thread's signals held until this is dropped.
    #[derive(Debug)]
    pub(crate) struct HeldSignals {
        /// The mask to restore; `None` if it could not be changed.
        before: Option<SigSet>,
    }

    impl HeldSignals {
        pub(crate) fn hold() -> Self {
            let mut held = SigSet::all();
            for signal in NEVER_HELD {
                held.remove(signal);
            }
            HeldSignals {
                before: held.thread_swap_mask(SigmaskHow::SIG_BLOCK).ok(),
            }
        }
    }

    impl Drop for HeldSignals {
        fn drop(&mut self) {
            if let Some(before) = self.before.take() {
                let _ = before.thread_set_mask();
            }
        }
    }
}

#[cfg(not(unix))]
mod held {
    /// No signals to hold.
    #[derive(Debug)]
    pub(crate) struct HeldSignals;

    impl HeldSignals {
        pub(crate) fn hold() -> Self {
            HeldSignals
        }
    }
}

pub(crate) use held::HeldSignals;
