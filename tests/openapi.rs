//! `/openapi.json` of the example server says what the server does: for
//! every operation it documents, a token without the documented scopes gets
//! the documented 403, byte for byte, a token with them is let through, no
//! token gets the documented 401, and a spent limit gets the documented 429.
//! (CI also runs schemathesis against it: `.ci/schemathesis.sh`.)

mod common;

#[allow(dead_code)]
#[path = "../examples/onboardinghub/app.rs"]
mod app;
#[path = "../examples/demo/mod.rs"]
mod demo;

use http::{Method, StatusCode};
use serde_json::{json, Value};

const ALL: &str = "ohk_demo_all_scopes";
const READ: &str = "ohk_demo_contacts_read";
const FREE: &str = "ohk_demo_no_api_access";

/// The one example of a response, as compact JSON in the contract's key
/// order (`type`, then `message`).
fn example(operation: &Value, status: &str, name: &str) -> String {
    let error = &operation["responses"][status]["content"]["application/json"]["examples"][name]
        ["value"]["error"];
    format!(
        r#"{{"error":{{"type":{},"message":{}}}}}"#,
        error["type"], error["message"]
    )
}

#[tokio::test]
async fn every_documented_operation_is_enforced_as_documented() {
    let server = common::serve(app::App::new("test-admin").router().expect("router")).await;
    let reply = server.send(Method::GET, "/openapi.json", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    let catalog = &schemes["oauth2"]["flows"]["authorizationCode"]["scopes"];
    assert_eq!(
        catalog,
        &Value::Object(
            demo::SCOPE_TABLE
                .iter()
                .map(|(n, d)| (n.to_string(), json!(d)))
                .collect()
        )
    );

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path.replace("{id}", "con_1");
        for (method, operation) in item.as_object().expect("path item") {
            let method: Method = method.to_ascii_uppercase().parse().expect("method");
            let security = operation["security"].as_array().expect("security");
            // The operation's one scope, named by both schemes.
            let [bearer, oauth2] = &security[..] else {
                panic!("{method} {path}: {security:?}")
            };
            let scope = bearer["bearerAuth"][0].as_str().expect("a scope");
            assert_eq!(bearer, &json!({"bearerAuth": [scope]}));
            assert_eq!(oauth2, &json!({"oauth2": [scope]}));
            assert!(catalog.get(scope).is_some(), "{scope}");

            let body = if method == Method::POST || method == Method::PATCH {
                "{}"
            } else {
                ""
            };
            // Every scope: through to the handler (a record, or its 404).
            let missing = path.replace("{id}", "missing");
            let reply = server.call(method.clone(), &missing, ALL, body).await;
            assert!(
                reply.status.is_success() || reply.status == StatusCode::NOT_FOUND,
                "{method} {path}: {reply:?}"
            );
            let reply = server.call(method.clone(), &concrete, READ, body).await;
            if scope == "contacts:read" {
                assert_eq!(reply.status, StatusCode::OK, "{method} {path}");
            } else {
                reply.assert_rejected(
                    403,
                    &example(operation, "403", "insufficient_scope"),
                    Some(&format!(
                        r#"Bearer error="insufficient_scope", scope="{scope}""#
                    )),
                );
            }
            let reply = server.call(method.clone(), &concrete, FREE, body).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN);
            assert_eq!(reply.body, example(operation, "403", "forbidden"));
            let reply = server.send(method.clone(), &concrete, &[], body).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.body, example(operation, "401", "unauthorized"));
            let reply = server.call(method, &concrete, "ohk_unknown", body).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.body, example(operation, "401", "invalid_token"));
            checked += 1;
        }
    }
    // Five operations for each of the four CRUD resources, two for guides.
    assert_eq!(checked, 22);
}

/// The 429 every protected operation documents is the one the tiny plan
/// gets, but for the limit's wait (an example's is 3 seconds).
#[tokio::test]
async fn a_spent_limit_is_the_documented_429() {
    let server = common::serve(app::App::new("test-admin").router().expect("router")).await;
    let doc = server
        .send(Method::GET, "/openapi.json", &[], "")
        .await
        .json();
    let operation = &doc["paths"]["/api/v1/contacts"]["get"];
    let documented = example(operation, "429", "rate_limited");
    assert_eq!(
        documented,
        r#"{"error":{"type":"rate_limited","message":"Rate limit exceeded for 'requests'. Retry after 3 seconds."}}"#
    );
    let headers = operation["responses"]["429"]["headers"]
        .as_object()
        .expect("headers");
    for name in ["Retry-After", "RateLimit-Policy", "RateLimit"] {
        assert!(headers.contains_key(name), "{name}");
    }
    let tiny = "ohk_demo_tiny_limits";
    for _ in 0..5 {
        assert_eq!(
            server.get("/api/v1/contacts", tiny).await.status,
            StatusCode::OK
        );
    }
    let reply = server.get("/api/v1/contacts", tiny).await;
    reply.assert_rejected(429, &documented.replace("3 seconds", "12 seconds"), None);
    for name in ["retry-after", "ratelimit-policy", "ratelimit"] {
        assert!(reply.header(name).is_some(), "{name}");
    }
}
