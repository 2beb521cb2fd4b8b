//! The shared handle every layer is built from: the cached store and the
//! configuration.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use scopegate::{CachedStore, Gate, Messages, MemoryStore, RejectionKind};
//!
//! # fn main() -> Result<(), scopegate::ConfigError> {
//! let keys = MemoryStore::new();
//! let cache = CachedStore::builder(keys.clone())
//!     .time_to_live(Duration::from_secs(30))
//!     .build();
//!
//! let gate = Gate::builder(cache.clone())
//!     // Opt in to implications; none exist by default.
//!     .imply("contacts:write", "contacts:read")
//!     .messages(Messages::default().with(RejectionKind::InvalidToken, "Unknown API key."))
//!     .retry_after(Duration::from_secs(2))
//!     .build()?;
//!
//! // Layers are cheap to clone and share the gate's cache.
//! let api_access = gate.api_access();
//! let read_contacts = gate.require_scope("contacts:read")?;
//! let either = gate.require(scopegate::Requirement::any_of(["contacts:read", "guides:read"])?);
//! # let _ = (api_access, read_contacts, either);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::credential::{Credential, TokenHash};
use crate::error::{ErrorResponse, FixedResponses, Messages, Rejection, API_ACCESS};
use crate::guard::{Check, Guard, Rule};
use crate::layer::{EntitlementLayer, ScopeLayer};
use crate::scope::{CompiledRequirement, Implications, Requirement, Scope, ScopeError};
use crate::store::{CachedStore, CredentialStore, StoreError};

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

pub(crate) type Lookup =
    Pin<Box<dyn Future<Output = Result<Option<Arc<Credential>>, StoreError>> + Send>>;

/// The cache, seen without its store's type, so that layers are not generic
/// over it. The sync `cached` call is the hit path; `load` (boxed) is the miss
/// path only.
trait Resolver: Send + Sync {
    fn cached(&self, hash: &TokenHash) -> Option<Option<Arc<Credential>>>;
    fn load(self: Arc<Self>, hash: TokenHash) -> Lookup;
}

impl<S: CredentialStore + 'static> Resolver for CachedStore<S> {
    fn cached(&self, hash: &TokenHash) -> Option<Option<Arc<Credential>>> {
        CachedStore::cached(self, hash)
    }

    fn load(self: Arc<Self>, hash: TokenHash) -> Lookup {
        Box::pin(async move { self.resolve(&hash).await })
    }
}

/// The shared handle: a [`CachedStore`] plus configuration. Build layers from
/// it with [`api_access`](Gate::api_access), [`require`](Gate::require) and
/// friends.
///
/// Cloning is cheap (one `Arc`). See the [module docs](crate::gate) for an
/// example.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    resolver: Arc<dyn Resolver>,
    implications: Implications,
    messages: Messages,
    retry_after: Duration,
    fixed: FixedResponses,
}

impl Gate {
    /// A gate with the default configuration in front of `cache`.
    pub fn new<S: CredentialStore + 'static>(cache: CachedStore<S>) -> Self {
        let inner = GateBuilder::new(cache).into_inner(Implications::default());
        Gate {
            inner: Arc::new(inner),
        }
    }

    /// Starts configuring a gate in front of `cache`. Keep a clone of the
    /// cache to call its `invalidate*` methods.
    pub fn builder<S: CredentialStore + 'static>(cache: CachedStore<S>) -> GateBuilder {
        GateBuilder::new(cache)
    }

    /// A layer that requires `requirement` of the credential's scopes.
    pub fn require(&self, requirement: impl Into<Requirement>) -> ScopeLayer {
        let requirement = self.compile(&requirement.into());
        let rule = Rule::new(self, None, Some(requirement));
        ScopeLayer::new(Guard::new(self.clone(), Check::Rule(rule)))
    }

    /// A layer that requires one scope.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Scope`] when `scope` is not a valid scope token.
    pub fn require_scope(&self, scope: &str) -> Result<ScopeLayer, ConfigError> {
        Ok(self.require(Scope::new(scope)?))
    }

    /// A layer that requires the account's plan to include `entitlement`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Entitlement`] when `entitlement` is empty or has
    /// characters other than visible ASCII.
    pub fn require_entitlement(&self, entitlement: &str) -> Result<EntitlementLayer, ConfigError> {
        Ok(self.entitlement_layer(entitlement_name(entitlement)?))
    }

    /// A layer that requires the `api-access` entitlement: the one every API
    /// request needs.
    pub fn api_access(&self) -> EntitlementLayer {
        self.entitlement_layer(API_ACCESS.into())
    }

    fn entitlement_layer(&self, name: Arc<str>) -> EntitlementLayer {
        let rule = Rule::new(self, Some(name), None);
        EntitlementLayer::new(Guard::new(self.clone(), Check::Rule(rule)))
    }

    pub(crate) fn compile(&self, requirement: &Requirement) -> CompiledRequirement {
        requirement.compile(&self.inner.implications)
    }

    pub(crate) fn render(&self, rejection: Rejection) -> ErrorResponse {
        ErrorResponse::new(rejection, &self.inner.messages, self.inner.retry_after)
    }

    pub(crate) fn fixed(&self) -> &FixedResponses {
        &self.inner.fixed
    }

    #[inline]
    pub(crate) fn cached(&self, hash: &TokenHash) -> Option<Option<Arc<Credential>>> {
        self.inner.resolver.cached(hash)
    }

    pub(crate) fn load(&self, hash: TokenHash) -> Lookup {
        Arc::clone(&self.inner.resolver).load(hash)
    }
}

/// Checks an entitlement name: one or more visible ASCII characters.
pub(crate) fn entitlement_name(name: &str) -> Result<Arc<str>, ConfigError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Entitlement(name.escape_debug().to_string()));
    }
    Ok(name.into())
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("implications", &self.inner.implications)
            .field("messages", &self.inner.messages)
            .field("retry_after", &self.inner.retry_after)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Gate`]; start with [`Gate::builder`].
#[must_use]
pub struct GateBuilder {
    resolver: Arc<dyn Resolver>,
    implications: Vec<(String, String)>,
    messages: Messages,
    retry_after: Duration,
}

impl GateBuilder {
    fn new<S: CredentialStore + 'static>(cache: CachedStore<S>) -> Self {
        GateBuilder {
            resolver: Arc::new(cache),
            implications: Vec::new(),
            messages: Messages::default(),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// Makes `granted` satisfy requirements for `implied` too (transitively).
    /// Nothing is implied by default.
    pub fn imply(mut self, granted: &str, implied: &str) -> Self {
        self.implications
            .push((granted.to_owned(), implied.to_owned()));
        self
    }

    /// Replaces the error messages.
    pub fn messages(mut self, messages: Messages) -> Self {
        self.messages = messages;
        self
    }

    /// The `Retry-After` of a 503 when the store fails (default 5 s, rounded
    /// up to whole seconds).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Builds the gate.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Scope`] when an implication names an invalid scope.
    pub fn build(self) -> Result<Gate, ConfigError> {
        let mut implications = Implications::default();
        for (granted, implied) in &self.implications {
            implications.add(Scope::new(granted)?, Scope::new(implied)?);
        }
        Ok(Gate {
            inner: Arc::new(self.into_inner(implications)),
        })
    }

    fn into_inner(self, implications: Implications) -> GateInner {
        GateInner {
            fixed: ErrorResponse::fixed(&self.messages, self.retry_after),
            resolver: self.resolver,
            implications,
            messages: self.messages,
            retry_after: self.retry_after,
        }
    }
}

impl fmt::Debug for GateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder")
            .field("implications", &self.implications)
            .field("messages", &self.messages)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

/// A gate or layer could not be configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A scope name is invalid.
    Scope(ScopeError),
    /// An entitlement name is empty or not visible ASCII; holds the escaped name.
    Entitlement(String),
    /// A route pattern of a [`RoutePolicy`](crate::RoutePolicy) is invalid.
    Route {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries of a [`RoutePolicy`](crate::RoutePolicy) cover the same
    /// method and path.
    DuplicateRoute {
        /// The method, or `*` for any method.
        method: String,
        /// The pattern of the second entry.
        pattern: String,
    },
    /// A route requires a scope outside the policy's scope catalog.
    UnknownScope {
        /// The scope.
        scope: String,
        /// The route's pattern.
        pattern: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Scope(e) => e.fmt(f),
            ConfigError::Route { pattern, reason } => {
                write!(f, "invalid route \"{pattern}\": {reason}")
            }
            ConfigError::DuplicateRoute { method, pattern } => {
                write!(
                    f,
                    "duplicate route: {method} {pattern} is already in the policy"
                )
            }
            ConfigError::UnknownScope { scope, pattern } => {
                write!(
                    f,
                    "route \"{pattern}\" requires \"{scope}\", which is not in the scope catalog"
                )
            }
            ConfigError::Entitlement(name) => {
                write!(
                    f,
                    "invalid entitlement \"{name}\": use one or more visible ASCII characters"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Scope(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ScopeError> for ConfigError {
    fn from(e: ScopeError) -> Self {
        ConfigError::Scope(e)
    }
}
