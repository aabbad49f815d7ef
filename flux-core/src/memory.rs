//! The in-process store: zero setup, limits per process.

mod key_hash;
mod keys;
mod table;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::Storage;
use crate::key::hash_tag;
use crate::policy::{apply, decide, Op, State};
use crate::{Call, Clock, Decision, Quota, QuotaError, Store, StoreError, SystemClock, MAX_QUOTAS};
use key_hash::KeyHash;
use keys::{Heads, Parts, TaggedKey};
use table::Table;

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
    /// Limiters' keys, held in place (see keys.rs and table.rs).
    tagged: Table,
    /// Any other key, as its text.
    text: HashMap<Box<str>, Entry, KeyHash>,
    /// The heads of the keys in `tagged`.
    heads: Heads,
    hash: KeyHash,
    next_sweep: u64,
    len_after_sweep: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    expires_at: u64,
}

impl Entry {
    /// What a free slot of a table holds.
    const NONE: Entry = Entry {
        state: State::FixedWindow { count: 0, end: 0 },
        expires_at: 0,
    };
}

impl Shard {
    fn new(hash: KeyHash) -> Self {
        Shard {
            tagged: Table::new(),
            text: HashMap::with_hasher(hash),
            heads: Heads::new(hash),
            hash,
            next_sweep: 0,
            len_after_sweep: 0,
        }
    }

    fn len(&self) -> usize {
        self.tagged.len() + self.text.len()
    }

    /// Drops the expired entries, and the heads no entry has any more.
    fn sweep(&mut self, now: u64) {
        let mut used = vec![false; self.heads.count()];
        self.tagged.retain(|key, e| {
            let live = e.expires_at > now;
            used[key.head as usize] |= live;
            live
        });
        self.text.retain(|_, e| e.expires_at > now);
        self.heads.keep(&used);
        self.len_after_sweep = self.len();
        self.next_sweep = now.saturating_add(SWEEP_EVERY_US);
    }

    fn due_for_sweep(&self, now: u64) -> bool {
        now >= self.next_sweep || self.len() > 2 * self.len_after_sweep + SWEEP_SLACK
    }

    /// What `key` holds at `now`: `None` when nothing, or only an expired state.
    fn state(&self, key: Parts<'_>, now: u64) -> Option<State> {
        self.get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.state)
    }

    /// Stores `state` under `key` until `expires_at`; a state expired at
    /// `now` goes.
    fn store(&mut self, key: Parts<'_>, (state, expires_at): (State, u64), now: u64) {
        if expires_at <= now {
            self.remove(key);
        } else {
            self.put(key, Entry { state, expires_at });
        }
    }

    fn get(&self, key: Parts<'_>) -> Option<&Entry> {
        match key {
            Parts::Tagged { head, digest, hash } => {
                let head = self.heads.find(head)?;
                let hash = self.hash.tagged(hash, head);
                self.tagged.get(&TaggedKey { digest, head }, hash)
            }
            Parts::Text(key) => self.text.get(key),
        }
    }

    /// Stores `entry` under `key`.
    fn put(&mut self, key: Parts<'_>, entry: Entry) {
        match key {
            Parts::Tagged { head, digest, hash } => {
                let head = self.heads.intern(head);
                let hash = self.hash.tagged(hash, head);
                self.tagged.insert(TaggedKey { digest, head }, hash, entry);
            }
            Parts::Text(key) => match self.text.get_mut(key) {
                Some(held) => *held = entry,
                None => {
                    self.text.insert(key.into(), entry);
                }
            },
        }
    }

    fn remove(&mut self, key: Parts<'_>) -> Option<Entry> {
        match key {
            Parts::Tagged { head, digest, hash } => {
                let head = self.heads.find(head)?;
                let hash = self.hash.tagged(hash, head);
                self.tagged.remove(&TaggedKey { digest, head }, hash)
            }
            Parts::Text(key) => self.text.remove(key),
        }
    }

    /// Forgets every key whose text starts with `prefix`; returns how many.
    fn clear_prefix(&mut self, prefix: &str) -> usize {
        let before = self.len();
        let heads = &self.heads;
        self.tagged.retain(|key, _| !heads.starts_with(key, prefix));
        self.text.retain(|key, _| !key.starts_with(prefix));
        before - self.len()
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
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new(hash))).collect(),
            clock,
            hash,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Entries held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
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

    /// The shard of `key`: chosen by its hash tag (see [`hash_tag`]), so the
    /// keys of one caller under one limit share a shard and one lock, as
    /// they share a node on a Redis Cluster. A tag of 32 hex digits counts
    /// by the bytes they spell, which a tagged key has at hand.
    fn shard_of(&self, key: &str, parts: Parts<'_>) -> usize {
        // The top 6 bits of the tag's hash: unrelated to the slots a shard's
        // table picks for whole keys, from the low bits of another hash.
        let tag_hash = match parts {
            // No `{` before the caller's: that one is the key's tag.
            Parts::Tagged { head, hash, .. } if !head.contains('{') => hash,
            _ => {
                let tag = hash_tag(key.as_bytes());
                match keys::decode(tag) {
                    Some(digest) => self.hash.digest(&digest),
                    None => self.hash.hash_one(tag),
                }
            }
        };
        (tag_hash >> 58) as usize % SHARDS
    }

    /// Applies `op` to one caller's keys, one per quota, atomically: see
    /// [`crate::apply`]. Keys that share a hash tag take one lock.
    fn apply_keys(
        &self,
        keys: &[&str],
        quotas: &[Quota],
        cost: u64,
        op: Op,
    ) -> Result<Decision, QuotaError> {
        assert_eq!(keys.len(), quotas.len(), "one key per quota");
        if let ([key], [quota], Op::Decide | Op::Peek) = (keys, quotas, op) {
            // Most calls: what `apply` does for one quota, without its room
            // for several.
            let key = Parts::of(key, &self.hash);
            let mut shard = self.shards[self.shard_of(keys[0], key)].lock();
            let now = self.now_sweeping(&mut [&mut shard]);
            let out = decide(quota, shard.state(key, now), now, cost)?;
            if let (Some(update), Op::Decide) = (out.update, op) {
                shard.store(key, update, now);
            }
            return Ok(out.decision);
        }
        let mut parts = [Parts::Text(""); MAX_QUOTAS];
        let mut order = [0usize; MAX_QUOTAS];
        let order = &mut order[..keys.len()];
        for ((slot, parts), key) in order.iter_mut().zip(&mut parts).zip(keys) {
            *parts = Parts::of(key, &self.hash);
            *slot = self.shard_of(key, *parts);
        }
        let keys = &parts[..keys.len()];
        if order.iter().all(|&s| s == order[0]) {
            let mut shard = self.shards[order[0]].lock();
            return self.apply_locked(&mut [&mut shard], &[0; MAX_QUOTAS], keys, quotas, cost, op);
        }
        // Keys without a common tag: lock their shards in index order, so two
        // calls never wait on each other's locks.
        let shard_of_key: Vec<usize> = order.to_vec();
        order.sort_unstable();
        let mut held: Vec<usize> = order.to_vec();
        held.dedup();
        let mut guards: Vec<_> = held.iter().map(|&i| self.shards[i].lock()).collect();
        let mut which = [0usize; MAX_QUOTAS];
        for (slot, shard) in which.iter_mut().zip(&shard_of_key) {
            *slot = held.iter().position(|h| h == shard).expect("locked above");
        }
        let mut shards: Vec<&mut Shard> = guards.iter_mut().map(|g| &mut **g).collect();
        self.apply_locked(&mut shards, &which, keys, quotas, cost, op)
    }

    /// `apply` with the shards of `keys` locked: `keys[i]` is in
    /// `shards[which[i]]`.
    fn apply_locked(
        &self,
        shards: &mut [&mut Shard],
        which: &[usize; MAX_QUOTAS],
        keys: &[Parts<'_>],
        quotas: &[Quota],
        cost: u64,
        op: Op,
    ) -> Result<Decision, QuotaError> {
        let now = self.now_sweeping(shards);
        let mut states = [None; MAX_QUOTAS];
        for (i, &key) in keys.iter().enumerate() {
            states[i] = shards[which[i]].state(key, now);
        }
        let applied = apply(quotas, &states[..keys.len()], now, cost, op)?;
        for (i, &key) in keys.iter().enumerate() {
            if let Some(update) = applied.updates[i] {
                shards[which[i]].store(key, update, now);
            }
        }
        Ok(applied.decision)
    }

    /// The time of a call on the locked `shards`, which sweep when due.
    fn now_sweeping(&self, shards: &mut [&mut Shard]) -> u64 {
        // Read under the lock, as the Redis script reads TIME: a key's
        // decisions then see its times in order. A time read before the lock
        // can be older than the state another thread stored meanwhile, and a
        // bucket that stores `last = now` would count that drain twice.
        let now = self.clock.now_us();
        for shard in shards.iter_mut() {
            if shard.due_for_sweep(now) {
                shard.sweep(now);
            }
        }
        now
    }
}

impl Store for MemoryStore {
    fn apply(&self, call: &Call<'_>) -> Result<Decision, StoreError> {
        if call.op == Op::Refund && call.cost == 0 {
            return Err(QuotaError::CostZero.into());
        }
        self.apply_keys(call.keys, call.quotas, call.cost, call.op)
            .map_err(Into::into)
    }

    fn remove(&self, keys: &[&str]) -> Result<u64, StoreError> {
        let now = self.clock.now_us();
        let live = keys.iter().filter(|key| {
            let parts = Parts::of(key, &self.hash);
            let mut shard = self.shards[self.shard_of(key, parts)].lock();
            shard.remove(parts).is_some_and(|e| e.expires_at > now)
        });
        Ok(live.count() as u64)
    }

    fn clear_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let cleared: usize = self
            .shards
            .iter()
            .map(|shard| shard.lock().clear_prefix(prefix))
            .sum();
        Ok(cleared as u64)
    }

    fn storage(&self) -> Storage {
        Storage::Memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, Policy, QuotaSpec};

    #[test]
    fn a_head_goes_with_the_last_of_its_keys() {
        let clock = ManualClock::new(0);
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        let quota = QuotaSpec::new(Policy::Gcra, 1, 1.0).build().unwrap();
        // A scope per tenant, as a process making limits without end has.
        for i in 0..1000u32 {
            let key = format!("flux:tenant{i}:gcra:{{{i:032x}}}");
            assert!(store.decide(&key, &quota, 1).unwrap().allowed);
        }
        let heads = || -> usize { store.shards.iter().map(|s| s.lock().heads.len()).sum() };
        assert_eq!(heads(), 1000);
        clock.set_us(1_000_000);
        store.sweep();
        assert!(store.is_empty());
        assert_eq!(heads(), 0);
    }

    /// The shard `key` goes to, as a call finds it.
    fn shard_of(store: &MemoryStore, key: &str) -> usize {
        store.shard_of(key, Parts::of(key, &store.hash))
    }

    fn shard_holding(n: usize, next_sweep: u64, len_after_sweep: usize) -> Shard {
        let entry = Entry {
            state: State::FixedWindow { count: 1, end: 1 },
            expires_at: 1,
        };
        let mut shard = Shard::new(KeyHash::random());
        for i in 0..n {
            shard.text.insert(i.to_string().into(), entry);
        }
        shard.next_sweep = next_sweep;
        shard.len_after_sweep = len_after_sweep;
        shard
    }

    #[test]
    fn a_shard_sweeps_when_its_time_comes_or_it_doubled_past_the_slack() {
        // Due from next_sweep on, whatever its size.
        assert!(!shard_holding(0, 100, 0).due_for_sweep(99));
        assert!(shard_holding(0, 100, 0).due_for_sweep(100));
        assert!(shard_holding(0, 100, 0).due_for_sweep(101));
        // Before that, only when grown past twice its size after the last
        // sweep plus the slack: 2 * 10 + 1024 entries are not too many yet.
        let limit = 2 * 10 + SWEEP_SLACK;
        assert!(!shard_holding(limit, 100, 10).due_for_sweep(0));
        assert!(shard_holding(limit + 1, 100, 10).due_for_sweep(0));
        assert!(shard_holding(limit + 2, 100, 10).due_for_sweep(0));
    }

    #[test]
    fn keys_of_one_caller_share_a_shard_and_callers_spread_over_all() {
        let store = MemoryStore::new();
        // A caller's keys under one limit share their hash tag.
        assert_eq!(
            shard_of(&store, "p:api:gcra:10per1:{ab}"),
            shard_of(&store, "p:api:gcra:5per60:{ab}")
        );
        let used: std::collections::HashSet<usize> = (0..2000)
            .map(|i| shard_of(&store, &format!("p:api:gcra:{{{i}}}")))
            .collect();
        assert_eq!(used.len(), SHARDS, "2000 callers over {SHARDS} shards");
    }

    #[test]
    fn keys_in_several_shards_are_each_kept_in_their_own() {
        let clock = ManualClock::new(0);
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        // Keys with no common tag, in as many shards as there are keys.
        let mut keys: Vec<String> = Vec::new();
        for i in 0..10_000 {
            let key = format!("k{i}");
            if keys.len() < 3
                && keys
                    .iter()
                    .all(|k| shard_of(&store, k) != shard_of(&store, &key))
            {
                keys.push(key);
            }
        }
        assert_eq!(keys.len(), 3, "10,000 keys in fewer than 3 shards");
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let quotas: Vec<Quota> = [(2, 1.0), (3, 60.0), (4, 3600.0)]
            .iter()
            .map(|&(n, t)| QuotaSpec::new(Policy::FixedWindow, n, t).build().unwrap())
            .collect();
        let call = Call {
            keys: &keys,
            quotas: &quotas,
            cost: 1,
            op: Op::Decide,
        };
        assert!(store.apply(&call).unwrap().allowed);
        // Each key, read alone (one shard, one lock), holds its call.
        for (key, quota) in keys.iter().zip(&quotas) {
            assert_eq!(
                store.decide(key, quota, 1).unwrap().remaining,
                quota.requests() - 2,
                "{key}"
            );
        }
    }

    #[test]
    fn an_entry_is_gone_from_the_instant_it_expires() {
        let clock = ManualClock::new(0);
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        assert!(store.is_empty());
        let quota = QuotaSpec::new(Policy::FixedWindow, 2, 1.0).build().unwrap();
        store.decide("k", &quota, 1).unwrap();
        assert!(!store.is_empty());
        assert_eq!(store.remove(&["k"]).unwrap(), 1);
        store.decide("k", &quota, 1).unwrap();
        // The window ends at 1 s: then the key holds nothing to remove.
        clock.set_us(1_000_000);
        assert_eq!(store.remove(&["k"]).unwrap(), 0);
        assert!(store.is_empty());
    }
}
