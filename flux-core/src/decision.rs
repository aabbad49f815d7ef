//! The answer to one call.

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Source {
    /// The store applied the policy.
    #[default]
    Storage = 0,
    /// The store could not be reached and `fail_silently` admitted the call.
    FailOpen = 1,
    /// Answered from a process-local cache without asking the store.
    LocalCache = 2,
    /// A shadow limit would have refused the call; it was admitted and
    /// not charged.
    Shadow = 3,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Storage,
        Source::FailOpen,
        Source::LocalCache,
        Source::Shadow,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Source::Storage => "storage",
            Source::FailOpen => "fail_open",
            Source::LocalCache => "local_cache",
            Source::Shadow => "shadow",
        }
    }
}

/// Whether a call is admitted, and what the caller should be told.
///
/// Durations are integer microseconds, exact; the `*_secs` accessors give
/// seconds for headers and foreign callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decision {
    pub allowed: bool,
    /// The most calls of cost 1 the limit can hold at once.
    pub limit: u64,
    /// Calls of cost 1 that would still be admitted now.
    pub remaining: u64,
    /// Until the key is back to full (nothing used).
    pub reset_after_us: u64,
    /// Until this call would be admitted; 0 when allowed.
    pub retry_after_us: u64,
    /// How long an admitted `leaky_bucket` call must wait before it runs.
    pub delay_us: u64,
    pub source: Source,
    /// Which of the limit's quotas this reports (0 for a limit of one): the
    /// one closest to refusing, or the one that refused.
    pub quota_index: usize,
}

impl Decision {
    /// An admitted call that no store decided on (Redis unreachable, failing open).
    pub fn fail_open(limit: u64) -> Self {
        Decision {
            allowed: true,
            limit,
            remaining: limit,
            source: Source::FailOpen,
            ..Decision::default()
        }
    }

    pub fn reset_after_secs(&self) -> f64 {
        self.reset_after_us as f64 / 1e6
    }

    pub fn retry_after_secs(&self) -> f64 {
        self.retry_after_us as f64 / 1e6
    }

    pub fn delay_secs(&self) -> f64 {
        self.delay_us as f64 / 1e6
    }
}
