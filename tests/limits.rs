//! Plan limits through a real axum server: exact 429s and their headers,
//! gRPC's code, route costs, refusals that spend nothing, stacked layers,
//! plan changes, the switch for the headers, custom messages and renderers.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::{serve, Reply, Server};
use http::{Method, Response, StatusCode};
use scopegate::error::{Messages, Rejection};
use scopegate::gate::GateBuilder;
use scopegate::limit::Limit;
use scopegate::policy::RoutePolicy;
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};

const ALL_SCOPES: [&str; 8] = [
    "contacts:read",
    "contacts:write",
    "organisations:read",
    "organisations:write",
    "enrollments:read",
    "enrollments:write",
    "guides:read",
    "webhooks:manage",
];

fn per_minute(name: &str, count: u32) -> Limit {
    Limit::rate(name, count, Duration::from_secs(60)).unwrap()
}

/// `tiny` and `tiny2` (one workspace, all scopes, 5 requests a minute per
/// key), `reader` (no `contacts:write`), `writer` (`contacts:write` only, 5
/// requests and 2 writes a minute), `free` (no `api-access`).
fn keys() -> MemoryStore {
    let keys = MemoryStore::new();
    let key = |id: &str, account: &str, scopes: &[&str]| {
        Credential::new(id, account, CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(scopes.iter().copied()).unwrap())
            .with_entitlements(["api-access"])
            .with_limits([per_minute("requests", 5)])
    };
    keys.insert_token("tiny", key("key_tiny", "ws_tiny", &ALL_SCOPES));
    keys.insert_token("tiny2", key("key_tiny2", "ws_tiny", &ALL_SCOPES));
    keys.insert_token("reader", key("key_reader", "ws_read", &["contacts:read"]));
    keys.insert_token(
        "writer",
        key("key_writer", "ws_write", &["contacts:write"])
            .with_limits([per_minute("requests", 5), per_minute("writes", 2)]),
    );
    keys.insert_token(
        "free",
        key("key_free", "ws_free", &ALL_SCOPES).with_entitlements(Vec::<String>::new()),
    );
    keys
}

/// `api-access` around the router, as in the example server; each route
/// requires its scope, `/import` at a cost of 3 and `/notes` counted
/// against `writes` only.
fn app(gate: &Gate) -> Router {
    let scope = |s: &str| gate.require_scope(s).unwrap();
    Router::new()
        .route(
            "/api/v1/contacts",
            get(|| async { "contacts" }).route_layer(scope("contacts:read")),
        )
        .route(
            "/api/v1/contacts",
            post(|| async { "created" }).route_layer(scope("contacts:write")),
        )
        .route(
            "/api/v1/contacts/import",
            post(|| async { "imported" }).route_layer(scope("contacts:write").cost(3)),
        )
        .route(
            "/api/v1/notes",
            post(|| async { "noted" })
                .route_layer(scope("contacts:write").counts_against(["writes"]).unwrap()),
        )
        .layer(gate.api_access())
}

async fn server_with(builder: GateBuilder) -> Server {
    serve(app(&builder.build().unwrap())).await
}

async fn server(keys: &MemoryStore) -> Server {
    server_with(Gate::builder(CachedStore::new(keys.clone()))).await
}

async fn post_as(server: &Server, path: &str, token: &str) -> Reply {
    server.call(Method::POST, path, token, "{}").await
}

/// Asserts an admitted request: 200, `body`, and the limit headers.
fn assert_admitted(reply: &Reply, body: &str, policy: &str, left: &str) {
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, body),
        "{reply:?}"
    );
    assert_eq!(reply.header("ratelimit-policy"), Some(policy), "{reply:?}");
    assert_eq!(reply.header("ratelimit"), Some(left), "{reply:?}");
}

/// Asserts the exact 429 of `requests` with `wait` seconds to go.
fn assert_rate_limited(reply: &Reply, wait: u64) {
    let unit = if wait == 1 { "second" } else { "seconds" };
    reply.assert_rejected(
        429,
        &format!(
            r#"{{"error":{{"type":"rate_limited","message":"Rate limit exceeded for 'requests'. Retry after {wait} {unit}."}}}}"#
        ),
        None,
    );
    assert_eq!(reply.header("retry-after"), Some(wait.to_string().as_str()));
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""requests";q=5;w=60"#)
    );
    assert_eq!(
        reply.header("ratelimit"),
        Some(format!(r#""requests";r=0;t={wait}"#).as_str())
    );
}

const REQUESTS: &str = r#""requests";q=5;w=60"#;

#[tokio::test]
async fn a_spent_rate_limit_is_an_exact_429_and_spends_nothing_more() {
    let keys = keys();
    let server = server(&keys).await;
    // Five a minute: one comes back every 12 s; the burst is the five.
    for (left, reset) in [(4, 12), (3, 24), (2, 36), (1, 48), (0, 60)] {
        let reply = server.get("/api/v1/contacts", "tiny").await;
        assert_admitted(
            &reply,
            "contacts",
            REQUESTS,
            &format!(r#""requests";r={left};t={reset}"#),
        );
    }
    let refused = server.get("/api/v1/contacts", "tiny").await;
    assert_rate_limited(&refused, 12);
    // A refusal spends nothing: the wait does not grow.
    assert_rate_limited(&server.get("/api/v1/contacts", "tiny").await, 12);
    // Per key: the other key of the workspace has its own five.
    assert_admitted(
        &server.get("/api/v1/contacts", "tiny2").await,
        "contacts",
        REQUESTS,
        r#""requests";r=4;t=12"#,
    );
}

#[tokio::test]
async fn grpc_clients_get_resource_exhausted_trailers_only() {
    let keys = keys();
    let server = server(&keys).await;
    let grpc = || {
        server.send(
            Method::GET,
            "/api/v1/contacts",
            &[
                ("authorization", "Bearer tiny"),
                ("content-type", "application/grpc"),
            ],
            "",
        )
    };
    for _ in 0..5 {
        assert_eq!(grpc().await.status, StatusCode::OK);
    }
    let reply = grpc().await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert_eq!(reply.header("grpc-status"), Some("8"));
    assert_eq!(
        reply.header("grpc-message"),
        Some("Rate limit exceeded for 'requests'. Retry after 12 seconds.")
    );
    assert_eq!(reply.header("ratelimit"), Some(r#""requests";r=0;t=12"#));
}

#[tokio::test]
async fn a_route_counts_its_cost_against_the_limits_it_names() {
    let keys = keys();
    let server = server(&keys).await;

    // An import costs 3 of the 5; a second one does not fit (it would
    // take 36 s of budget with 24 left: 12 s to wait), a single write does.
    assert_admitted(
        &post_as(&server, "/api/v1/contacts/import", "tiny").await,
        "imported",
        REQUESTS,
        r#""requests";r=2;t=36"#,
    );
    assert_rate_limited(
        &post_as(&server, "/api/v1/contacts/import", "tiny").await,
        12,
    );
    assert_admitted(
        &post_as(&server, "/api/v1/contacts", "tiny").await,
        "created",
        REQUESTS,
        r#""requests";r=1;t=48"#,
    );

    // Notes count against `writes` alone: `requests` is untouched.
    let writes = r#""writes";q=2;w=60"#;
    assert_admitted(
        &post_as(&server, "/api/v1/notes", "writer").await,
        "noted",
        writes,
        r#""writes";r=1;t=30"#,
    );
    assert_admitted(
        &post_as(&server, "/api/v1/contacts", "writer").await,
        "created",
        &format!("{REQUESTS}, {writes}"),
        r#""requests";r=4;t=12, "writes";r=0;t=60"#,
    );
    let refused = post_as(&server, "/api/v1/notes", "writer").await;
    refused.assert_rejected(
        429,
        r#"{"error":{"type":"rate_limited","message":"Rate limit exceeded for 'writes'. Retry after 30 seconds."}}"#,
        None,
    );
    assert_eq!(refused.header("ratelimit-policy"), Some(writes));
    assert_eq!(refused.header("ratelimit"), Some(r#""writes";r=0;t=30"#));
    // A key without the named limit is not counted on that route at all.
    let reply = post_as(&server, "/api/v1/notes", "tiny2").await;
    assert_eq!(
        (reply.status, reply.header("ratelimit")),
        (StatusCode::OK, None)
    );
}

#[tokio::test]
async fn a_route_policy_prices_its_routes() {
    let keys = keys();
    let gate = Gate::new(CachedStore::new(keys));
    let table = || {
        RoutePolicy::new()
            .require_entitlement("api-access")
            .cost(Method::POST, "/api/v1/contacts/import", 3)
            .scope(Method::POST, "/api/v1/contacts/import", "contacts:write")
            .scope(Method::POST, "/api/v1/notes", "contacts:write")
            .counts_against(Method::POST, "/api/v1/notes", ["writes"])
            .public(Method::GET, "/health")
    };
    let router = Router::new()
        .route("/api/v1/contacts/import", post(|| async { "imported" }))
        .route("/api/v1/notes", post(|| async { "noted" }))
        .route("/health", get(|| async { "ok" }))
        .layer(gate.policy(table()).unwrap());
    let server = serve(router).await;
    assert_admitted(
        &post_as(&server, "/api/v1/contacts/import", "tiny").await,
        "imported",
        REQUESTS,
        r#""requests";r=2;t=36"#,
    );
    assert_admitted(
        &post_as(&server, "/api/v1/notes", "writer").await,
        "noted",
        r#""writes";q=2;w=60"#,
        r#""writes";r=1;t=30"#,
    );
    let health = server.send(Method::GET, "/health", &[], "").await;
    assert_eq!(
        (health.status, health.header("ratelimit")),
        (StatusCode::OK, None)
    );

    // A cost for a route the table lacks, for a public one, or naming an
    // invalid limit is a build error.
    for (policy, message) in [
        (
            table().cost(Method::GET, "/api/v1/nothing/{id}", 2),
            r#"invalid route "/api/v1/nothing/{id}": a cost for GET /api/v1/nothing/{id}, which the table does not have"#,
        ),
        (
            table().cost(Method::GET, "/health", 2),
            r#"invalid route "/health": GET is public: a cost counts against a credential it never has"#,
        ),
        (
            table().counts_against(Method::POST, "/api/v1/notes", ["Writes"]),
            r#"invalid limit name "Writes": use 1 to 64 of a-z, 0-9, '_', '-', '.', starting with a letter"#,
        ),
    ] {
        assert_eq!(gate.policy(policy).unwrap_err().to_string(), message);
    }
}

#[tokio::test]
async fn refused_requests_spend_nothing() {
    let keys = keys();
    let cache = CachedStore::new(keys.clone());
    let server = server_with(Gate::builder(cache.clone())).await;
    for _ in 0..8 {
        // Let through `api-access` outside, refused by the scope inside:
        // the outer layer's count goes back, and no limit header is sent.
        let reply = post_as(&server, "/api/v1/contacts", "reader").await;
        reply.assert_rejected(
            403,
            r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'contacts:write' scope. Your credential does not have this permission."}}"#,
            Some(r#"Bearer error="insufficient_scope", scope="contacts:write""#),
        );
        assert_eq!(reply.header("ratelimit"), None);
        assert_eq!(reply.header("ratelimit-policy"), None);
        // Refused by the outer layer.
        let reply = server.get("/api/v1/contacts", "free").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.header("ratelimit"), None);
    }
    // Their budgets are whole.
    let first = r#""requests";r=4;t=12"#;
    let reply = server.get("/api/v1/contacts", "reader").await;
    assert_admitted(&reply, "contacts", REQUESTS, first);
    keys.set_account_entitlements("ws_free", ["api-access"]);
    cache.invalidate_account("ws_free");
    let reply = server.get("/api/v1/contacts", "free").await;
    assert_admitted(&reply, "contacts", REQUESTS, first);
}

#[tokio::test]
async fn a_plan_change_reaches_the_running_server() {
    let keys = keys();
    let cache = CachedStore::new(keys.clone());
    let server = server_with(Gate::builder(cache.clone())).await;
    for _ in 0..5 {
        server.get("/api/v1/contacts", "tiny").await;
    }
    assert_rate_limited(&server.get("/api/v1/contacts", "tiny").await, 12);

    // An upgrade: a new budget, counted from nothing.
    let changed = keys.set_account_limits("ws_tiny", [per_minute("requests", 1000)]);
    assert_eq!(changed, 2);
    cache.invalidate_account("ws_tiny");
    assert_admitted(
        &server.get("/api/v1/contacts", "tiny").await,
        "contacts",
        r#""requests";q=1000;w=60"#,
        r#""requests";r=999;t=1"#,
    );

    // A plan without limits: no headers, no refusals.
    keys.set_account_limits("ws_tiny", []);
    cache.invalidate_account("ws_tiny");
    for _ in 0..10 {
        let reply = server.get("/api/v1/contacts", "tiny").await;
        assert_eq!(
            (reply.status, reply.header("ratelimit")),
            (StatusCode::OK, None)
        );
        assert_eq!(reply.header("ratelimit-policy"), None);
    }
}

#[tokio::test]
async fn a_monthly_quota_is_shared_by_the_workspace_until_the_month_ends() {
    let keys = keys();
    let quota = Limit::monthly("monthly", 3).unwrap().per_account();
    keys.set_account_limits("ws_tiny", [quota]);
    let server = server(&keys).await;
    let policy = r#""monthly";q=3"#;
    for (token, left) in [("tiny", 2), ("tiny2", 1), ("tiny", 0)] {
        let before = seconds_to_next_month();
        let reply = server.get("/api/v1/contacts", token).await;
        let reset = reply
            .header("ratelimit")
            .unwrap()
            .rsplit_once("t=")
            .unwrap()
            .1;
        assert_admitted(
            &reply,
            "contacts",
            policy,
            &format!(r#""monthly";r={left};t={reset}"#),
        );
        let reset: u64 = reset.parse().unwrap();
        assert!(
            (before - 1..=before).contains(&reset),
            "{reset} vs {before}"
        );
    }
    let before = seconds_to_next_month();
    let reply = server.get("/api/v1/contacts", "tiny2").await;
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((before - 1..=before).contains(&wait), "{wait} vs {before}");
    reply.assert_rejected(
        429,
        &format!(
            r#"{{"error":{{"type":"quota_exceeded","message":"Quota exceeded for 'monthly'. Retry after {wait} seconds."}}}}"#
        ),
        None,
    );
    assert_eq!(reply.header("ratelimit-policy"), Some(policy));
    assert_eq!(
        reply.header("ratelimit"),
        Some(format!(r#""monthly";r=0;t={wait}"#).as_str())
    );
}

#[tokio::test]
async fn the_limit_headers_can_be_switched_off() {
    let keys = keys();
    let server =
        server_with(Gate::builder(CachedStore::new(keys.clone())).rate_limit_headers(false)).await;
    for _ in 0..5 {
        let reply = server.get("/api/v1/contacts", "tiny").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit-policy"), None);
        assert_eq!(reply.header("ratelimit"), None);
    }
    let reply = server.get("/api/v1/contacts", "tiny").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // `Retry-After` belongs to the 429 itself.
    assert_eq!(reply.header("retry-after"), Some("12"));
    assert_eq!(reply.header("ratelimit-policy"), None);
    assert_eq!(reply.header("ratelimit"), None);
}

#[tokio::test]
async fn messages_and_renderers_apply_to_429s() {
    let keys = keys();
    let builder = Gate::builder(CachedStore::new(keys.clone()))
        .messages(
            Messages::default()
                .with_rate_limited(|limit, secs| format!("Slow down on {limit} ({secs}s).")),
        )
        .renderer(|rejection: &Rejection, message: &str, grpc: bool| {
            let Rejection::RateLimited { retry_after, .. } = rejection else {
                return None;
            };
            if grpc {
                return None;
            }
            let body = format!(
                r#"{{"title":"Too Many Requests","detail":"{message}","wait":{retry_after}}}"#
            );
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("content-type", "application/problem+json")
                .header("retry-after", retry_after.to_string())
                .body(Bytes::from(body))
                .ok()
        });
    let server = server_with(builder).await;
    for _ in 0..5 {
        server.get("/api/v1/contacts", "tiny").await;
    }
    let reply = server.get("/api/v1/contacts", "tiny").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reply.body,
        r#"{"title":"Too Many Requests","detail":"Slow down on requests (12s).","wait":12}"#
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(reply.header("retry-after"), Some("12"));
    // The limit headers are added to a custom body too.
    assert_eq!(reply.header("ratelimit"), Some(r#""requests";r=0;t=12"#));
}

/// Seconds from now to the first instant of next month, UTC (rounded up).
fn seconds_to_next_month() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let days = i64::try_from(now.as_secs() / 86_400).unwrap();
    let (year, month) = year_month(days);
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let next = u64::try_from(first_day(year, month)).unwrap() * 86_400;
    let left = Duration::from_secs(next) - now;
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

/// The year and month of a day counted from 1970-01-01, by walking the
/// calendar (independent of the crate's arithmetic).
fn year_month(days: i64) -> (i64, u32) {
    let (mut year, mut month) = (1970, 1);
    loop {
        let next = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        if first_day(next.0, next.1) > days {
            return (year, month);
        }
        (year, month) = next;
    }
}

/// Days from 1970-01-01 to the first of `month` in `year`.
fn first_day(year: i64, month: u32) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: i64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += lengths[..month as usize - 1].iter().sum::<i64>();
    days
}
