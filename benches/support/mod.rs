//! Shared set-up for the criterion benches.

#![allow(dead_code)]

#[path = "../../examples/demo/mod.rs"]
mod demo;

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use scopegate::{CachedStore, Credential, CredentialKind, MemoryStore, ScopeSet};
use tower::Service;

pub type Req = Request<Full<Bytes>>;
pub type Res = Response<Full<Bytes>>;

pub use demo::SCOPES;

/// A 40-byte token, like the API's.
pub const TOKEN: &str = "ohk_bench_0123456789abcdef0123456789abcd";
/// A key with all scopes and one rate limit ([`with_limit`]).
pub const LIMITED: &str = "ohk_bench_limited0_23456789abcdef0123456789";

/// The inner service every variant wraps: a `service_fn` answering a static body.
pub fn bare() -> tower::util::ServiceFn<impl FnMut(Req) -> Ready<Result<Res, Infallible>> + Clone> {
    tower::service_fn(|_req: Req| ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))))
}

/// [`bare`] as a handler's JSON answer comes back from a framework: with
/// `content-type` and `content-length`, so the response's header map is
/// allocated before any layer adds to it.
pub fn json() -> tower::util::ServiceFn<impl FnMut(Req) -> Ready<Result<Res, Infallible>> + Clone> {
    tower::service_fn(|_req: Req| {
        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        ready(Ok(response))
    })
}

/// A GET with `Authorization: Bearer token`, or none.
pub fn request(token: Option<&HeaderValue>) -> Req {
    let mut request = Request::get("/api/v1/contacts")
        .body(Full::default())
        .expect("request");
    if let Some(value) = token {
        request.headers_mut().insert(AUTHORIZATION, value.clone());
    }
    request
}

pub fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

/// A credential of the bench workspace with `scopes`, and `api-access` if
/// `api_access`; no limits unless [`with_limit`] adds one.
pub fn credential(id: &str, scopes: &[impl AsRef<str>], api_access: bool) -> Credential {
    let entitlements: &[&str] = if api_access { &["api-access"] } else { &[] };
    Credential::new(id, "ws_bench", CredentialKind::ApiKey)
        .with_scopes(ScopeSet::parse(scopes).expect("bench scopes"))
        .with_entitlements(entitlements.iter().copied())
}

/// `credential` with one rate limit no bench reaches (`requests`, 2^32 - 1
/// a minute): every request is counted, none refused.
pub fn with_limit(credential: Credential) -> Credential {
    let limit =
        scopegate::limit::Limit::rate("requests", u32::MAX, std::time::Duration::from_secs(60))
            .expect("bench limit");
    credential.with_limits([limit])
}

/// Polls `service` ready, calls it, and drives the future: once with a no-op
/// waker (a hit completes there), on `rt` if it is still pending (a miss).
pub fn call<S: Service<Req>>(
    rt: &tokio::runtime::Runtime,
    service: &mut S,
    request: Req,
) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("bench services are always ready"),
    }
    drive(rt, service.call(request)).expect("response")
}

pub fn drive<F: Future>(rt: &tokio::runtime::Runtime, future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => rt.block_on(future),
    }
}

/// Resolves every token once so the cache holds them.
pub fn warm(rt: &tokio::runtime::Runtime, cache: &CachedStore<MemoryStore>, tokens: &[&str]) {
    rt.block_on(async {
        for token in tokens {
            cache
                .resolve(&scopegate::credential::PresentedToken::new(token))
                .await
                .expect("store")
                .expect("credential");
        }
    });
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

thread_local! {
    /// The minimal middleware's credentials, by keyed hash of the token.
    static MINIMAL: std::cell::RefCell<std::collections::HashMap<u128, Arc<Credential>>> =
        std::cell::RefCell::default();
}

/// The hand-written minimum, the anchor the stacked hit is held to: what the per-request
/// work costs with no cache machinery. It parses the header, hashes the
/// token with a keyed hash (SipHash-2-4, 128 bits, as the front does),
/// looks it up in a thread-local `HashMap` of `Arc` credentials, checks the
/// scope and the entitlement, and inserts the `Arc` into the extensions.
#[derive(Clone)]
pub struct Minimal<S> {
    inner: S,
    scope: scopegate::scope::Scope,
}

impl<S> Minimal<S> {
    pub fn new(keys: &[(&str, Credential)], inner: S) -> Self {
        MINIMAL.with(|map| {
            for (token, credential) in keys {
                map.borrow_mut()
                    .insert(Self::key(token.as_bytes()), Arc::new(credential.clone()));
            }
        });
        let scope = scopegate::scope::Scope::new("contacts:read").expect("scope");
        Minimal { inner, scope }
    }

    fn key(token: &[u8]) -> u128 {
        use siphasher::sip128::{Hasher128, SipHasher24};
        use std::hash::Hasher;
        let mut mac = SipHasher24::new_with_keys(0x5eed, 0xcafe);
        mac.write(token);
        mac.finish128().as_u128()
    }
}

impl<S> tower::Service<Req> for Minimal<S>
where
    S: tower::Service<Req, Response = Res, Error = std::convert::Infallible>,
{
    type Response = Res;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<Res, std::convert::Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Req) -> Self::Future {
        let credential = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .and_then(|token| MINIMAL.with(|map| map.borrow().get(&Self::key(token)).cloned()))
            .filter(|c| c.scopes().contains(self.scope) && c.has_entitlement("api-access"));
        match credential {
            Some(credential) => {
                request.extensions_mut().insert(credential);
                futures_util::future::Either::Left(self.inner.call(request))
            }
            None => {
                let mut refused = Res::new(Default::default());
                *refused.status_mut() = http::StatusCode::FORBIDDEN;
                futures_util::future::Either::Right(std::future::ready(Ok(refused)))
            }
        }
    }
}
