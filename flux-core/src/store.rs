//! What every store offers: apply a quota to a key, atomically.

use crate::{Decision, Quota};

/// One decision asked of a store.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub key: &'a str,
    pub quota: &'a Quota,
    pub cost: u64,
}

/// A place where per-key state lives and policies are applied atomically.
pub trait Store: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides one call of `cost` against `quota` for `key`.
    fn decide(&self, key: &str, quota: &Quota, cost: u64) -> Result<Decision, Self::Error>;

    /// Decides many calls at once, in order; a store with round trips makes one.
    fn decide_many(&self, requests: &[Request<'_>]) -> Vec<Result<Decision, Self::Error>> {
        requests
            .iter()
            .map(|r| self.decide(r.key, r.quota, r.cost))
            .collect()
    }
}
