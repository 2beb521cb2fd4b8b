//! `IntrospectionStore` against a scripted RFC 7662 endpoint on loopback:
//! what it sends, and what it makes of every kind of answer.
//! `tests/oauth.rs` covers the same store against a real authorization server.
#![cfg(feature = "introspection")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use scopegate::credential::PresentedToken;
use scopegate::store::oauth::introspection::{IntrospectionStore, IntrospectionStoreBuilder};
use scopegate::store::oauth::ScopeClaim;
use scopegate::store::CredentialStore;
use scopegate::{CachedStore, CredentialKind, ScopeSet};
use serde_json::{json, Value};

const AUDIENCE: &str = "https://api.test";

/// What the endpoint was sent: the `Authorization` header and the body.
type Seen = Vec<(Option<String>, String)>;

/// The endpoint's next answer, and what it was sent.
#[derive(Clone, Default)]
struct Script {
    answer: Arc<Mutex<(u16, String)>>,
    seen: Arc<Mutex<Seen>>,
}

impl Script {
    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }
}

async fn endpoint(
    State(script): State<Script>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    script.seen.lock().unwrap().push((auth, body));
    let (status, body) = script.answer.lock().unwrap().clone();
    if status == 0 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn setup() -> (Script, IntrospectionStore) {
    setup_with(|builder| builder).await
}

/// The scripted endpoint, and a store for it configured by `configure`.
async fn setup_with(
    configure: impl FnOnce(IntrospectionStoreBuilder) -> IntrospectionStoreBuilder,
) -> (Script, IntrospectionStore) {
    ScopeSet::parse(["contacts:read", "guides:read"]).unwrap(); // as routes would
    let script = Script::default();
    let router = axum::Router::new()
        .route("/introspect", axum::routing::post(endpoint))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let builder = IntrospectionStore::builder(&url, AUDIENCE)
        .client_credentials("api", "s3cret")
        .account_field("workspace_id")
        .max_cache_age(Duration::from_millis(300))
        .timeout(Duration::from_millis(300))
        .entitlements(HashMap::from([(
            "ws_acme".to_owned(),
            vec!["api-access".to_owned()],
        )]));
    (script, configure(builder).build().unwrap())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn active() -> Value {
    json!({
        "active": true, "client_id": "app_1", "scope": "contacts:read", "aud": AUDIENCE,
        "token_type": "Bearer", "exp": now() + 3600, "workspace_id": "ws_acme", "jti": "tok_1",
    })
}

#[tokio::test]
async fn sends_the_token_with_basic_client_authentication() {
    let (script, store) = setup().await;
    script.answer(200, &active().to_string());
    let credential = store
        .resolve(&PresentedToken::new("opaque+token/=="))
        .await
        .unwrap()
        .unwrap();
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(
            Some("Basic YXBpOnMzY3JldA==".to_owned()),
            "token=opaque%2Btoken%2F%3D%3D&token_type_hint=access_token".to_owned()
        )]
    );
    assert_eq!(credential.id(), "tok_1");
    assert_eq!(credential.account_id(), "ws_acme");
    assert_eq!(
        credential.kind(),
        &CredentialKind::OAuthClient {
            client_id: "app_1".into()
        }
    );
    assert_eq!(format!("{:?}", credential.scopes()), r#"{"contacts:read"}"#);
    assert_eq!(credential.max_cache_age(), Some(Duration::from_millis(300)));
    assert!(credential.has_entitlement("api-access"));
}

#[tokio::test]
async fn anything_but_an_active_token_for_this_api_is_not_found() {
    let (script, store) = setup().await;
    let cases: [(&str, Value); 9] = [
        ("inactive", json!({"active": false})),
        ("active as a string", json!({"active": "true"})),
        ("other audience", json!({"aud": "https://other.test"})),
        ("no audience", json!({"aud": null})),
        ("refresh token", json!({"token_type": "refresh_token"})),
        ("expired", json!({"exp": now() - 1})),
        ("no client", json!({"client_id": null})),
        ("no account", json!({"workspace_id": null})),
        ("empty account", json!({"workspace_id": ""})),
    ];
    for (what, change) in cases {
        let mut answer = active();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                answer.as_object_mut().unwrap().remove(k);
            } else {
                answer[k] = v.clone();
            }
        }
        script.answer(200, &answer.to_string());
        let found = store.resolve(&PresentedToken::new("t")).await.unwrap();
        assert!(found.is_none(), "{what}");
    }
    // An audience list that contains this API, and no jti.
    let mut answer = active();
    answer["aud"] = json!(["https://other.test", AUDIENCE]);
    answer.as_object_mut().unwrap().remove("jti");
    script.answer(200, &answer.to_string());
    let token = PresentedToken::new("t");
    let found = store.resolve(&token).await.unwrap().unwrap();
    let [a, b, c, d, ..] = *token.hash().as_bytes();
    assert_eq!(
        found.id(),
        format!("introspected_{a:02x}{b:02x}{c:02x}{d:02x}")
    );
}

#[tokio::test]
async fn errors_and_timeouts_are_store_errors() {
    let (script, store) = setup().await;
    for (status, body, message) in [
        (
            500,
            "",
            "credential store failed: authorization server answered 500 Internal Server Error",
        ),
        (
            401,
            r#"{"error":"invalid_client"}"#,
            "credential store failed: authorization server answered 401 Unauthorized",
        ),
        (
            200,
            "<html>",
            "credential store failed: expected value at line 1 column 1",
        ),
        (
            200,
            "[true]",
            "credential store failed: introspection answer is not a JSON object",
        ),
        (0, "", "credential store timed out"),
    ] {
        script.answer(status, body);
        let error = store.resolve(&PresentedToken::new("t")).await.unwrap_err();
        assert_eq!(error.to_string(), message, "{status} {body}");
    }
}

#[tokio::test]
async fn answers_are_cached_for_max_cache_age_at_most() {
    let (script, store) = setup().await;
    script.answer(200, &active().to_string());
    let cache = CachedStore::new(store);
    let token = PresentedToken::new("t");
    assert!(cache.resolve(&token).await.unwrap().is_some());
    script.answer(200, r#"{"active":false}"#); // revoked at the server
    assert!(
        cache.resolve(&token).await.unwrap().is_some(),
        "within the window"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        cache.resolve(&token).await.unwrap().is_none(),
        "after the window"
    );
    assert_eq!(script.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn scopes_audiences_and_the_account_come_from_where_configured() {
    let (script, store) = setup_with(|builder| {
        builder
            .scope_claims([ScopeClaim::Scope, ScopeClaim::Permissions])
            .audiences([AUDIENCE, "https://api2.test"])
            .account_field("/ext/workspace")
    })
    .await;
    let resolve = |answer: Value| {
        script.answer(200, &answer.to_string());
        let store = store.clone();
        async move { store.resolve(&PresentedToken::new("opaque")).await.unwrap() }
    };
    let mut answer = active();
    answer["aud"] = json!(["https://other.test", "https://api2.test"]);
    answer["permissions"] = json!(["guides:read"]);
    answer["ext"] = json!({"workspace": "ws_acme"});
    let credential = resolve(answer.clone()).await.unwrap();
    assert_eq!(credential.account_id(), "ws_acme");
    assert_eq!(
        format!("{:?}", credential.scopes()),
        r#"{"contacts:read", "guides:read"}"#
    );
    // A field of the wrong shape, or no account where configured: refused.
    let mut wrong = answer.clone();
    wrong["permissions"] = json!("guides:read");
    assert!(resolve(wrong).await.is_none());
    let mut no_account = answer.clone();
    no_account["ext"] = json!({});
    assert!(resolve(no_account).await.is_none());
    let mut other = answer;
    other["aud"] = json!("https://other.test");
    assert!(resolve(other).await.is_none());
}
