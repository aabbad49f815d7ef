//! A limit as a user writes it: a policy and one or more rates, with a
//! burst, a max_wait and shadow mode; and the one rule by which a limit
//! given in part (a `[rate_limits.NAME]` table over `[rate_limit]`, a
//! decorator's arguments over a named limit, a C caller's params) takes the
//! rest from another.

use crate::quota::seconds_to_us;
use crate::rate::Seconds;
use crate::{Policy, Quota, QuotaError, QuotaSpec, Rate, MAX_QUOTAS};

/// A limit with every part known. Each limit in a loaded configuration
/// builds its quotas ([`Limit::quotas`]); a limit built in code is checked
/// when a limiter is made from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub policy: Policy,
    /// One or more; a call is admitted only when every one admits it.
    pub rates: Vec<Rate>,
    /// Calls of cost 1 admitted at once (bucket policies, one rate); `None`
    /// means the rate's `requests`.
    pub burst: Option<u64>,
    /// Seconds a `leaky_bucket` call may be delayed instead of refused.
    pub max_wait: f64,
    /// Admit every call, charging only those the limit would admit, and say
    /// which it would have refused (`source` "shadow"): to try a limit on
    /// live traffic before enforcing it.
    pub shadow: bool,
}

impl Default for Limit {
    /// What `[rate_limit]` says when the file leaves it out: gcra, 100 per
    /// 60 seconds.
    fn default() -> Self {
        Limit {
            policy: Policy::Gcra,
            rates: vec![Rate::new(100, 60_000_000)],
            burst: None,
            max_wait: 0.0,
            shadow: false,
        }
    }
}

impl Limit {
    /// The first rate's calls per period: what a single-rate view of the
    /// limit (flux-limiter 0.1's `requests`, `X-RateLimit-Limit`) reports.
    pub fn requests(&self) -> u64 {
        self.rates[0].requests
    }

    /// The first rate's period, in seconds.
    pub fn period(&self) -> f64 {
        self.rates[0].period_secs()
    }

    /// The scope a limiter of this limit takes when it is given none:
    /// `head`, and when the limit was given in code (`in_code`), `@` and what
    /// sets it apart: its rates (`100/60s`, several joined by `;`), `+b` and
    /// the burst when it is not the requests, `+w` and the seconds a call may
    /// wait. So two limits written in code never share keys, and a limit
    /// taken from flux.toml by name keeps its keys when its numbers change.
    ///
    /// ```
    /// use flux_core::{Limit, Policy};
    /// let limit = Limit { burst: Some(20), ..Limit::default() };
    /// assert_eq!(limit.default_scope("login", true), "login@100/60s+b20");
    /// assert_eq!(limit.default_scope("login", false), "login");
    /// ```
    pub fn default_scope(&self, head: &str, in_code: bool) -> String {
        if !in_code {
            return head.to_owned();
        }
        let rates: Vec<String> = self.rates.iter().map(Rate::to_string).collect();
        let mut scope = format!("{head}@{}", rates.join(";"));
        if let Some(burst) = self.burst.filter(|&b| b != self.requests()) {
            scope.push_str(&format!("+b{burst}"));
        }
        if self.max_wait > 0.0 {
            let micros = (self.max_wait * 1e6).round() as u64;
            scope.push_str(&format!("+w{}", Seconds(micros)));
        }
        scope
    }

    /// The validated quotas, one per rate, in order.
    pub fn quotas(&self) -> Result<Vec<Quota>, QuotaError> {
        if self.rates.len() > 1 && self.burst.is_some() {
            return Err(QuotaError::BurstOnSeveralRates(self.rates.len()));
        }
        self.rates
            .iter()
            .map(|rate| {
                QuotaSpec {
                    policy: self.policy,
                    requests: rate.requests,
                    period: rate.period_secs(),
                    burst: self.burst,
                    max_wait: self.max_wait,
                }
                .build()
            })
            .collect()
    }
}

/// A limit given in part: each `Some` replaces what the limit under it says
/// ([`LimitSpec::over`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitSpec {
    pub policy: Option<Policy>,
    /// Replaces every rate: `"10/second;1000/day"`, parsed.
    pub rate: Option<Vec<Rate>>,
    /// Replaces the calls per period of a limit of one rate.
    pub requests: Option<u64>,
    /// Replaces the period (seconds) of a limit of one rate.
    pub period: Option<f64>,
    pub burst: Option<u64>,
    pub max_wait: Option<f64>,
    pub shadow: Option<bool>,
}

impl LimitSpec {
    /// Whether nothing is given: the limit under it applies as it is.
    pub fn is_empty(&self) -> bool {
        *self == LimitSpec::default()
    }

    /// `base` with these parts replaced: how every limit given in part takes
    /// the rest, in flux.toml, Python, C and Rust alike.
    ///
    /// - `rate` replaces every rate; `requests` and `period` replace those of
    ///   a limit of one rate (with `rate` they are a mistake).
    /// - `burst` belongs to the calls and policy it was written for: it is
    ///   kept only when neither the rate (or `requests`) nor the policy is
    ///   replaced; else it defaults to the new rate's `requests`.
    /// - `max_wait` is kept only while the policy is `leaky_bucket`, the only
    ///   one that can delay a call.
    /// - `shadow` is kept unless replaced.
    ///
    /// ```
    /// use flux_core::{Limit, LimitSpec, Policy, Rate};
    /// let base = Limit { burst: Some(20), ..Limit::default() };
    /// let longer = LimitSpec { period: Some(120.0), ..LimitSpec::default() };
    /// assert_eq!(longer.over(&base).unwrap().burst, Some(20));
    /// let more = LimitSpec { requests: Some(500), ..LimitSpec::default() };
    /// let limit = more.over(&base).unwrap();
    /// assert_eq!((limit.requests(), limit.period(), limit.burst), (500, 60.0, None));
    /// ```
    pub fn over(&self, base: &Limit) -> Result<Limit, QuotaError> {
        let policy = self.policy.unwrap_or(base.policy);
        let rates = match (&self.rate, self.requests, self.period) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(QuotaError::RateAndRequests)
            }
            (Some(rates), None, None) => {
                if rates.is_empty() || rates.len() > MAX_QUOTAS {
                    return Err(QuotaError::RateCount(rates.len()));
                }
                rates.clone()
            }
            (None, None, None) => base.rates.clone(),
            (None, requests, period) => {
                if base.rates.len() > 1 {
                    return Err(QuotaError::RequestsOnSeveralRates(base.rates.len()));
                }
                let requests = requests.unwrap_or(base.requests());
                if requests == 0 {
                    return Err(QuotaError::Requests);
                }
                let period_us = match period {
                    Some(seconds) => match seconds_to_us(seconds) {
                        Some(us) if us > 0 => us,
                        _ => return Err(QuotaError::Period(seconds)),
                    },
                    None => base.rates[0].period_us,
                };
                vec![Rate::new(requests, period_us)]
            }
        };
        let keeps_burst = self.rate.is_none() && self.requests.is_none() && self.policy.is_none();
        let inherited_wait = if policy == Policy::LeakyBucket {
            base.max_wait
        } else {
            0.0
        };
        Ok(Limit {
            policy,
            rates,
            burst: self.burst.or(base.burst.filter(|_| keeps_burst)),
            max_wait: self.max_wait.unwrap_or(inherited_wait),
            shadow: self.shadow.unwrap_or(base.shadow),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_rates;

    fn spec() -> LimitSpec {
        LimitSpec::default()
    }

    #[test]
    fn a_spec_is_empty_only_when_nothing_is_given() {
        assert!(spec().is_empty());
        let given = LimitSpec {
            shadow: Some(false),
            ..spec()
        };
        assert!(!given.is_empty(), "a part given as its default is given");
    }

    #[test]
    fn a_limit_in_code_is_scoped_by_what_sets_it_apart() {
        let plain = Limit::default();
        assert_eq!(plain.default_scope("login", false), "login");
        assert_eq!(plain.default_scope("login", true), "login@100/60s");
        let two = Limit {
            rates: parse_rates("10/second;1000/day").unwrap(),
            ..Limit::default()
        };
        assert_eq!(two.default_scope("api", true), "api@10/1s;1000/86400s");
        // A burst of the requests is the default, not a difference.
        let same = Limit {
            burst: Some(100),
            ..Limit::default()
        };
        assert_eq!(same.default_scope("x", true), "x@100/60s");
        let burst = Limit {
            burst: Some(20),
            ..Limit::default()
        };
        assert_eq!(burst.default_scope("x", true), "x@100/60s+b20");
        let wait = Limit {
            policy: Policy::LeakyBucket,
            max_wait: 2.5,
            ..Limit::default()
        };
        assert_eq!(wait.default_scope("x", true), "x@100/60s+w2.5");
    }

    #[test]
    fn nothing_given_is_the_base() {
        let base = Limit {
            policy: Policy::LeakyBucket,
            burst: Some(7),
            max_wait: 2.0,
            shadow: true,
            ..Limit::default()
        };
        assert_eq!(spec().over(&base).unwrap(), base);
    }

    #[test]
    fn burst_goes_with_its_rate_and_policy() {
        let base = Limit {
            burst: Some(20),
            ..Limit::default()
        };
        let policy = LimitSpec {
            policy: Some(Policy::TokenBucket),
            ..spec()
        };
        assert_eq!(policy.over(&base).unwrap().burst, None);
        let rate = LimitSpec {
            rate: Some(parse_rates("5/second").unwrap()),
            ..spec()
        };
        assert_eq!(rate.over(&base).unwrap().burst, None);
        let own = LimitSpec {
            requests: Some(9),
            burst: Some(3),
            ..spec()
        };
        assert_eq!(own.over(&base).unwrap().burst, Some(3));
    }

    #[test]
    fn max_wait_stays_only_with_leaky_bucket() {
        let base = Limit {
            policy: Policy::LeakyBucket,
            max_wait: 3.0,
            ..Limit::default()
        };
        let gcra = LimitSpec {
            policy: Some(Policy::Gcra),
            ..spec()
        };
        assert_eq!(gcra.over(&base).unwrap().max_wait, 0.0);
        let period = LimitSpec {
            period: Some(1.0),
            ..spec()
        };
        assert_eq!(period.over(&base).unwrap().max_wait, 3.0);
    }

    #[test]
    fn a_rate_replaces_every_rate_and_excludes_requests_and_period() {
        let base = Limit::default();
        let two = LimitSpec {
            rate: Some(parse_rates("10/second;1000/day").unwrap()),
            ..spec()
        };
        let limit = two.over(&base).unwrap();
        assert_eq!(limit.rates.len(), 2);
        assert_eq!(limit.quotas().unwrap().len(), 2);
        let both = LimitSpec {
            requests: Some(5),
            ..two.clone()
        };
        assert_eq!(both.over(&base), Err(QuotaError::RateAndRequests));
        // requests alone cannot say which of two rates it replaces.
        let requests = LimitSpec {
            requests: Some(5),
            ..spec()
        };
        assert_eq!(
            requests.over(&limit),
            Err(QuotaError::RequestsOnSeveralRates(2))
        );
        // A burst has no meaning across rates.
        let burst = LimitSpec {
            burst: Some(3),
            ..spec()
        };
        assert_eq!(
            burst.over(&limit).unwrap().quotas(),
            Err(QuotaError::BurstOnSeveralRates(2))
        );
    }

    #[test]
    fn a_rate_gives_one_to_max_quotas_rates() {
        let base = Limit::default();
        let rates = |n: u64| LimitSpec {
            rate: Some((1..=n).map(|i| Rate::new(i, 1_000_000)).collect()),
            ..spec()
        };
        assert_eq!(rates(0).over(&base), Err(QuotaError::RateCount(0)));
        assert_eq!(rates(1).over(&base).unwrap().rates.len(), 1);
        let most = MAX_QUOTAS as u64;
        assert_eq!(rates(most).over(&base).unwrap().rates.len(), MAX_QUOTAS);
        assert_eq!(
            rates(most + 1).over(&base),
            Err(QuotaError::RateCount(MAX_QUOTAS + 1))
        );
    }

    #[test]
    fn bad_numbers_name_their_parameter() {
        let base = Limit::default();
        let zero = LimitSpec {
            requests: Some(0),
            ..spec()
        };
        assert_eq!(zero.over(&base), Err(QuotaError::Requests));
        for period in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let bad = LimitSpec {
                period: Some(period),
                ..spec()
            };
            assert!(matches!(bad.over(&base), Err(QuotaError::Period(_))));
        }
    }
}
