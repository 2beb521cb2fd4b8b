//! The API-key token format: recognisable, random, and checksummed.
//!
//! A key is `ohk_`, then 32 lower-case hex digits of randomness from the OS
//! generator (128 bits), then an 8-digit checksum (the first four bytes of
//! the SHA-256 of everything before it): 44 characters in all, for example
//! `ohk_3f6c0a8e5d1b47c29e0f7a6b5c4d3e2f9a1b2c3d`. The prefix lets secret
//! scanners find leaked keys ([`ApiKey::SECRET_SCANNING_REGEX`]); the
//! checksum lets a server refuse a mistyped or made-up key before any cache
//! or store lookup, as GitHub does with its tokens.
//!
//! To refuse malformed keys early, give the gate a filter with
//! [`GateBuilder::token_filter`](crate::gate::GateBuilder::token_filter); to keep
//! accepting keys issued in another format, let the filter pass them.
//!
//! # Example
//!
//! ```
//! use scopegate::key::ApiKey;
//!
//! let token = ApiKey::generate().expect("OS random generator");
//! assert!(token.starts_with("ohk_") && token.len() == 44);
//! assert!(ApiKey::is_well_formed(token.as_bytes()));
//!
//! // One changed character breaks the checksum.
//! let mut typo = token.clone().into_bytes();
//! typo[10] = if typo[10] == b'0' { b'1' } else { b'0' };
//! assert!(!ApiKey::is_well_formed(&typo));
//!
//! // A filter for the gate: keys with the prefix must be well formed; other
//! // formats (issued before this one) still go to the store.
//! assert!(ApiKey::filter(b"legacy-key-123"));
//! assert!(!ApiKey::filter(b"ohk_not_a_real_key"));
//! ```

use sha2::{Digest, Sha256};

/// The `ohk_` API-key format. See the [module docs](crate::key).
#[derive(Clone, Copy, Debug)]
pub struct ApiKey;

const RANDOM_HEX: usize = 32;
const CHECKSUM_HEX: usize = 8;

impl ApiKey {
    /// What every key starts with.
    pub const PREFIX: &'static str = "ohk_";

    /// A key's length: prefix, 32 random hex digits, 8 checksum hex digits.
    pub const LEN: usize = Self::PREFIX.len() + RANDOM_HEX + CHECKSUM_HEX;

    /// A regular expression for secret scanners (GitHub push protection,
    /// gitleaks, trufflehog …) that matches keys and nothing else.
    pub const SECRET_SCANNING_REGEX: &'static str = r"\bohk_[0-9a-f]{40}\b";

    /// A new key, from 128 bits of the OS random generator.
    ///
    /// # Errors
    ///
    /// The OS generator failed; no key can be made safely then.
    pub fn generate() -> Result<String, getrandom::Error> {
        let mut random = [0u8; RANDOM_HEX / 2];
        getrandom::fill(&mut random)?;
        let mut key = String::with_capacity(Self::LEN);
        key.push_str(Self::PREFIX);
        push_hex(&mut key, &random);
        let checksum = Sha256::digest(key.as_bytes());
        push_hex(&mut key, &checksum[..CHECKSUM_HEX / 2]);
        Ok(key)
    }

    /// Whether `token` has the format and a correct checksum.
    pub fn is_well_formed(token: &[u8]) -> bool {
        if token.len() != Self::LEN || !token.starts_with(Self::PREFIX.as_bytes()) {
            return false;
        }
        let (body, checksum) = token.split_at(Self::LEN - CHECKSUM_HEX);
        if !token[Self::PREFIX.len()..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return false;
        }
        let digest = Sha256::digest(body);
        let mut expected = String::with_capacity(CHECKSUM_HEX);
        push_hex(&mut expected, &digest[..CHECKSUM_HEX / 2]);
        expected.as_bytes() == checksum
    }

    /// A [`token_filter`](crate::gate::GateBuilder::token_filter): tokens with the
    /// `ohk_` prefix must be well formed; any other token passes, so keys of
    /// an older format still resolve.
    pub fn filter(token: &[u8]) -> bool {
        !token.starts_with(Self::PREFIX.as_bytes()) || Self::is_well_formed(token)
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_well_formed_and_match_the_regex_shape() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a, b);
        for key in [&a, &b] {
            assert_eq!(key.len(), 44);
            assert!(ApiKey::is_well_formed(key.as_bytes()));
            assert!(key[4..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        let key = ApiKey::generate().unwrap();
        let upper = key.to_uppercase().replacen("OHK_", "ohk_", 1);
        for bad in [
            &key[..43],
            &format!("{key}0"),
            &format!("ohx_{}", &key[4..]),
            &upper,
            "ohk_0000000000000000000000000000000000000000",
        ] {
            assert!(!ApiKey::is_well_formed(bad.as_bytes()), "{bad}");
            assert!(
                !ApiKey::filter(bad.as_bytes()) || !bad.starts_with("ohk_"),
                "{bad}"
            );
        }
        assert!(ApiKey::filter(b"some-legacy-token"));
    }
}
