//! Where "now" comes from. Policies never read a clock; stores ask one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of the current time in integer microseconds since the Unix epoch.
///
/// The epoch matters: the Redis store takes its time from Redis `TIME`, and a
/// test that compares the two stores feeds both the same epoch values.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_us(&self) -> u64;
}

/// The wall clock. Rate limits span processes and machines, so they are
/// measured against the shared wall clock rather than a per-process monotonic one.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// Microseconds since the clock was made, never going back: for measuring
/// how long something lasts in this process (the local deny cache), where a
/// wall clock stepped back would stretch it.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// A clock that only moves when told to: for tests and doctests.
///
/// Clones share the same time, so a test can keep one handle and give another
/// to a store.
///
/// ```
/// use flux_core::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance_us(500);
/// assert_eq!(clock.now_us(), 1_500);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(now_us: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(now_us)),
        }
    }

    pub fn set_us(&self, now_us: u64) {
        self.now.store(now_us, Ordering::SeqCst);
    }

    pub fn advance_us(&self, by_us: u64) {
        self.now.fetch_add(by_us, Ordering::SeqCst);
    }

    pub fn advance_secs(&self, by_secs: f64) {
        self.advance_us((by_secs * 1e6).round() as u64);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
