//! `examples/hyper.rs` over loopback: a hyper server guarded by one
//! `RoutePolicy`, driven with a real HTTP client.

#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod example;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

async fn start() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { example::serve(listener).await.unwrap() });
    addr
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap(), challenge)
}

#[tokio::test]
async fn the_hyper_example_enforces_its_policy() {
    let addr = start().await;
    let all = Some("ohk_demo_all_scopes");
    let read = Some("ohk_demo_contacts_read");
    let free = Some("ohk_demo_no_api_access");

    assert_eq!(
        send(addr, Method::GET, "/health", None).await.0,
        StatusCode::OK
    );
    let (status, body, _) = send(addr, Method::GET, "/api/v1/contacts", all).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::OK,
            r#"{"data":[{"email":"ada@example.com","id":"con_1","name":"Ada Lovelace"}]}"#
        )
    );
    assert_eq!(
        send(addr, Method::GET, "/api/v1/guides/gui_1", all).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(addr, Method::GET, "/api/v1/contacts/con_1", read)
            .await
            .0,
        StatusCode::OK
    );

    let (status, body, challenge) = send(addr, Method::GET, "/api/v1/guides", read).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'guides:read' scope. Your credential does not have this permission."}}"#
    );
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer error="insufficient_scope", scope="guides:read""#)
    );

    let (status, body, _) = send(addr, Method::GET, "/api/v1/contacts", free).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#
    );

    let (status, _, challenge) = send(addr, Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(
        (status, challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("Bearer"))
    );
    let (status, _, challenge) =
        send(addr, Method::GET, "/api/v1/contacts", Some("ohk_nope")).await;
    assert_eq!(
        (status, challenge.as_deref()),
        (
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer error="invalid_token""#)
        )
    );

    // Not in the policy: refused before the handler, even with every scope.
    let (status, body, _) = send(addr, Method::DELETE, "/api/v1/contacts/con_1", all).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        r#"{"error":{"type":"not_found","message":"No route matches this request."}}"#
    );
}
