//! Challenge headers (realm, RFC 9728 resource_metadata), GitHub-style scope
//! headers, undisclosed scope names, and custom renderers.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use scopegate::error::{ConfigError, Rejection, RejectionKind};
use scopegate::gate::GateBuilder;
use scopegate::metadata::ProtectedResourceMetadata;
use scopegate::scope::Requirement;
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn builder() -> GateBuilder {
    let keys = MemoryStore::new();
    keys.insert_token(
        "reader",
        Credential::new("key_r", "ws", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(["contacts:read", "guides:read"]).unwrap())
            .with_entitlements(["api-access"]),
    );
    keys.insert_token(
        "free",
        Credential::new("key_f", "ws_free", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap()),
    );
    Gate::builder(CachedStore::new(keys))
}

/// `api-access` outside, `requirement` inside, like the example server.
/// `token` is sent as `Bearer {token}`, or as the whole `Authorization`
/// value when it has a space (`Basic dXNlcjpwYXNz`).
async fn call(
    gate: &Gate,
    requirement: Requirement,
    token: Option<&str>,
    grpc: bool,
) -> (Response<()>, String) {
    let app = ServiceBuilder::new()
        .layer(gate.api_access())
        .layer(gate.require(requirement))
        .service(service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
    let mut request = Request::get("/api/v1/contacts");
    match token {
        Some(value) if value.contains(' ') => request = request.header("authorization", value),
        Some(token) => request = request.header("authorization", format!("Bearer {token}")),
        None => {}
    }
    if grpc {
        request = request.header("content-type", "application/grpc");
    }
    let response = app
        .oneshot(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        Response::from_parts(parts, ()),
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn header<'a>(response: &'a Response<()>, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn scope(name: &str) -> Requirement {
    Requirement::scope(name).unwrap()
}

#[tokio::test]
async fn challenges_carry_realm_and_resource_metadata() {
    let gate = builder()
        .realm("OnboardingHub API")
        .resource_metadata("https://api.example.com/.well-known/oauth-protected-resource")
        .build()
        .unwrap();
    let meta =
        r#"resource_metadata="https://api.example.com/.well-known/oauth-protected-resource""#;
    let cases = [
        (None, format!(r#"Bearer realm="OnboardingHub API", {meta}"#)),
        // RFC 6750 §3.1: another scheme is no credential, with no error code.
        (
            Some("Basic dXNlcjpwYXNz"),
            format!(r#"Bearer realm="OnboardingHub API", {meta}"#),
        ),
        (
            Some("nope"),
            format!(r#"Bearer realm="OnboardingHub API", error="invalid_token", {meta}"#),
        ),
        (
            Some("reader"),
            format!(
                r#"Bearer realm="OnboardingHub API", error="insufficient_scope", scope="contacts:write", {meta}"#
            ),
        ),
    ];
    for (token, challenge) in cases {
        let (response, _) = call(&gate, scope("contacts:write"), token, false).await;
        assert_eq!(
            header(&response, "www-authenticate"),
            Some(challenge.as_str()),
            "{token:?}"
        );
    }
}

#[tokio::test]
async fn scope_names_can_be_kept_out_of_403s() {
    let gate = builder().disclose_required_scope(false).build().unwrap();
    let (response, body) = call(&gate, scope("contacts:write"), Some("reader"), false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        r#"{"error":{"type":"insufficient_scope","message":"Your credential does not have the permission this action requires."}}"#
    );
    assert_eq!(
        header(&response, "www-authenticate"),
        Some(r#"Bearer error="insufficient_scope""#)
    );
    // The rejection still says which scope, for logs and metrics.
    assert_eq!(
        response
            .extensions()
            .get::<Rejection>()
            .map(ToString::to_string)
            .as_deref(),
        Some("missing scope contacts:write")
    );
}

#[tokio::test]
async fn github_style_scope_headers_on_allowed_and_refused_responses() {
    let gate = builder().oauth_scope_headers(true).build().unwrap();
    let either = Requirement::any_of(["contacts:read", "contacts:write"]).unwrap();
    let (response, body) = call(&gate, either, Some("reader"), false).await;
    assert_eq!((response.status(), body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(
        header(&response, "x-oauth-scopes"),
        Some("contacts:read, guides:read")
    );
    assert_eq!(
        header(&response, "x-accepted-oauth-scopes"),
        Some("contacts:read, contacts:write")
    );

    let (response, _) = call(&gate, scope("webhooks:manage"), Some("reader"), false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        header(&response, "x-oauth-scopes"),
        Some("contacts:read, guides:read")
    );
    assert_eq!(
        header(&response, "x-accepted-oauth-scopes"),
        Some("webhooks:manage")
    );

    // Refused by the outer entitlement layer: the route's scopes are unknown there.
    let (response, _) = call(&gate, scope("contacts:read"), Some("free"), false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "x-oauth-scopes"), Some("contacts:read"));
    assert_eq!(header(&response, "x-accepted-oauth-scopes"), None);

    // No credential, no scope headers.
    let (response, _) = call(&gate, scope("contacts:read"), None, false).await;
    assert_eq!(header(&response, "x-oauth-scopes"), None);

    // Off by default.
    let (response, _) = call(
        &builder().build().unwrap(),
        scope("contacts:read"),
        Some("reader"),
        false,
    )
    .await;
    assert_eq!(header(&response, "x-oauth-scopes"), None);
}

#[tokio::test]
async fn a_custom_renderer_replaces_what_it_chooses() {
    let gate = builder()
        .renderer(|rejection: &Rejection, message: &str, grpc: bool| {
            if grpc || rejection.kind() != RejectionKind::InsufficientScope {
                return None;
            }
            let body = format!(r#"{{"title":"Forbidden","detail":"{message}"}}"#);
            Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header("content-type", "application/problem+json")
                .body(Bytes::from(body))
                .ok()
        })
        .messages(
            scopegate::error::Messages::default()
                .with_insufficient_scope(|s| format!("Needs {s}.")),
        )
        .build()
        .unwrap();
    let (response, body) = call(&gate, scope("contacts:write"), Some("reader"), false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        body,
        r#"{"title":"Forbidden","detail":"Needs contacts:write."}"#
    );
    assert!(matches!(
        response.extensions().get(),
        Some(Rejection::InsufficientScope(_))
    ));

    // What it leaves alone stays byte-identical to the contract.
    let (response, body) = call(&gate, scope("contacts:read"), Some("free"), false).await;
    assert_eq!(
        body,
        r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#
    );
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    let (response, body) = call(&gate, scope("contacts:write"), Some("reader"), true).await;
    assert_eq!((response.status(), body.as_str()), (StatusCode::OK, ""));
    assert_eq!(header(&response, "grpc-status"), Some("7"));
    assert_eq!(
        header(&response, "grpc-message"),
        Some("Needs contacts:write.")
    );
}

#[test]
fn header_values_are_checked_at_build_time() {
    for (builder, what) in [
        (builder().realm("say \"hi\""), "realm"),
        (builder().realm(""), "realm"),
        (
            builder().resource_metadata("https://x/\n"),
            "resource_metadata",
        ),
    ] {
        match builder.build() {
            Err(ConfigError::Header { what: got, .. }) => assert_eq!(got, what),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(
        builder().realm("a\\b").build().unwrap_err().to_string(),
        r#"invalid realm "a\\b": use visible ASCII and spaces, without '"' or '\'"#
    );
}

#[tokio::test]
async fn protected_resource_metadata_is_served_as_json() {
    let metadata = ProtectedResourceMetadata::new("https://api.example.com")
        .authorization_server("https://auth.example.com")
        .scopes_supported(["contacts:read"])
        .resource_name("OnboardingHub API");
    let response = metadata.response::<Full<Bytes>>();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        r#"{"resource":"https://api.example.com","authorization_servers":["https://auth.example.com"],"scopes_supported":["contacts:read"],"bearer_methods_supported":["header"],"resource_name":"OnboardingHub API"}"#
    );
}

#[tokio::test]
async fn a_gate_entitlement_makes_one_layer_do_the_work_of_two() {
    let gate = builder().entitlement("api-access").build().unwrap();
    let app = |gate: &Gate| {
        ServiceBuilder::new()
            .layer(gate.require_scope("contacts:read").unwrap())
            .service(service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }))
    };
    let status = |token: &'static str| {
        let app = app(&gate);
        async move {
            let request = Request::get("/").header("authorization", format!("Bearer {token}"));
            let response = app
                .oneshot(request.body(Full::default()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(status("reader").await.0, StatusCode::OK);
    // The plan is checked first, with the documented body, scopes or not.
    assert_eq!(
        status("free").await,
        (
            StatusCode::FORBIDDEN,
            r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#.to_owned()
        )
    );
    // Without it, the same layer checks scopes only.
    let plain = builder().build().unwrap();
    let response = app(&plain)
        .oneshot(
            Request::get("/")
                .header("authorization", "Bearer free")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(matches!(
        builder().entitlement("").build(),
        Err(ConfigError::Entitlement(_))
    ));
}
