//! Storage keys: where a caller's state lives, without the caller's identity.

use sha2::{Digest, Sha256};

use crate::Policy;

/// Bytes of the SHA-256 digest kept in a key: 128 bits is far beyond any
/// chance of two callers colliding, and keeps keys short.
const DIGEST_BYTES: usize = 16;

/// `{prefix}{scope}:{policy}:{digest}` where digest is the hex of the first
/// 128 bits of SHA-256(identity), so no raw IP or user id is stored.
///
/// The policy is part of the key so that changing a limit's policy starts
/// from a fresh state rather than misreading another policy's.
///
/// ```
/// use flux_core::{storage_key, Policy};
/// let key = storage_key("flux:", "api", Policy::Gcra, b"10.0.0.1");
/// assert!(key.starts_with("flux:api:gcra:"));
/// assert_eq!(key.len(), "flux:api:gcra:".len() + 32);
/// assert!(!key.contains("10.0.0.1"));
/// ```
pub fn storage_key(prefix: &str, scope: &str, policy: Policy, identity: &[u8]) -> String {
    let digest = Sha256::digest(identity);
    key_of(prefix, scope, policy, "", &digest)
}

/// Where `identity`'s state for `endpoint` lives:
/// `{prefix}{scope}:{policy}:ep:{digest}`, the digest taken over the
/// endpoint's length (8 bytes, big-endian), the endpoint and the identity.
///
/// So each endpoint is a limit of its own on one limiter, and no two
/// (endpoint, identity) pairs share a key whatever bytes they hold (a `:` or
/// a NUL in an endpoint included). The `ep` segment, which is no policy's
/// name, keeps these keys apart from those of [`storage_key`], and like the
/// identity the endpoint is stored only as part of a digest.
///
/// ```
/// use flux_core::{endpoint_storage_key, storage_key, Policy};
/// let key = endpoint_storage_key("flux:", "api", Policy::Gcra, b"search", b"10.0.0.1");
/// assert!(key.starts_with("flux:api:gcra:ep:"));
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
    let digest = Sha256::new()
        .chain_update((endpoint.len() as u64).to_be_bytes())
        .chain_update(endpoint)
        .chain_update(identity)
        .finalize();
    key_of(prefix, scope, policy, "ep:", &digest)
}

fn key_of(prefix: &str, scope: &str, policy: Policy, marker: &str, digest: &[u8]) -> String {
    let mut key = String::with_capacity(
        prefix.len() + scope.len() + policy.name().len() + marker.len() + 2 + 2 * DIGEST_BYTES,
    );
    key.push_str(prefix);
    key.push_str(scope);
    key.push(':');
    key.push_str(policy.name());
    key.push(':');
    key.push_str(marker);
    // By table: `write!` with `{:02x}` went through core::fmt for every byte
    // and cost more than the SHA-256 itself.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &byte in &digest[..DIGEST_BYTES] {
        key.push(HEX[usize::from(byte >> 4)] as char);
        key.push(HEX[usize::from(byte & 0xf)] as char);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_first_128_bits_of_sha256_in_lowercase_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            storage_key("p:", "s", Policy::FixedWindow, b"abc"),
            "p:s:fixed_window:ba7816bf8f01cfea414140de5dae2223"
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
            format!("p:s:gcra:ep:{hex}")
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
