//! A route policy in front of an axum `Router` decides about the route the
//! router dispatches to: a matrix of tricky request targets (percent
//! escapes, dot segments, doubled and trailing slashes, case, absolute
//! form), methods (`HEAD` on `GET` routes, `OPTIONS`, lowercase) and
//! credentials, sent as raw bytes to a real server. Whenever a handler runs,
//! the credential must hold what that handler's route requires: a protected
//! handler never runs for a request the policy took for a public route,
//! another route, or none.

use std::collections::HashMap;

use axum::routing::{get, post};
use scopegate::policy::RoutePolicy;
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The routes: pattern (the policy's and axum's), method, handler name, the
/// scope required (`None`: public).
const ROUTES: [(&str, &str, &str, &str, Option<&str>); 8] = [
    ("/health", "/health", "GET", "health", None),
    (
        "/api/v1/contacts",
        "/api/v1/contacts",
        "GET",
        "contacts",
        Some("contacts:read"),
    ),
    (
        "/api/v1/contacts",
        "/api/v1/contacts",
        "POST",
        "create",
        Some("contacts:write"),
    ),
    (
        "/api/v1/contacts/{id}",
        "/api/v1/contacts/{id}",
        "GET",
        "contact",
        Some("contacts:read"),
    ),
    (
        "/api/v1/organisations",
        "/api/v1/organisations",
        "GET",
        "organisations",
        Some("organisations:read"),
    ),
    (
        "/admin/*",
        "/admin/{*rest}",
        "GET",
        "admin",
        Some("webhooks:manage"),
    ),
    ("/public/*", "/public/{*rest}", "GET", "public", None),
    (
        "/api/v1/guides/{id}",
        "/api/v1/guides/{id}",
        "GET",
        "guide",
        Some("guides:read"),
    ),
];

/// Each token, and the scopes it holds (with the gate's implications:
/// `contacts:write` holds `contacts:read`).
const TOKENS: [(Option<&str>, &[&str]); 5] = [
    (None, &[]),
    (Some("t_read"), &["contacts:read"]),
    (Some("t_write"), &["contacts:write", "contacts:read"]),
    (Some("t_orgs"), &["organisations:read"]),
    (Some("t_hooks"), &["webhooks:manage"]),
];

const TARGETS: [&str; 44] = [
    "/api/v1/contacts",
    "/api/v1/contacts/",
    "/api/v1/contacts//",
    "//api/v1/contacts",
    "/api//v1/contacts",
    "/api/v1/./contacts",
    "/api/v1/x/../contacts",
    "/api/v1/%63ontacts",
    "/api/v1/contacts%2F1",
    "/api/v1/contacts/1%2F..%2F..%2F..%2Fadmin%2Fx",
    "/api/v1/contacts/%2e%2e",
    "/api/v1/contacts/%2e%2e/%2e%2e/organisations",
    "/api/v1/contacts/..",
    "/api/v1/contacts/.",
    "/api/v1/contacts/1",
    "/api/v1/contacts/1/",
    "/api/v1/contacts/1/../../organisations",
    "/API/v1/contacts",
    "/api/V1/Contacts",
    "/api/v1/contacts;x",
    "/api/v1/contacts%00",
    "/api/v1/contacts?/health",
    "/api/v1/organisations",
    "/api/v1/organisations?next=/health",
    "/api/v1/guides/1",
    "/api/v1/guides/..%2f..%2fcontacts",
    "/health",
    "/health/",
    "/Health",
    "/health/../api/v1/contacts",
    "/health%2F..%2Fapi%2Fv1%2Fcontacts",
    "/public/x",
    "/public/../admin/x",
    "/public/%2e%2e/admin/x",
    "/public/..%2Fadmin%2Fx",
    "/admin/x",
    "/admin",
    "/admin/",
    "/%61dmin/x",
    "/ADMIN/x",
    "*",
    "http://api.example.com/api/v1/contacts",
    "http://api.example.com/health",
    "http://api.example.com//admin/x",
];

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "OPTIONS", "DELETE", "get"];

/// Serves the routes behind the policy; each handler names itself in
/// `x-handler`. With `allow_unmatched`, what the policy matches not is let
/// through: the router alone then decides, and must still never run a
/// protected handler the policy did not check.
async fn server(allow_unmatched: bool) -> std::net::SocketAddr {
    let keys = MemoryStore::new();
    for (token, scopes) in TOKENS {
        if let Some(token) = token {
            // Only the scopes given; the gate's implications add the rest.
            let own: Vec<&str> = scopes.iter().copied().take(1).collect();
            keys.insert_token(
                token,
                Credential::new(token, "ws", CredentialKind::ApiKey)
                    .with_scopes(ScopeSet::parse(own).unwrap())
                    .with_entitlements(["api-access"]),
            );
        }
    }
    let gate = Gate::new(CachedStore::new(keys));
    let mut policy = RoutePolicy::new().require_entitlement("api-access");
    let mut router = axum::Router::new();
    let mut by_pattern: HashMap<&str, axum::routing::MethodRouter> = HashMap::new();
    for (pattern, axum_pattern, method, name, scope) in ROUTES {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        policy = match scope {
            Some(scope) => policy.scope(method.clone(), pattern, scope),
            None => policy.public(method.clone(), pattern),
        };
        let handler = move || async move { ([("x-handler", name)], "ran") };
        let entry = by_pattern.remove(axum_pattern);
        let routed = match (entry, method.as_str()) {
            (None, "GET") => get(handler),
            (None, _) => post(handler),
            (Some(routed), "GET") => routed.get(handler),
            (Some(routed), _) => routed.post(handler),
        };
        by_pattern.insert(axum_pattern, routed);
    }
    if allow_unmatched {
        policy = policy.allow_unmatched();
    }
    for (pattern, routed) in by_pattern {
        router = router.route(pattern, routed);
    }
    let router = router.layer(gate.policy(policy).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Sends one request as written, and returns its status and the handler
/// that ran, if any.
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> (u16, Option<String>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: api.example.com\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status for {method} {target}: {response:?}"));
    let handler = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-handler")
            .then(|| value.trim().to_owned())
    });
    (status, handler)
}

#[tokio::test]
async fn a_handler_runs_only_with_what_its_route_requires() {
    let required: HashMap<&str, Option<&str>> = ROUTES
        .iter()
        .map(|(_, _, _, name, scope)| (*name, *scope))
        .collect();
    let (mut requests, mut ran, mut violations) = (0, 0, Vec::new());
    for allow_unmatched in [false, true] {
        let addr = server(allow_unmatched).await;
        for target in TARGETS {
            for method in METHODS {
                for (token, scopes) in TOKENS {
                    requests += 1;
                    let (status, handler) = send(addr, method, target, token).await;
                    let Some(handler) = handler else { continue };
                    ran += 1;
                    let allowed = match required[handler.as_str()] {
                        None => true,
                        Some(scope) => scopes.contains(&scope),
                    };
                    if !allowed || status != 200 {
                        violations.push(format!(
                            "{method} {target} with {token:?} (allow_unmatched: {allow_unmatched}): {handler} ran ({status})"
                        ));
                    }
                }
            }
        }
    }
    println!(
        "{requests} requests, {ran} reached a handler, {} disagreements",
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(requests, 2 * TARGETS.len() * METHODS.len() * TOKENS.len());
    // The matrix reaches handlers, both public and protected: it is not
    // refusing everything.
    assert!(ran > 100, "{ran}");
}

/// The expected outcomes of a few rows, exactly: which handler ran, or
/// which status the policy or the router answered.
#[tokio::test]
async fn selected_rows_have_exact_outcomes() {
    let addr = server(false).await;
    // Method, target, token; then the status and the handler that ran.
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, u16, Option<&'a str>);
    let cases: [Row<'_>; 14] = [
        (
            "GET",
            "/api/v1/contacts",
            Some("t_read"),
            200,
            Some("contacts"),
        ),
        (
            "HEAD",
            "/api/v1/contacts",
            Some("t_read"),
            200,
            Some("contacts"),
        ),
        ("HEAD", "/api/v1/contacts", None, 401, None),
        ("GET", "/api/v1/%63ontacts", Some("t_read"), 404, None),
        ("GET", "/api/v1/contacts/", Some("t_read"), 404, None),
        (
            "GET",
            "/api/v1/contacts/1%2F..%2F..%2F..%2Fadmin%2Fx",
            Some("t_read"),
            200,
            Some("contact"),
        ),
        (
            "GET",
            "/api/v1/contacts/1%2F..%2F..%2F..%2Fadmin%2Fx",
            Some("t_hooks"),
            403,
            None,
        ),
        ("GET", "/public/../admin/x", None, 200, Some("public")),
        ("GET", "/health/../api/v1/contacts", None, 404, None),
        ("GET", "/Health", None, 404, None),
        ("OPTIONS", "/api/v1/contacts", Some("t_read"), 404, None),
        ("get", "/api/v1/contacts", Some("t_read"), 404, None),
        (
            "GET",
            "http://api.example.com/api/v1/contacts",
            None,
            401,
            None,
        ),
        (
            "GET",
            "http://api.example.com//admin/x",
            Some("t_hooks"),
            404,
            None,
        ),
    ];
    for (method, target, token, status, handler) in cases {
        let got = send(addr, method, target, token).await;
        assert_eq!(
            (got.0, got.1.as_deref()),
            (status, handler),
            "{method} {target} with {token:?}"
        );
    }
}
