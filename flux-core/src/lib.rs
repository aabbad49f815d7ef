//! The pure heart of Flux: admission policies, the decision they return, the
//! clock they are given, the configuration schema, and the in-memory store.
//!
//! Nothing here talks to a network. The Redis store (flux-redis) runs the same
//! math in Lua and is checked against this crate by a differential test.

pub mod analytics;
mod clock;
pub mod config;
mod decision;
pub mod fork;
mod key;
mod limit;
mod limiter;
mod local_cache;
mod memory;
pub mod policy;
mod quota;
mod rate;
mod store;
mod warnings;

pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use decision::{Decision, Source};
pub use key::{endpoint_storage_key, hash_tag, key_in, storage_key, IdentityTag, ENDPOINT_MARKER};
pub use limit::{Limit, LimitSpec};
pub use limiter::{apply_batch, Backend, BatchRequest, EventTaker, Limiter, LimiterError};
pub use memory::MemoryStore;
pub use policy::{apply, decide, refund, Applied, Op, Outcome, State};
pub use quota::{Policy, Quota, QuotaError, QuotaSpec, MAX_EXACT};
pub use rate::{parse_rates, Rate, RateError, MAX_QUOTAS};
pub use store::{Call, Cause, Request, Store, StoreError, Unavailable};
pub use warnings::{LOG_TARGET, WARNING_INTERVAL};
