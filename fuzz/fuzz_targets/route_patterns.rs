//! Route patterns: any pattern builds or is refused with an error, never a
//! panic; a built one answers a request with 200 (its public route) or 404
//! (deny by default); and a literal pattern matches exactly its own path.
//! Input: the pattern, a newline, the request target.
#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;

use http::{Method, Request, Response, StatusCode};
use scopegate::policy::RoutePolicy;
use scopegate::{CachedStore, Gate, MemoryStore};
use tower::{service_fn, Layer, ServiceExt};

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"));
static GATE: LazyLock<Gate> = LazyLock::new(|| Gate::new(CachedStore::new(MemoryStore::new())));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, target) = text.split_once('\n').unwrap_or((text, "/"));
    let Ok(layer) = GATE.policy(RoutePolicy::new().public(Method::GET, pattern)) else {
        return;
    };
    let Ok(request) = Request::get(target).body(String::new()) else { return };
    let path = request.uri().path().to_owned();
    let service = layer.layer(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let status = RUNTIME.block_on(service.oneshot(request)).expect("infallible").status();
    assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{status}");
    if !pattern.contains(['{', '}', '*']) {
        assert_eq!(status == StatusCode::OK, path == pattern, "{pattern:?} for {path:?}");
    }
});
