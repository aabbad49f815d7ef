//! Storage keys: where a caller's state lives, without the caller's identity.

use sha2::{Digest, Sha256};

use crate::Policy;

/// Bytes of the SHA-256 digest kept in a key: 128 bits is far beyond any
/// chance of two callers colliding, and keeps keys short.
const DIGEST_BYTES: usize = 16;

/// The caller's part of a key: `{` the hex of the first 128 bits of a
/// SHA-256 of the caller `}`, so no raw IP, user id or endpoint is stored.
///
/// The braces make it a Redis Cluster hash tag: every key of one caller
/// under one limit (one per quota) hashes to the same slot, so a decision
/// over all of them is one script call on one node, and the memory store
/// takes one lock for them. (When the prefix or the scope holds a tag of
/// their own, that one counts, which keeps them together too.)
#[derive(Clone, Copy)]
pub struct IdentityTag([u8; 2 + 2 * DIGEST_BYTES]);

impl IdentityTag {
    /// The tag of `identity`.
    pub fn new(identity: &[u8]) -> Self {
        Self::of_digest(&Sha256::digest(identity))
    }

    /// The tag of `identity` calling `endpoint`: the digest is taken over
    /// the endpoint's length (8 bytes, big-endian), the endpoint and the
    /// identity, so no two (endpoint, identity) pairs share a tag whatever
    /// bytes they hold (a `:` or a NUL in an endpoint included).
    pub fn for_endpoint(endpoint: &[u8], identity: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update((endpoint.len() as u64).to_be_bytes())
            .chain_update(endpoint)
            .chain_update(identity)
            .finalize();
        Self::of_digest(&digest)
    }

    fn of_digest(digest: &[u8]) -> Self {
        // By table: `write!` with `{:02x}` went through core::fmt for every
        // byte and cost more than the SHA-256 itself.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut tag = [b'{'; 2 + 2 * DIGEST_BYTES];
        for (i, &byte) in digest[..DIGEST_BYTES].iter().enumerate() {
            tag[1 + 2 * i] = HEX[usize::from(byte >> 4)];
            tag[2 + 2 * i] = HEX[usize::from(byte & 0xf)];
        }
        tag[1 + 2 * DIGEST_BYTES] = b'}';
        IdentityTag(tag)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits and braces")
    }
}

impl std::fmt::Debug for IdentityTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The segment between a limit's head and the tag of a caller that named an
/// endpoint: `ep` is no policy's or quota's name, so these keys stay apart
/// from those of callers without one.
pub const ENDPOINT_MARKER: &str = "ep:";

/// `{prefix}{scope}:{policy}:{digest}`, the key of a limit of one quota,
/// where `{digest}` is the caller's [`IdentityTag`] (braces included).
///
/// The policy is part of the key so that changing a limit's policy starts
/// from a fresh state rather than misreading another policy's.
///
/// ```
/// use flux_core::{storage_key, Policy};
/// let key = storage_key("flux:", "api", Policy::Gcra, b"10.0.0.1");
/// assert!(key.starts_with("flux:api:gcra:{"));
/// assert_eq!(key.len(), "flux:api:gcra:{}".len() + 32);
/// assert!(!key.contains("10.0.0.1"));
/// ```
pub fn storage_key(prefix: &str, scope: &str, policy: Policy, identity: &[u8]) -> String {
    let head = format!("{prefix}{scope}:{}:", policy.name());
    key_in(&head, None, &IdentityTag::new(identity))
}

/// `{prefix}{scope}:{policy}:ep:{digest}`: where `identity`'s state for
/// `endpoint` lives under a limit of one quota (see
/// [`IdentityTag::for_endpoint`]). Each endpoint is a limit of its own on
/// one limiter, and like the identity the endpoint is stored only as part
/// of a digest.
///
/// ```
/// use flux_core::{endpoint_storage_key, storage_key, Policy};
/// let key = endpoint_storage_key("flux:", "api", Policy::Gcra, b"search", b"10.0.0.1");
/// assert!(key.starts_with("flux:api:gcra:ep:{"));
/// assert_ne!(key, endpoint_storage_key("flux:", "api", Policy::Gcra, b"sea", b"rch10.0.0.1"));
/// assert!(!key.contains("search"));
/// ```
pub fn endpoint_storage_key(
    prefix: &str,
    scope: &str,
    policy: Policy,
    endpoint: &[u8],
    identity: &[u8],
) -> String {
    let head = format!("{prefix}{scope}:{}:", policy.name());
    key_in(
        &head,
        Some(endpoint),
        &IdentityTag::for_endpoint(endpoint, identity),
    )
}

/// `head`, the endpoint marker when the caller named an endpoint, and the
/// caller's tag: a key of a limit whose quotas' heads were made once.
pub fn key_in(head: &str, endpoint: Option<&[u8]>, tag: &IdentityTag) -> String {
    let tag = tag.as_str();
    let marker = if endpoint.is_some() {
        ENDPOINT_MARKER
    } else {
        ""
    };
    let mut key = String::with_capacity(head.len() + marker.len() + tag.len());
    key.push_str(head);
    key.push_str(marker);
    key.push_str(tag);
    key
}

/// What Redis Cluster hashes to place `key`: the bytes between the first
/// `{` and the next `}` when there are any, else the whole key. Keys with
/// the same tag live together: on one cluster node, in one memory shard.
///
/// ```
/// use flux_core::hash_tag;
/// assert_eq!(hash_tag(b"flux:api:gcra:{ab12}"), b"ab12");
/// assert_eq!(hash_tag(b"{app}:api:{ab12}"), b"app");
/// assert_eq!(hash_tag(b"plain"), b"plain");
/// assert_eq!(hash_tag(b"{}empty"), b"{}empty"); // an empty tag does not count
/// ```
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_first_128_bits_of_sha256_in_lowercase_hex_as_a_tag() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        let key = storage_key("p:", "s", Policy::FixedWindow, b"abc");
        assert_eq!(key, "p:s:fixed_window:{ba7816bf8f01cfea414140de5dae2223}");
        assert_eq!(
            hash_tag(key.as_bytes()),
            b"ba7816bf8f01cfea414140de5dae2223"
        );
    }

    #[test]
    fn an_endpoints_digest_covers_its_length_the_endpoint_and_the_identity() {
        // SHA-256(00 00 00 00 00 00 00 01 "a" "bc")
        let mut bytes = 1u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let digest = Sha256::digest(&bytes);
        let hex: String = digest[..DIGEST_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            endpoint_storage_key("p:", "s", Policy::Gcra, b"a", b"bc"),
            format!("p:s:gcra:ep:{{{hex}}}")
        );
        // The same bytes split elsewhere, a NUL, or no endpoint: all apart.
        let keys = [
            endpoint_storage_key("p:", "s", Policy::Gcra, b"a", b"bc"),
            endpoint_storage_key("p:", "s", Policy::Gcra, b"ab", b"c"),
            endpoint_storage_key("p:", "s", Policy::Gcra, b"a\0b", b"c"),
            endpoint_storage_key("p:", "s", Policy::Gcra, b"a\0c", b"c"),
            endpoint_storage_key("p:", "s", Policy::Gcra, b"", b"abc"),
            storage_key("p:", "s", Policy::Gcra, b"abc"),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(keys[i + 1..].iter().all(|b| a != b), "{a}");
        }
    }
}
