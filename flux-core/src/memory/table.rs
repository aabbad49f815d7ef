//! A shard's table of tagged keys: open addressing with linear probing,
//! each slot one cache line holding the key, its hash and its entry.
//!
//! std's `HashMap` keeps a byte of control per bucket in an array of its
//! own and the buckets in another, so finding a key among a million reads
//! two lines that are nowhere near each other: two cache misses per
//! decision, the better part of its time. Here the slot a key hashes to
//! usually holds it (the table is at most half full), so a decision reads
//! one line, and the next one when it probes on, which the hardware has
//! often fetched already.

use super::keys::TaggedKey;
use super::Entry;

/// The number no head has (see keys.rs): it marks a free slot.
pub(super) const FREE: u32 = u32::MAX;
/// Slots of a new table; it doubles when more than half full.
const MIN_SLOTS: usize = 16;

#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Slot {
    key: TaggedKey,
    /// The low 32 bits of the key's hash: where it belongs, kept so that
    /// growing and deleting need not hash again.
    hash: u32,
    entry: Entry,
}

impl Slot {
    const FREE: Slot = Slot {
        key: TaggedKey {
            digest: [0; 16],
            head: FREE,
        },
        hash: 0,
        entry: Entry::NONE,
    };

    fn is_free(&self) -> bool {
        self.key.head == FREE
    }
}

#[derive(Debug)]
pub(super) struct Table {
    slots: Vec<Slot>,
    len: usize,
}

impl Table {
    pub(super) fn new() -> Self {
        Table {
            slots: vec![Slot::FREE; MIN_SLOTS],
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `key`, or the free slot that ends its probe.
    fn position(&self, key: &TaggedKey, hash: u64) -> usize {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.key == *key || slot.is_free() {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    pub(super) fn get(&self, key: &TaggedKey, hash: u64) -> Option<&Entry> {
        let slot = &self.slots[self.position(key, hash)];
        (!slot.is_free()).then_some(&slot.entry)
    }

    /// Stores `entry` under `key`, replacing what it held.
    pub(super) fn insert(&mut self, key: TaggedKey, hash: u64, entry: Entry) {
        debug_assert_ne!(key.head, FREE);
        let i = self.position(&key, hash);
        if !self.slots[i].is_free() {
            self.slots[i].entry = entry;
            return;
        }
        if 2 * (self.len + 1) > self.slots.len() {
            self.resize(2 * self.slots.len());
            return self.insert(key, hash, entry);
        }
        self.slots[i] = Slot {
            key,
            hash: hash as u32,
            entry,
        };
        self.len += 1;
    }

    pub(super) fn remove(&mut self, key: &TaggedKey, hash: u64) -> Option<Entry> {
        let mut i = self.position(key, hash);
        if self.slots[i].is_free() {
            return None;
        }
        let removed = self.slots[i].entry;
        self.len -= 1;
        // Backward shift: move up each later slot of the run that may live
        // at the hole, so every key stays reachable from where it belongs.
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let slot = self.slots[j];
            if slot.is_free() {
                break;
            }
            let home = slot.hash as usize & mask;
            // The slot at j may move to i unless its home lies in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = slot;
                i = j;
            }
        }
        self.slots[i] = Slot::FREE;
        Some(removed)
    }

    /// Keeps the entries `keep` accepts; the table shrinks to what they need.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&TaggedKey, &Entry) -> bool) {
        let kept: Vec<Slot> = self
            .slots
            .iter()
            .filter(|s| !s.is_free() && keep(&s.key, &s.entry))
            .copied()
            .collect();
        if kept.len() == self.len {
            return;
        }
        // Room for twice as many before it grows again.
        let slots = (4 * kept.len()).next_power_of_two().max(MIN_SLOTS);
        self.refill(slots, kept);
    }

    fn resize(&mut self, slots: usize) {
        let held: Vec<Slot> = self
            .slots
            .iter()
            .filter(|s| !s.is_free())
            .copied()
            .collect();
        self.refill(slots, held);
    }

    fn refill(&mut self, slots: usize, held: Vec<Slot>) {
        self.slots = vec![Slot::FREE; slots];
        self.len = held.len();
        let mask = self.mask();
        for slot in held {
            let mut i = slot.hash as usize & mask;
            while !self.slots[i].is_free() {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::State;

    fn key(n: u32) -> TaggedKey {
        let mut digest = [0; 16];
        digest[..4].copy_from_slice(&n.to_le_bytes());
        TaggedKey { digest, head: 0 }
    }

    fn entry(n: u64) -> Entry {
        Entry {
            state: State::FixedWindow { count: n, end: n },
            expires_at: n,
        }
    }

    /// Hashes that pile keys into few homes, so runs overlap.
    fn crowded(n: u32) -> u64 {
        u64::from(n % 7) * 3 + 13
    }

    /// Hashes whose homes are the last slots of a table of any size, so
    /// runs wrap around to its first slots.
    fn crowded_at_the_end(n: u32) -> u64 {
        u64::MAX - u64::from(n % 7) * 3
    }

    #[test]
    fn keys_inserted_removed_and_kept_are_found_as_a_map_would() {
        behaves_as_a_map(crowded, 300);
    }

    #[test]
    fn runs_that_wrap_around_the_end_are_found_as_a_map_would() {
        // In a large table, and in a small one, where a key's home is often
        // the hole a removal leaves and the key sits past the end.
        behaves_as_a_map(crowded_at_the_end, 300);
        behaves_as_a_map(crowded_at_the_end, 12);
    }

    /// Random inserts, removes and sweeps of `keys` keys hashed by
    /// `crowded`, each followed by every key looked up.
    fn behaves_as_a_map(crowded: fn(u32) -> u64, keys: u32) {
        let mut table = Table::new();
        let mut model = std::collections::HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..20_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let n = (rng % u64::from(keys)) as u32;
            let hash = crowded(n);
            match rng >> 60 {
                0..=7 => {
                    table.insert(key(n), hash, entry(step));
                    model.insert(n, step);
                }
                8..=13 => assert_eq!(
                    table.remove(&key(n), hash).map(|e| e.expires_at),
                    model.remove(&n)
                ),
                _ => {
                    table.retain(|k, _| !k.digest[0].is_multiple_of(3));
                    model.retain(|n, _| !(*n as u8).is_multiple_of(3));
                }
            }
            assert_eq!(table.len(), model.len());
            for m in 0..keys {
                assert_eq!(
                    table.get(&key(m), crowded(m)).map(|e| e.expires_at),
                    model.get(&m).copied(),
                    "key {m} after step {step}"
                );
            }
        }
    }
}
