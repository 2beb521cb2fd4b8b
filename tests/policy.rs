//! Route policy tables: matching, public routes, deny-by-default, gRPC
//! rejections, and configuration errors at build time.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use scopegate::error::{ConfigError, Rejection};
use scopegate::policy::RoutePolicy;
use scopegate::scope::Requirement;
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
use tower::{service_fn, Layer, ServiceExt};

fn gate() -> Gate {
    let keys = MemoryStore::new();
    let key = |id: &str, scopes: &[&str], api: bool| {
        let entitlements: &[&str] = if api { &["api-access"] } else { &[] };
        Credential::new(id, "ws", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(scopes).unwrap())
            .with_entitlements(entitlements.iter().copied())
    };
    keys.insert_token("reader", key("key_r", &["contacts:read"], true));
    keys.insert_token("hooks", key("key_h", &["webhooks:manage"], true));
    keys.insert_token("free", key("key_f", &["contacts:read"], false));
    Gate::new(CachedStore::new(keys))
}

fn api_policy() -> RoutePolicy {
    RoutePolicy::new()
        .require_entitlement("api-access")
        .public(Method::GET, "/health")
        .authenticated(Method::GET, "/api/v1/me")
        .scope(Method::GET, "/api/v1/contacts", "contacts:read")
        .scope(Method::GET, "/api/v1/contacts/{id}", "contacts:read")
        .scope(Method::POST, "/api/v1/contacts", "contacts:write")
        .scope(Method::GET, "/api/v1/webhooks/*", "webhooks:manage")
        .require(
            Method::GET,
            "/api/v1/export",
            Requirement::all_of(["contacts:read", "webhooks:manage"]).unwrap(),
        )
        .grpc("/contacts.v1.Contacts/ListContacts", "contacts:read")
}

/// Sends through `policy` to a handler that echoes who called.
async fn send(
    policy: RoutePolicy,
    method: Method,
    path: &str,
    token: Option<&str>,
    grpc: bool,
) -> (StatusCode, String, Response<()>) {
    let layer = gate().policy(policy).unwrap();
    let app = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
        let who = req
            .extensions()
            .get::<Arc<Credential>>()
            .map_or("anonymous".to_owned(), |c| c.id().to_owned());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
    }));
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if grpc {
        req = req.header("content-type", "application/grpc+proto");
    }
    let response = app
        .oneshot(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let status = parts.status;
    (
        status,
        String::from_utf8(body.to_vec()).unwrap(),
        Response::from_parts(parts, ()),
    )
}

#[tokio::test]
async fn routes_match_by_method_and_pattern() {
    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 12] = [
        (Method::GET, "/health", None, StatusCode::OK, "anonymous"),
        (
            Method::GET,
            "/health",
            Some("free"),
            StatusCode::OK,
            "anonymous",
        ),
        (
            Method::GET,
            "/api/v1/contacts",
            Some("reader"),
            StatusCode::OK,
            "key_r",
        ),
        (
            Method::HEAD,
            "/api/v1/contacts",
            Some("reader"),
            StatusCode::OK,
            "key_r",
        ),
        (
            Method::GET,
            "/api/v1/contacts/con_9",
            Some("reader"),
            StatusCode::OK,
            "key_r",
        ),
        (
            Method::GET,
            "/api/v1/webhooks/whk_1/deliveries/7",
            Some("hooks"),
            StatusCode::OK,
            "key_h",
        ),
        (
            Method::GET,
            "/api/v1/me",
            Some("hooks"),
            StatusCode::OK,
            "key_h",
        ),
        (
            Method::POST,
            "/contacts.v1.Contacts/ListContacts",
            Some("reader"),
            StatusCode::OK,
            "key_r",
        ),
        (
            Method::POST,
            "/api/v1/contacts",
            Some("reader"),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            Method::GET,
            "/api/v1/webhooks/whk_1",
            Some("reader"),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            Method::GET,
            "/api/v1/export",
            Some("reader"),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            Method::GET,
            "/api/v1/me",
            None,
            StatusCode::UNAUTHORIZED,
            "",
        ),
    ];
    for (method, path, token, status, who) in cases {
        let (got, body, _) = send(api_policy(), method.clone(), path, token, false).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        if status == StatusCode::OK {
            assert_eq!(body, who);
        }
    }
    let (_, body, _) = send(
        api_policy(),
        Method::GET,
        "/api/v1/export",
        Some("reader"),
        false,
    )
    .await;
    assert!(
        body.contains("'webhooks:manage'"),
        "the first missing scope: {body}"
    );
}

#[tokio::test]
async fn the_policy_entitlement_applies_to_every_protected_route() {
    let (status, body, _) = send(
        api_policy(),
        Method::GET,
        "/api/v1/contacts",
        Some("free"),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#
    );
}

#[tokio::test]
async fn unmatched_routes_are_denied_by_default() {
    for (method, path) in [
        (Method::GET, "/admin"),
        (Method::DELETE, "/api/v1/contacts/con_1"),
        (Method::GET, "/api/v1/contacts/con_1/notes"),
        (Method::GET, "/api/v1/webhooks"),
        (Method::GET, "/api/v1/contacts/"),
    ] {
        let (status, body, response) =
            send(api_policy(), method.clone(), path, Some("reader"), false).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            body,
            r#"{"error":{"type":"not_found","message":"No route matches this request."}}"#
        );
        assert_eq!(response.extensions().get(), Some(&Rejection::NoRoute));
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn allowing_unmatched_routes_is_an_explicit_opt_in() {
    let (status, body, _) = send(
        api_policy().allow_unmatched(),
        Method::GET,
        "/admin",
        None,
        false,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
    // Listed routes are still enforced.
    let (status, _, _) = send(
        api_policy().allow_unmatched(),
        Method::GET,
        "/api/v1/contacts",
        None,
        false,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn grpc_requests_are_refused_with_grpc_status() {
    let path = "/contacts.v1.Contacts/ListContacts";
    let cases = [
        (None, "16"),
        (Some("nope"), "16"),
        (Some("hooks"), "7"),
        (Some("free"), "7"),
    ];
    for (token, status) in cases {
        let (http, body, response) = send(api_policy(), Method::POST, path, token, true).await;
        assert_eq!(http, StatusCode::OK, "gRPC errors travel in grpc-status");
        assert_eq!(body, "");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers()["grpc-status"], status, "{token:?}");
    }
    let (_, _, response) = send(
        api_policy(),
        Method::POST,
        "/contacts.v1.Contacts/DeleteContact",
        Some("reader"),
        true,
    )
    .await;
    assert_eq!(
        response.headers()["grpc-status"],
        "12",
        "UNIMPLEMENTED for an unlisted method"
    );
}

#[test]
fn misconfiguration_is_an_error_at_build_time() {
    let gate = gate();
    let err = |policy: RoutePolicy| gate.policy(policy).unwrap_err();
    assert_eq!(
        err(RoutePolicy::new().scope(Method::GET, "/a", "x:read").scope(
            Method::GET,
            "/a",
            "x:write"
        )),
        ConfigError::DuplicateRoute {
            method: "GET".into(),
            pattern: "/a".into()
        }
    );
    // Parameter names do not make a different route.
    assert_eq!(
        err(RoutePolicy::new()
            .scope(Method::GET, "/a/{id}", "x:read")
            .public(Method::GET, "/a/{key}"))
        .to_string(),
        "duplicate route: GET /a/{key} is already in the policy"
    );
    assert_eq!(
        err(RoutePolicy::new().scope(Method::GET, "a", "x:read")).to_string(),
        r#"invalid route "a": a pattern starts with '/'"#
    );
    assert_eq!(
        err(RoutePolicy::new()
            .scope_catalog(["contacts:read"])
            .grpc("/c.v1.C/List", "contacts:reed"))
        .to_string(),
        r#"route "/c.v1.C/List" requires "contacts:reed", which is not in the scope catalog"#
    );
    assert!(matches!(
        err(RoutePolicy::new().scope(Method::GET, "/a", "bad scope")),
        ConfigError::Scope(_)
    ));
    assert!(matches!(
        err(RoutePolicy::new().require_entitlement("")),
        ConfigError::Entitlement(_)
    ));
    // Same path, other method: fine.
    gate.policy(
        RoutePolicy::new()
            .scope(Method::GET, "/a/{id}", "x:read")
            .scope(Method::DELETE, "/a/{id}", "x:write"),
    )
    .unwrap();
}
