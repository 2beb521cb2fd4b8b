//! [`Guarded`], the service every layer produces, and its [`ResponseFuture`].
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = MemoryStore::new();
//! keys.insert_token(
//!     "ohk_demo",
//!     Credential::new("key_1", "ws_acme", CredentialKind::ApiKey).with_entitlements(["api-access"]),
//! );
//! let gate = Gate::new(CachedStore::new(keys));
//!
//! let svc = ServiceBuilder::new().layer(gate.api_access()).service(service_fn(|_req| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
//! }));
//!
//! let req = Request::get("/").header("authorization", "Bearer ohk_demo").body(())?;
//! assert_eq!(svc.clone().oneshot(req).await?.status(), StatusCode::OK);
//!
//! let req = Request::get("/").body(())?;
//! assert_eq!(svc.oneshot(req).await?.status(), StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::cache::Lookup;
use crate::guard::{Decision, Guard, Miss, Verdict};
use crate::render::{is_grpc, AddedHeaders, ErrorResponse};
use crate::rule::Rule;

/// A service behind a [`ScopeLayer`](crate::layer::ScopeLayer), an
/// [`EntitlementLayer`](crate::layer::EntitlementLayer) or a
/// [`PolicyLayer`](crate::layer::PolicyLayer).
///
/// Rejections are `Ok` responses; `Error` is the inner service's error. See
/// the [module docs](crate::service) for an example.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> Guarded<S> {
    pub(crate) fn new(inner: S, guard: Arc<Guard>) -> Self {
        Guarded { inner, guard }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("guard", &self.guard)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Guarded<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Matched here rather than through `State::after`: handing the
        // request through one more function copies it (measured: ~60
        // instructions a layer on a hit).
        let state = match self.guard.decide(&mut request) {
            // Decided at once: `self.inner` was just driven to readiness.
            Decision::Now(Verdict::Allow(headers)) => State::Inner {
                future: self.inner.call(request),
                headers,
            },
            Decision::Now(Verdict::Deny(rejection, headers)) => {
                State::rejected(rejection, &request, headers)
            }
            Decision::Resolve(Miss { lookup, rule }) => {
                // The inner service is called after the lookup, so take the
                // service that is ready and leave a clone in its place, as
                // tower's `Service` docs require:
                // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
                let clone = self.inner.clone();
                let service = mem::replace(&mut self.inner, clone);
                State::Resolving {
                    lookup,
                    guard: Arc::clone(&self.guard),
                    pending: Some(Box::new(Pending {
                        rule,
                        request,
                        service,
                    })),
                }
            }
        };
        ResponseFuture { state }
    }
}

/// What a request waiting for the store holds on to.
struct Pending<S, ReqBody> {
    rule: Arc<Rule>,
    request: Request<ReqBody>,
    service: S,
}

pin_project! {
    /// The response future of [`Guarded`].
    ///
    /// A cache hit or a rejection needs no allocation here: only a lookup that
    /// goes to the store holds a boxed future.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Inner { #[pin] future: S::Future, headers: Option<Box<AddedHeaders>> },
        Rejected { rejection: ErrorResponse, grpc: bool, headers: Option<Box<AddedHeaders>> },
        // Boxed: a request and a service would make every response future
        // (moved on each call, hits included) several hundred bytes larger,
        // for the miss path's sake.
        Resolving { lookup: Lookup, guard: Arc<Guard>, pending: Option<Box<Pending<S, ReqBody>>> },
    }
}

impl<S, ReqBody> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// The state a verdict reached after a store lookup leads to: the inner
    /// service's call, or the rejection.
    fn after(verdict: Verdict<'_>, request: Request<ReqBody>, service: &mut S) -> Self {
        match verdict {
            Verdict::Allow(headers) => State::Inner {
                future: service.call(request),
                headers,
            },
            Verdict::Deny(rejection, headers) => State::rejected(rejection, &request, headers),
        }
    }

    /// A refusal of `request`, in its protocol (HTTP or gRPC).
    fn rejected(
        rejection: Cow<'_, ErrorResponse>,
        request: &Request<ReqBody>,
        headers: Option<Box<AddedHeaders>>,
    ) -> Self {
        State::Rejected {
            rejection: rejection.into_owned(),
            grpc: is_grpc(request.headers()),
            headers,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner { future, headers } => {
                    return future.poll(cx).map_ok(|mut response| {
                        if let Some(headers) = headers {
                            headers.apply_to_inner(&mut response);
                        }
                        response.map(ResponseBody::new)
                    });
                }
                StateProj::Rejected {
                    rejection,
                    grpc,
                    headers,
                } => {
                    let mut response = rejection.to_response(*grpc);
                    if let Some(headers) = headers {
                        headers.apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Resolving {
                    lookup,
                    guard,
                    pending,
                } => {
                    let resolved = ready!(lookup.as_mut().poll(cx));
                    // Taken only here, right before the state changes; if it is
                    // gone the future was polled after completion: fail closed.
                    let Some(pending) = pending.take() else {
                        return Poll::Ready(Ok(guard.unavailable().to_response(false)));
                    };
                    let Pending {
                        rule,
                        mut request,
                        mut service,
                    } = *pending;
                    let verdict = guard.decide_resolved(&rule, &mut request, resolved);
                    State::after(verdict, request, &mut service)
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::Rejected { .. } => "Rejected",
            State::Resolving { .. } => "Resolving",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::PresentedToken;
    use crate::store::{CredentialStore, StoreError};
    use crate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
    use async_trait::async_trait;
    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::{BodyExt, Empty, Full};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::{service_fn, ServiceBuilder, ServiceExt};
    use tower_layer::Layer;
    use tower_test::mock;

    /// Counts store calls; `Err` when `broken`, never answers when `hanging`.
    #[derive(Default)]
    struct Backend {
        keys: MemoryStore,
        calls: AtomicUsize,
        broken: bool,
        hanging: bool,
    }

    #[async_trait]
    impl CredentialStore for Backend {
        async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hanging {
                std::future::pending::<()>().await;
            }
            if self.broken {
                return Err(StoreError::new("down"));
            }
            self.keys.resolve(token).await
        }
    }

    fn backend() -> Arc<Backend> {
        let backend = Backend::default();
        backend.keys.insert_token(
            "good",
            Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
                .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap())
                .with_entitlements(["api-access"]),
        );
        backend.keys.insert_token(
            "free",
            Credential::new("key_2", "ws_free", CredentialKind::ApiKey)
                .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap()),
        );
        Arc::new(backend)
    }

    fn request(token: Option<&str>) -> Request<Empty<Bytes>> {
        let mut builder = Request::get("/api/v1/contacts");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Empty::new()).unwrap()
    }

    async fn echo(request: Request<Empty<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        let who = request
            .extensions()
            .get::<Arc<Credential>>()
            .map_or("nobody".to_owned(), |c| c.id().to_owned());
        Ok(Response::new(Full::new(Bytes::from(who))))
    }

    async fn send<S, B>(svc: &mut S, token: Option<&str>) -> (StatusCode, String)
    where
        S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
        B: http_body::Body<Data = Bytes>,
        B::Error: fmt::Debug,
    {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(request(token))
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn stacked_layers_make_one_lookup() {
        let backend = backend();
        let cache = CachedStore::new(Arc::clone(&backend));
        let gate = Gate::new(cache.clone());
        let mut svc = ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope("contacts:read").unwrap())
            .service_fn(echo);

        assert_eq!(
            send(&mut svc, Some("good")).await,
            (StatusCode::OK, "key_1".into())
        );
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!(
            (stats.misses, stats.hits),
            (1, 0),
            "the inner layer reused the credential"
        );

        assert_eq!(
            send(&mut svc, Some("good")).await,
            (StatusCode::OK, "key_1".into())
        );
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits), (1, 1), "one hit for two layers");
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_gates_token_filter_still_applies_to_tokens_another_gate_cached() {
        let cache = CachedStore::new(backend());
        let open = Gate::new(cache.clone());
        let strict = Gate::builder(cache.clone())
            .token_filter(|token| token.starts_with(b"ohk_"))
            .build()
            .unwrap();
        let mut open = open.api_access().layer(service_fn(echo));
        let mut strict = strict.api_access().layer(service_fn(echo));
        for _ in 0..3 {
            // Cached, and then in this thread's front.
            assert_eq!(send(&mut open, Some("good")).await.0, StatusCode::OK);
            let (status, _) = send(&mut strict, Some("good")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        // Malformed tokens are refused before any lookup, front or not.
        let (status, _) = send(&mut open, Some("g od")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(cache.stats().misses, 1);
    }

    #[tokio::test]
    async fn each_layer_works_alone_and_rejects_with_the_contract() {
        let gate = Gate::new(CachedStore::new(backend()));
        let mut entitlement = gate.api_access().layer(service_fn(echo));
        let mut scope = gate
            .require_scope("contacts:write")
            .unwrap()
            .layer(service_fn(echo));

        assert_eq!(send(&mut entitlement, Some("good")).await.0, StatusCode::OK);
        assert_eq!(
            send(&mut entitlement, Some("free")).await,
            (
                StatusCode::FORBIDDEN,
                r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#.into()
            )
        );
        // Rejections are the same whether the credential came from the store or the cache.
        for _ in 0..2 {
            assert_eq!(
                send(&mut scope, Some("good")).await.0,
                StatusCode::FORBIDDEN
            );
            assert_eq!(
                send(&mut scope, Some("unknown")).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(send(&mut scope, None).await.0, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn store_errors_and_hangs_fail_closed() {
        for backend in [
            Backend {
                broken: true,
                ..Backend::default()
            },
            Backend {
                hanging: true,
                ..Backend::default()
            },
        ] {
            backend.keys.insert_token(
                "good",
                Credential::new("key_1", "ws", CredentialKind::ApiKey)
                    .with_entitlements(["api-access"]),
            );
            let cache = CachedStore::builder(backend)
                .store_timeout(Some(Duration::from_millis(50)))
                .build();
            let gate = Gate::new(cache);
            let mut svc = gate.api_access().layer(service_fn(echo));
            let response = svc
                .ready()
                .await
                .unwrap()
                .call(request(Some("good")))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "5");
            assert_eq!(
                response.extensions().get(),
                Some(&crate::error::Rejection::StoreUnavailable)
            );
        }
    }

    #[tokio::test]
    async fn poll_ready_forwards_and_call_uses_the_ready_service() {
        let gate = Gate::new(CachedStore::new(backend()));
        let (service, mut handle) = mock::pair::<Request<Empty<Bytes>>, Response<Full<Bytes>>>();
        let mut svc = tower_test::mock::Spawn::new(gate.api_access().layer(service));

        // Not ready inside: not ready outside.
        handle.allow(0);
        assert!(svc.poll_ready().is_pending());

        // A cold token goes through the store; the mock panics if the clone
        // that was not polled ready were called.
        handle.allow(1);
        assert!(svc.poll_ready().is_ready());
        let cold = tokio::spawn(svc.call(request(Some("good"))));
        let (seen, reply) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("the inner service was never called")
            .unwrap();
        assert_eq!(
            seen.extensions().get::<Arc<Credential>>().unwrap().id(),
            "key_1"
        );
        reply.send_response(Response::new(Full::new(Bytes::from_static(b"ok"))));
        assert_eq!(cold.await.unwrap().unwrap().status(), StatusCode::OK);

        // A cached token is decided in `call`, again on the ready service.
        handle.allow(1);
        assert!(svc.poll_ready().is_ready());
        let warm = tokio::spawn(svc.call(request(Some("good"))));
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_response(Response::new(Full::new(Bytes::from_static(b"ok"))));
        assert_eq!(warm.await.unwrap().unwrap().status(), StatusCode::OK);

        // A rejection never reaches the inner service.
        handle.allow(1);
        assert!(svc.poll_ready().is_ready());
        let denied = svc.call(request(None)).await.unwrap();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert!(handle.poll_request().is_pending());
    }

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let gate = Gate::new(CachedStore::new(backend()));
        let failing = service_fn(|_: Request<Empty<Bytes>>| async {
            Err::<Response<Full<Bytes>>, _>("boom")
        });
        let err = gate
            .api_access()
            .layer(failing)
            .oneshot(request(Some("good")))
            .await
            .unwrap_err();
        assert_eq!(err, "boom");
    }
}
