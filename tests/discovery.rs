//! Discovery (RFC 8414, OpenID Connect Discovery) against a fixture issuer
//! on loopback with a path, as Keycloak has (`/realms/{realm}`): where the
//! metadata is looked for, that its `issuer` must match, and every way it
//! can fail: down at startup, slow, mismatched, incomplete.
#![cfg(all(feature = "jwt", feature = "introspection"))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use scopegate::credential::PresentedToken;
use scopegate::store::oauth::introspection::IntrospectionStore;
use scopegate::store::oauth::jwt::{JwtStore, JwtStoreBuilder};
use scopegate::store::{ChainStore, CredentialStore};
use scopegate::{CachedStore, Gate, ScopeSet};
use serde_json::{json, Value};

const AUDIENCE: &str = "https://api.test";

/// How the fixture's metadata endpoints answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Down,
    Slow,
    WrongIssuer,
    NoJwksUri,
}

#[derive(Clone)]
struct Issuer {
    base: String,
    mode: Arc<Mutex<Mode>>,
    metadata_hits: Arc<AtomicUsize>,
    jwks: Value,
}

impl Issuer {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.metadata_hits.load(Ordering::SeqCst)
    }

    /// Keycloak's form: the realm is the issuer's path.
    fn realm(&self) -> String {
        format!("{}/realms/acme", self.base)
    }

    /// An issuer whose metadata is only at RFC 8414's location.
    fn tenant(&self) -> String {
        format!("{}/tenants/t1", self.base)
    }
}

/// Every other path: the metadata locations, and 404.
async fn metadata(State(issuer): State<Issuer>, uri: Uri) -> (StatusCode, String) {
    issuer.metadata_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *issuer.mode.lock().unwrap();
    let (name, realm) = match uri.path() {
        "/realms/acme/.well-known/openid-configuration" => (issuer.realm(), "realms/acme"),
        "/.well-known/oauth-authorization-server/tenants/t1" => (issuer.tenant(), "tenants/t1"),
        _ => return (StatusCode::NOT_FOUND, String::new()),
    };
    match mode {
        Mode::Down => return (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        Mode::Slow => tokio::time::sleep(Duration::from_secs(10)).await,
        _ => {}
    }
    let mut document = json!({
        "issuer": if mode == Mode::WrongIssuer { format!("{}/realms/other", issuer.base) } else { name },
        "jwks_uri": format!("{}/{realm}/protocol/openid-connect/certs", issuer.base),
        "introspection_endpoint": format!("{}/{realm}/protocol/openid-connect/token/introspect", issuer.base),
    });
    if mode == Mode::NoJwksUri {
        document.as_object_mut().unwrap().remove("jwks_uri");
    }
    (StatusCode::OK, document.to_string())
}

async fn start() -> Issuer {
    let key = signing_key();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!("k1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = Issuer {
        base: format!("http://{}", listener.local_addr().unwrap()),
        mode: Arc::new(Mutex::new(Mode::Ok)),
        metadata_hits: Arc::new(AtomicUsize::new(0)),
        jwks: json!({ "keys": [jwk] }),
    };
    let jwks = issuer.jwks.to_string();
    let router = axum::Router::new()
        .route(
            "/{realm_kind}/{realm}/protocol/openid-connect/certs",
            get(move || async move { jwks }),
        )
        .route(
            "/{realm_kind}/{realm}/protocol/openid-connect/token/introspect",
            post(|| async {
                json!({"active": true, "client_id": "app_1", "aud": AUDIENCE, "scope": "contacts:read",
                       "workspace_id": "ws_acme", "exp": now() + 600})
                .to_string()
            }),
        )
        .fallback(metadata)
        .with_state(issuer.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    issuer
}

fn signing_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("../benches/fixtures/rs256-private.pem")).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(issuer: &str) -> String {
    let header = Header {
        typ: Some("at+jwt".into()),
        kid: Some("k1".into()),
        ..Header::new(Algorithm::RS256)
    };
    let claims = json!({
        "iss": issuer, "aud": AUDIENCE, "sub": "u", "client_id": "app_1", "jti": "j",
        "iat": now(), "exp": now() + 600, "scope": "contacts:read", "workspace_id": "ws_acme",
    });
    jsonwebtoken::encode(&header, &claims, &signing_key()).unwrap()
}

fn plans() -> HashMap<String, Vec<String>> {
    HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])])
}

fn discovering(issuer: &str) -> JwtStoreBuilder {
    ScopeSet::parse(["contacts:read"]).unwrap();
    JwtStore::builder(issuer, AUDIENCE)
        .discover()
        .account_claim("workspace_id")
        .entitlements(plans())
        .timeout(Duration::from_millis(300))
}

#[tokio::test]
async fn keys_are_found_through_the_metadata_of_an_issuer_with_a_path() {
    let fixture = start().await;
    let store = discovering(&fixture.realm()).build().unwrap();
    assert_eq!(fixture.hits(), 0, "nothing is fetched at build time");
    for _ in 0..3 {
        let found = store
            .resolve(&PresentedToken::new(&token(&fixture.realm())))
            .await
            .unwrap();
        assert_eq!(found.unwrap().account_id(), "ws_acme");
    }
    assert_eq!(fixture.hits(), 1, "OpenID Connect's location, once");
    assert_eq!(store.jwks_fetches(), 1);
}

#[tokio::test]
async fn rfc_8414s_location_is_tried_when_openid_configuration_is_absent() {
    let fixture = start().await;
    let store = discovering(&fixture.tenant()).build().unwrap();
    let found = store
        .resolve(&PresentedToken::new(&token(&fixture.tenant())))
        .await
        .unwrap();
    assert!(found.is_some());
    assert_eq!(
        fixture.hits(),
        2,
        "openid-configuration (404), then RFC 8414's"
    );
}

/// Down at startup: the application starts, tokens get 503 with
/// `Retry-After` (never 401, never 200) until the issuer answers, then 200.
#[tokio::test]
async fn an_issuer_down_at_startup_is_503_until_it_answers() {
    use http::Request;
    use tower::{service_fn, Layer, ServiceExt};

    let fixture = start().await;
    fixture.set(Mode::Down);
    let store = discovering(&fixture.realm())
        .build()
        .expect("starts while the issuer is down");
    let gate = Gate::new(CachedStore::new(ChainStore::new().jwt(store)));
    let service = gate
        .api_access()
        .layer(service_fn(|_req: Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        }));
    let authorization = format!("Bearer {}", token(&fixture.realm()));
    let send = || {
        let request = Request::get("/api/v1/contacts")
            .header("authorization", &authorization)
            .body(String::new())
            .unwrap();
        service.clone().oneshot(request)
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let response = send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "5");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Within the 1.5 s: the first try and the one after 1 s of backoff.
    assert_eq!(fixture.hits(), 4, "two tries, each at both locations");

    fixture.set(Mode::Ok);
    let back = Instant::now();
    let accepted = loop {
        let status = send().await.unwrap().status();
        if status == StatusCode::OK {
            break back.elapsed();
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(back.elapsed() < Duration::from_secs(5), "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("from the issuer's return to the first accepted token: {accepted:?}");
    assert!(accepted < Duration::from_secs(3), "{accepted:?}");
}

#[tokio::test]
async fn metadata_naming_another_issuer_is_refused() {
    let fixture = start().await;
    fixture.set(Mode::WrongIssuer);
    let store = discovering(&fixture.realm()).build().unwrap();
    let err = store
        .resolve(&PresentedToken::new(&token(&fixture.realm())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(store.jwks_fetches(), 1);
}

#[tokio::test]
async fn metadata_without_a_jwks_uri_is_a_clear_error() {
    let fixture = start().await;
    fixture.set(Mode::NoJwksUri);
    let store = discovering(&fixture.realm()).build().unwrap();
    let err = store
        .resolve(&PresentedToken::new(&token(&fixture.realm())))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "credential store failed: the issuer's metadata has no jwks_uri"
    );
}

#[tokio::test]
async fn slow_metadata_times_out_and_concurrent_lookups_share_one_discovery() {
    let fixture = start().await;
    fixture.set(Mode::Slow);
    let store = discovering(&fixture.realm()).build().unwrap();
    // Signed once, before the clock starts, and all 20 lookups started
    // before any is awaited: they run at once, not one after another (one
    // after another, slow signing in a debug build could outlast the
    // backoff and make a second discovery).
    let token = token(&fixture.realm());
    let started = Instant::now();
    let lookups: Vec<_> = (0..20)
        .map(|_| {
            let (store, token) = (store.clone(), token.clone());
            tokio::spawn(async move { store.resolve(&PresentedToken::new(&token)).await })
        })
        .collect();
    for lookup in lookups {
        let err = lookup.await.unwrap().unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        fixture.hits(),
        1,
        "one discovery for 20 lookups; a timeout stops the search"
    );
}

#[tokio::test]
async fn introspection_finds_its_endpoint_through_discovery() {
    let fixture = start().await;
    ScopeSet::parse(["contacts:read"]).unwrap();
    let store = IntrospectionStore::discover(&fixture.realm(), AUDIENCE)
        .client_credentials("api", "s3cret")
        .account_field("workspace_id")
        .entitlements(plans())
        .build()
        .unwrap();
    for _ in 0..2 {
        let found = store.resolve(&PresentedToken::new("opaque")).await.unwrap();
        assert_eq!(found.unwrap().account_id(), "ws_acme");
    }
    assert_eq!(fixture.hits(), 1);
    // An issuer whose metadata cannot be had: 503, never a grant.
    fixture.set(Mode::WrongIssuer);
    let other = IntrospectionStore::discover(&fixture.realm(), AUDIENCE)
        .client_credentials("api", "s3cret")
        .entitlements(plans())
        .build()
        .unwrap();
    assert!(other.resolve(&PresentedToken::new("opaque")).await.is_err());
}
