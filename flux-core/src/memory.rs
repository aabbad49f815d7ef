//! The in-process store: zero setup, limits per process.

mod key_hash;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::policy::{decide, State};
use crate::{Clock, Decision, Quota, QuotaError, Store, SystemClock};
use key_hash::KeyHash;

const SHARDS: usize = 64;
/// A shard drops its expired entries at least this often (µs of store time)…
const SWEEP_EVERY_US: u64 = 1_000_000;
/// …and whenever it has grown past twice its size after the last sweep plus
/// this slack, so a flood of unique keys costs amortised O(1) per call and
/// memory stays proportional to the keys still live.
const SWEEP_SLACK: usize = 1024;

/// A thread-safe map from storage key to policy state, in `SHARDS` shards
/// behind their own locks, with expired entries swept as it goes.
///
/// ```
/// use flux_core::{ManualClock, MemoryStore, Policy, QuotaSpec, Store};
/// use std::sync::Arc;
/// let clock = ManualClock::new(0);
/// let store = MemoryStore::with_clock(Arc::new(clock.clone()));
/// let quota = QuotaSpec::new(Policy::FixedWindow, 2, 1.0).build().unwrap();
/// assert!(store.decide("k", &quota, 1).unwrap().allowed);
/// assert!(store.decide("k", &quota, 1).unwrap().allowed);
/// assert!(!store.decide("k", &quota, 1).unwrap().allowed);
/// clock.advance_secs(1.0);
/// assert!(store.decide("k", &quota, 1).unwrap().allowed);
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    clock: Arc<dyn Clock>,
    hash: KeyHash,
}

#[derive(Debug)]
struct Shard {
    entries: HashMap<Box<str>, Entry, KeyHash>,
    next_sweep: u64,
    len_after_sweep: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    expires_at: u64,
}

impl Shard {
    fn sweep(&mut self, now: u64) {
        self.entries.retain(|_, e| e.expires_at > now);
        self.len_after_sweep = self.entries.len();
        self.next_sweep = now.saturating_add(SWEEP_EVERY_US);
    }

    fn due_for_sweep(&self, now: u64) -> bool {
        now >= self.next_sweep || self.entries.len() > 2 * self.len_after_sweep + SWEEP_SLACK
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let hash = KeyHash::random();
        let shard = || {
            Mutex::new(Shard {
                entries: HashMap::with_hasher(hash),
                next_sweep: 0,
                len_after_sweep: 0,
            })
        };
        Self {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            clock,
            hash,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Entries held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired entry now, rather than as calls arrive.
    pub fn sweep(&self) {
        let now = self.clock.now_us();
        for shard in self.shards.iter() {
            shard.lock().sweep(now);
        }
    }

    /// Forgets every key that starts with `prefix`; returns how many.
    pub fn clear_prefix(&self, prefix: &str) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock();
                let before = shard.entries.len();
                shard.entries.retain(|k, _| !k.starts_with(prefix));
                before - shard.entries.len()
            })
            .sum()
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // The map's own hash, bits 51 to 56: the shard's map indexes buckets
        // by the low bits and tags them with the top 7, which must still vary
        // among the keys of one shard.
        let hash = self.hash.hash_one(key);
        &self.shards[(hash >> 51) as usize % SHARDS]
    }
}

impl Store for MemoryStore {
    type Error = QuotaError;

    fn decide(&self, key: &str, quota: &Quota, cost: u64) -> Result<Decision, QuotaError> {
        quota.check_cost(cost)?;
        let mut shard = self.shard(key).lock();
        // Read under the lock, as the Redis script reads TIME: a key's
        // decisions then see its times in order. A time read before the lock
        // can be older than the state another thread stored meanwhile, and a
        // bucket that stores `last = now` would count that drain twice.
        let now = self.clock.now_us();
        if shard.due_for_sweep(now) {
            shard.sweep(now);
        }
        let stored = shard.entries.get_mut(key);
        let state = stored
            .as_ref()
            .filter(|e| e.expires_at > now)
            .map(|e| e.state);
        let outcome = decide(quota, state, now, cost)?;
        if let Some((state, expires_at)) = outcome.update {
            let entry = Entry { state, expires_at };
            match stored {
                Some(slot) => *slot = entry,
                None => {
                    shard.entries.insert(key.into(), entry);
                }
            }
        }
        Ok(outcome.decision)
    }
}
