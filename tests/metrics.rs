//! The example server's `/metrics`, on loopback: each request counted once
//! by its final decision, cache hits by tier, store calls, and no label
//! holding a token. One test: the counters are the process's.

mod common;

#[allow(dead_code)]
#[path = "../examples/onboardinghub/app.rs"]
mod app;
#[path = "../examples/demo/mod.rs"]
mod demo;

use common::serve;

#[tokio::test]
async fn metrics_count_each_decision_once_and_hold_no_secret() {
    // And a public route behind an optional layer, of a gate of its own;
    // with the `axum` feature, a handler's `RequireScope` refusing a key
    // that gate let through.
    let keys = scopegate::MemoryStore::new();
    keys.insert_token(
        "ohk_extracted_reader",
        scopegate::Credential::new("key_x", "ws_x", scopegate::CredentialKind::ApiKey)
            .with_scopes(scopegate::ScopeSet::parse(["contacts:read"]).unwrap())
            .with_entitlements(["api-access"]),
    );
    let public = scopegate::Gate::new(scopegate::CachedStore::new(keys));
    let router = app::App::new("test-admin")
        .router()
        .unwrap()
        .route(
            "/public",
            axum::routing::get(|| async { "hello" }).route_layer(public.optional()),
        )
        .merge(app::metrics_route().unwrap());
    #[cfg(feature = "axum")]
    let router = {
        scopegate::scope_type!(ContactsWrite = "contacts:write");
        router.route(
            "/extracted",
            axum::routing::get(|_: scopegate::extract::RequireScope<ContactsWrite>| async {
                "written"
            })
            .route_layer(public.api_access()),
        )
    };
    // What the extractor adds to the counts below.
    let extracted = if cfg!(feature = "axum") { 1.0 } else { 0.0 };
    let server = serve(router).await;
    let status = |path: &'static str, token: &'static str| {
        let server = &server;
        async move { server.get(path, token).await.status.as_u16() }
    };
    for _ in 0..3 {
        assert_eq!(status("/api/v1/contacts", "ohk_demo_all_scopes").await, 200);
    }
    // The route's one layer checks api-access and the scope.
    assert_eq!(
        status("/api/v1/webhooks", "ohk_demo_contacts_read").await,
        403
    );
    assert_eq!(
        status("/api/v1/contacts", "ohk_demo_no_api_access").await,
        403
    );
    for _ in 0..2 {
        assert_eq!(
            status("/api/v1/contacts", "ohk_secret_never_a_label").await,
            401
        );
    }
    let missing = server
        .send(http::Method::GET, "/api/v1/contacts", &[], "")
        .await;
    assert_eq!(missing.status.as_u16(), 401);
    let anonymous = server.send(http::Method::GET, "/public", &[], "").await;
    assert_eq!(anonymous.status.as_u16(), 200);
    #[cfg(feature = "axum")]
    assert_eq!(status("/extracted", "ohk_extracted_reader").await, 403);

    let reply = server.get("/metrics", "").await;
    assert_eq!(reply.status.as_u16(), 200);
    let text = reply.body;
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let decisions = |outcome: &str, reason: &str, kind: &str| {
        value(&format!(
            r#"scopegate_decisions_total{{outcome="{outcome}",reason="{reason}",kind="{kind}"}}"#
        ))
    };
    assert_eq!(decisions("allowed", "none", "api_key"), Some(3.0), "{text}");
    // The extractor's refusal counts once, as rejected: not also allowed.
    assert_eq!(
        decisions("rejected", "insufficient_scope", "api_key"),
        Some(1.0 + extracted)
    );
    assert_eq!(decisions("rejected", "forbidden", "api_key"), Some(1.0));
    assert_eq!(decisions("rejected", "invalid_token", "none"), Some(2.0));
    assert_eq!(decisions("rejected", "unauthorized", "none"), Some(1.0));
    assert_eq!(
        decisions("allowed", "none", "none"),
        Some(1.0),
        "the anonymous one"
    );

    // Each demo key and the unknown token were looked up in the store
    // (twice for the unknown token: its first "not found" is not cached).
    assert_eq!(
        value("scopegate_cache_misses_total"),
        Some(5.0 + extracted),
        "{text}"
    );
    assert_eq!(value("scopegate_store_errors_total"), Some(0.0));
    let hits = |tier: &str, answer: &str| {
        value(&format!(
            r#"scopegate_cache_hits_total{{tier="{tier}",answer="{answer}"}}"#
        ))
    };
    // The three requests of the key that was found: one store call, then
    // two hits, from this thread's front or from moka (whichever worker
    // thread served the connection).
    let found_hits = hits("front", "found").unwrap() + hits("moka", "found").unwrap();
    assert_eq!(found_hits, 2.0, "{text}");
    assert_eq!(
        value(r#"scopegate_store_latency_seconds_count{outcome="found"}"#),
        Some(3.0 + extracted),
        "{text}"
    );
    // moka's count, which its housekeeping brings up to date: at most the
    // keys found.
    let entries = value(r#"scopegate_cache_entries{answer="found"}"#).expect("the gauge");
    assert!(entries <= 3.0 + extracted, "{text}");
    assert!(!text.contains("ohk_"), "no token in any label: {text}");
}
