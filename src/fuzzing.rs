//! Entry points for `cargo fuzz` (`fuzz/`) into the crate-private parsers,
//! each checking its invariants and panicking (a crash, to libFuzzer) when
//! one fails. Compiled only with `--cfg fuzzing`, which `cargo fuzz` sets:
//! not part of the API.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

use crate::bearer;

/// Parses `value` as the one `Authorization` header, and asserts that the
/// parser agrees with the reference written from RFC 6750's grammar.
pub fn authorization(value: &[u8]) {
    let Ok(header) = HeaderValue::from_bytes(value) else {
        return; // not a header value at all: hyper never hands one over
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, header);
    let parsed = bearer::token(&headers).and_then(|token| {
        bearer::check(token).map_err(bearer::NoToken::Malformed)?;
        Ok(token.to_vec())
    });
    assert_eq!(parsed, bearer::reference(value), "{value:?}");
}

/// Reads `answer` as an introspection answer, and asserts that a grant
/// only comes from one that is active, for the configured audience and
/// unexpired.
#[cfg(feature = "introspection")]
pub fn introspection_answer(answer: &[u8]) {
    use std::sync::LazyLock;

    use serde_json::Value;

    use crate::credential::PresentedToken;
    use crate::store::oauth::introspection::IntrospectionStore;

    static STORE: LazyLock<IntrospectionStore> = LazyLock::new(|| {
        IntrospectionStore::builder("http://127.0.0.1:9/introspect", "https://api.test")
            .client_credentials("api", "secret")
            .entitlements(std::collections::HashMap::<String, Vec<String>>::new())
            .build()
            .expect("a valid configuration")
    });
    let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
        return;
    };
    let token = PresentedToken::new("opaque-token");
    match STORE.read_answer(&answer, &token) {
        Err(_) => assert!(!answer.is_object()),
        Ok(None) => {}
        Ok(Some(grant)) => {
            assert_eq!(answer["active"], Value::Bool(true));
            let aud = &answer["aud"];
            assert!(
                aud == "https://api.test"
                    || aud
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == "https://api.test"))
            );
            assert!(!grant.client_id.is_empty() && !grant.account_id.is_empty());
        }
    }
}
