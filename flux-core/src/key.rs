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
    let mut key = String::with_capacity(
        prefix.len() + scope.len() + policy.name().len() + 2 + 2 * DIGEST_BYTES,
    );
    key.push_str(prefix);
    key.push_str(scope);
    key.push(':');
    key.push_str(policy.name());
    key.push(':');
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
}
