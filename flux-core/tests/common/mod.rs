//! Helpers shared by the topic tests: one key driven through the pure
//! `decide`, carrying its state from call to call the way a store does.
#![allow(dead_code)]

use flux_core::{decide, Decision, Policy, Quota, QuotaSpec, State};

pub fn quota(policy: Policy, requests: u64, period: f64) -> Quota {
    QuotaSpec::new(policy, requests, period).build().unwrap()
}

pub fn quota_with_burst(policy: Policy, requests: u64, period: f64, burst: u64) -> Quota {
    QuotaSpec::new(policy, requests, period)
        .burst(burst)
        .build()
        .unwrap()
}

/// One key's state under one quota.
#[derive(Debug, Clone)]
pub struct Key {
    pub quota: Quota,
    pub state: Option<State>,
    /// When the last stored state stops mattering, as a store would expire it.
    pub expires_at: Option<u64>,
}

impl Key {
    pub fn new(quota: Quota) -> Self {
        Key {
            quota,
            state: None,
            expires_at: None,
        }
    }

    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Decides one call and keeps the state it leaves.
    pub fn call(&mut self, now: u64, cost: u64) -> Decision {
        let out = decide(&self.quota, self.state, now, cost).unwrap();
        if let Some((state, expires_at)) = out.update {
            self.state = Some(state);
            self.expires_at = Some(expires_at);
        }
        out.decision
    }

    /// Decides one call without keeping anything: what the caller would be told.
    pub fn peek(&self, now: u64, cost: u64) -> Decision {
        decide(&self.quota, self.state, now, cost).unwrap().decision
    }

    /// Makes `calls` calls of cost 1 at `now`; returns how many were admitted.
    pub fn admitted(&mut self, now: u64, calls: u64) -> u64 {
        (0..calls).filter(|_| self.call(now, 1).allowed).count() as u64
    }
}
