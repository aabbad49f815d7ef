//! The memory store's hash: a keyed folded-multiply hash over 16 bytes a
//! round, after wyhash and foldhash.
//!
//! std's SipHash-1-3 and the byte-at-a-time FNV-1a this replaces spent more
//! time hashing a 46-byte storage key than the rest of a decision. This reads
//! the key 16 bytes at a time and folds each 128-bit product in one multiply.
//!
//! It is keyed per store from std's random seed, because callers influence
//! keys (an IPv6 client can pick among 2^64 source addresses) and an unkeyed
//! hash would let them grind identities that pile into one bucket. Every
//! multiply has a secret operand, so no input zeroes the state regardless of
//! the key.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// An odd constant from wyhash, used only to spread the final state.
const SPREAD: u64 = 0xa076_1d64_78bd_642f;

/// The product of `a` and `b` as 128 bits, halves folded together.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let product = (a as u128) * (b as u128);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline]
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

#[inline]
fn half(bytes: &[u8]) -> u64 {
    u32::from_le_bytes(bytes[..4].try_into().unwrap()) as u64
}

/// A hasher builder with its own random key; clones share it.
#[derive(Clone, Copy)]
pub(crate) struct KeyHash {
    secret: u64,
    seed: u64,
}

impl KeyHash {
    pub(crate) fn random() -> Self {
        let random = RandomState::new();
        KeyHash {
            secret: random.hash_one(0u64),
            seed: random.hash_one(1u64),
        }
    }
}

impl KeyHash {
    /// The hash of a caller's digest (the 16 bytes of its tag, see keys.rs):
    /// it picks the shard. One multiply, with both operands secret: the
    /// digest is a SHA-256's already, and the key keeps callers who grind
    /// identities from knowing where theirs land.
    #[inline]
    pub(crate) fn digest(&self, digest: &[u8; 16]) -> u64 {
        fold(
            word(&digest[..8]) ^ self.secret,
            word(&digest[8..]) ^ self.seed,
        )
    }

    /// The hash of a tagged key: its digest's hash and its head's number.
    #[inline]
    pub(crate) fn tagged(&self, digest: u64, head: u32) -> u64 {
        fold(digest ^ u64::from(head), self.secret ^ SPREAD)
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash { .. }") // the key stays secret
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            secret: self.secret,
            state: self.seed,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct KeyHasher {
    secret: u64,
    state: u64,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher { .. }")
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length goes in first, so the overlapping or padded reads of
        // the tail below cannot make keys of different lengths collide.
        let len = bytes.len();
        let mut state = self.state ^ len as u64;
        let mut rest = bytes;
        while rest.len() > 16 {
            state = fold(word(&rest[..8]) ^ self.secret, word(&rest[8..16]) ^ state);
            rest = &rest[16..];
        }
        // The last 1 to 16 bytes, read as two words without a copy: when the
        // key is longer, its last 16 bytes (overlapping ones already read).
        let (a, b) = match len {
            16.. => (word(&bytes[len - 16..len - 8]), word(&bytes[len - 8..])),
            8..16 => (word(&bytes[..8]), word(&bytes[len - 8..])),
            4..8 => (half(&bytes[..4]), half(&bytes[len - 4..])),
            1..4 => {
                let spread = (bytes[0] as u64) << 16 | (bytes[len / 2] as u64) << 8;
                (spread | bytes[len - 1] as u64, 0)
            }
            0 => (0, 0),
        };
        self.state = fold(a ^ self.secret, b ^ state);
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        // `str` ends its hash with a 0xff byte; one multiply absorbs it.
        self.state = fold(self.state ^ byte as u64, self.secret | 1);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state ^ SPREAD, self.secret ^ SPREAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_keys_spread_over_every_bit() {
        let hash = KeyHash::random();
        let keys: Vec<String> = (0..20_000)
            .map(|i| format!("flux:api:gcra:{i:032x}"))
            .collect();
        let hashes: HashSet<u64> = keys.iter().map(|k| hash.hash_one(k.as_str())).collect();
        assert_eq!(hashes.len(), keys.len());
        // Each bit is set in about half the hashes (binomial sd ~ 71).
        for bit in 0..64 {
            let set = hashes.iter().filter(|h| *h >> bit & 1 == 1).count();
            assert!((9_500..10_500).contains(&set), "bit {bit}: {set}");
        }
    }

    #[test]
    fn lengths_and_tails_are_told_apart() {
        let hash = KeyHash::random();
        let keys = [
            "",
            "\0",
            "\0\0",
            "a",
            "a\0",
            "0123456789abcdef",
            "0123456789abcdef\0",
        ];
        let hashes: HashSet<u64> = keys.iter().map(|k| hash.hash_one(k)).collect();
        assert_eq!(hashes.len(), keys.len());
    }

    #[test]
    fn stores_are_keyed_apart() {
        let (a, b) = (KeyHash::random(), KeyHash::random());
        assert_ne!(a.hash_one("flux:api"), b.hash_one("flux:api"));
    }
}
