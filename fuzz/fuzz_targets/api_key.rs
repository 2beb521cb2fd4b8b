//! The `ohk_` key checksum: well formed exactly when the format and the
//! SHA-256 checksum hold, written out from the definition.
#![no_main]

use scopegate::key::ApiKey;
use sha2::{Digest, Sha256};

fn reference(token: &[u8]) -> bool {
    let lower_hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    if token.len() != 44 || !token.starts_with(b"ohk_") || !lower_hex(&token[4..]) {
        return false;
    }
    let digest = Sha256::digest(&token[..36]);
    let expected: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    &token[36..] == expected.as_bytes()
}

libfuzzer_sys::fuzz_target!(|token: &[u8]| {
    assert_eq!(ApiKey::is_well_formed(token), reference(token));
    assert_eq!(ApiKey::filter(token), !token.starts_with(b"ohk_") || reference(token));
});
