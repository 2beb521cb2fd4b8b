//! Reading the credential in handlers: axum extractors (feature `axum`) and
//! a tonic request extension (feature `tonic`).
//!
//! - [`Authenticated`]: the credential a layer resolved, or the crate's 401
//!   if none did. `Option<Authenticated>` is `None` on a request without a
//!   token, on a route behind [`Gate::optional`](crate::gate::Gate::optional).
//! - [`RequireScope<T>`]: the credential, holding the scope `T` names (a
//!   type made by [`scope_type!`](crate::scope_type)), or the exact 403.
//! - [`RequestExt`]: `request.credential()` on a `tonic::Request`.
//!
//! An extractor's refusal counts in the metrics (feature `metrics`) as a
//! layer's does, once, as rejected. It comes after the layers counted the
//! request against the credential's [limits](crate::limit), and gives those
//! units back: a refused request spends nothing, as a layer's refusal does
//! (where layers of two gates counted it, only the units of the innermost
//! gate that counted go back). Both happen when the refusal becomes the
//! response: a handler that catches it ([`Refused`]) and answers otherwise
//! has the request counted as admitted.
//!
//! # Example
//!
//! ```
//! use axum::{body::Body, routing::{get, post}, Router};
//! use http::{Request, StatusCode};
//! use scopegate::extract::{Authenticated, RequireScope};
//! use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
//! use tower::ServiceExt;
//!
//! scopegate::scope_type!(
//!     /// `contacts:write`.
//!     pub ContactsWrite = "contacts:write"
//! );
//!
//! async fn list(credential: Authenticated) -> String {
//!     format!("contacts of {}", credential.account_id())
//! }
//!
//! async fn create(RequireScope(credential, ..): RequireScope<ContactsWrite>) -> String {
//!     format!("created by {}", credential.id())
//! }
//!
//! async fn guides(credential: Option<Authenticated>) -> &'static str {
//!     if credential.is_some() { "every guide" } else { "the published guides" }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = MemoryStore::new();
//! keys.insert_token(
//!     "ohk_reader",
//!     Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
//!         .with_scopes(ScopeSet::parse(["contacts:read"])?)
//!         .with_entitlements(["api-access"]),
//! );
//! let gate = Gate::new(CachedStore::new(keys));
//! let app = Router::new()
//!     .route("/api/v1/contacts", get(list).post(create).route_layer(gate.api_access()))
//!     .route("/guides", get(guides).route_layer(gate.optional()));
//!
//! let call = |method: &str, path: &str, token: Option<&str>| {
//!     let mut request = Request::builder().method(method).uri(path);
//!     if let Some(token) = token {
//!         request = request.header("authorization", format!("Bearer {token}"));
//!     }
//!     app.clone().oneshot(request.body(Body::empty()).unwrap())
//! };
//! assert_eq!(call("GET", "/api/v1/contacts", Some("ohk_reader")).await?.status(), StatusCode::OK);
//! // The scope the handler declares, checked by its extractor: the exact 403.
//! assert_eq!(call("POST", "/api/v1/contacts", Some("ohk_reader")).await?.status(), StatusCode::FORBIDDEN);
//! // A public route: with no token, or with a valid one; a wrong one is 401.
//! assert_eq!(call("GET", "/guides", None).await?.status(), StatusCode::OK);
//! assert_eq!(call("GET", "/guides", Some("ohk_reader")).await?.status(), StatusCode::OK);
//! assert_eq!(call("GET", "/guides", Some("ohk_wrong")).await?.status(), StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```
//!
//! # Extractor or layer?
//!
//! A [`ScopeLayer`](crate::layer::ScopeLayer) on the route refuses before the
//! handler runs, and renders with the gate's configuration: its messages,
//! realm, custom renderer, scope implications and gRPC responses. Prefer it.
//! [`RequireScope`] keeps the scope next to the handler's code, where some
//! teams prefer it; its 403 is the documented default (the contract's body
//! and challenge), it checks the scope only (a gate's
//! [`imply`](crate::gate::GateBuilder::imply) does not apply), and it needs a
//! layer on the route to resolve the credential. That layer is what checks
//! the plan: put `RequireScope` behind [`Gate::api_access`](crate::gate::Gate::api_access)
//! (or a scope layer of a gate built with an
//! [`entitlement`](crate::gate::GateBuilder::entitlement)), never behind
//! [`Gate::optional`](crate::gate::Gate::optional) alone, which requires no
//! entitlement.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use crate::credential::Credential;

/// The credential a scopegate layer resolved for this request.
///
/// An axum extractor: with no credential in the request's extensions (no
/// layer on the route, or an [`OptionalLayer`](crate::layer::OptionalLayer)
/// and no token), the handler is not called and the client gets the 401
/// `unauthorized` of the error contract. `Option<Authenticated>` gets `None`
/// instead. See the [module docs](crate::extract) for an example.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Arc<Credential>);

impl Deref for Authenticated {
    type Target = Credential;

    fn deref(&self) -> &Credential {
        &self.0
    }
}

/// A type that names one scope, for [`RequireScope`]; make one with
/// [`scope_type!`](crate::scope_type).
pub trait ScopeName: Send + Sync + 'static {
    /// The scope token, e.g. `contacts:write`.
    const NAME: &'static str;
}

/// Declares a type naming a scope, for [`RequireScope`]:
/// `scope_type!(pub ContactsWrite = "contacts:write")`. The name is checked
/// when the crate compiles: an invalid scope token is a compile error.
///
/// ```
/// scopegate::scope_type!(
///     /// May change contacts.
///     pub ContactsWrite = "contacts:write"
/// );
/// use scopegate::extract::ScopeName;
/// assert_eq!(ContactsWrite::NAME, "contacts:write");
/// ```
///
/// ```compile_fail
/// scopegate::scope_type!(pub Spaced = "contacts write");
/// ```
#[macro_export]
macro_rules! scope_type {
    ($(#[$meta:meta])* $vis:vis $name:ident = $scope:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $name;

        impl $crate::extract::ScopeName for $name {
            const NAME: &'static str = $scope;
        }

        // Evaluated when the crate compiles, used or not.
        const _: () = assert!(
            $crate::scope::is_scope_token($scope),
            "not an RFC 6749 scope token"
        );
    };
}

/// The credential, holding the scope `T` names: an axum extractor that
/// answers the exact 403 `insufficient_scope` (body and challenge) without
/// it, and the 401 of [`Authenticated`] without a credential.
///
/// A handler declares `RequireScope(credential, ..): RequireScope<ContactsWrite>`.
/// See the [module docs](crate::extract) for an example, and for when a
/// layer is the better choice.
pub struct RequireScope<T: ScopeName>(pub Authenticated, pub PhantomData<fn() -> T>);

impl<T: ScopeName> Deref for RequireScope<T> {
    type Target = Credential;

    fn deref(&self) -> &Credential {
        &self.0
    }
}

impl<T: ScopeName> Clone for RequireScope<T> {
    fn clone(&self) -> Self {
        RequireScope(self.0.clone(), PhantomData)
    }
}

impl<T: ScopeName> fmt::Debug for RequireScope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequireScope")
            .field(&T::NAME)
            .field(&self.0)
            .finish()
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use std::convert::Infallible;
    use std::fmt;
    use std::marker::PhantomData;
    use std::sync::Arc;

    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use http::request::Parts;

    use super::{Authenticated, RequireScope, ScopeName};
    use crate::credential::Credential;
    use crate::error::Rejection;
    use crate::guard::Refund;
    use crate::render::{ErrorResponse, Render};
    use crate::scope::Scope;

    /// Why an extractor refused: the rejection, rendered as the error
    /// contract's default (and put into the response's extensions, as the
    /// layers do).
    ///
    /// The refusal takes effect when it becomes the response: it counts in
    /// the metrics then, and the limit units the layers counted for the
    /// request go back then. A handler that catches it (taking a `Result`
    /// or an `Either` of extractors) and answers otherwise has the request
    /// counted as the layers let it through.
    pub struct Refused {
        rejection: Rejection,
        /// The credential the layers let through, if any.
        credential: Option<Arc<Credential>>,
        refund: Option<Refund>,
    }

    impl Refused {
        /// What was refused.
        pub fn rejection(&self) -> &Rejection {
            &self.rejection
        }

        /// No layer resolved a credential.
        fn missing() -> Self {
            Refused {
                rejection: Rejection::MissingCredential,
                credential: None,
                refund: None,
            }
        }
    }

    impl fmt::Debug for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_tuple("Refused").field(&self.rejection).finish()
        }
    }

    impl IntoResponse for Refused {
        fn into_response(self) -> Response {
            // Counted by the metrics as the layers count theirs: a request
            // a layer let through is overruled, so it counts once, as
            // rejected.
            #[cfg(feature = "metrics")]
            {
                let credential = self.credential.as_deref();
                if let Some(credential) = credential {
                    crate::metrics::overruled(credential);
                }
                crate::metrics::rejected(self.rejection.kind(), credential);
            }
            if let (Some(refund), Some(credential)) = (self.refund, &self.credential) {
                refund.give(credential);
            }
            ErrorResponse::new(self.rejection, &Render::default())
                .to_http_response()
                .map(axum_core::body::Body::from)
        }
    }

    fn credential(parts: &Parts) -> Option<Authenticated> {
        parts
            .extensions
            .get::<Arc<Credential>>()
            .map(|c| Authenticated(Arc::clone(c)))
    }

    impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
        type Rejection = Refused;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refused> {
            credential(parts).ok_or_else(Refused::missing)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
        type Rejection = Infallible;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
            Ok(credential(parts))
        }
    }

    impl<S: Send + Sync, T: ScopeName> FromRequestParts<S> for RequireScope<T> {
        type Rejection = Refused;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refused> {
            let Some(credential) = credential(parts) else {
                return Err(Refused::missing());
            };
            // Valid by `scope_type!`. Should the process's scope registry be
            // full, no credential can hold the scope: refused as the server's
            // fault, 503 (fail closed).
            let rejection = match Scope::new(T::NAME) {
                Ok(scope) if credential.scopes().contains(scope) => {
                    return Ok(RequireScope(credential, PhantomData));
                }
                Ok(scope) => Rejection::InsufficientScope(scope),
                Err(_) => Rejection::StoreUnavailable,
            };
            // Refused after the layers counted it: the units go back with
            // the response.
            Err(Refused {
                rejection,
                refund: Refund::take(&mut parts.extensions),
                credential: Some(credential.0),
            })
        }
    }
}

#[cfg(feature = "axum")]
pub use axum_impls::Refused;

/// `request.credential()` on a `tonic::Request`: the credential a scopegate
/// layer in front of the gRPC service resolved (tonic carries the HTTP
/// request's extensions over).
///
/// ```
/// use scopegate::extract::RequestExt;
///
/// fn who(request: &tonic::Request<()>) -> Result<String, tonic::Status> {
///     let credential = request
///         .credential()
///         .ok_or_else(|| tonic::Status::unauthenticated("no credential"))?;
///     Ok(credential.account_id().to_owned())
/// }
/// assert!(who(&tonic::Request::new(())).is_err());
/// ```
#[cfg(feature = "tonic")]
pub trait RequestExt {
    /// The resolved credential, if a layer resolved one.
    fn credential(&self) -> Option<&Arc<Credential>>;
}

#[cfg(feature = "tonic")]
impl<T> RequestExt for tonic::Request<T> {
    fn credential(&self) -> Option<&Arc<Credential>> {
        self.extensions().get::<Arc<Credential>>()
    }
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;
    use crate::scope::ScopeSet;
    use axum_core::extract::FromRequestParts;
    use axum_core::response::IntoResponse;
    use http_body_util::BodyExt;

    crate::scope_type!(ContactsWrite = "contacts:write");

    fn parts(credential: Option<Credential>) -> http::request::Parts {
        let mut request = http::Request::new(());
        if let Some(c) = credential {
            request.extensions_mut().insert(Arc::new(c));
        }
        request.into_parts().0
    }

    async fn refusal<T: FromRequestParts<()>>(
        mut parts: http::request::Parts,
    ) -> (u16, String, String)
    where
        T::Rejection: IntoResponse,
    {
        let Err(rejection) = T::from_request_parts(&mut parts, &()).await else {
            panic!("accepted");
        };
        let response = rejection.into_response();
        let status = response.status().as_u16();
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, challenge, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn refusals_are_the_contracts_bytes() {
        assert_eq!(
            refusal::<Authenticated>(parts(None)).await,
            (
                401,
                "Bearer".to_owned(),
                r#"{"error":{"type":"unauthorized","message":"Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'."}}"#.to_owned()
            )
        );
        let reader = Credential::new("key_1", "ws", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap());
        assert_eq!(
            refusal::<RequireScope<ContactsWrite>>(parts(Some(reader))).await,
            (
                403,
                r#"Bearer error="insufficient_scope", scope="contacts:write""#.to_owned(),
                r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'contacts:write' scope. Your credential does not have this permission."}}"#.to_owned()
            )
        );
        let writer = Credential::new("key_2", "ws", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(["contacts:write"]).unwrap());
        let mut parts = parts(Some(writer));
        let RequireScope(credential, _) =
            RequireScope::<ContactsWrite>::from_request_parts(&mut parts, &())
                .await
                .unwrap();
        assert_eq!(credential.id(), "key_2");
    }
}
