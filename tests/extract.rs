//! The axum extractors and the optional layer, through an axum router:
//! exact statuses, challenges and bodies.

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use http::Request;
use http_body_util::BodyExt;
use scopegate::extract::{Authenticated, Refused, RequireScope};
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
use tower::ServiceExt;

scopegate::scope_type!(
    /// `contacts:write`.
    ContactsWrite = "contacts:write"
);

const READER: &str = "ohk_test_reader";
const WRITER: &str = "ohk_test_writer";
const UNAUTHORIZED: &str = r#"{"error":{"type":"unauthorized","message":"Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'."}}"#;
const INVALID_TOKEN: &str = r#"{"error":{"type":"invalid_token","message":"The access token is invalid, expired or revoked."}}"#;

fn app() -> Router {
    let keys = MemoryStore::new();
    for (token, id, scope) in [
        (READER, "key_reader", "contacts:read"),
        (WRITER, "key_writer", "contacts:write"),
    ] {
        keys.insert_token(
            token,
            Credential::new(id, "ws_acme", CredentialKind::ApiKey)
                .with_scopes(ScopeSet::parse([scope]).unwrap())
                .with_entitlements(["api-access"]),
        );
    }
    let gate = Gate::new(CachedStore::new(keys));
    Router::new()
        .route(
            "/api/v1/contacts",
            get(|who: Authenticated| async move { format!("list for {}", who.id()) })
                .post(
                    |RequireScope(who, ..): RequireScope<ContactsWrite>| async move {
                        format!("created by {}", who.id())
                    },
                )
                .route_layer(gate.api_access()),
        )
        .route(
            "/guides",
            get(|who: Option<Authenticated>| async move {
                match who {
                    Some(who) => format!("drafts of {}", who.account_id()),
                    None => "published".to_owned(),
                }
            })
            .route_layer(gate.optional()),
        )
        // No layer: a handler asking for a credential gets the 401.
        .route(
            "/unguarded",
            post(|who: Authenticated| async move { who.id().to_owned() }),
        )
}

/// Status, `WWW-Authenticate` (or ""), body.
async fn call(method: &str, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = app()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, challenge, String::from_utf8(body.to_vec()).unwrap())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn authenticated_reads_the_credential_a_layer_resolved() {
    assert_eq!(
        call("GET", "/api/v1/contacts", Some(&bearer(READER))).await,
        (200, String::new(), "list for key_reader".to_owned())
    );
    // Without a layer there is nothing to read: the contract's 401.
    assert_eq!(
        call("POST", "/unguarded", Some(&bearer(READER))).await,
        (401, "Bearer".to_owned(), UNAUTHORIZED.to_owned())
    );
}

#[tokio::test]
async fn require_scope_answers_the_exact_403() {
    assert_eq!(
        call("POST", "/api/v1/contacts", Some(&bearer(WRITER))).await,
        (200, String::new(), "created by key_writer".to_owned())
    );
    assert_eq!(
        call("POST", "/api/v1/contacts", Some(&bearer(READER))).await,
        (
            403,
            r#"Bearer error="insufficient_scope", scope="contacts:write""#.to_owned(),
            r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'contacts:write' scope. Your credential does not have this permission."}}"#.to_owned()
        )
    );
}

#[tokio::test]
async fn an_optional_route_sees_a_valid_token_and_refuses_a_wrong_one() {
    assert_eq!(
        call("GET", "/guides", None).await,
        (200, String::new(), "published".to_owned())
    );
    assert_eq!(
        call("GET", "/guides", Some(&bearer(READER))).await,
        (200, String::new(), "drafts of ws_acme".to_owned())
    );
    // A wrong token is refused, never taken for no token.
    assert_eq!(
        call("GET", "/guides", Some(&bearer("ohk_not_a_key"))).await,
        (
            401,
            r#"Bearer error="invalid_token""#.to_owned(),
            INVALID_TOKEN.to_owned()
        )
    );
    // A credential under another scheme is refused, not ignored.
    assert_eq!(
        call("GET", "/guides", Some(READER)).await,
        (401, "Bearer".to_owned(), UNAUTHORIZED.to_owned())
    );
    // A malformed header is 400, as everywhere.
    let (status, challenge, _) = call("GET", "/guides", Some("Bearer a b")).await;
    assert_eq!(
        (status, challenge.as_str()),
        (400, r#"Bearer error="invalid_request""#)
    );
}

#[tokio::test]
async fn a_refusal_by_an_extractor_spends_none_of_the_limits_once_it_is_the_response() {
    use scopegate::limit::Limit;
    use std::time::Duration;
    // Two requests a minute, all at once; the layer counts each request it
    // lets through, and the extractor then refuses the reader's writes.
    let limit = Limit::rate("requests", 2, Duration::from_secs(60)).unwrap();
    let keys = MemoryStore::new();
    keys.insert_token(
        READER,
        Credential::new("key_reader", "ws_acme", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap())
            .with_entitlements(["api-access"])
            .with_limits([limit]),
    );
    let gate = Gate::new(CachedStore::new(keys));
    let app = Router::new().route(
        "/api/v1/contacts",
        get(|who: Authenticated| async move { format!("list for {}", who.id()) })
            .post(
                |RequireScope(who, ..): RequireScope<ContactsWrite>| async move {
                    format!("created by {}", who.id())
                },
            )
            // A refusal caught and answered past: the request was served.
            .put(
                |write: Result<RequireScope<ContactsWrite>, Refused>| async move {
                    match write {
                        Ok(_) => "written",
                        Err(_) => "read only",
                    }
                },
            )
            .route_layer(gate.api_access()),
    );
    let call = |method: &str| {
        let request = Request::builder()
            .method(method)
            .uri("/api/v1/contacts")
            .header("authorization", bearer(READER))
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let limit = response
                .headers()
                .get("ratelimit")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, limit, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let refused = r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'contacts:write' scope. Your credential does not have this permission."}}"#;
    for _ in 0..5 {
        // Refused, never rate limited, and without the limit headers of a
        // count that was given back.
        assert_eq!(call("POST").await, (403, None, refused.to_owned()));
    }
    // Both units are still there, and a caught refusal spends one.
    assert_eq!(
        call("PUT").await,
        (
            200,
            Some(r#""requests";r=1;t=30"#.to_owned()),
            "read only".to_owned()
        )
    );
    assert_eq!(
        call("GET").await,
        (
            200,
            Some(r#""requests";r=0;t=60"#.to_owned()),
            "list for key_reader".to_owned()
        )
    );
    let (status, _, body) = call("GET").await;
    assert_eq!(status, 429, "{body}");
}
