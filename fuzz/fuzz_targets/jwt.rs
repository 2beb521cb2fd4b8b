//! JWTs up to the signature check: whatever the token, with keys the fuzzer
//! does not hold, `JwtStore` refuses it: never a grant, never an error (the
//! keys are static), never a panic. Reads the header, the `kid`, the claims
//! and the signature's encoding on the way.
#![no_main]

use std::sync::LazyLock;

use scopegate::credential::PresentedToken;
use scopegate::store::oauth::jwt::{JwsAlgorithm, JwtStore};
use scopegate::store::CredentialStore;

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"));

/// An RSA and an EC key, as an issuer's JWKS would list them.
const JWKS: &str = r#"{"keys":[
 {"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","e":"AQAB","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},
 {"kty":"EC","kid":"k2","use":"sig","alg":"ES256","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}
]}"#;

static STORE: LazyLock<JwtStore> = LazyLock::new(|| {
    JwtStore::builder("https://auth.test", "https://api.test")
        .jwks_json(JWKS)
        .algorithms([JwsAlgorithm::RS256, JwsAlgorithm::ES256])
        .entitlements(std::collections::HashMap::<String, Vec<String>>::new())
        .build()
        .expect("a valid configuration")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let verdict = RUNTIME.block_on(STORE.resolve(&PresentedToken::new(token)));
    assert!(matches!(verdict, Ok(None)), "{verdict:?}");
});
