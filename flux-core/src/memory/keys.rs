//! How a shard holds its keys: most in place, without a heap allocation.
//!
//! A limiter's key is a head it made once (`{prefix}{scope}:{policy}:`...)
//! followed by the caller's tag, `{` 32 lowercase hex digits `}` (see
//! [`crate::IdentityTag`]). A shard keeps such a key as the number of its
//! head (interned per shard) and the 16 bytes the digits spell: 20 bytes
//! beside the state in the map's own slot, where a `Box<str>` key was a
//! pointer to 48 more bytes elsewhere on the heap, one more cache miss per
//! decision among a million keys. The split is exact (lowercase digits
//! only), so two keys share a slot only when they are the same text. Any
//! other key is kept as its text.

use std::collections::HashMap;

use super::key_hash::KeyHash;
use super::table::FREE;

/// Bytes of a caller's digest: what 32 hex digits spell.
const DIGEST: usize = 16;
/// `{`, the digits and `}`.
const TAG: usize = 2 + 2 * DIGEST;

/// A key as a shard looks it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parts<'a> {
    /// `head` followed by `{` and the hex of `digest` and `}`; `hash` is
    /// [`KeyHash::digest`] of the digest.
    Tagged {
        head: &'a str,
        digest: [u8; DIGEST],
        hash: u64,
    },
    /// Any other key.
    Text(&'a str),
}

impl<'a> Parts<'a> {
    pub(super) fn of(key: &'a str, hasher: &KeyHash) -> Self {
        let bytes = key.as_bytes();
        let Some(head_len) = bytes.len().checked_sub(TAG) else {
            return Parts::Text(key);
        };
        let tag = &bytes[head_len..];
        if tag[0] != b'{' || tag[TAG - 1] != b'}' {
            return Parts::Text(key);
        }
        match decode(&tag[1..TAG - 1]) {
            Some(digest) => Parts::Tagged {
                head: &key[..head_len],
                digest,
                hash: hasher.digest(&digest),
            },
            None => Parts::Text(key),
        }
    }
}

/// The 16 bytes 32 lowercase hex digits spell, or `None` for anything else.
pub(super) fn decode(hex: &[u8]) -> Option<[u8; DIGEST]> {
    if hex.len() != 2 * DIGEST {
        return None;
    }
    // By table, without a branch per digit: 0x10 marks what is no digit.
    const NIBBLE: [u8; 256] = {
        let mut table = [0x10; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        while i < 16 {
            table[b'a' as usize + i - 10] = i as u8;
            i += 1;
        }
        table
    };
    let mut digest = [0u8; DIGEST];
    let mut seen = 0;
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        seen |= high | low;
        *byte = high << 4 | low;
    }
    (seen & 0x10 == 0).then_some(digest)
}

/// The hex of `digest` as a tag: `{` the digits `}`.
fn encode(digest: &[u8; DIGEST]) -> [u8; TAG] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tag = [b'{'; TAG];
    for (i, &byte) in digest.iter().enumerate() {
        tag[1 + 2 * i] = HEX[usize::from(byte >> 4)];
        tag[2 + 2 * i] = HEX[usize::from(byte & 0xf)];
    }
    tag[TAG - 1] = b'}';
    tag
}

/// A tagged key in a shard's map: its head's number and its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TaggedKey {
    pub(super) digest: [u8; DIGEST],
    pub(super) head: u32,
}

/// A shard's heads, each under a number its keys carry.
#[derive(Debug)]
pub(super) struct Heads {
    ids: HashMap<Box<str>, u32, KeyHash>,
    /// By number; `None` where a head was dropped and its number is free.
    names: Vec<Option<Box<str>>>,
    free: Vec<u32>,
}

impl Heads {
    pub(super) fn new(hash: KeyHash) -> Self {
        Heads {
            ids: HashMap::with_hasher(hash),
            names: Vec::new(),
            free: Vec::new(),
        }
    }

    /// The number of `head`, if a key of the shard has it.
    pub(super) fn find(&self, head: &str) -> Option<u32> {
        self.ids.get(head).copied()
    }

    /// The number of `head`, given one now if it has none.
    pub(super) fn intern(&mut self, head: &str) -> u32 {
        if let Some(&id) = self.ids.get(head) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.names.push(None);
                u32::try_from(self.names.len() - 1)
                    .ok()
                    .filter(|&id| id != FREE)
                    .expect("fewer than 2^32 - 1 heads")
            }
        };
        self.names[id as usize] = Some(head.into());
        self.ids.insert(head.into(), id);
        id
    }

    /// The numbers given so far, free ones included: `used` in [`Heads::keep`]
    /// is indexed by them.
    pub(super) fn count(&self) -> usize {
        self.names.len()
    }

    /// Heads held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Drops every head whose number `used` does not mark, so a process that
    /// makes limits without end (a scope per tenant) does not keep their
    /// heads once their keys are gone.
    pub(super) fn keep(&mut self, used: &[bool]) {
        for (id, name) in self.names.iter_mut().enumerate() {
            if name.is_some() && !used.get(id).copied().unwrap_or(false) {
                self.ids.remove(name.as_deref().expect("checked"));
                *name = None;
                self.free.push(id as u32);
            }
        }
    }

    /// Whether the text of `key` starts with `prefix`.
    pub(super) fn starts_with(&self, key: &TaggedKey, prefix: &str) -> bool {
        let head = self.names[key.head as usize]
            .as_deref()
            .expect("a key's head is kept while the key is");
        match prefix.strip_prefix(head) {
            Some(rest) => encode(&key.digest).starts_with(rest.as_bytes()),
            None => head.starts_with(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_head_and_a_lowercase_hex_tag_split() {
        let hex = "ba7816bf8f01cfea414140de5dae2223";
        let key = format!("flux:api:gcra:{{{hex}}}");
        let hasher = KeyHash::random();
        let Parts::Tagged { head, digest, hash } = Parts::of(&key, &hasher) else {
            panic!("{key} splits");
        };
        assert_eq!(head, "flux:api:gcra:");
        assert_eq!(&encode(&digest)[1..TAG - 1], hex.as_bytes());
        assert_eq!(hash, hasher.digest(&digest));
        assert_eq!(
            Parts::of(&format!("{{{hex}}}"), &hasher),
            Parts::Tagged {
                head: "",
                digest,
                hash
            }
        );
        for text in [
            "k".to_owned(),
            format!("flux:api:gcra:{{{}}}", hex.to_uppercase()),
            format!("flux:api:gcra:{{{}}}", &hex[1..]),
            format!("flux:api:gcra:{{{hex}}}:"),
            format!("flux:api:gcra:{{{hex}x}}"),
            format!("flux:api:gcra:({hex})"),
            format!("flux:api:gcra:{{{hex})"),
            format!("flux:api:gcra:({hex}}}"),
            // No digit, beside a digit and beside another.
            format!("flux:api:gcra:{{g{}}}", &hex[1..]),
            format!("flux:api:gcra:{{gg{}}}", &hex[2..]),
        ] {
            assert_eq!(Parts::of(&text, &hasher), Parts::Text(&text), "{text}");
        }
    }

    #[test]
    fn heads_are_numbered_dropped_and_numbered_again() {
        let mut heads = Heads::new(KeyHash::random());
        let (a, b) = (heads.intern("a:"), heads.intern("b:"));
        assert_ne!(a, b);
        assert_eq!(heads.intern("a:"), a);
        assert_eq!(heads.find("b:"), Some(b));
        let mut used = vec![false; heads.count()];
        used[b as usize] = true;
        heads.keep(&used);
        assert_eq!(heads.find("a:"), None);
        assert_eq!(heads.find("b:"), Some(b));
        assert_eq!(heads.intern("c:"), a, "a free number is used again");
    }

    #[test]
    fn a_prefix_is_matched_against_the_whole_text() {
        let mut heads = Heads::new(KeyHash::random());
        let digest = decode(b"00ff00ff00ff00ff00ff00ff00ff00ff").unwrap();
        let key = TaggedKey {
            digest,
            head: heads.intern("flux:api:gcra:"),
        };
        for (prefix, matches) in [
            ("", true),
            ("flux:", true),
            ("flux:api:gcra:", true),
            ("flux:api:gcra:{00ff", true),
            ("flux:api:gcra:{00ff00ff00ff00ff00ff00ff00ff00ff}", true),
            ("flux:api:gcra:{00ff00ff00ff00ff00ff00ff00ff00ff}x", false),
            ("flux:api:gcra:{01", false),
            ("flux:web:", false),
        ] {
            assert_eq!(heads.starts_with(&key, prefix), matches, "{prefix}");
        }
    }
}
