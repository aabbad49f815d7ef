//! What a backend says about its store's health in the host's log, at most
//! once per [`WARNING_INTERVAL`] for each kind of trouble: a Redis that fails
//! every call must not write a line per call.
//!
//! Records go through the `log` facade under the target [`LOG_TARGET`]: a
//! Rust program sees them in whatever logger it installed, and the C ABI
//! hands them to the host's callback (`flux_set_log_callback`; flux-py
//! forwards them to the `flux` logger).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{Clock, StoreError};

/// The `log` target of every record Flux writes: a host's logger can tell
/// them apart by it (the C ABI passes only these to its callback).
pub const LOG_TARGET: &str = "flux";

/// The shortest time between two warnings of one kind from one store.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// A store's warnings, each kind held back for [`WARNING_INTERVAL`] after it
/// was given, and counted meanwhile.
#[derive(Debug)]
pub(crate) struct Warnings {
    clock: Arc<dyn Clock>,
    failed_open: Mutex<Throttle>,
    busy: Mutex<Throttle>,
}

impl Default for Warnings {
    fn default() -> Self {
        Warnings::with_clock(Arc::new(Monotonic(Instant::now())))
    }
}

impl Warnings {
    /// Warnings spaced by `clock` (a `ManualClock` in tests) instead of the
    /// process's monotonic clock.
    pub(crate) fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Warnings {
            clock,
            failed_open: Mutex::default(),
            busy: Mutex::default(),
        }
    }

    /// A call on the store at `place` was admitted without a decision because
    /// the store failed with `error`.
    pub(crate) fn failed_open(&self, place: &str, error: &StoreError) {
        if let Some(held) = self.failed_open.lock().pass(self.clock.now_us()) {
            log::warn!(
                target: LOG_TARGET,
                "{place} failed: {error}. Calls are admitted without a decision \
                 (fail_silently = true){}",
                held_back(held)
            );
        }
    }

    /// A call on the store at `place` found every pooled connection in use.
    pub(crate) fn busy(&self, place: &str, error: &StoreError) {
        if let Some(held) = self.busy.lock().pass(self.clock.now_us()) {
            log::warn!(target: LOG_TARGET, "{place}: {error}{}", held_back(held));
        }
    }
}

fn held_back(held: u64) -> String {
    let every = WARNING_INTERVAL.as_secs();
    match held {
        0 => format!(". Said at most once every {every} s."),
        n => format!("; {n} more since the last warning. Said at most once every {every} s."),
    }
}

/// When one kind of warning was last given, and how many were held back since.
#[derive(Debug, Default)]
struct Throttle {
    last_us: Option<u64>,
    held: u64,
}

impl Throttle {
    /// Whether to warn at `now_us`; if so, how many were held back before it.
    fn pass(&mut self, now_us: u64) -> Option<u64> {
        let interval_us = WARNING_INTERVAL.as_micros() as u64;
        match self.last_us {
            Some(last) if now_us.saturating_sub(last) < interval_us => {
                self.held += 1;
                None
            }
            _ => {
                self.last_us = Some(now_us);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// Microseconds since the store was made: never goes back, as the wall clock may.
#[derive(Debug)]
struct Monotonic(Instant);

impl Clock for Monotonic {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_then_the_count_of_those_held_back() {
        let interval = WARNING_INTERVAL.as_micros() as u64;
        let mut throttle = Throttle::default();
        assert_eq!(throttle.pass(5), Some(0));
        assert_eq!(throttle.pass(6), None);
        assert_eq!(throttle.pass(5 + interval - 1), None);
        assert_eq!(throttle.pass(5 + interval), Some(2));
        assert_eq!(throttle.pass(5 + interval + 1), None);
    }
}
