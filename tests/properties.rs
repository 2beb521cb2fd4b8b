//! Property tests of the public parsers and matchers, each against a plain
//! reference written from its grammar: scope tokens and requirements (RFC
//! 6749 §3.3), the `ohk_` key checksum, route patterns, and JWTs up to the
//! signature check. They never panic, and they agree with the reference.
//! (`src/bearer.rs` holds the `Authorization` parser's, and
//! `src/store/oauth/introspection.rs` the introspection answer's; `fuzz/`
//! runs the same targets under libFuzzer.)

use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use proptest::prelude::*;
use scopegate::key::ApiKey;
use scopegate::policy::RoutePolicy;
use scopegate::scope::{Requirement, Scope};
use scopegate::{CachedStore, Gate, MemoryStore, ScopeSet};
use sha2::{Digest, Sha256};
use tower::{service_fn, Layer, ServiceExt};

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| {
            c == '\u{21}'
                || ('\u{23}'..='\u{5B}').contains(&c)
                || ('\u{5D}'..='\u{7E}').contains(&c)
        })
}

/// Names near the grammar, from a small alphabet so that the valid ones
/// stay few: every valid name is interned for the rest of the process.
fn scope_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::sample::select(vec!['a', 'b', ':', '_']),
            1 => proptest::sample::select(vec![' ', '"', '\\', '\u{7f}', '\u{0}', 'é', '\t']),
        ],
        0..4,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #[test]
    fn a_scope_is_valid_exactly_when_it_is_a_scope_token(name in scope_name()) {
        let scope = Scope::new(&name);
        prop_assert_eq!(scope.is_ok(), is_scope_token(&name), "{:?}", name);
        if let Ok(scope) = scope {
            prop_assert_eq!(scope.as_str(), name.as_str());
            prop_assert_eq!(Scope::new(&name).unwrap(), scope, "interned once");
        }
    }

    #[test]
    fn requirements_hold_exactly_as_their_definition_says(
        required in proptest::collection::vec(scope_name(), 0..4),
        granted in proptest::collection::vec(scope_name(), 0..4),
    ) {
        let valid = |names: &[String]| names.iter().all(|n| is_scope_token(n));
        let all = Requirement::all_of(&required);
        let any = Requirement::any_of(&required);
        prop_assert_eq!(all.is_ok(), !required.is_empty() && valid(&required));
        prop_assert_eq!(any.is_ok(), all.is_ok());
        prop_assert_eq!(ScopeSet::parse(&granted).is_ok(), valid(&granted));
        if let (Ok(all), Ok(any), Ok(set)) = (all, any, ScopeSet::parse(&granted)) {
            prop_assert_eq!(all.is_satisfied_by(&set), required.iter().all(|r| granted.contains(r)));
            prop_assert_eq!(any.is_satisfied_by(&set), required.iter().any(|r| granted.contains(r)));
        }
    }
}

/// The key format, from its definition: `ohk_`, 32 lowercase hex digits,
/// then the first 4 bytes of the SHA-256 of all that, in lowercase hex.
fn reference_key_is_well_formed(token: &[u8]) -> bool {
    let Ok(token) = std::str::from_utf8(token) else {
        return false;
    };
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match (token.strip_prefix("ohk_"), token.len()) {
        (Some(rest), 44) if lower_hex(rest) => {
            let digest = Sha256::digest(&token.as_bytes()[..36]);
            let expected: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
            token[36..] == expected
        }
        _ => false,
    }
}

fn key_from(random: [u8; 16]) -> String {
    let mut key = String::from("ohk_");
    for b in random {
        key.push_str(&format!("{b:02x}"));
    }
    let digest = Sha256::digest(key.as_bytes());
    for b in &digest[..4] {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

proptest! {
    #[test]
    fn a_key_is_well_formed_exactly_when_its_checksum_holds(
        random in any::<[u8; 16]>(),
        at in 0usize..44,
        with in proptest::sample::select(b"0123456789abcdefABCDEF_oh-".to_vec()),
    ) {
        let key = key_from(random);
        prop_assert!(ApiKey::is_well_formed(key.as_bytes()));
        prop_assert!(ApiKey::filter(key.as_bytes()));
        // Any one changed character is refused (the checksum or the
        // format catches it).
        let mut changed = key.clone().into_bytes();
        changed[at] = with;
        let same = changed == key.as_bytes();
        prop_assert_eq!(ApiKey::is_well_formed(&changed), same);
        prop_assert_eq!(ApiKey::is_well_formed(&changed), reference_key_is_well_formed(&changed));
    }

    #[test]
    fn any_bytes_agree_with_the_reference_key_check(token in proptest::collection::vec(any::<u8>(), 0..50)) {
        prop_assert_eq!(ApiKey::is_well_formed(&token), reference_key_is_well_formed(&token));
    }
}

/// What the router answers for `path` with one public route, `pattern`.
fn route(pattern: &str, path: &str, rt: &tokio::runtime::Runtime) -> Result<StatusCode, String> {
    let gate = Gate::new(CachedStore::new(MemoryStore::new()));
    let layer = gate
        .policy(RoutePolicy::new().public(Method::GET, pattern))
        .map_err(|e| e.to_string())?;
    let service = layer.layer(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let Ok(request) = Request::get(path).body(String::new()) else {
        return Ok(StatusCode::BAD_REQUEST);
    };
    Ok(rt.block_on(service.oneshot(request)).unwrap().status())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #[test]
    fn any_pattern_builds_or_is_refused_without_a_panic(pattern in "[/a{}*:._~%-]{0,12}") {
        let rt = runtime();
        if let Ok(status) = route(&pattern, "/a", &rt) {
            prop_assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND);
        }
    }

    /// Literal patterns match their own path and nothing else: not a
    /// prefix, not an extension, not another case, not a trailing slash.
    #[test]
    fn a_literal_pattern_matches_exactly_its_path(
        segments in proptest::collection::vec("[a-zA-Z0-9._~-]{1,6}", 1..4),
        other in "[a-zA-Z0-9._~-]{1,6}",
    ) {
        let rt = runtime();
        let path = format!("/{}", segments.join("/"));
        prop_assert_eq!(route(&path, &path, &rt), Ok(StatusCode::OK));
        for miss in [format!("{path}/"), format!("{path}/{other}"), format!("{path}{other}")] {
            prop_assert_eq!(route(&path, &miss, &rt), Ok(StatusCode::NOT_FOUND), "{}", miss);
        }
        let upper = path.to_uppercase();
        if upper != path {
            prop_assert_eq!(route(&path, &upper, &rt), Ok(StatusCode::NOT_FOUND));
        }
    }

    /// `{id}` takes exactly one non-empty segment; `*` the rest.
    #[test]
    fn parameters_take_one_segment_and_wildcards_the_rest(
        base in "[a-z]{1,5}",
        value in "[a-zA-Z0-9._~%-]{1,8}",
        more in "[a-z]{1,5}",
    ) {
        let rt = runtime();
        let one = format!("/{base}/{{id}}");
        prop_assert_eq!(route(&one, &format!("/{base}/{value}"), &rt), Ok(StatusCode::OK));
        prop_assert_eq!(route(&one, &format!("/{base}/{value}/{more}"), &rt), Ok(StatusCode::NOT_FOUND));
        prop_assert_eq!(route(&one, &format!("/{base}/"), &rt), Ok(StatusCode::NOT_FOUND));
        let rest = format!("/{base}/*");
        prop_assert_eq!(route(&rest, &format!("/{base}/{value}/{more}"), &rt), Ok(StatusCode::OK));
        prop_assert_eq!(route(&rest, &format!("/{more}{base}/{value}"), &rt), Ok(StatusCode::NOT_FOUND));
    }
}

#[cfg(feature = "jwt")]
mod jwt {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use scopegate::credential::PresentedToken;
    use scopegate::store::oauth::jwt::JwtStore;
    use scopegate::store::CredentialStore;
    use serde_json::{json, Value};

    fn store() -> JwtStore {
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
            &jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
                "../benches/fixtures/rs256-private.pem"
            ))
            .unwrap(),
            jsonwebtoken::Algorithm::RS256,
        )
        .unwrap();
        let mut jwk = serde_json::to_value(jwk).unwrap();
        jwk["kid"] = json!("k1");
        JwtStore::builder("https://auth.test", "https://api.test")
            .jwks_json(&json!({ "keys": [jwk] }).to_string())
            .entitlements(std::collections::HashMap::<String, Vec<String>>::new())
            .build()
            .unwrap()
    }

    /// JSON values of every kind, nested a little.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            "[a-zA-Z0-9+:/ .-]{0,12}".prop_map(Value::String),
            proptest::sample::select(vec![
                "RS256",
                "none",
                "HS256",
                "at+jwt",
                "JWT",
                "k1",
                "https://auth.test",
                "https://api.test"
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::sample::select(vec![
                        "alg",
                        "typ",
                        "kid",
                        "iss",
                        "aud",
                        "exp",
                        "nbf",
                        "iat",
                        "sub",
                        "client_id",
                        "jti",
                        "scope",
                        "crit",
                        "jwk"
                    ]),
                    inner,
                    0..8,
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// Whatever the header and claims, and with a signature that cannot
        /// verify, the store refuses: never a grant, never an error (the
        /// keys are static), never a panic.
        #[test]
        fn tokens_with_any_header_and_claims_are_refused(
            header in json_value(),
            claims in json_value(),
            signature in proptest::collection::vec(any::<u8>(), 0..300),
            raw in "[a-zA-Z0-9._~+/=-]{0,40}",
        ) {
            let store = store();
            let rt = runtime();
            let token = format!(
                "{}.{}.{}",
                B64.encode(header.to_string()),
                B64.encode(claims.to_string()),
                B64.encode(&signature)
            );
            for token in [token, raw] {
                let verdict = rt.block_on(store.resolve(&PresentedToken::new(&token)));
                prop_assert!(matches!(verdict, Ok(None)), "{:?}", verdict);
            }
        }
    }
}
