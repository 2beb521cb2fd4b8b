//! The layers: [`ScopeLayer`], [`EntitlementLayer`], [`PolicyLayer`] and
//! [`OptionalLayer`], all built from a [`Gate`](crate::gate::Gate).
//!
//! All four wrap a service in the same [`Guarded`]
//! service: the hot path exists once. They differ in what they check: the
//! credential's scopes against a [`Requirement`](crate::scope::Requirement),
//! the account's plan against an entitlement, or a rule per route from a
//! [`RoutePolicy`](crate::policy::RoutePolicy). Whichever runs first resolves
//! the credential and puts it into the request's extensions as
//! `Arc<Credential>`; the others reuse it, so a request costs one lookup
//! however many layers it passes.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Extension, Router};
//! use scopegate::{CachedStore, Credential, Gate, MemoryStore};
//!
//! async fn list_contacts(Extension(credential): Extension<Arc<Credential>>) -> String {
//!     format!("contacts of {}", credential.account_id())
//! }
//!
//! # fn main() -> Result<(), scopegate::error::ConfigError> {
//! let gate = Gate::new(CachedStore::new(MemoryStore::new()));
//! let app: Router = Router::new()
//!     // Per route: `route_layer`, so unknown paths stay 404 rather than 401.
//!     .route("/api/v1/contacts", get(list_contacts).route_layer(gate.require_scope("contacts:read")?))
//!     // Every API request needs the plan's `api-access`.
//!     .route_layer(gate.api_access());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::error::ConfigError;
use crate::guard::Guard;
use crate::limit::limit_names;
use crate::service::Guarded;

/// Requires scopes of the credential; build it with
/// [`Gate::require`](crate::gate::Gate::require) or
/// [`Gate::require_scope`](crate::gate::Gate::require_scope).
///
/// A credential without the scope gets 403 `insufficient_scope`. See the
/// [module docs](crate::layer) for an example.
#[derive(Clone)]
pub struct ScopeLayer {
    guard: Arc<Guard>,
}

/// Requires an entitlement of the account's plan; build it with
/// [`Gate::api_access`](crate::gate::Gate::api_access) or
/// [`Gate::require_entitlement`](crate::gate::Gate::require_entitlement).
///
/// An account without it gets 403 `forbidden`. See the
/// [module docs](crate::layer) for an example.
#[derive(Clone)]
pub struct EntitlementLayer {
    guard: Arc<Guard>,
}

/// Resolves a credential when a token is sent, and lets a request without
/// one through; build it with [`Gate::optional`](crate::gate::Gate::optional).
///
/// For public routes that can do more for a caller who is known: a handler
/// reads `Option<Extension<Arc<Credential>>>` (or, with the `axum` feature,
/// `Option<Authenticated>`). A token that is sent must be valid: an unknown
/// or revoked one gets 401 `invalid_token`, a malformed header 400, an
/// `Authorization` of another scheme 401 `unauthorized`, as on any route; it
/// is never taken for no token. It requires no entitlement: routes that need
/// the plan's use the gate's other layers.
#[derive(Clone)]
pub struct OptionalLayer {
    guard: Arc<Guard>,
}

/// Enforces a [`RoutePolicy`](crate::policy::RoutePolicy): a requirement per
/// method and path, public routes, and deny-by-default for the rest; build it
/// with [`Gate::policy`](crate::gate::Gate::policy).
///
/// See the [policy module docs](crate::policy) for an example.
#[derive(Clone)]
pub struct PolicyLayer {
    guard: Arc<Guard>,
}

/// The layers differ only in the guard they carry.
macro_rules! guard_layer {
    ($($name:ident),*) => {$(
        impl $name {
            pub(crate) fn new(guard: Arc<Guard>) -> Self {
                $name { guard }
            }

            #[cfg(feature = "openapi")]
            pub(crate) fn guard(&self) -> &Arc<Guard> {
                &self.guard
            }
        }

        impl<S> Layer<S> for $name {
            type Service = Guarded<S>;

            fn layer(&self, inner: S) -> Self::Service {
                Guarded::new(inner, Arc::clone(&self.guard))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.guard).finish()
            }
        }
    )*};
}

guard_layer!(ScopeLayer, EntitlementLayer, PolicyLayer, OptionalLayer);

/// The layers with one rule say what a request through them costs.
macro_rules! costed_layer {
    ($($name:ident),*) => {$(
        impl $name {
            /// What a request this layer admits costs against the
            /// credential's [limits](crate::limit) (default 1; 0 counts
            /// nothing). Stacked layers count a request once, at the
            /// innermost layer's cost: an `api_access()` around the
            /// router and a costed `require(..)` on a route count the
            /// route's cost. A request an inner layer refuses costs
            /// nothing.
            #[must_use]
            pub fn cost(self, units: u32) -> Self {
                $name::new(self.guard.priced(|cost| cost.units = units))
            }

            /// Counts requests this layer admits against the named limits
            /// of the credential only, instead of all of them (a write
            /// route names `writes` and `requests`, a read route
            /// `requests`). A name the credential has no limit of counts
            /// nothing.
            ///
            /// # Errors
            ///
            /// [`ConfigError::Limit`] for an invalid limit name.
            pub fn counts_against<I>(self, limits: I) -> Result<Self, ConfigError>
            where
                I: IntoIterator,
                I::Item: AsRef<str>,
            {
                let names = limit_names(limits)?;
                Ok($name::new(self.guard.priced(|cost| cost.only = Some(names))))
            }
        }
    )*};
}

costed_layer!(ScopeLayer, EntitlementLayer, OptionalLayer);
