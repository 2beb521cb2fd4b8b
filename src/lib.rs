//! Tower middleware that enforces API-key and OAuth **scopes** and plan
//! **entitlements** in front of any tower service: axum, hyper and tonic
//! servers.
//!
//! A request carries `Authorization: Bearer <token>`. scopegate hashes the
//! token (SHA-256; the raw token is never kept), resolves the hash through a
//! moka cache in front of a pluggable [`CredentialStore`], and checks:
//!
//! - [`EntitlementLayer`]: the account's plan includes an entitlement, usually
//!   `api-access` ([`Gate::api_access`]); otherwise 403 `forbidden`;
//! - [`ScopeLayer`]: the credential's scopes satisfy the route's
//!   [`Requirement`]; otherwise 403 `insufficient_scope`.
//!
//! Every refusal is an exact JSON body with RFC 6750 challenge headers; see
//! [`error`] for the contract. A store failure answers 503: it never lets a
//! request through.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{body::Body, routing::get, Extension, Router};
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
//! use tower::ServiceExt;
//!
//! async fn list_contacts(Extension(credential): Extension<Arc<Credential>>) -> String {
//!     format!("contacts of {}", credential.account_id())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 1. A store of credentials, keyed by token hash.
//! let keys = MemoryStore::new();
//! keys.insert_token(
//!     "ohk_demo_contacts_read",
//!     Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
//!         .with_scopes(ScopeSet::parse(["contacts:read"])?)
//!         .with_entitlements(["api-access"]),
//! );
//!
//! // 2. A gate: the cache in front of it, plus configuration.
//! let gate = Gate::new(CachedStore::new(keys));
//!
//! // 3. Layers: a scope per route, `api-access` for every API route.
//! let app = Router::new()
//!     .route("/api/v1/contacts", get(list_contacts).route_layer(gate.require_scope("contacts:read")?))
//!     .route("/api/v1/contacts/{id}", axum::routing::delete(|| async { "deleted" })
//!         .route_layer(gate.require_scope("contacts:write")?))
//!     .route_layer(gate.api_access());
//!
//! let get = Request::get("/api/v1/contacts")
//!     .header("authorization", "Bearer ohk_demo_contacts_read")
//!     .body(Body::empty())?;
//! let response = app.clone().oneshot(get).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "contacts of ws_acme");
//!
//! let delete = Request::delete("/api/v1/contacts/con_1")
//!     .header("authorization", "Bearer ohk_demo_contacts_read")
//!     .body(Body::empty())?;
//! let response = app.oneshot(delete).await?;
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//! assert_eq!(
//!     response.into_body().collect().await?.to_bytes(),
//!     r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'contacts:write' scope. Your credential does not have this permission."}}"#
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! - [`scope`]: scope tokens, sets and requirements.
//! - [`credential`]: [`Credential`] and [`TokenHash`].
//! - [`store`]: the [`CredentialStore`] trait, [`MemoryStore`], and the
//!   [`CachedStore`] with its invalidation methods.
//! - [`gate`]: the shared handle layers are built from.
//! - [`layer`] and [`service`]: the middleware.
//! - [`policy`]: route policy tables for hyper, tonic, or one axum table.
//! - [`metadata`]: RFC 9728 protected-resource metadata.
//! - [`key`]: the `ohk_` API-key format.
//! - [`store::postgres`] (feature `postgres`): keys, accounts and plans in PostgreSQL.
//! - [`ChainStore`]: API keys, JWTs and opaque tokens side by side, by
//!   [`TokenShape`].
//! - `store::jwt` (feature `jwt`): RFC 9068 JWT access tokens against a JWKS.
//! - `store::introspection` (feature `introspection`): RFC 7662 token
//!   introspection.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `tracing` (default) | one event per rejection and per store call; never a token |
//! | `postgres` | `PgCredentialStore`, push invalidation, usage recording (sqlx) |
//! | `jwt` | `JwtStore` (jsonwebtoken, reqwest) |
//! | `introspection` | `IntrospectionStore` (reqwest) |
//! | `rustls` | HTTPS for the JWKS and introspection calls |
//! - [`error`]: rejections, messages and the error contract.
//! - [`body`]: the layers' response body.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms,
    clippy::unwrap_used,
    clippy::expect_used
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod bearer;
pub mod body;
pub mod cache;
pub mod credential;
pub mod error;
pub mod gate;
mod guard;
pub mod key;
pub mod layer;
pub mod metadata;
pub mod policy;
mod render;
mod rule;
pub mod scope;
pub mod service;
pub mod store;

pub use body::ResponseBody;
pub use cache::{CacheStats, CachedStore, CachedStoreBuilder};
pub use credential::{Credential, CredentialKind, InvalidTokenHash, PresentedToken, TokenHash};
pub use error::{
    ConfigError, ErrorEnvelope, Malformed, Messages, Rejection, RejectionKind, RenderRejection,
    API_ACCESS,
};
pub use gate::{Gate, GateBuilder};
pub use key::ApiKey;
pub use layer::{EntitlementLayer, PolicyLayer, ScopeLayer};
pub use metadata::ProtectedResourceMetadata;
pub use policy::RoutePolicy;
pub use scope::{Requirement, Scope, ScopeError, ScopeSet};
pub use service::{Guarded, ResponseFuture};
#[cfg(feature = "postgres")]
pub use store::postgres::{
    ApiKeyRecord, InvalidationListener, NewKey, PgCredentialStore, PgStoreError,
};
#[cfg(any(feature = "jwt", feature = "introspection"))]
pub use store::OAuthConfigError;
pub use store::{
    BoxError, ChainStore, CredentialStore, EntitlementSource, LoadError, MemoryStore, StoreError,
    TokenShape, UsageRecorder,
};

/// The README's Rust examples, compiled as doctests so they stay true (with
/// all features, as CI runs them: one needs `postgres`).
#[cfg(all(doctest, feature = "postgres"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
