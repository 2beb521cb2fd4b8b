//! Tower middleware that enforces API-key and OAuth **scopes** and plan
//! **entitlements** in front of any tower service: axum, hyper and tonic
//! servers.
//!
//! A request carries `Authorization: Bearer <token>`. scopegate resolves the
//! token through a moka cache in front of a pluggable
//! [`CredentialStore`](store::CredentialStore) (the cache and the store know
//! tokens only by their SHA-256; the raw token is never kept), and checks:
//!
//! - [`EntitlementLayer`](layer::EntitlementLayer): the account's plan
//!   includes an entitlement, usually `api-access` ([`Gate::api_access`]);
//!   otherwise 403 `forbidden`;
//! - [`ScopeLayer`](layer::ScopeLayer): the credential's scopes satisfy the
//!   route's [`Requirement`](scope::Requirement); otherwise 403
//!   `insufficient_scope`.
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
//! In the order a request meets them:
//!
//! - [`gate`]: [`Gate`], the cache plus configuration, and the only place
//!   layers are built: [`Gate::api_access`], [`Gate::require`],
//!   [`Gate::policy`].
//! - [`layer`] and [`service`]: the three layers and the service they wrap.
//! - [`policy`]: route policy tables for hyper, tonic, or one axum table.
//! - [`scope`]: scope tokens, sets and requirements.
//! - [`credential`]: [`Credential`], [`TokenHash`](credential::TokenHash) and
//!   [`PresentedToken`](credential::PresentedToken).
//! - [`cache`]: [`CachedStore`], its invalidation methods and counters.
//! - [`store`]: the plug-in traits ([`CredentialStore`](store::CredentialStore),
//!   [`EntitlementSource`](store::EntitlementSource),
//!   [`UsageRecorder`](store::UsageRecorder)), [`MemoryStore`], and
//!   [`ChainStore`](store::ChainStore) for API keys, JWTs and opaque tokens
//!   side by side; behind features, `store::postgres` and `store::oauth`.
//! - [`error`]: rejections, messages and the error contract.
//! - `extract` (features `axum`, `tonic`): the credential in handlers, as
//!   axum extractors (`Authenticated`, `Option<Authenticated>`,
//!   `RequireScope<T>`) and `request.credential()` for tonic.
//! - [`body`]: the layers' response body.
//! - [`metadata`]: RFC 9728 protected-resource metadata.
//! - `metrics` (feature `metrics`): decisions, cache hits, store calls.
//! - `openapi` (feature `openapi`): the layers' security, written into an
//!   OpenAPI document.
//! - [`key`]: the `ohk_` API-key format.
//!
//! `docs/ARCHITECTURE.md` in the repository draws the module graph and walks
//! the request path file by file.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `tracing` (default) | one event per rejection and per store call; never a token |
//! | `postgres` | `store::postgres`: `PgCredentialStore`, push invalidation, usage recording (sqlx) |
//! | `jwt` | `store::oauth::jwt`: `JwtStore` (jsonwebtoken, reqwest) |
//! | `introspection` | `store::oauth::introspection`: `IntrospectionStore` (reqwest) |
//! | `rustls` | HTTPS for the JWKS and introspection calls |
//! | `axum` | `extract`: axum extractors (axum-core) |
//! | `tonic` | `extract::RequestExt` for `tonic::Request` |
//! | `metrics` | `metrics`: decision, cache and store metrics through the `metrics` facade |
//! | `openapi` | `openapi`: OpenAPI 3.1 security schemes, requirements and refusals from the layers (utoipa) |

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
#[cfg(feature = "redis")]
pub mod cluster;
pub mod credential;
pub mod error;
#[cfg(any(feature = "axum", feature = "tonic"))]
pub mod extract;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
mod guard;
pub mod key;
pub mod layer;
pub mod limit;
mod limiter;
pub mod metadata;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod policy;
mod render;
mod rule;
pub mod scope;
pub mod service;
pub mod store;
mod striped;

// The Quick start's names, also at the root. Each is documented once, in
// its module.
#[doc(no_inline)]
pub use cache::CachedStore;
#[doc(no_inline)]
pub use credential::{Credential, CredentialKind};
#[doc(no_inline)]
pub use gate::Gate;
#[doc(no_inline)]
pub use scope::ScopeSet;
#[doc(no_inline)]
pub use store::MemoryStore;

/// The README's Rust examples, compiled as doctests so they stay true (with
/// all features, as CI runs them: one needs `postgres`).
#[cfg(all(doctest, feature = "postgres"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
