//! [`Guarded`], the service both layers produce, and its [`ResponseFuture`].
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
use crate::error::ErrorResponse;
use crate::gate::{Decision, Guard, Lookup};

/// A service behind a [`ScopeLayer`](crate::ScopeLayer) or an
/// [`EntitlementLayer`](crate::EntitlementLayer).
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
        let state = match self.guard.decide(&mut request) {
            // Decided at once: `self.inner` was just driven to readiness, call it.
            Decision::Allow => State::Inner {
                future: self.inner.call(request),
            },
            Decision::Deny(rejection) => State::Rejected {
                rejection: rejection.clone(),
            },
            Decision::Resolve(hash) => {
                // The inner service is called after the lookup, so take the
                // service that is ready and leave a clone in its place, as
                // tower's `Service` docs require:
                // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
                let clone = self.inner.clone();
                let service = mem::replace(&mut self.inner, clone);
                State::Resolving {
                    lookup: self.guard.load(hash),
                    guard: Arc::clone(&self.guard),
                    pending: Some((request, service)),
                }
            }
        };
        ResponseFuture { state }
    }
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
        Inner { #[pin] future: S::Future },
        Rejected { rejection: ErrorResponse },
        Resolving { lookup: Lookup, guard: Arc<Guard>, pending: Option<(Request<ReqBody>, S)> },
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
                StateProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map_ok(|response| response.map(ResponseBody::new));
                }
                StateProj::Rejected { rejection } => {
                    return Poll::Ready(Ok(rejection.to_response()))
                }
                StateProj::Resolving {
                    lookup,
                    guard,
                    pending,
                } => {
                    let resolved = ready!(lookup.as_mut().poll(cx));
                    // Taken only here, right before the state changes; if it is
                    // gone the future was polled after completion: fail closed.
                    let Some((mut request, mut service)) = pending.take() else {
                        return Poll::Ready(Ok(guard.unavailable().to_response()));
                    };
                    match guard.decide_resolved(&mut request, resolved) {
                        Ok(()) => State::Inner {
                            future: service.call(request),
                        },
                        Err(rejection) => State::Rejected {
                            rejection: rejection.clone(),
                        },
                    }
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
