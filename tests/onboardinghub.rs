//! The example server, run on loopback and driven with a real HTTP client
//! through every row of the error contract and the API-key lifecycle.

mod common;

#[allow(dead_code)]
#[path = "../examples/onboardinghub/app.rs"]
mod app;
#[path = "../examples/demo/mod.rs"]
mod demo;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use common::{serve, Server};
use http::{Method, StatusCode};
use scopegate::credential::PresentedToken;
use scopegate::store::{CredentialStore, StoreError};
use scopegate::{CachedStore, Credential, Gate};

const ALL: &str = "ohk_demo_all_scopes";
const READ: &str = "ohk_demo_contacts_read";
const FREE: &str = "ohk_demo_no_api_access";
const ADMIN: &str = "Bearer test-admin";

const FORBIDDEN: &str = r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#;
const INVALID_TOKEN: &str = r#"{"error":{"type":"invalid_token","message":"The access token is invalid, expired or revoked."}}"#;

fn insufficient(scope: &str) -> String {
    format!(
        r#"{{"error":{{"type":"insufficient_scope","message":"This action requires the '{scope}' scope. Your credential does not have this permission."}}}}"#
    )
}

fn challenge(scope: &str) -> String {
    format!(r#"Bearer error="insufficient_scope", scope="{scope}""#)
}

async fn example() -> Server {
    serve(app::App::new("test-admin").router().expect("router")).await
}

#[tokio::test]
async fn demo_tokens_reach_what_their_scopes_allow() {
    let server = example().await;
    for path in [
        "/api/v1/contacts",
        "/api/v1/contacts/con_1",
        "/api/v1/organisations",
        "/api/v1/enrollments",
        "/api/v1/guides",
        "/api/v1/webhooks",
    ] {
        let reply = server.get(path, ALL).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    let reply = server.get("/api/v1/contacts", READ).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        r#"{"data":[{"email":"ada@example.com","id":"con_1","name":"Ada Lovelace"}]}"#
    );
    assert_eq!(
        server.get("/api/v1/contacts/con_1", READ).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_missing_scope_is_403_insufficient_scope_naming_it() {
    let server = example().await;
    let cases = [
        (Method::POST, "/api/v1/contacts", "contacts:write"),
        (Method::PATCH, "/api/v1/contacts/con_1", "contacts:write"),
        (Method::DELETE, "/api/v1/contacts/con_1", "contacts:write"),
        (Method::GET, "/api/v1/organisations", "organisations:read"),
        (Method::POST, "/api/v1/organisations", "organisations:write"),
        (Method::GET, "/api/v1/enrollments/enr_1", "enrollments:read"),
        (
            Method::DELETE,
            "/api/v1/enrollments/enr_1",
            "enrollments:write",
        ),
        (Method::GET, "/api/v1/guides", "guides:read"),
        (Method::GET, "/api/v1/guides/gui_1", "guides:read"),
        (Method::GET, "/api/v1/webhooks", "webhooks:manage"),
        (Method::POST, "/api/v1/webhooks", "webhooks:manage"),
    ];
    for (method, path, scope) in cases {
        let reply = server.call(method, path, READ, r#"{"name":"x"}"#).await;
        reply.assert_rejected(403, &insufficient(scope), Some(&challenge(scope)));
    }
    // Nothing was changed by the refused writes.
    assert_eq!(
        server.get("/api/v1/contacts/con_1", ALL).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_tiny_plan_is_429_after_five_requests_a_minute() {
    let server = example().await;
    const TINY: &str = "ohk_demo_tiny_limits";
    const POLICY: &str = r#""requests";q=5;w=60"#;
    // Any route, any method: one budget per key.
    let calls = [
        (Method::GET, "/api/v1/contacts"),
        (Method::GET, "/api/v1/guides"),
        (Method::POST, "/api/v1/contacts"),
        (Method::GET, "/api/v1/webhooks"),
        (Method::GET, "/api/v1/organisations"),
    ];
    for ((method, path), (left, reset)) in
        calls
            .into_iter()
            .zip([(4, 12), (3, 24), (2, 36), (1, 48), (0, 60)])
    {
        let reply = server.call(method, path, TINY, r#"{"name":"Ada"}"#).await;
        assert!(reply.status.is_success(), "{path}: {reply:?}");
        assert_eq!(reply.header("ratelimit-policy"), Some(POLICY));
        let left = format!(r#""requests";r={left};t={reset}"#);
        assert_eq!(reply.header("ratelimit"), Some(left.as_str()));
    }
    let reply = server.get("/api/v1/contacts", TINY).await;
    reply.assert_rejected(
        429,
        r#"{"error":{"type":"rate_limited","message":"Rate limit exceeded for 'requests'. Retry after 12 seconds."}}"#,
        None,
    );
    assert_eq!(reply.header("retry-after"), Some("12"));
    assert_eq!(reply.header("ratelimit-policy"), Some(POLICY));
    assert_eq!(reply.header("ratelimit"), Some(r#""requests";r=0;t=12"#));
    // ws_acme's plan is generous, and says so.
    let reply = server.get("/api/v1/contacts", ALL).await;
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""requests";q=60000;w=60"#)
    );
    assert_eq!(reply.header("ratelimit"), Some(r#""requests";r=9999;t=1"#));
    // The free plan is refused before anything is counted.
    let reply = server.get("/api/v1/contacts", FREE).await;
    assert_eq!(
        (reply.status, reply.header("ratelimit")),
        (StatusCode::FORBIDDEN, None)
    );
}

#[tokio::test]
async fn a_plan_without_api_access_is_403_forbidden_everywhere() {
    let server = example().await;
    for (method, path) in [
        (Method::GET, "/api/v1/contacts"),
        (Method::POST, "/api/v1/contacts"),
        (Method::GET, "/api/v1/guides/gui_1"),
        (Method::DELETE, "/api/v1/webhooks/whk_1"),
    ] {
        let reply = server.call(method, path, FREE, "{}").await;
        reply.assert_rejected(403, FORBIDDEN, None);
    }
}

/// No header, or another scheme: RFC 6750 §3.1 counts "an unsupported
/// authentication method" as no authentication information, so both get
/// the challenge with no error code.
#[tokio::test]
async fn no_credential_or_another_scheme_is_401_unauthorized() {
    let server = example().await;
    let others = [
        "Basic dXNlcjpwYXNz",
        "Token ohk_demo_all_scopes",
        "Digest username=\"ada\", realm=\"api\"",
        "bearerohk_demo_all_scopes",
        ALL,
    ];
    let mut requests: Vec<Vec<(&str, &str)>> = vec![vec![]];
    requests.extend(others.iter().map(|value| vec![("authorization", *value)]));
    for headers in requests {
        let reply = server
            .send(Method::GET, "/api/v1/contacts", &headers, "")
            .await;
        reply.assert_rejected(
            401,
            r#"{"error":{"type":"unauthorized","message":"Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'."}}"#,
            Some("Bearer"),
        );
    }
}

#[tokio::test]
async fn an_unknown_token_is_401_invalid_token_every_time() {
    let server = example().await;
    // The third answer comes from the negative cache (a token's first "not
    // found" is not cached, its second is); it must be identical.
    for _ in 0..3 {
        let reply = server.get("/api/v1/contacts", "ohk_not_a_real_key").await;
        reply.assert_rejected(401, INVALID_TOKEN, Some(r#"Bearer error="invalid_token""#));
    }
}

#[tokio::test]
async fn a_malformed_authorization_header_is_400_invalid_request() {
    let server = example().await;
    let request =
        |msg: &str| format!(r#"{{"error":{{"type":"invalid_request","message":"{msg}"}}}}"#);
    let scheme = request(
        "The Authorization header must use the Bearer scheme: 'Authorization: Bearer <token>'.",
    );
    let empty = request("The Authorization header has an empty Bearer token.");
    let multiple = request("Send exactly one Authorization header.");
    let characters =
        request("The Bearer token contains characters that are not allowed in a token.");
    let cases: [(&[&str], &str); 7] = [
        (&[""], &scheme),
        (&["Bearer, ohk_demo_all_scopes"], &scheme),
        (&["Bearer\tohk_demo_all_scopes"], &scheme),
        (&["Bearer"], &empty),
        (&["Bearer ohk_a", "Bearer ohk_b"], &multiple),
        (&["Bearer ohk demo"], &characters),
        (&["Bearer ohk_demo\"all"], &characters),
    ];
    for (values, body) in cases {
        let headers: Vec<_> = values.iter().map(|v| ("authorization", *v)).collect();
        let reply = server
            .send(Method::GET, "/api/v1/contacts", &headers, "")
            .await;
        reply.assert_rejected(400, body, Some(r#"Bearer error="invalid_request""#));
    }
}

/// A store that is down, or that never answers.
struct Outage {
    hang: bool,
}

#[async_trait]
impl CredentialStore for Outage {
    async fn resolve(&self, _: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(StoreError::new("connection refused"))
    }
}

#[tokio::test]
async fn a_store_outage_is_503_and_never_lets_a_request_through() {
    for hang in [false, true] {
        let cache = CachedStore::builder(Outage { hang })
            .store_timeout(Some(Duration::from_millis(100)))
            .build();
        let gate = Gate::new(cache);
        let router = Router::new()
            .route("/api/v1/contacts", get(|| async { "secret data" }))
            .route_layer(gate.require_scope("contacts:read").expect("scope"))
            .route_layer(gate.api_access());
        let server = serve(router).await;
        for _ in 0..2 {
            let reply = server.get("/api/v1/contacts", ALL).await;
            reply.assert_rejected(
                503,
                r#"{"error":{"type":"service_unavailable","message":"Authentication is temporarily unavailable. Please retry shortly."}}"#,
                None,
            );
            assert_eq!(reply.header("retry-after"), Some("5"));
        }
    }
}

#[tokio::test]
async fn unknown_routes_are_404_not_401() {
    let server = example().await;
    assert_eq!(
        server
            .send(Method::GET, "/api/v1/nothing", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/api/v2/contacts", ALL).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get("/", ALL).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn key_lifecycle_create_use_revoke_then_401() {
    let server = example().await;
    let admin = [
        ("authorization", ADMIN),
        ("content-type", "application/json"),
    ];

    // Create: the token is shown once.
    let created = server
        .send(
            Method::POST,
            "/developer/keys",
            &admin,
            r#"{"name":"CRM sync","scopes":["contacts:read","guides:read"]}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.json();
    let (id, token) = (key["id"].as_str().unwrap(), key["token"].as_str().unwrap());
    assert!(
        created.body.starts_with(r#"{"id":"key_"#),
        "documented field order: {}",
        created.body
    );
    assert!(created
        .body
        .ends_with(r#","name":"CRM sync","scopes":["contacts:read","guides:read"]}"#));
    assert!(
        scopegate::key::ApiKey::is_well_formed(token.as_bytes()),
        "ohk_ format with checksum: {token}"
    );

    // List: no token anywhere.
    let listed = server
        .send(Method::GET, "/developer/keys", &admin, "")
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!listed.body.contains(token) && !listed.body.contains("token"));
    assert!(listed.body.contains(&format!(
        r#"{{"id":"{id}","name":"CRM sync","scopes":["contacts:read","guides:read"]}}"#
    )));
    assert!(listed.body.contains(r#""id":"key_demo_all""#));

    // Use: its scopes and nothing more. These requests warm the cache.
    assert_eq!(
        server.get("/api/v1/contacts", token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get("/api/v1/guides", token).await.status,
        StatusCode::OK
    );
    server
        .call(Method::POST, "/api/v1/contacts", token, "{}")
        .await
        .assert_rejected(
            403,
            &insufficient("contacts:write"),
            Some(&challenge("contacts:write")),
        );

    // Revoke: the very next request is refused, although the key was cached.
    let revoked = server
        .send(Method::DELETE, &format!("/developer/keys/{id}"), &admin, "")
        .await;
    assert_eq!(
        (revoked.status, revoked.body.as_str()),
        (StatusCode::NO_CONTENT, "")
    );
    server.get("/api/v1/contacts", token).await.assert_rejected(
        401,
        INVALID_TOKEN,
        Some(r#"Bearer error="invalid_token""#),
    );

    let listed = server
        .send(Method::GET, "/developer/keys", &admin, "")
        .await;
    assert!(!listed.body.contains(id));
    let again = server
        .send(Method::DELETE, &format!("/developer/keys/{id}"), &admin, "")
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        again.body,
        format!(r#"{{"error":{{"type":"not_found","message":"API key '{id}' was not found."}}}}"#)
    );

    // The other keys are untouched.
    assert_eq!(
        server.get("/api/v1/contacts", READ).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_revoked_demo_key_stops_at_once_on_a_warm_cache() {
    let server = example().await;
    let admin = [("authorization", ADMIN)];
    for _ in 0..3 {
        assert_eq!(
            server.get("/api/v1/contacts", READ).await.status,
            StatusCode::OK
        );
    }
    let revoked = server
        .send(
            Method::DELETE,
            "/developer/keys/key_demo_contacts_read",
            &admin,
            "",
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    server.get("/api/v1/contacts", READ).await.assert_rejected(
        401,
        INVALID_TOKEN,
        Some(r#"Bearer error="invalid_token""#),
    );
}

#[tokio::test]
async fn developer_settings_reject_bad_input_with_json_errors() {
    let server = example().await;
    let admin = [
        ("authorization", ADMIN),
        ("content-type", "application/json"),
    ];
    let bad = |msg: &str| format!(r#"{{"error":{{"type":"invalid_request","message":"{msg}"}}}}"#);
    let cases = [
        (
            r#"{"name":"x","scopes":["contacts:read","contacts:delete"]}"#,
            bad("Unknown scope 'contacts:delete'. Known scopes: contacts:read, contacts:write, organisations:read, organisations:write, enrollments:read, enrollments:write, guides:read, webhooks:manage."),
        ),
        (r#"{"name":"x","scopes":[]}"#, bad("'scopes' must be a non-empty array of scope names.")),
        (r#"{"name":"x","scopes":[1]}"#, bad("'scopes' must be an array of scope names.")),
        (r#"{"scopes":["contacts:read"]}"#, bad("'name' must be a non-empty string of at most 100 characters.")),
        (r#"{"name":"x","scopes":["guides:read"],"token":"mine"}"#, bad("Unknown field 'token'.")),
        (r#"["not","an","object"]"#, bad("The request body must be a JSON object.")),
    ];
    for (body, want) in cases {
        let reply = server
            .send(Method::POST, "/developer/keys", &admin, body)
            .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::BAD_REQUEST, want.as_str()),
            "{body}"
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    let reply = server
        .send(Method::POST, "/developer/keys", &admin, "{oops")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.starts_with(
        r#"{"error":{"type":"invalid_request","message":"The request body is not valid JSON: "#
    ));

    // Without the admin token: 401, whatever the token.
    for auth in [None, Some("Bearer wrong"), Some(&*format!("Bearer {ALL}"))] {
        let headers: Vec<_> = auth.map(|a| ("authorization", a)).into_iter().collect();
        for (method, path) in [
            (Method::GET, "/developer/keys"),
            (Method::DELETE, "/developer/keys/key_demo_all"),
        ] {
            let reply = server.send(method, path, &headers, "").await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            assert_eq!(
                reply.body,
                r#"{"error":{"type":"unauthorized","message":"Developer settings require the admin token: 'Authorization: Bearer <ADMIN_TOKEN>'."}}"#
            );
        }
    }
    // The demo key survived the refused revocations.
    assert_eq!(
        server.get("/api/v1/contacts", ALL).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn guides_show_published_ones_only() {
    let server = example().await;
    let list = server.get("/api/v1/guides", ALL).await;
    assert_eq!(
        list.body,
        r#"{"data":[{"id":"gui_1","published":true,"title":"Getting started"},{"id":"gui_2","published":true,"title":"Importing contacts"}]}"#
    );
    assert_eq!(
        server.get("/api/v1/guides/gui_2", ALL).await.status,
        StatusCode::OK
    );
    let draft = server.get("/api/v1/guides/gui_3", ALL).await;
    assert_eq!(draft.status, StatusCode::NOT_FOUND);
    assert_eq!(
        draft.body,
        r#"{"error":{"type":"not_found","message":"Guide 'gui_3' was not found."}}"#
    );
}

#[tokio::test]
async fn crud_with_the_write_scopes() {
    let server = example().await;
    for (base, prefix) in [
        ("/api/v1/contacts", "con_2"),
        ("/api/v1/organisations", "org_2"),
        ("/api/v1/enrollments", "enr_2"),
        ("/api/v1/webhooks", "whk_1"),
    ] {
        let created = server
            .call(
                Method::POST,
                base,
                ALL,
                r#"{"name":"New","url":"https://example.com/hook"}"#,
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{base}");
        assert_eq!(created.json()["id"], prefix);
        let item = format!("{base}/{prefix}");
        let patched = server
            .call(
                Method::PATCH,
                &item,
                ALL,
                r#"{"name":"Renamed","id":"forged"}"#,
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK);
        assert_eq!(patched.json()["name"], "Renamed");
        assert_eq!(patched.json()["id"], prefix);
        assert_eq!(server.get(&item, ALL).await.json()["name"], "Renamed");
        let deleted = server.call(Method::DELETE, &item, ALL, "").await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(server.get(&item, ALL).await.status, StatusCode::NOT_FOUND);
    }
    let bad = server
        .call(Method::POST, "/api/v1/contacts", ALL, "[1]")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// The credential a handler sees is the one the token stands for.
#[tokio::test]
async fn handlers_read_the_credential_from_extensions() {
    let keys = scopegate::MemoryStore::new();
    keys.insert_token(
        "tok",
        Credential::new("key_9", "ws_9", scopegate::CredentialKind::ApiKey)
            .with_entitlements(["api-access"]),
    );
    let gate = Gate::new(CachedStore::new(keys));
    let router = Router::new()
        .route(
            "/whoami",
            get(
                |axum::Extension(c): axum::Extension<Arc<Credential>>| async move {
                    format!("{} {}", c.id(), c.account_id())
                },
            ),
        )
        .route_layer(gate.api_access());
    let server = serve(router).await;
    assert_eq!(server.get("/whoami", "tok").await.body, "key_9 ws_9");
}
