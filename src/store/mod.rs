//! The plug-in points, side by side, and the stores scopegate ships.
//!
//! - [`CredentialStore`] resolves a presented token to its credential. It is
//!   called only when the [`CachedStore`](crate::cache::CachedStore) in front
//!   of it misses, so its boxed future (`async_trait`, for object safety:
//!   `Arc<dyn CredentialStore>` is a store too) stays off the hot path.
//! - [`EntitlementSource`] tells the OAuth stores an account's plan.
//! - [`UsageRecorder`] is told of every admitted request, for example to keep
//!   a key's `last_used_at`.
//!
//! The stores: [`MemoryStore`], the embedded default; [`ChainStore`], which
//! sends each token to the store for its [`TokenShape`]; and, behind
//! features, PostgreSQL (`postgres`), JWT access tokens (`jwt`) and token
//! introspection (`introspection`). Each implements the traits from here;
//! none reaches into the layers.
//!
//! # Example: a store of your own
//!
//! ```
//! use async_trait::async_trait;
//! use scopegate::{Credential, CredentialKind, ScopeSet};
//! use scopegate::credential::{PresentedToken, TokenHash};
//! use scopegate::store::{CredentialStore, StoreError};
//!
//! struct OneKey {
//!     hash: TokenHash,
//! }
//!
//! #[async_trait]
//! impl CredentialStore for OneKey {
//!     async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
//!         if *token.hash() != self.hash {
//!             return Ok(None);
//!         }
//!         let scopes = ScopeSet::parse(["contacts:read"]).map_err(StoreError::new)?;
//!         Ok(Some(
//!             Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
//!                 .with_scopes(scopes)
//!                 .with_entitlements(["api-access"]),
//!         ))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = OneKey { hash: TokenHash::of("secret") };
//! let found = store.resolve(&PresentedToken::new("secret")).await.unwrap();
//! assert_eq!(found.unwrap().id(), "key_1");
//! assert!(store.resolve(&PresentedToken::new("other")).await.unwrap().is_none());
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::credential::{Credential, PresentedToken};
use crate::limit::Limit;

mod chain;
mod memory;
#[cfg(any(feature = "jwt", feature = "introspection"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "jwt", feature = "introspection"))))]
pub mod oauth;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;

#[doc(inline)]
pub use chain::{ChainStore, TokenShape};
#[doc(inline)]
pub use memory::{LoadError, MemoryStore};

/// `Box<dyn Error + Send + Sync>`, as in tower.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Resolves a presented token to the credential it stands for.
///
/// Stores that keep tokens look them up by [`PresentedToken::hash`]; stores
/// that verify tokens (JWTs, introspection) read [`PresentedToken::secret`].
///
/// Return `Ok(None)` for an unknown or revoked token (the client gets 401) and
/// `Err` when the store cannot answer (the client gets 503; a store error never
/// lets a request through). Returning an expired credential is allowed: the
/// cache treats it as not found.
///
/// See the [module docs](crate::store) for an example.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Looks up the credential for `token`.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the backend is unreachable or fails.
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError>;
}

#[async_trait]
impl<T: CredentialStore + ?Sized> CredentialStore for Arc<T> {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        (**self).resolve(token).await
    }
}

#[async_trait]
impl<T: CredentialStore + ?Sized> CredentialStore for Box<T> {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        (**self).resolve(token).await
    }
}

/// Where stores of OAuth tokens find an account's plan: its entitlements
/// and its limits.
///
/// An OAuth access token names its account (a claim of a JWT, a field of an
/// introspection response) but not the account's plan; [`JwtStore`] and
/// [`IntrospectionStore`] ask this source. They call it on a cache miss only:
/// the plan is cached with the credential, and dropped with it by
/// [`CachedStore::invalidate_account`](crate::cache::CachedStore::invalidate_account).
///
/// Implemented for a `HashMap` of account ids to entitlements (no limits),
/// for `Arc`s of sources, and (feature `postgres`) for `PgCredentialStore`,
/// which reads the account's plan.
///
/// [`JwtStore`]: crate::store::oauth::jwt::JwtStore
/// [`IntrospectionStore`]: crate::store::oauth::introspection::IntrospectionStore
///
/// ```
/// use std::collections::HashMap;
/// use scopegate::store::EntitlementSource;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), scopegate::store::StoreError> {
/// let plans = HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]);
/// assert_eq!(plans.entitlements("ws_acme").await?, ["api-access"]);
/// assert!(plans.entitlements("ws_unknown").await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait EntitlementSource: Send + Sync {
    /// The entitlements of `account_id`'s plan; empty for an unknown account
    /// (its requests get 403 `forbidden`).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the source cannot answer (the client gets 503).
    async fn entitlements(&self, account_id: &str) -> Result<Vec<String>, StoreError>;

    /// The [limits](crate::limit) of `account_id`'s plan, cached and
    /// invalidated with the entitlements. None unless the source says
    /// otherwise.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the source cannot answer (the client gets 503).
    async fn limits(&self, account_id: &str) -> Result<Vec<Limit>, StoreError> {
        let _ = account_id;
        Ok(Vec::new())
    }
}

#[async_trait]
impl EntitlementSource for std::collections::HashMap<String, Vec<String>> {
    async fn entitlements(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.get(account_id).cloned().unwrap_or_default())
    }
}

#[async_trait]
impl<T: EntitlementSource + ?Sized> EntitlementSource for Arc<T> {
    async fn entitlements(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        (**self).entitlements(account_id).await
    }

    async fn limits(&self, account_id: &str) -> Result<Vec<Limit>, StoreError> {
        (**self).limits(account_id).await
    }
}

/// Told of every request a credential is admitted for; set with
/// [`GateBuilder::usage_recorder`](crate::gate::GateBuilder::usage_recorder).
/// Runs on the request path: it must return at once (queue, don't write).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use scopegate::store::UsageRecorder;
/// use scopegate::Credential;
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
///
/// impl UsageRecorder for Count {
///     fn record(&self, _credential: &Arc<Credential>) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
/// ```
pub trait UsageRecorder: Send + Sync + 'static {
    /// `credential` was just admitted for a request.
    fn record(&self, credential: &Arc<Credential>);
}

/// A credential store could not answer.
///
/// Cheap to clone (concurrent requests waiting on one lookup all receive it).
/// Its `Display` is for logs; clients only ever see the 503 body.
#[derive(Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreErrorKind {
    Backend,
    Timeout,
}

impl StoreError {
    /// Wraps a backend error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        StoreError {
            kind: StoreErrorKind::Backend,
            source: Some(Arc::from(source.into())),
        }
    }

    /// The store did not answer within the configured timeout.
    pub fn timeout() -> Self {
        StoreError {
            kind: StoreErrorKind::Timeout,
            source: None,
        }
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        self.kind == StoreErrorKind::Timeout
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.source) {
            (StoreErrorKind::Timeout, _) => f.write_str("credential store timed out"),
            (StoreErrorKind::Backend, Some(source)) => {
                write!(f, "credential store failed: {source}")
            }
            (StoreErrorKind::Backend, None) => f.write_str("credential store failed"),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
