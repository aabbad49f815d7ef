//! Redis storage for Flux: the policies of flux-core run as Lua scripts, one
//! `EVALSHA` per decision on one key with a TTL, through a pool of
//! connections, against one Redis or a Redis Cluster.
//!
//! The scripts in `lua/` reproduce `flux_core::decide` step for step in
//! integer arithmetic that stays exact in Lua's doubles; the differential test
//! (`tests/differential.rs`) replays random traces through both and compares
//! every field.
//!
//! [`RedisStore::connect`] never talks to Redis; every call is bounded by
//! about `timeout_ms`, and a [`RedisError`] says whether it failed for want of
//! Redis ([`RedisError::is_connectivity`], for a limiter that fails open) or
//! for a mistake that waiting will not fix.

mod cluster;
mod connection;
mod error;
pub mod fork;
mod pool;
mod scripts;
mod store;
mod target;

pub use error::RedisError;
/// The Redis settings a store is made from: the `[redis]` table of flux.toml.
pub use flux_core::config::RedisConfig;
pub use pool::PoolError;

pub use store::{RedisStore, TimeSource};

pub mod analytics;
pub mod limiter;
pub use limiter::{
    decide_batch, Backend, BackendStore, BatchRequest, LimitOverrides, Limiter, LimiterError,
};
