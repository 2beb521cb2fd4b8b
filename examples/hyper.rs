//! A plain hyper 1.x server, no axum: the contacts and guides routes of the
//! OnboardingHub API behind one scopegate `RoutePolicy`.
//!
//! ```text
//! cargo run --example hyper                       # 127.0.0.1:3001; ADDR overrides
//! curl -H "Authorization: Bearer ohk_demo_all_scopes" http://127.0.0.1:3001/api/v1/contacts
//! ```

#[path = "demo/mod.rs"]
mod demo;

use std::convert::Infallible;
use std::error::Error;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use scopegate::error::ConfigError;
use scopegate::policy::RoutePolicy;
use scopegate::{CachedStore, Gate};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    demo::init_tracing();
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3001".to_owned());
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!(
        "hyper example listening on http://{}",
        listener.local_addr()?
    );
    serve(listener).await
}

/// The access policy: every route listed, everything else refused.
fn policy(gate: &Gate) -> Result<scopegate::layer::PolicyLayer, ConfigError> {
    gate.policy(
        RoutePolicy::new()
            .require_entitlement("api-access")
            .scope_catalog(demo::SCOPES)
            .public(Method::GET, "/health")
            .scope(Method::GET, "/api/v1/contacts", "contacts:read")
            .scope(Method::GET, "/api/v1/contacts/{id}", "contacts:read")
            .scope(Method::POST, "/api/v1/contacts", "contacts:write")
            .scope(Method::GET, "/api/v1/guides", "guides:read")
            .scope(Method::GET, "/api/v1/guides/{id}", "guides:read"),
    )
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener) -> Result<(), Box<dyn Error>> {
    let gate = Gate::new(CachedStore::new(demo::store()));
    let service = ServiceBuilder::new()
        .layer(policy(&gate)?)
        .service_fn(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            // A client that hangs up mid-request is not the server's error.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The handler behind the policy: it only ever sees allowed requests.
async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let (status, body) = match (request.method(), path) {
        (&Method::GET, "/health") => (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        (&Method::GET, "/api/v1/contacts") => (
            StatusCode::OK,
            r#"{"data":[{"email":"ada@example.com","id":"con_1","name":"Ada Lovelace"}]}"#
                .to_owned(),
        ),
        (&Method::POST, "/api/v1/contacts") => {
            (StatusCode::CREATED, r#"{"id":"con_2"}"#.to_owned())
        }
        (&Method::GET, "/api/v1/guides") => (
            StatusCode::OK,
            r#"{"data":[{"id":"gui_1","published":true,"title":"Getting started"}]}"#.to_owned(),
        ),
        (&Method::GET, "/api/v1/contacts/con_1") => (
            StatusCode::OK,
            r#"{"email":"ada@example.com","id":"con_1","name":"Ada Lovelace"}"#.to_owned(),
        ),
        (&Method::GET, "/api/v1/guides/gui_1") => (
            StatusCode::OK,
            r#"{"id":"gui_1","published":true,"title":"Getting started"}"#.to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":{"type":"not_found","message":"Not found."}}"#.to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
