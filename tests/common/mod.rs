//! A real server on an ephemeral loopback port, and a real HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What came back, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is ASCII"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts a scopegate rejection: status, exact body and headers.
    pub fn assert_rejected(&self, status: u16, body: &str, www_authenticate: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.body, body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert_eq!(self.header("www-authenticate"), www_authenticate);
        assert_eq!(
            self.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
}

/// Serves `router` on 127.0.0.1 at a port the OS picks.
pub async fn serve(router: Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("server") });
    Server {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Server {
    /// Sends a request; `headers` may repeat a name.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("valid request");
        let response = self.client.request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
        }
    }

    /// `GET path` with `Authorization: Bearer token`.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(Method::GET, path, &[("authorization", &auth)], "")
            .await
    }

    /// `method path` with a bearer token and a JSON body.
    pub async fn call(&self, method: Method, path: &str, token: &str, body: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }
}

/// The example binary `name`, which `cargo test` builds beside the tests (a
/// run filtered with `--test` alone does not: build it first with `cargo
/// build --examples --all-features`). Refused if older than the
/// sources, so that a stale build cannot pass for this one.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = dir.join("examples").join(name);
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo build --examples --all-features`",
                binary.display()
            )
        });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = ["src", "examples"]
        .iter()
        .flat_map(|dir| walk(&root.join(dir)))
        .max()
        .expect("sources");
    assert!(
        built >= newest,
        "{} is older than the sources: run `cargo build --examples --all-features`",
        binary.display()
    );
    binary
}

/// The modification times of every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::time::SystemTime> {
    let mut times = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            times.extend(walk(&path));
        } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            times.push(modified);
        }
    }
    times
}

/// `GET /api/v1/contacts` with `token`, through `api-access` and
/// `contacts:read` of `gate`, as the example API checks it: the status.
pub async fn stacked_status(gate: &scopegate::Gate, token: &str) -> u16 {
    use tower::{ServiceBuilder, ServiceExt};
    let app = ServiceBuilder::new()
        .layer(gate.api_access())
        .layer(gate.require_scope("contacts:read").expect("scope"))
        .service(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(
                http_body_util::Empty::<Bytes>::new(),
            ))
        }));
    let request = Request::get("/api/v1/contacts")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .expect("request");
    app.oneshot(request)
        .await
        .expect("infallible")
        .status()
        .as_u16()
}
