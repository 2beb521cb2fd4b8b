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

/// A loopback port free a moment ago, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
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

    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
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
    let newest = sources_of(&binary)
        .iter()
        .filter_map(|file| std::fs::metadata(file).and_then(|m| m.modified()).ok())
        .max()
        .expect("sources");
    assert!(
        built >= newest,
        "{} is older than the sources: run `cargo build --examples --all-features`",
        binary.display()
    );
    binary
}

/// The files of this checkout that `binary` was built from, by cargo's
/// dep-info file beside it (which may name another checkout sharing the
/// target directory: its paths are mapped to this one's); every file of
/// `src/` and `examples/` without one.
fn sources_of(binary: &std::path::Path) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(info) = std::fs::read_to_string(binary.with_extension("d")) else {
        return ["src", "examples"]
            .iter()
            .flat_map(|dir| walk_files(&root.join(dir)))
            .collect();
    };
    let deps = info.split_once(": ").map_or("", |(_, deps)| deps);
    deps.split_whitespace()
        .filter_map(|path| {
            ["/src/", "/examples/", "/migrations/"]
                .iter()
                .filter_map(|marker| path.find(marker))
                .min()
                .map(|at| root.join(&path[at + 1..]))
        })
        .collect()
}

/// Every file under `dir`.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
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

/// The example server `onboardinghub` as a process on an ephemeral port
/// (keys in memory, `RUST_LOG=trace`), its stdout and stderr collected until
/// it is stopped.
pub struct Example {
    child: std::process::Child,
    readers: Vec<std::thread::JoinHandle<()>>,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

impl Example {
    /// Starts it with `ADMIN_TOKEN=admin` and `env`.
    pub fn start(admin: &str, env: &[(&str, &str)]) -> Example {
        use std::io::Read;
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        let mut child = Command::new(example_binary("onboardinghub"))
            .env("ADDR", "127.0.0.1:0")
            .env("ADMIN_TOKEN", admin)
            .env("RUST_LOG", "trace")
            // Local mode unless a test asks for cluster mode.
            .env_remove("REDIS_URL")
            .envs(env.iter().copied())
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example (built by cargo test)");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for mut pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = std::sync::Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        let started = Instant::now();
        let base = loop {
            let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
            if let Some(at) = text.find("listening on http://") {
                let rest = &text[at + "listening on ".len()..];
                break rest.split_whitespace().next().expect("address").to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the example did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Example {
            child,
            readers,
            output,
            base,
        }
    }

    /// Stops it; what it wrote.
    pub fn stop(mut self) -> String {
        self.child.kill().ok();
        self.child.wait().ok();
        // The pipes close with the process: the readers end once drained.
        for reader in self.readers.drain(..) {
            reader.join().ok();
        }
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}
