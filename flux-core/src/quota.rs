//! What a limit allows: the policy and its numbers, validated once.
//!
//! All arithmetic is exact. Time is integer microseconds; for the bucket
//! policies an amount of "fill" is measured in *scaled units* chosen so that
//! draining is an integer per microsecond:
//!
//! * `g = gcd(requests, period_us)`
//! * one call of cost 1 weighs `unit = period_us / g` scaled units,
//! * the bucket drains `rate = requests / g` scaled units per microsecond,
//! * so one call drains in `unit / rate = period_us / requests` microseconds,
//!   the emission interval `E`, with no rounding even when `E` is fractional.
//!
//! The Redis scripts run the same integer math in Lua, whose numbers are
//! doubles: every quantity is kept below 2^53 so they stay exact there too,
//! and a quota whose numbers would leave that range is refused here.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Integers at or below this are exact in a double (Lua's only number type).
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// The five admission policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Generic Cell Rate Algorithm: a burst of `burst`, then one call per
    /// emission interval; stores one theoretical arrival time per key.
    #[default]
    Gcra,
    /// Up to `burst` tokens, refilled continuously at `requests / period`.
    TokenBucket,
    /// A bucket of `burst` draining at `requests / period`; with `max_wait`
    /// it shapes traffic, admitting a call late instead of refusing it.
    LeakyBucket,
    /// `requests` per window of `period` that opens at the key's first call.
    FixedWindow,
    /// `requests` per any window of `period`, estimated from two counters.
    SlidingWindow,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::Gcra,
        Policy::TokenBucket,
        Policy::LeakyBucket,
        Policy::FixedWindow,
        Policy::SlidingWindow,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Policy::Gcra => "gcra",
            Policy::TokenBucket => "token_bucket",
            Policy::LeakyBucket => "leaky_bucket",
            Policy::FixedWindow => "fixed_window",
            Policy::SlidingWindow => "sliding_window",
        }
    }

    /// The names accepted by [`Policy::from_str`], for error messages.
    pub fn allowed_names() -> String {
        Policy::ALL
            .iter()
            .map(|p| format!("\"{}\"", p.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Bucket policies hold a continuous fill level; window policies count calls.
    pub const fn is_bucket(self) -> bool {
        matches!(
            self,
            Policy::Gcra | Policy::TokenBucket | Policy::LeakyBucket
        )
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = QuotaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| QuotaError::UnknownPolicy(s.to_owned()))
    }
}

/// A quota's parameters as a user writes them, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaSpec {
    pub policy: Policy,
    /// Calls admitted per `period`; at least 1.
    pub requests: u64,
    /// Seconds; fractions allowed; more than zero.
    pub period: f64,
    /// Largest burst, in cost units; defaults to `requests`. Bucket policies only.
    pub burst: Option<u64>,
    /// Seconds a `leaky_bucket` call may be delayed instead of refused; 0 refuses.
    pub max_wait: f64,
}

impl QuotaSpec {
    pub fn new(policy: Policy, requests: u64, period: f64) -> Self {
        Self {
            policy,
            requests,
            period,
            burst: None,
            max_wait: 0.0,
        }
    }

    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    pub fn max_wait(mut self, seconds: f64) -> Self {
        self.max_wait = seconds;
        self
    }

    pub fn build(&self) -> Result<Quota, QuotaError> {
        Quota::new(self)
    }
}

/// A validated quota with its derived constants. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    policy: Policy,
    requests: u64,
    period_us: u64,
    burst: u64,
    max_wait_us: u64,
    /// Scaled units one call of cost 1 weighs (`period_us / gcd`).
    unit: u64,
    /// Scaled units drained per microsecond (`requests / gcd`).
    rate: u64,
}

impl Quota {
    pub fn new(spec: &QuotaSpec) -> Result<Self, QuotaError> {
        let requests = spec.requests;
        if requests == 0 {
            return Err(QuotaError::Requests);
        }
        let period_us = seconds_to_us(spec.period).ok_or(QuotaError::Period(spec.period))?;
        if period_us == 0 {
            return Err(QuotaError::Period(spec.period));
        }
        let burst = match spec.burst {
            None => requests,
            Some(0) => return Err(QuotaError::Burst),
            Some(b) if !spec.policy.is_bucket() && b != requests => {
                return Err(QuotaError::BurstOnWindow {
                    policy: spec.policy,
                    burst: b,
                    requests,
                })
            }
            Some(b) => b,
        };
        let max_wait_us = if spec.max_wait == 0.0 {
            0
        } else if spec.policy != Policy::LeakyBucket {
            return Err(QuotaError::MaxWaitPolicy(spec.policy));
        } else {
            seconds_to_us(spec.max_wait).ok_or(QuotaError::MaxWait(spec.max_wait))?
        };

        let g = gcd(requests, period_us);
        let quota = Quota {
            policy: spec.policy,
            requests,
            period_us,
            burst,
            max_wait_us,
            unit: period_us / g,
            rate: requests / g,
        };
        if quota
            .largest_quantity()
            .is_none_or(|q| q > MAX_EXACT as u128)
        {
            return Err(QuotaError::TooLarge {
                policy: spec.policy,
            });
        }
        Ok(quota)
    }

    /// The largest intermediate value the policy's math can produce.
    fn largest_quantity(&self) -> Option<u128> {
        let wide = |x: u64| x as u128;
        if self.policy.is_bucket() {
            // level + cost, each at most burst units, plus what max_wait lets queue.
            let capacity = wide(self.burst) * wide(self.unit);
            Some(2 * capacity + wide(self.max_wait_us) * wide(self.rate) + wide(self.rate))
        } else {
            // the sliding estimate: prev * period + (curr + cost) * period, each count <= requests.
            Some(3 * wide(self.requests) * wide(self.period_us))
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }
    pub fn requests(&self) -> u64 {
        self.requests
    }
    pub fn period_us(&self) -> u64 {
        self.period_us
    }
    pub fn burst(&self) -> u64 {
        self.burst
    }
    pub fn max_wait_us(&self) -> u64 {
        self.max_wait_us
    }
    /// Scaled units one call of cost 1 weighs (bucket policies).
    pub fn unit(&self) -> u64 {
        self.unit
    }
    /// Scaled units drained per microsecond (bucket policies).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The most calls of cost 1 this quota can ever hold at once: `burst` for
    /// bucket policies, `requests` for window policies. Reported as `limit`.
    pub fn capacity(&self) -> u64 {
        if self.policy.is_bucket() {
            self.burst
        } else {
            self.requests
        }
    }

    /// What a decision reports as `limit`, the calls of cost 1 that `remaining`
    /// counts down from: `requests` for window policies; for bucket policies
    /// the burst plus the queue a shaping `leaky_bucket` admits into (what
    /// drains within `max_wait`), so a client never sees remaining > limit.
    pub fn limit(&self) -> u64 {
        if self.policy.is_bucket() {
            (self.burst * self.unit + self.max_wait_us * self.rate) / self.unit
        } else {
            self.requests
        }
    }

    /// A cost is valid when it is at least 1 and some moment could admit it.
    pub fn check_cost(&self, cost: u64) -> Result<(), QuotaError> {
        if cost == 0 {
            return Err(QuotaError::CostZero);
        }
        if cost > self.capacity() {
            return Err(QuotaError::CostTooHigh {
                cost,
                max: self.capacity(),
            });
        }
        Ok(())
    }
}

/// Why a quota or a cost was refused. Each message names the parameter and
/// what is allowed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuotaError {
    #[error("requests must be a whole number of at least 1, got 0")]
    Requests,
    #[error("period must be a number of seconds greater than 0 (at least 0.000001), got {0}")]
    Period(f64),
    #[error("burst must be at least 1, got 0")]
    Burst,
    #[error(
        "burst applies to gcra, token_bucket and leaky_bucket; {policy} admits `requests` \
         ({requests}) per window, so burst must be left out (got {burst})"
    )]
    BurstOnWindow {
        policy: Policy,
        burst: u64,
        requests: u64,
    },
    #[error("max_wait must be a number of seconds of at least 0, got {0}")]
    MaxWait(f64),
    #[error("max_wait applies to leaky_bucket only; {0} cannot delay a call")]
    MaxWaitPolicy(Policy),
    #[error("policy must be one of {allowed}, got \"{0}\"", allowed = Policy::allowed_names())]
    UnknownPolicy(String),
    #[error(
        "this {policy} quota is too large to decide exactly: burst x period (and max_wait) must \
         stay below 2^53 scaled units; lower burst, period or max_wait"
    )]
    TooLarge { policy: Policy },
    #[error(
        "rate replaces requests and period: give either rate (\"10/second\") or requests and \
         period, not both"
    )]
    RateAndRequests,
    #[error("rate must give 1 to {max} rates, got {0}", max = crate::MAX_QUOTAS)]
    RateCount(usize),
    #[error(
        "requests and period replace the rate of a limit of one rate, and this one has {0}: \
         give rate (\"10/second;1000/day\") instead"
    )]
    RequestsOnSeveralRates(usize),
    #[error(
        "burst applies to a limit of one rate, and this one has {0}: leave burst out (each rate's \
         burst is its requests)"
    )]
    BurstOnSeveralRates(usize),
    #[error("cost must be at least 1, got 0")]
    CostZero,
    #[error("cost {cost} can never be admitted: the limit holds at most {max} at once")]
    CostTooHigh { cost: u64, max: u64 },
}

pub(crate) fn seconds_to_us(seconds: f64) -> Option<u64> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    let us = (seconds * 1e6).round();
    (us <= MAX_EXACT as f64).then_some(us as u64)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_emission_interval_is_scaled_exactly() {
        let q = QuotaSpec::new(Policy::Gcra, 3, 1.0).build().unwrap();
        assert_eq!((q.unit(), q.rate()), (1_000_000, 3));
        let q = QuotaSpec::new(Policy::Gcra, 100, 60.0).build().unwrap();
        assert_eq!((q.unit(), q.rate()), (600_000, 1));
    }

    #[test]
    fn the_largest_quantity_is_what_the_math_can_reach() {
        // A shaping leaky bucket of 3 per second, burst 4, max_wait 2 s:
        // unit 1_000_000, rate 3. A level and a call of the whole burst
        // (2 * 4 units), the queue max_wait admits (2 s drained at 3 per µs)
        // and one µs more of drain.
        let q = QuotaSpec::new(Policy::LeakyBucket, 3, 1.0)
            .burst(4)
            .max_wait(2.0)
            .build()
            .unwrap();
        assert_eq!(
            q.largest_quantity(),
            Some(2 * 4 * 1_000_000 + 2_000_000 * 3 + 3)
        );
        // A window's estimate: prev, curr and cost, each up to requests, times period.
        let q = QuotaSpec::new(Policy::SlidingWindow, 7, 2.0)
            .build()
            .unwrap();
        assert_eq!(q.largest_quantity(), Some(3 * 7 * 2_000_000));
    }

    #[test]
    fn counts_stop_below_two_to_the_53rd() {
        assert_eq!(MAX_EXACT, 9_007_199_254_740_991);
        assert!(crate::parse_rates("9007199254740991/second").is_ok());
        let err = crate::parse_rates("9007199254740992/second").unwrap_err();
        assert!(err.to_string().contains("is too large"), "{err}");
    }

    #[test]
    fn a_shaping_bucket_reports_its_queue_in_its_limit() {
        // 3 per second, burst 3, and 1 s of calls that may wait: 3 + 3.
        let q = QuotaSpec::new(Policy::LeakyBucket, 3, 1.0)
            .max_wait(1.0)
            .build()
            .unwrap();
        assert_eq!((q.unit(), q.rate(), q.limit()), (1_000_000, 3, 6));
    }

    #[test]
    fn negative_seconds_are_refused() {
        let e = QuotaSpec::new(Policy::LeakyBucket, 1, 1.0)
            .max_wait(-1.0)
            .build()
            .unwrap_err();
        assert_eq!(e, QuotaError::MaxWait(-1.0));
        assert_eq!(
            e.to_string(),
            "max_wait must be a number of seconds of at least 0, got -1"
        );
        for period in [-1.0, f64::NAN, f64::INFINITY] {
            let e = QuotaSpec::new(Policy::Gcra, 1, period).build().unwrap_err();
            assert!(matches!(e, QuotaError::Period(_)), "{period}: {e}");
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = QuotaSpec::new(Policy::Gcra, 0, 1.0).build().unwrap_err();
        assert!(e.to_string().starts_with("requests"));
        let e = QuotaSpec::new(Policy::Gcra, 1, -1.0).build().unwrap_err();
        assert!(e.to_string().starts_with("period"));
        let e = QuotaSpec::new(Policy::Gcra, 1, 1.0)
            .burst(0)
            .build()
            .unwrap_err();
        assert!(e.to_string().starts_with("burst"));
        let e = "bogus".parse::<Policy>().unwrap_err();
        assert!(e.to_string().contains("\"sliding_window\""), "{e}");
    }
}
