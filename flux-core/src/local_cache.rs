//! The local deny cache: refusals answered in this process until their
//! `retry_after` has passed, without asking the store.
//!
//! # Why a cached refusal is exact
//!
//! A refusal writes nothing, and what other processes do to a key (admit
//! calls) only moves it further from admission; so from the moment the store
//! refused a call until `retry_after` later, the store would refuse the same
//! call again. The limiter answers it here instead, counting `retry_after`
//! and `reset_after` down from the store's answer, which is what the store
//! itself would say while nothing is admitted on the key: in every policy
//! both fall by one microsecond per microsecond until then.
//!
//! Two things make it exact in the fields too, not only in the refusal:
//!
//! - Only a call of the **same cost** is answered from an entry. A larger
//!   cost is refused as surely, but the store would tell it a later
//!   `retry_after`, so it goes to the store.
//! - Only a refusal whose `remaining` is `cost - 1` is kept. `remaining`
//!   never falls while nothing is admitted, and a call of `cost` is refused
//!   exactly while `remaining < cost`, so such a refusal keeps its
//!   `remaining` until it turns into an admission. (Every refusal of cost 1
//!   has `remaining == 0`; a refusal of cost 5 with 2 remaining would see
//!   `remaining` grow to 4 before it is admitted, so it is not kept.)
//!
//! Admissions, refunds and resets through this process's limiters clear the
//! caller's entries: after them the store would answer otherwise. What is
//! not seen is what *other processes* do to the key. Their admissions move
//! it further from admission: the cached refusal stays right, but the store
//! would now give a longer `retry_after` (the caller told the shorter one
//! comes back sooner and is refused again). Their refunds and resets may
//! have made room: the entry refuses until its `retry_after` has passed, so
//! that delay is bounded by the `retry_after` the store gave.
//!
//! Time is measured by the cache's own clock (monotonic outside tests), from
//! the moment before the store was asked: the store decided at that moment
//! or later, so an entry expires no later than the store's own answer would
//! let the call in.
//!
//! # Bounded and cheap under contention
//!
//! A fixed array of sets of [`WAYS`] entries, each set behind its own
//! read-write lock; a key lives in the set its hash picks. A hit takes one
//! shared lock and compares one key per way. An insert into a full set
//! replaces the entry that expires first (an expired one at once): what an
//! entry is worth is the store calls it still saves, and the one expiring
//! first saves the fewest. No list to reorder on every hit, as an LRU would,
//! so a hot key hammered from many threads only ever takes shared locks.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::{Clock, Decision, Quota, Source};

/// Entries per set.
pub const WAYS: usize = 4;

/// A bounded, thread-safe map from (limit, caller's key, cost) to a refusal.
#[derive(Debug)]
pub(crate) struct LocalCache {
    sets: Box<[RwLock<[Slot; WAYS]>]>,
    hash: std::collections::hash_map::RandomState,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The caller's first key (one per caller, limit and endpoint); `None`
    /// when the slot is free.
    key: Option<Box<str>>,
    /// Which limit refused: two limits on the same keys answer differently.
    limit: u64,
    cost: u64,
    /// The refusal as the store gave it, without jitter.
    decision: Decision,
    /// The cache's clock just before the store was asked.
    asked_at: u64,
}

impl Slot {
    /// When the store admits the call again; nothing is answered from then on.
    fn until(&self) -> u64 {
        self.asked_at.saturating_add(self.decision.retry_after_us)
    }

    fn holds(&self, key: &str, limit: u64) -> bool {
        self.limit == limit && self.key.as_deref() == Some(key)
    }
}

/// A fingerprint of a limit's quotas, for [`LocalCache`]'s entries.
pub(crate) fn limit_fingerprint(quotas: &[Quota]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    quotas.hash(&mut hasher);
    hasher.finish()
}

impl LocalCache {
    /// A cache of at least `size` entries (rounded up to whole sets) timed by
    /// `clock`; `None` for a size of 0.
    pub(crate) fn new(size: usize, clock: Arc<dyn Clock>) -> Option<LocalCache> {
        if size == 0 {
            return None;
        }
        let sets = size.div_ceil(WAYS);
        Some(LocalCache {
            sets: (0..sets).map(|_| RwLock::default()).collect(),
            hash: std::collections::hash_map::RandomState::new(),
            clock,
        })
    }

    /// Entries it can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_us()
    }

    fn set_of(&self, key: &str) -> &RwLock<[Slot; WAYS]> {
        let hash = self.hash.hash_one(key);
        // The high bits: the low ones are what the hash spends on nothing here.
        &self.sets[((hash >> 32) as usize) % self.sets.len()]
    }

    /// The refusal the store would give a call of `cost` on `key` under
    /// `limit` now, if one is held.
    pub(crate) fn get(&self, key: &str, limit: u64, cost: u64) -> Option<Decision> {
        let now = self.now();
        let set = self.set_of(key).read();
        let slot = set
            .iter()
            .find(|slot| slot.holds(key, limit) && slot.cost == cost)?;
        if now >= slot.until() {
            return None;
        }
        let elapsed = now.saturating_sub(slot.asked_at);
        let cached = &slot.decision;
        Some(Decision {
            retry_after_us: cached.retry_after_us - elapsed,
            reset_after_us: cached.reset_after_us.saturating_sub(elapsed),
            source: Source::LocalCache,
            ..*cached
        })
    }

    /// Keeps the store's refusal of a call of `cost` on `key` under `limit`,
    /// asked at `asked_at` (by [`LocalCache::now`]), when it can be answered
    /// exactly (see the module's notes).
    pub(crate) fn put(&self, key: &str, limit: u64, cost: u64, asked_at: u64, decision: &Decision) {
        let keep = !decision.allowed
            && decision.source == Source::Storage
            && decision.retry_after_us > 0
            && decision.remaining.checked_add(1) == Some(cost);
        if !keep {
            return;
        }
        let now = self.now();
        let mut set = self.set_of(key).write();
        let index = set
            .iter()
            .position(|slot| slot.holds(key, limit) && slot.cost == cost)
            .or_else(|| set.iter().position(|slot| slot.key.is_none()))
            .unwrap_or_else(|| {
                // The entry expiring first (an expired one saves nothing).
                (0..WAYS)
                    .min_by_key(|&i| set[i].until().max(now))
                    .expect("a set has ways")
            });
        let slot = &mut set[index];
        if slot.key.as_deref() != Some(key) {
            slot.key = Some(key.into());
        }
        slot.limit = limit;
        slot.cost = cost;
        slot.decision = *decision;
        slot.asked_at = asked_at;
    }

    /// Forgets every entry of `key` under `limit` (an admission, a refund,
    /// a reset). Most admissions find none, and take no exclusive lock.
    pub(crate) fn forget(&self, key: &str, limit: u64) {
        let set = self.set_of(key);
        if !set.read().iter().any(|slot| slot.holds(key, limit)) {
            return;
        }
        let mut set = set.write();
        for slot in set.iter_mut().filter(|slot| slot.holds(key, limit)) {
            slot.key = None;
        }
    }

    /// Forgets everything (the store's keys were cleared).
    pub(crate) fn clear(&self) {
        for set in self.sets.iter() {
            for slot in set.write().iter_mut() {
                slot.key = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn refusal(remaining: u64, retry_after_us: u64, reset_after_us: u64) -> Decision {
        Decision {
            allowed: false,
            limit: 10,
            remaining,
            reset_after_us,
            retry_after_us,
            ..Decision::default()
        }
    }

    fn cache(size: usize) -> (LocalCache, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (
            LocalCache::new(size, Arc::new(clock.clone())).unwrap(),
            clock,
        )
    }

    #[test]
    fn a_refusal_is_answered_counted_down_until_its_retry_after() {
        let (cache, clock) = cache(8);
        let asked = cache.now();
        clock.advance_us(300);
        cache.put("k", 1, 1, asked, &refusal(0, 1_000, 5_000));
        let hit = cache.get("k", 1, 1).unwrap();
        assert_eq!(hit.source, Source::LocalCache);
        assert_eq!((hit.retry_after_us, hit.reset_after_us), (700, 4_700));
        clock.advance_us(699);
        assert_eq!(cache.get("k", 1, 1).unwrap().retry_after_us, 1);
        clock.advance_us(1);
        assert_eq!(cache.get("k", 1, 1), None, "the store admits from here on");
    }

    #[test]
    fn only_the_same_limit_key_and_cost_hit() {
        let (cache, _) = cache(8);
        let asked = cache.now();
        cache.put("k", 1, 2, asked, &refusal(1, 1_000, 5_000));
        assert!(cache.get("k", 1, 2).is_some());
        assert_eq!(cache.get("k", 1, 1), None);
        assert_eq!(cache.get("k", 1, 3), None);
        assert_eq!(cache.get("k", 2, 2), None);
        assert_eq!(cache.get("j", 1, 2), None);
        cache.forget("k", 1);
        assert_eq!(cache.get("k", 1, 2), None);
    }

    #[test]
    fn refusals_whose_fields_would_change_are_not_kept() {
        let (cache, _) = cache(8);
        let asked = cache.now();
        // Cost 5 with 2 remaining: `remaining` grows before admission.
        cache.put("k", 1, 5, asked, &refusal(2, 1_000, 5_000));
        assert_eq!(cache.get("k", 1, 5), None);
        let admitted = Decision {
            allowed: true,
            ..refusal(0, 0, 5_000)
        };
        cache.put("k", 1, 1, asked, &admitted);
        assert_eq!(cache.get("k", 1, 1), None);
    }

    #[test]
    fn a_full_set_gives_up_the_entry_expiring_first() {
        let (cache, _) = cache(1);
        assert_eq!(cache.capacity(), WAYS);
        let asked = cache.now();
        for (i, retry) in [5_000, 1_000, 9_000, 7_000].into_iter().enumerate() {
            cache.put(&format!("k{i}"), 1, 1, asked, &refusal(0, retry, retry));
        }
        cache.put("new", 1, 1, asked, &refusal(0, 3_000, 3_000));
        assert!(cache.get("new", 1, 1).is_some());
        assert_eq!(cache.get("k1", 1, 1), None, "the one expiring first went");
        for kept in ["k0", "k2", "k3"] {
            assert!(cache.get(kept, 1, 1).is_some(), "{kept}");
        }
        cache.clear();
        assert_eq!(cache.get("new", 1, 1), None);
    }
}
