//! Redis storage for Flux: flux-core's limits run as Lua scripts, one
//! `EVALSHA` per decision on a caller's keys (one per quota, in one hash
//! slot) with a TTL, through a pool of connections (each process its own,
//! see `flux_core::fork`), against one Redis or a Redis Cluster; and the analytics
//! that need Redis or a network (the event flusher, the `/metrics` server
//! and its dashboard).
//!
//! The scripts in `lua/` reproduce `flux_core::apply` step for step in
//! integer arithmetic that stays exact in Lua's doubles; the differential test
//! (`tests/differential.rs`) replays random traces through both and compares
//! every field.
//!
//! [`RedisStore`] is a `flux_core::Store`; [`open`] picks the store a
//! configuration names (memory or Redis) and assembles its analytics.
//! [`RedisStore::connect`] never talks to Redis; every call is bounded by
//! about `timeout_ms`, and a [`RedisError`] says whether Redis failed
//! ([`RedisError::redis_failed`], for a limiter that fails open), whether the
//! pool stayed busy ([`RedisError::Busy`], back-pressure), or whether it was
//! a mistake that waiting will not fix; it becomes the `flux_core::StoreError`
//! a limiter acts on.

mod backend;
mod cluster;
mod connection;
mod error;
mod node;
mod pool;
mod resp;
mod scripts;
mod sentinel;
mod signals;
mod socket;
mod store;
mod target;

pub mod analytics;

pub use backend::{assemble, open, Opened};
pub use error::RedisError;
/// The Redis settings a store is made from: the `[redis]` table of flux.toml.
pub use flux_core::config::RedisConfig;
pub use scripts::script_source;
pub use store::{RedisStore, TimeSource};
