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

use crate::credential::{Credential, PresentedToken, TokenHash};
use crate::error::{
    ErrorResponse, FixedResponses, Messages, Rejection, Render, RenderRejection, API_ACCESS,
};
use crate::guard::{Check, Guard, Rule};
use crate::layer::{EntitlementLayer, ScopeLayer};
use crate::scope::{CompiledRequirement, Implications, Requirement, Scope, ScopeError};
use crate::store::front::{Epochs, Key};
use crate::store::{CachedStore, CredentialStore, StoreError};

pub(crate) type Lookup =
    Pin<Box<dyn Future<Output = Result<Option<Arc<Credential>>, StoreError>> + Send>>;

/// The cache, seen without its store's type, so that layers are not generic
/// over it. The sync `front` and `cached_in_moka` calls are the hit path;
/// `load` (boxed) is the miss path only.
trait Resolver: Send + Sync {
    fn front(&self, key: &Key) -> Result<Option<Arc<Credential>>, Epochs>;
    fn cached_in_moka(
        &self,
        hash: &TokenHash,
        key: &Key,
        epochs: Epochs,
    ) -> Option<Option<Arc<Credential>>>;
    fn load(self: Arc<Self>, token: PresentedToken) -> Lookup;
}

impl<S: CredentialStore + 'static> Resolver for CachedStore<S> {
    fn front(&self, key: &Key) -> Result<Option<Arc<Credential>>, Epochs> {
        CachedStore::front(self, key)
    }

    fn cached_in_moka(
        &self,
        hash: &TokenHash,
        key: &Key,
        epochs: Epochs,
    ) -> Option<Option<Arc<Credential>>> {
        CachedStore::cached_in_moka(self, hash, key, epochs)
    }

    fn load(self: Arc<Self>, token: PresentedToken) -> Lookup {
        Box::pin(async move { CachedStore::load(&self, &token).await })
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
    render: Render,
    scope_headers: bool,
    token_filter: Option<fn(&[u8]) -> bool>,
    usage: Option<Arc<dyn UsageRecorder>>,
    entitlement: Option<Arc<str>>,
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

    /// A layer that requires `requirement` of the credential's scopes (and
    /// the gate's [`entitlement`](GateBuilder::entitlement), if set).
    pub fn require(&self, requirement: impl Into<Requirement>) -> ScopeLayer {
        let requirement = self.compile(&requirement.into());
        let rule = Rule::new(self, self.default_entitlement(), Some(requirement));
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

    /// The entitlement every scope and policy layer requires, if any.
    pub(crate) fn default_entitlement(&self) -> Option<Arc<str>> {
        self.inner.entitlement.clone()
    }

    pub(crate) fn compile(&self, requirement: &Requirement) -> CompiledRequirement {
        requirement.compile(&self.inner.implications)
    }

    pub(crate) fn render(&self, rejection: Rejection) -> ErrorResponse {
        ErrorResponse::new(rejection, &self.inner.render)
    }

    pub(crate) fn scope_headers(&self) -> bool {
        self.inner.scope_headers
    }

    /// Reports an admitted credential to the usage recorder, if any.
    #[inline]
    pub(crate) fn record_use(&self, credential: &Arc<Credential>) {
        if let Some(usage) = &self.inner.usage {
            usage.record(credential);
        }
    }

    /// Whether `token` may be looked up at all.
    #[inline]
    pub(crate) fn admits_token(&self, token: &[u8]) -> bool {
        self.inner.token_filter.is_none_or(|filter| filter(token))
    }

    pub(crate) fn fixed(&self) -> &FixedResponses {
        &self.inner.fixed
    }

    /// This thread's copy of the answer for `key`; see `CachedStore::front`.
    #[inline]
    pub(crate) fn front(&self, key: &Key) -> Result<Option<Arc<Credential>>, Epochs> {
        self.inner.resolver.front(key)
    }

    /// moka's answer, if it can give one without waiting.
    #[inline]
    pub(crate) fn cached_in_moka(
        &self,
        hash: &TokenHash,
        key: &Key,
        epochs: Epochs,
    ) -> Option<Option<Arc<Credential>>> {
        self.inner.resolver.cached_in_moka(hash, key, epochs)
    }

    pub(crate) fn load(&self, token: PresentedToken) -> Lookup {
        Arc::clone(&self.inner.resolver).load(token)
    }
}

/// Told of every request a credential is admitted for; see
/// [`GateBuilder::usage_recorder`]. Runs on the request path: it must return
/// at once (queue, don't write).
pub trait UsageRecorder: Send + Sync + 'static {
    /// `credential` was just admitted for a request.
    fn record(&self, credential: &Arc<Credential>);
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
            .field("render", &self.inner.render)
            .field("scope_headers", &self.inner.scope_headers)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Gate`]; start with [`Gate::builder`].
#[must_use]
pub struct GateBuilder {
    resolver: Arc<dyn Resolver>,
    implications: Vec<(String, String)>,
    render: Render,
    scope_headers: bool,
    token_filter: Option<fn(&[u8]) -> bool>,
    usage: Option<Arc<dyn UsageRecorder>>,
    entitlement: Option<String>,
}

impl GateBuilder {
    fn new<S: CredentialStore + 'static>(cache: CachedStore<S>) -> Self {
        GateBuilder {
            resolver: Arc::new(cache),
            implications: Vec::new(),
            render: Render::default(),
            scope_headers: false,
            token_filter: None,
            usage: None,
            entitlement: None,
        }
    }

    /// Makes every [`ScopeLayer`] and [`PolicyLayer`](crate::PolicyLayer)
    /// built from this gate require `entitlement` too, checked before the
    /// scopes (403 `forbidden`). One layer per route then does what an
    /// [`EntitlementLayer`] around a [`ScopeLayer`] does, for less: one
    /// check instead of two, and one layer for the framework to box.
    pub fn entitlement(mut self, entitlement: &str) -> Self {
        self.entitlement = Some(entitlement.to_owned());
        self
    }

    /// Tells `recorder` of every request a credential is admitted for (once
    /// per request, by the layer that resolved it), for example to keep a
    /// key's `last_used_at`. It runs on the request path, so it must not
    /// block; [`PgCredentialStore::spawn_usage_recorder`] queues and batches.
    ///
    /// [`PgCredentialStore::spawn_usage_recorder`]: crate::store::postgres::PgCredentialStore::spawn_usage_recorder
    pub fn usage_recorder(mut self, recorder: impl UsageRecorder) -> Self {
        self.usage = Some(Arc::new(recorder));
        self
    }

    /// Refuses tokens for which `filter` returns `false` with 401
    /// `invalid_token`, before any cache or store lookup: a flood of made-up
    /// keys then costs neither. [`ApiKey::filter`](crate::ApiKey::filter)
    /// checks the `ohk_` format and its checksum and lets other formats
    /// through.
    pub fn token_filter(mut self, filter: fn(&[u8]) -> bool) -> Self {
        self.token_filter = Some(filter);
        self
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
        self.render.messages = messages;
        self
    }

    /// The `Retry-After` of a 503 when the store fails (default 5 s, rounded
    /// up to whole seconds).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.render.retry_after = retry_after;
        self
    }

    /// Adds `realm="…"` to every `WWW-Authenticate` challenge (RFC 6750 §3).
    pub fn realm(mut self, realm: &str) -> Self {
        self.render.realm = Some(realm.to_owned());
        self
    }

    /// Adds `resource_metadata="…"` to every challenge (RFC 9728 §5.1),
    /// pointing clients at this API's protected-resource metadata; serve it
    /// with [`ProtectedResourceMetadata`](crate::ProtectedResourceMetadata).
    pub fn resource_metadata(mut self, url: &str) -> Self {
        self.render.resource_metadata = Some(url.to_owned());
        self
    }

    /// Whether a 403 `insufficient_scope` names the missing scope, in its
    /// message and its challenge (default: yes, as the API reference
    /// documents). APIs that treat scope names as internal can turn it off;
    /// the message then reads "Your credential does not have the permission
    /// this action requires."
    pub fn disclose_required_scope(mut self, disclose: bool) -> Self {
        self.render.disclose_scope = disclose;
        self
    }

    /// Adds GitHub-style headers to allowed and refused responses of
    /// requests with a credential: `X-OAuth-Scopes` (the scopes the credential
    /// has) and `X-Accepted-OAuth-Scopes` (what the route accepts). Off by
    /// default: they cost a little on every request and tell clients about
    /// the credential.
    pub fn oauth_scope_headers(mut self, enabled: bool) -> Self {
        self.scope_headers = enabled;
        self
    }

    /// Renders rejections with `renderer` instead of the documented bodies,
    /// wherever it returns `Some`; see [`RenderRejection`].
    pub fn renderer(mut self, renderer: impl RenderRejection) -> Self {
        self.render.renderer = Some(Arc::new(renderer));
        self
    }

    /// Builds the gate.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Scope`] when an implication names an invalid scope;
    /// [`ConfigError::Header`] when the realm or the metadata URL cannot be
    /// quoted in a header (empty, `"`, `\`, or not visible ASCII);
    /// [`ConfigError::Entitlement`] for an invalid default entitlement.
    pub fn build(self) -> Result<Gate, ConfigError> {
        let mut implications = Implications::default();
        for (granted, implied) in &self.implications {
            implications.add(Scope::new(granted)?, Scope::new(implied)?);
        }
        if let Some(name) = &self.entitlement {
            entitlement_name(name)?;
        }
        for (what, value) in [
            ("realm", &self.render.realm),
            ("resource_metadata", &self.render.resource_metadata),
        ] {
            if let Some(value) = value {
                quotable(what, value)?;
            }
        }
        Ok(Gate {
            inner: Arc::new(self.into_inner(implications)),
        })
    }

    fn into_inner(self, implications: Implications) -> GateInner {
        GateInner {
            fixed: ErrorResponse::fixed(&self.render),
            resolver: self.resolver,
            implications,
            render: self.render,
            scope_headers: self.scope_headers,
            token_filter: self.token_filter,
            usage: self.usage,
            entitlement: self.entitlement.map(Arc::from),
        }
    }
}

/// A value that can sit inside a quoted-string as is.
fn quotable(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\');
    match ok {
        true => Ok(()),
        false => Err(ConfigError::Header {
            what,
            value: value.escape_debug().to_string(),
        }),
    }
}

impl fmt::Debug for GateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder")
            .field("implications", &self.implications)
            .field("render", &self.render)
            .field("scope_headers", &self.scope_headers)
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
    /// A realm or metadata URL cannot be put into a challenge header.
    Header {
        /// `realm` or `resource_metadata`.
        what: &'static str,
        /// The escaped value.
        value: String,
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
            ConfigError::Header { what, value } => write!(
                f,
                "invalid {what} \"{value}\": use visible ASCII and spaces, without '\"' or '\\'"
            ),
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
