//! `JwtStore` in detail, with tokens signed here by test keys: each allowed
//! algorithm, every required claim, `kid` rules, and a JWKS endpoint that
//! fails and recovers. `tests/oauth.rs` covers the same store against a real
//! authorization server.
#![cfg(feature = "jwt")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use scopegate::credential::PresentedToken;
use scopegate::store::oauth::jwt::{JwsAlgorithm, JwtStore, JwtStoreBuilder};
use scopegate::store::EntitlementSource;
use scopegate::store::{CredentialStore, StoreError};
use scopegate::{Credential, ScopeSet};
use serde_json::{json, Value};

const ISSUER: &str = "https://auth.test";
const AUDIENCE: &str = "https://api.test";

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
}

fn rs256(kid: &'static str) -> Signer {
    let pem = include_bytes!("../benches/fixtures/rs256-private.pem");
    Signer {
        key: EncodingKey::from_rsa_pem(pem).unwrap(),
        alg: Algorithm::RS256,
        kid,
    }
}

fn es256() -> Signer {
    Signer {
        key: EncodingKey::from_ec_pem(include_bytes!("fixtures/es256-private.pem")).unwrap(),
        alg: Algorithm::ES256,
        kid: "ec",
    }
}

fn ed25519() -> Signer {
    Signer {
        key: EncodingKey::from_ed_pem(include_bytes!("fixtures/ed25519-private.pem")).unwrap(),
        alg: Algorithm::EdDSA,
        kid: "ed",
    }
}

impl Signer {
    fn jwk(&self) -> Value {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&self.key, self.alg).unwrap()).unwrap();
        jwk["kid"] = json!(self.kid);
        jwk
    }

    fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(self.header(), claims)
    }

    fn header(&self) -> Header {
        Header {
            typ: Some("at+jwt".into()),
            kid: Some(self.kid.into()),
            ..Header::new(self.alg)
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user_1", "client_id": "app_1", "jti": "jti_1",
        "iat": now(), "exp": now() + 3600, "scope": "contacts:read", "workspace_id": "ws_acme",
    })
}

fn plans() -> HashMap<String, Vec<String>> {
    HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])])
}

fn builder(keys: &[&Signer]) -> JwtStoreBuilder {
    ScopeSet::parse(["contacts:read"]).unwrap(); // as a route would
    let jwks = json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() });
    JwtStore::builder(ISSUER, AUDIENCE)
        .jwks_json(&jwks.to_string())
        .algorithms([
            JwsAlgorithm::RS256,
            JwsAlgorithm::ES256,
            JwsAlgorithm::EdDSA,
        ])
        .account_claim("workspace_id")
        .entitlements(plans())
}

async fn verdict(store: &JwtStore, token: &str) -> Option<Credential> {
    store
        .resolve(&PresentedToken::new(token))
        .await
        .expect("no store error")
}

#[tokio::test]
async fn each_allowed_algorithm_verifies_and_no_other() {
    let (rsa, ec, ed) = (rs256("rsa"), es256(), ed25519());
    let all = builder(&[&rsa, &ec, &ed]).build().unwrap();
    for signer in [&rsa, &ec, &ed] {
        let credential = verdict(&all, &signer.sign(&claims())).await;
        let credential = credential.unwrap_or_else(|| panic!("{:?} refused", signer.alg));
        assert_eq!(credential.account_id(), "ws_acme");
        assert!(credential.has_entitlement("api-access"));
    }
    let rsa_only = builder(&[&rsa, &ec, &ed])
        .algorithms([JwsAlgorithm::RS256])
        .build()
        .unwrap();
    assert!(verdict(&rsa_only, &rsa.sign(&claims())).await.is_some());
    assert!(verdict(&rsa_only, &ec.sign(&claims())).await.is_none());
    assert!(verdict(&rsa_only, &ed.sign(&claims())).await.is_none());
}

#[tokio::test]
async fn every_required_claim_is_checked() {
    let rsa = rs256("rsa");
    let store = builder(&[&rsa]).build().unwrap();
    assert!(verdict(&store, &rsa.sign(&claims())).await.is_some());

    for claim in [
        "iss",
        "aud",
        "exp",
        "iat",
        "sub",
        "client_id",
        "jti",
        "workspace_id",
    ] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(claim);
        assert!(
            verdict(&store, &rsa.sign(&c)).await.is_none(),
            "without {claim}"
        );
    }
    let refused: [(&str, Value); 8] = [
        ("iss", json!("https://auth.test/")),
        ("aud", json!("https://other.test")),
        ("aud", json!(["https://other.test", "https://third.test"])),
        ("exp", json!(now() - 60)),
        ("nbf", json!(now() + 60)),
        ("iat", json!(now() + 60)),
        ("workspace_id", json!("")),
        ("client_id", json!(7)),
    ];
    for (claim, value) in refused {
        let mut c = claims();
        c[claim] = value.clone();
        assert!(
            verdict(&store, &rsa.sign(&c)).await.is_none(),
            "{claim}: {value}"
        );
    }
    let accepted: [(&str, Value); 4] = [
        ("aud", json!(["https://other.test", AUDIENCE])),
        ("exp", json!(now() - 5)), // within the 30 s leeway
        ("nbf", json!(now() + 5)),
        ("iat", json!(now() + 5)),
    ];
    for (claim, value) in accepted {
        let mut c = claims();
        c[claim] = value.clone();
        assert!(
            verdict(&store, &rsa.sign(&c)).await.is_some(),
            "{claim}: {value}"
        );
    }
}

#[tokio::test]
async fn typ_must_be_at_jwt_unless_configured() {
    let rsa = rs256("rsa");
    let store = builder(&[&rsa]).build().unwrap();
    let with_typ = |typ: Option<&str>| {
        let mut header = rsa.header();
        header.typ = typ.map(str::to_owned);
        rsa.sign_with(header, &claims())
    };
    assert!(verdict(&store, &with_typ(Some("application/at+jwt")))
        .await
        .is_some());
    assert!(verdict(&store, &with_typ(Some("JWT"))).await.is_none());
    assert!(verdict(&store, &with_typ(None)).await.is_none());
    let lax = builder(&[&rsa]).typ("JWT").build().unwrap();
    assert!(verdict(&lax, &with_typ(Some("JWT"))).await.is_some());
}

#[tokio::test]
async fn keys_are_chosen_by_kid_family_and_alg() {
    let (a, b, ec) = (rs256("a"), rs256("b"), es256());
    let kidless = |signer: &Signer| {
        let mut header = signer.header();
        header.kid = None;
        signer.sign_with(header, &claims())
    };
    // Without a kid: only when exactly one key fits the algorithm.
    let one_rsa = builder(&[&a, &ec]).build().unwrap();
    assert!(verdict(&one_rsa, &kidless(&a)).await.is_some());
    let two_rsa = builder(&[&a, &b, &ec]).build().unwrap();
    assert!(verdict(&two_rsa, &kidless(&a)).await.is_none());
    assert!(verdict(&two_rsa, &a.sign(&claims())).await.is_some());
    // A kid naming a key of another family.
    let mut header = a.header();
    header.kid = Some("ec".into());
    assert!(verdict(&one_rsa, &a.sign_with(header, &claims()))
        .await
        .is_none());
    // A JWK that names another algorithm.
    let mut jwk = a.jwk();
    jwk["alg"] = json!("RS512");
    let pinned = JwtStore::builder(ISSUER, AUDIENCE)
        .jwks_json(&json!({ "keys": [jwk] }).to_string())
        .account_claim("workspace_id")
        .entitlements(plans())
        .build()
        .unwrap();
    assert!(verdict(&pinned, &a.sign(&claims())).await.is_none());
}

#[tokio::test]
async fn scopes_the_process_does_not_know_are_dropped() {
    let rsa = rs256("rsa");
    let store = builder(&[&rsa]).build().unwrap();
    let mut c = claims();
    c["scope"] = json!("contacts:read  never:named:by:any:route");
    let credential = verdict(&store, &rsa.sign(&c)).await.unwrap();
    assert_eq!(format!("{:?}", credential.scopes()), r#"{"contacts:read"}"#);
}

struct Broken;

#[async_trait]
impl EntitlementSource for Broken {
    async fn entitlements(&self, _: &str) -> Result<Vec<String>, StoreError> {
        Err(StoreError::new("plans unavailable"))
    }
}

#[tokio::test]
async fn an_entitlement_source_failure_is_a_store_error() {
    let rsa = rs256("rsa");
    let store = builder(&[&rsa]).entitlements(Broken).build().unwrap();
    let error = store
        .resolve(&PresentedToken::new(&rsa.sign(&claims())))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "credential store failed: plans unavailable"
    );
}

/// A JWKS endpoint on loopback that can be made to fail, counting requests.
struct JwksServer {
    url: String,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(keys: Value) -> JwksServer {
    let failing = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (f, h) = (Arc::clone(&failing), Arc::clone(&hits));
    let router = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (f, h, keys) = (Arc::clone(&f), Arc::clone(&h), keys.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    (http::StatusCode::INTERNAL_SERVER_ERROR, String::new())
                } else {
                    (http::StatusCode::OK, keys.to_string())
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    JwksServer { url, failing, hits }
}

/// Waits (up to 2 s) for `done`: what a background refresh does lands soon
/// after the request that started it.
async fn settle(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() && start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_failing_jwks_endpoint_keeps_the_last_good_keys_and_is_retried_with_backoff() {
    let rsa = rs256("rsa");
    let server = jwks_server(json!({ "keys": [rsa.jwk()] })).await;
    let store = JwtStore::builder(ISSUER, AUDIENCE)
        .jwks_uri(&server.url)
        .account_claim("workspace_id")
        .entitlements(plans())
        .keys_ttl(Duration::from_millis(200))
        .refresh_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let token = |jti: &str| {
        let mut c = claims();
        c["jti"] = json!(jti);
        rsa.sign(&c)
    };
    let hits = || server.hits.load(Ordering::SeqCst);

    assert!(verdict(&store, &token("1")).await.is_some());
    assert_eq!(hits(), 1);

    // The endpoint fails and the keys go stale: one refresh is tried (in the
    // background), and the last good keys still verify.
    server.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(verdict(&store, &token("2")).await.is_some());
    settle(|| hits() >= 2).await;
    let within_backoff = std::time::Instant::now(); // 1 s after one failure
    assert_eq!(hits(), 2);
    // A kid that the last good keys lack cannot be checked: a store error
    // (503), never a grant.
    let mut header = rsa.header();
    header.kid = Some("rotated".into());
    let unknown = rsa.sign_with(header, &claims());
    assert!(store.resolve(&PresentedToken::new(&unknown)).await.is_err());
    // Within the backoff: no fetch at all, however many lookups (a debug
    // build verifies slowly, so the loop is bounded in time, not count).
    let mut i = 0;
    while i < 3 || within_backoff.elapsed() < Duration::from_millis(300) {
        assert!(verdict(&store, &token(&format!("3-{i}"))).await.is_some());
        i += 1;
    }
    assert_eq!(hits(), 2, "{i} lookups within the backoff");

    // After the backoff, the next lookup fetches again, and it recovers.
    server.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = hits();
    assert!(verdict(&store, &token("4")).await.is_some());
    settle(|| hits() > before).await;
    assert_eq!(hits(), before + 1);
    assert_eq!(store.jwks_fetches(), hits() as u64);
    assert!(
        verdict(&store, &unknown).await.is_none(),
        "known to be unknown now"
    );
}

#[tokio::test]
async fn with_no_key_ever_fetched_lookups_are_store_errors() {
    let server = jwks_server(json!({ "keys": [] })).await;
    server.failing.store(true, Ordering::SeqCst);
    let store = JwtStore::builder(ISSUER, AUDIENCE)
        .jwks_uri(&server.url)
        .account_claim("workspace_id")
        .entitlements(plans())
        .build()
        .unwrap();
    let token = rs256("rsa").sign(&claims());
    for _ in 0..5 {
        let error = store
            .resolve(&PresentedToken::new(&token))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "credential store failed: authorization server answered 500 Internal Server Error"
        );
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "backoff, not a fetch per request"
    );
}

/// The scope names a credential ended up with, sorted.
fn scope_names(credential: &Credential) -> Vec<String> {
    let mut names: Vec<String> = credential
        .scopes()
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn scopes_come_from_each_providers_claim_shape() {
    use scopegate::store::oauth::ScopeClaim;
    ScopeSet::parse(["contacts:write", "guides:read", "webhooks:manage"]).unwrap();
    let rsa = rs256("rsa");
    // (where the scopes are, the claims that put them there)
    let shapes: Vec<(Vec<ScopeClaim>, Value)> = vec![
        (
            vec![ScopeClaim::Scp],
            json!({"scp": ["contacts:read", "guides:read"]}),
        ),
        (
            vec![ScopeClaim::Scp],
            json!({"scp": "contacts:read guides:read"}),
        ),
        (
            vec![ScopeClaim::Permissions],
            json!({"permissions": ["contacts:read", "guides:read"]}),
        ),
        (
            vec![ScopeClaim::Roles],
            json!({"roles": ["contacts:read", "guides:read"]}),
        ),
        (
            vec![ScopeClaim::KeycloakRealmRoles],
            json!({"realm_access": {"roles": ["contacts:read", "guides:read", "offline_access"]}}),
        ),
        (
            vec![ScopeClaim::KeycloakClientRoles("onboardinghub-api".into())],
            json!({"resource_access": {"onboardinghub-api": {"roles": ["contacts:read", "guides:read"]},
                                       "account": {"roles": ["webhooks:manage"]}}}),
        ),
        (
            vec![ScopeClaim::Pointer(
                "/https:~1~1onboarding-hub.com~1scopes".into(),
            )],
            json!({"https://onboarding-hub.com/scopes": ["contacts:read", "guides:read"]}),
        ),
        (
            vec![ScopeClaim::Custom(Arc::new(|claims| {
                Ok(claims["grants"]
                    .as_str()
                    .unwrap_or("")
                    .split(',')
                    .map(str::to_owned)
                    .collect())
            }))],
            json!({"grants": "contacts:read,guides:read"}),
        ),
        // Several sources, combined.
        (
            vec![ScopeClaim::Scope, ScopeClaim::Scp],
            json!({"scope": "contacts:read", "scp": ["guides:read"]}),
        ),
    ];
    for (sources, extra) in shapes {
        let store = builder(&[&rsa])
            .scope_claims(sources.clone())
            .build()
            .unwrap();
        let mut c = claims();
        c.as_object_mut().unwrap().remove("scope");
        for (name, value) in extra.as_object().unwrap() {
            c[name] = value.clone();
        }
        let credential = verdict(&store, &rsa.sign(&c)).await;
        let credential = credential.unwrap_or_else(|| panic!("{sources:?} refused {extra}"));
        assert_eq!(
            scope_names(&credential),
            ["contacts:read", "guides:read"],
            "{sources:?}: {extra}"
        );
    }
    // The default reads `scope` alone.
    let store = builder(&[&rsa]).build().unwrap();
    let mut c = claims();
    c["scp"] = json!(["guides:read"]);
    assert_eq!(
        scope_names(&verdict(&store, &rsa.sign(&c)).await.unwrap()),
        ["contacts:read"]
    );
}

#[tokio::test]
async fn claims_that_cannot_be_read_refuse_the_token() {
    use scopegate::store::oauth::ScopeClaim;
    let rsa = rs256("rsa");
    let store = builder(&[&rsa])
        .scope_claims([ScopeClaim::Scope, ScopeClaim::Scp, ScopeClaim::Permissions])
        .build()
        .unwrap();
    let refused: [(&str, Value); 6] = [
        ("scope", json!(["contacts:read"])),
        ("scp", json!(42)),
        ("scp", json!(["contacts:read", 1])),
        ("permissions", json!("contacts:read")),
        ("workspace_id", json!({"id": "ws_acme"})),
        ("client_id", json!("")),
    ];
    for (claim, value) in refused {
        let mut c = claims();
        c[claim] = value.clone();
        assert!(
            verdict(&store, &rsa.sign(&c)).await.is_none(),
            "{claim}: {value}"
        );
    }
    // An account by JSON pointer; missing, it refuses.
    let nested = builder(&[&rsa])
        .account_claim("/app_metadata/workspace")
        .build()
        .unwrap();
    let mut c = claims();
    c["app_metadata"] = json!({"workspace": "ws_acme"});
    let credential = verdict(&nested, &rsa.sign(&c)).await.unwrap();
    assert_eq!(credential.account_id(), "ws_acme");
    assert!(verdict(&nested, &rsa.sign(&claims())).await.is_none());
}

#[tokio::test]
async fn audiences_are_a_list_and_cognito_names_the_client_instead() {
    let rsa = rs256("rsa");
    let two = builder(&[&rsa])
        .audiences([AUDIENCE, "https://api2.test"])
        .build()
        .unwrap();
    for (aud, accepted) in [
        (json!("https://api2.test"), true),
        (json!(["https://other.test", "https://api2.test"]), true),
        (json!(AUDIENCE), true),
        (json!("https://other.test"), false),
    ] {
        let mut c = claims();
        c["aud"] = aud.clone();
        assert_eq!(
            verdict(&two, &rsa.sign(&c)).await.is_some(),
            accepted,
            "{aud}"
        );
    }
    // Cognito: no `aud`, the app client in `client_id`.
    let cognito = builder(&[&rsa])
        .audiences(["app_1"])
        .client_id_as_audience(true)
        .build()
        .unwrap();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert!(verdict(&cognito, &rsa.sign(&c)).await.is_some());
    c["client_id"] = json!("app_2");
    assert!(
        verdict(&cognito, &rsa.sign(&c)).await.is_none(),
        "another client"
    );
    c["client_id"] = json!("app_1");
    c["aud"] = json!("https://other.test");
    assert!(
        verdict(&cognito, &rsa.sign(&c)).await.is_none(),
        "an aud that is not ours"
    );
    // Without the profile a token without `aud` is refused.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert!(verdict(&two, &rsa.sign(&c)).await.is_none());
}

#[tokio::test]
async fn typ_jwt_and_no_typ_only_when_accepted() {
    let rsa = rs256("rsa");
    let with_typ = |typ: Option<&str>| {
        let mut header = rsa.header();
        header.typ = typ.map(str::to_owned);
        rsa.sign_with(header, &claims())
    };
    let strict = builder(&[&rsa]).build().unwrap();
    let lax = builder(&[&rsa]).accept_typ_jwt(true).build().unwrap();
    for (typ, strict_ok, lax_ok) in [
        (Some("at+jwt"), true, true),
        (Some("application/at+jwt"), true, true),
        (Some("JWT"), false, true),
        (Some("jwt"), false, true),
        (None, false, true),
        (Some("id+jwt"), false, false),
    ] {
        assert_eq!(
            verdict(&strict, &with_typ(typ)).await.is_some(),
            strict_ok,
            "{typ:?}"
        );
        assert_eq!(
            verdict(&lax, &with_typ(typ)).await.is_some(),
            lax_ok,
            "{typ:?}"
        );
    }
}

/// Through a gate and its cache, as a server runs it: the leeway on `exp`
/// holds end to end, and ends when it ends.
#[tokio::test]
async fn the_exp_leeway_holds_through_the_cache_and_ends_there() {
    use http::{Request, Response, StatusCode};
    use scopegate::{CachedStore, Gate};
    use tower::{service_fn, Layer, ServiceExt};

    let rsa = rs256("rsa");
    let store = builder(&[&rsa])
        .leeway(Duration::from_secs(4))
        .build()
        .unwrap();
    let gate = Gate::new(CachedStore::new(store));
    let service = gate
        .api_access()
        .layer(service_fn(|_req: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        }));
    let mut c = claims();
    let exp = now() - 2; // expired 2 to 3 s ago: within the 4 s leeway
    c["exp"] = json!(exp);
    let token = rsa.sign(&c);
    let send = || {
        let request = Request::get("/api/v1/contacts")
            .header("authorization", format!("Bearer {token}"))
            .body(String::new())
            .unwrap();
        service.clone().oneshot(request)
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(send().await.unwrap().status(), StatusCode::OK, "cached");
    // Past `exp` plus the leeway, the cached credential is gone and the
    // store refuses the token.
    let until = UNIX_EPOCH + Duration::from_secs(exp + 4) + Duration::from_millis(100);
    if let Ok(wait) = until.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    assert_eq!(send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

/// A JWKS endpoint whose document can be replaced, counting requests.
async fn rotating_jwks_server(
    keys: Value,
) -> (String, Arc<std::sync::Mutex<Value>>, Arc<AtomicUsize>) {
    let document = Arc::new(std::sync::Mutex::new(keys));
    let hits = Arc::new(AtomicUsize::new(0));
    let (d, h) = (Arc::clone(&document), Arc::clone(&hits));
    let router = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let body = d.lock().unwrap().to_string();
            h.fetch_add(1, Ordering::SeqCst);
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, document, hits)
}

/// Through a gate and its cache: a key rotated in just after a refresh is
/// accepted once the next refresh is allowed, not after the cache's 5 s of
/// negative caching on top; forged `kid`s meanwhile make no fetch.
#[tokio::test]
async fn a_rotated_key_is_accepted_at_the_next_allowed_refresh() {
    use http::{Request, Response, StatusCode};
    use scopegate::{CachedStore, Gate};
    use tower::{service_fn, Layer, ServiceExt};

    let (old, new) = (rs256("old"), rs256("new"));
    let (url, document, hits) = rotating_jwks_server(json!({ "keys": [old.jwk()] })).await;
    let interval = Duration::from_millis(1000);
    let store = JwtStore::builder(ISSUER, AUDIENCE)
        .jwks_uri(&url)
        .account_claim("workspace_id")
        .entitlements(plans())
        .refresh_interval(interval)
        .build()
        .unwrap();
    let gate = Gate::new(CachedStore::new(store)); // negative_time_to_live: 5 s
    let service = gate
        .api_access()
        .layer(service_fn(|_req: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
    let send = |token: String| {
        let request = Request::get("/api/v1/contacts")
            .header("authorization", format!("Bearer {token}"))
            .body(String::new())
            .unwrap();
        let service = service.clone();
        async move { service.oneshot(request).await.unwrap().status() }
    };
    // Signed before the clock starts: RSA signing is slow in a debug build.
    let (first, token) = (old.sign(&claims()), new.sign(&claims()));
    let forged: Vec<String> = (0..20)
        .map(|i| {
            let mut header = new.header();
            header.kid = Some(format!("forged-{i}"));
            new.sign_with(header, &claims())
        })
        .collect();
    assert_eq!(send(first).await, StatusCode::OK);
    let refreshed = std::time::Instant::now();
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The issuer publishes the new key and signs with it at once.
    *document.lock().unwrap() = json!({ "keys": [old.jwk(), new.jwk()] });
    assert_eq!(
        send(token.clone()).await,
        StatusCode::UNAUTHORIZED,
        "within the interval"
    );
    for forged in forged {
        assert_eq!(send(forged).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no fetch within the interval"
    );
    let accepted = loop {
        if send(token.clone()).await == StatusCode::OK {
            break refreshed.elapsed();
        }
        assert!(
            refreshed.elapsed() < Duration::from_secs(5),
            "still refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        accepted >= interval && accepted < interval + Duration::from_millis(500),
        "accepted {accepted:?} after the last refresh, with a {interval:?} interval"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one refresh for the new kid"
    );
}

/// Keys older than `keys_ttl` still verify at once; the refetch runs in the
/// background.
#[tokio::test]
async fn stale_keys_are_refreshed_in_the_background() {
    let rsa = rs256("rsa");
    let (url, _document, hits) = rotating_jwks_server(json!({ "keys": [rsa.jwk()] })).await;
    let store = JwtStore::builder(ISSUER, AUDIENCE)
        .jwks_uri(&url)
        .account_claim("workspace_id")
        .entitlements(plans())
        .keys_ttl(Duration::from_millis(400))
        .refresh_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    // One token, verified again and again: the store does not cache.
    let token = rsa.sign(&claims());
    assert!(verdict(&store, &token).await.is_some());
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..5 {
        assert!(verdict(&store, &token).await.is_some());
    }
    settle(|| hits.load(Ordering::SeqCst) >= 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one background refetch");
}

/// Several issuers: each token is verified by its own issuer's store alone,
/// and a token naming an unknown issuer makes no request at all.
#[tokio::test]
async fn several_issuers_each_with_its_own_keys_and_rules() {
    use scopegate::store::oauth::jwt::JwtIssuers;
    use scopegate::store::oauth::{OAuthConfigError, ScopeClaim};

    ScopeSet::parse(["contacts:read"]).unwrap(); // as a route would
    let (a_key, b_key) = (rs256("a"), es256());
    let (a_url, _a_doc, a_hits) = rotating_jwks_server(json!({ "keys": [a_key.jwk()] })).await;
    let (b_url, _b_doc, b_hits) = rotating_jwks_server(json!({ "keys": [b_key.jwk()] })).await;
    let a = JwtStore::builder("https://a.test", AUDIENCE)
        .jwks_uri(&a_url)
        .account_claim("workspace_id")
        .entitlements(plans())
        .build()
        .unwrap();
    let b = JwtStore::builder("https://b.test/realms/acme", "onboardinghub")
        .jwks_uri(&b_url)
        .algorithms([JwsAlgorithm::ES256])
        .accept_typ_jwt(true)
        .scope_claims([ScopeClaim::KeycloakRealmRoles])
        .account_claim("/org/id")
        .entitlements(plans())
        .build()
        .unwrap();
    let issuers = JwtIssuers::new([a.clone(), b.clone()]).unwrap();
    assert_eq!(
        JwtIssuers::new([a.clone(), a.clone()]).unwrap_err(),
        OAuthConfigError::DuplicateIssuer("https://a.test".into())
    );

    let for_a = {
        let mut c = claims();
        c["iss"] = json!("https://a.test");
        c
    };
    let for_b = json!({
        "iss": "https://b.test/realms/acme", "aud": "onboardinghub", "sub": "u", "client_id": "kc",
        "jti": "j", "iat": now(), "exp": now() + 600, "org": {"id": "ws_acme"},
        "realm_access": {"roles": ["contacts:read"]},
    });
    let b_header = Header {
        typ: Some("JWT".into()),
        ..b_key.header()
    };
    let resolve = |token: String| {
        let issuers = issuers.clone();
        async move { issuers.resolve(&PresentedToken::new(&token)).await.unwrap() }
    };
    let got = resolve(a_key.sign(&for_a)).await.expect("a's token");
    assert_eq!(scope_names(&got), ["contacts:read"]);
    let got = resolve(b_key.sign_with(b_header.clone(), &for_b))
        .await
        .expect("b's token, with b's rules");
    assert_eq!(got.account_id(), "ws_acme");
    assert_eq!(scope_names(&got), ["contacts:read"]);

    // A token naming one issuer, signed with the other's key: refused by the
    // named issuer's store, whose keys lack it; the other is never asked.
    let (a_before, b_before) = (a_hits.load(Ordering::SeqCst), b_hits.load(Ordering::SeqCst));
    let mut forged = for_b.clone();
    forged["iss"] = json!("https://a.test");
    forged["aud"] = json!(AUDIENCE);
    forged["workspace_id"] = json!("ws_acme");
    assert!(resolve(b_key.sign_with(b_key.header(), &forged))
        .await
        .is_none());
    assert!(
        resolve(a_key.sign(&for_b)).await.is_none(),
        "b's claims, a's key"
    );
    assert_eq!(
        b_hits.load(Ordering::SeqCst),
        b_before,
        "b's keys never fetched again"
    );
    assert!(a_hits.load(Ordering::SeqCst) <= a_before + 1);

    // 10 000 tokens naming random issuers (and unknown kids): refused, with
    // no request at all. Their signatures are never looked at, so one real
    // signature serves them all (signing 10 000 would take minutes in a
    // debug build).
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let signature = a_key.sign(&for_a).rsplit('.').next().unwrap().to_owned();
    let before = a_hits.load(Ordering::SeqCst) + b_hits.load(Ordering::SeqCst);
    for i in 0..10_000u32 {
        let mut c = for_a.clone();
        c["iss"] = json!(format!("https://random-{i:x}.test"));
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": format!("k{i}")});
        let token = format!("{}.{}.{signature}", b64(&header), b64(&c));
        assert!(resolve(token).await.is_none());
    }
    assert_eq!(
        a_hits.load(Ordering::SeqCst) + b_hits.load(Ordering::SeqCst),
        before
    );
    assert_eq!(a.jwks_fetches() + b.jwks_fetches(), before as u64);
}

/// The claims presets need: the client in `azp` (Keycloak, Auth0, Entra
/// v2) or `cid` (Okta), and a token id in `uti` (Entra) or none (Auth0).
#[tokio::test]
async fn the_client_and_token_id_come_from_where_configured() {
    use scopegate::CredentialKind;
    let rsa = rs256("rsa");
    let mut keycloak = claims();
    keycloak.as_object_mut().unwrap().remove("client_id");
    keycloak["azp"] = json!("kc-app");
    let strict = builder(&[&rsa]).build().unwrap();
    assert!(
        verdict(&strict, &rsa.sign(&keycloak)).await.is_none(),
        "no client_id"
    );
    let azp = builder(&[&rsa])
        .client_id_claims(["client_id", "azp"])
        .build()
        .unwrap();
    let credential = verdict(&azp, &rsa.sign(&keycloak)).await.unwrap();
    assert_eq!(
        credential.kind(),
        &CredentialKind::OAuthClient {
            client_id: "kc-app".into()
        }
    );
    // `client_id` first, when both are there.
    let credential = verdict(&azp, &rsa.sign(&claims())).await.unwrap();
    assert_eq!(
        credential.kind(),
        &CredentialKind::OAuthClient {
            client_id: "app_1".into()
        }
    );

    let mut entra = claims();
    entra.as_object_mut().unwrap().remove("jti");
    entra["uti"] = json!("uti_1");
    assert!(
        verdict(&strict, &rsa.sign(&entra)).await.is_none(),
        "no jti"
    );
    let uti = builder(&[&rsa])
        .token_id_claims(["jti", "uti"])
        .build()
        .unwrap();
    assert_eq!(
        verdict(&uti, &rsa.sign(&entra)).await.unwrap().id(),
        "uti_1"
    );

    let mut auth0 = claims();
    auth0.as_object_mut().unwrap().remove("jti");
    assert!(verdict(&uti, &rsa.sign(&auth0)).await.is_none());
    let optional = builder(&[&rsa])
        .allow_missing_token_id(true)
        .build()
        .unwrap();
    let token = rsa.sign(&auth0);
    let [a, b, c, d, ..] = *scopegate::credential::TokenHash::of(&token).as_bytes();
    assert_eq!(
        verdict(&optional, &token).await.unwrap().id(),
        format!("jwt_{a:02x}{b:02x}{c:02x}{d:02x}")
    );
    // A `jti` of the wrong type is still refused.
    let mut wrong = claims();
    wrong["jti"] = json!(7);
    assert!(verdict(&optional, &rsa.sign(&wrong)).await.is_none());
}
