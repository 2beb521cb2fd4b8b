//! [`Gate`]: the cached store and the configuration, and the only place
//! layers are built.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use scopegate::{CachedStore, Gate, MemoryStore};
//! use scopegate::error::{Messages, RejectionKind};
//!
//! # fn main() -> Result<(), scopegate::error::ConfigError> {
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
//! let either = gate.require(scopegate::scope::Requirement::any_of(["contacts:read", "guides:read"])?);
//! # let _ = (api_access, read_contacts, either);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CachedStore, Resolver};
#[cfg(feature = "redis")]
use crate::cluster::{ClusterStatus, RedisLimits};
use crate::error::{ConfigError, Messages, RenderRejection, API_ACCESS};
use crate::guard::{Check, Core, Guard};
use crate::layer::{EntitlementLayer, OptionalLayer, PolicyLayer, ScopeLayer};
use crate::limiter::Limiter;
use crate::policy::RoutePolicy;
use crate::render::{FixedResponses, Render};
use crate::rule::{entitlement_name, Rules};
use crate::scope::{Implications, Requirement, Scope};
use crate::store::{CredentialStore, UsageRecorder};

/// The shared handle: a [`CachedStore`] plus configuration. Build layers from
/// it with [`api_access`](Gate::api_access), [`require`](Gate::require),
/// [`policy`](Gate::policy) and friends.
///
/// Cloning is cheap (one `Arc`). See the [module docs](crate::gate) for an
/// example.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    /// What the layers share at request time.
    core: Arc<Core>,
    /// What layers are made with.
    rules: Rules,
}

#[cfg(all(test, feature = "axum"))]
impl Gate {
    /// What its layers share, for the crate's tests.
    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }
}

impl Gate {
    /// A gate with the default configuration in front of `cache`.
    pub fn new<S: CredentialStore + 'static>(cache: CachedStore<S>) -> Self {
        let builder = GateBuilder::new(cache);
        let limiter = Limiter::new(builder.render.clone(), builder.rate_limit_headers);
        builder.into_gate(Implications::default(), limiter)
    }

    /// Starts configuring a gate in front of `cache`. Keep a clone of the
    /// cache to call its `invalidate*` methods.
    pub fn builder<S: CredentialStore + 'static>(cache: CachedStore<S>) -> GateBuilder {
        GateBuilder::new(cache)
    }

    /// A layer that requires `requirement` of the credential's scopes (and
    /// the gate's [`entitlement`](GateBuilder::entitlement), if set).
    pub fn require(&self, requirement: impl Into<Requirement>) -> ScopeLayer {
        let rules = &self.inner.rules;
        let rule = rules.rule(rules.default_entitlement(), Some(&requirement.into()));
        ScopeLayer::new(self.guard(Check::Rule(Arc::new(rule))))
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

    /// Cluster mode's state: whether Redis answers and how many instances
    /// share the limits; `None` unless the gate was built with
    /// [`GateBuilder::cluster`].
    #[cfg(feature = "redis")]
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        self.inner.core.limiter.shared().map(ClusterStatus::of)
    }

    /// Cluster mode: reports every budget's units to Redis now, and answers
    /// whether Redis took them (`false` when it is unreachable, or outside
    /// cluster mode; a quota's units not taken are sent again with the next
    /// round, as for any round Redis does not answer).
    ///
    /// Call it after a graceful shutdown, before the process exits, so that
    /// nothing counted since the last round is lost. The round runs on the
    /// runtime the gate was built on, which must still be running (a gate
    /// that is simply dropped also runs a last round, but only while that
    /// runtime runs on); once it has shut down, this answers `false`.
    /// Flushes asked for at the same time share one round.
    #[cfg(feature = "redis")]
    pub async fn flush_limits(&self) -> bool {
        match self.inner.core.limiter.shared() {
            Some(shared) => shared.flush().await,
            None => false,
        }
    }

    /// A layer that requires the `api-access` entitlement: the one every API
    /// request needs.
    pub fn api_access(&self) -> EntitlementLayer {
        self.entitlement_layer(API_ACCESS.into())
    }

    /// A layer that enforces a route policy table: a rule per method and
    /// path, deny-by-default for the rest. See the
    /// [policy module docs](crate::policy) for an example.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Route`] for an invalid pattern,
    /// [`ConfigError::DuplicateRoute`] for a method and path given twice,
    /// [`ConfigError::UnknownScope`] for a scope outside the catalog,
    /// [`ConfigError::Scope`] or [`ConfigError::Entitlement`] for an invalid
    /// name.
    pub fn policy(&self, table: RoutePolicy) -> Result<PolicyLayer, ConfigError> {
        let policy = table.compile(&self.inner.rules)?;
        Ok(PolicyLayer::new(self.guard(Check::Policy(policy))))
    }

    /// A layer for public routes: it resolves the credential when a token is
    /// sent, puts it into the extensions, and lets a request without one
    /// through. A token sent must be valid (401 `invalid_token` if not);
    /// neither the gate's entitlement nor any scope is required of it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use axum::{routing::get, Extension, Router};
    /// use scopegate::{CachedStore, Credential, Gate, MemoryStore};
    ///
    /// async fn guides(credential: Option<Extension<Arc<Credential>>>) -> String {
    ///     match credential {
    ///         Some(Extension(c)) => format!("the guides, and {}'s drafts", c.account_id()),
    ///         None => "the published guides".to_owned(),
    ///     }
    /// }
    ///
    /// let gate = Gate::new(CachedStore::new(MemoryStore::new()));
    /// let app: Router = Router::new().route("/guides", get(guides).route_layer(gate.optional()));
    /// # let _ = app;
    /// ```
    pub fn optional(&self) -> OptionalLayer {
        let rule = self.inner.rules.rule(None, None);
        OptionalLayer::new(self.guard(Check::Optional(Arc::new(rule))))
    }

    fn entitlement_layer(&self, name: Arc<str>) -> EntitlementLayer {
        let rule = self.inner.rules.rule(Some(name), None);
        EntitlementLayer::new(self.guard(Check::Rule(Arc::new(rule))))
    }

    fn guard(&self, check: Check) -> Arc<Guard> {
        Guard::new(Arc::clone(&self.inner.core), check)
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("rules", &self.inner.rules)
            .field("scope_headers", &self.inner.core.scope_headers)
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
    rate_limit_headers: bool,
    token_filter: Option<fn(&[u8]) -> bool>,
    usage: Option<Arc<dyn UsageRecorder>>,
    entitlement: Option<String>,
    #[cfg(feature = "redis")]
    cluster: Option<crate::cluster::RedisLimits>,
}

impl GateBuilder {
    fn new<S: CredentialStore + 'static>(cache: CachedStore<S>) -> Self {
        GateBuilder {
            resolver: cache.resolver(),
            implications: Vec::new(),
            render: Render::default(),
            scope_headers: false,
            rate_limit_headers: true,
            token_filter: None,
            usage: None,
            entitlement: None,
            #[cfg(feature = "redis")]
            cluster: None,
        }
    }

    /// Makes every [`ScopeLayer`] and [`PolicyLayer`] built from this gate require `entitlement` too, checked before the
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
    /// keys then costs neither. [`ApiKey::filter`](crate::key::ApiKey::filter)
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
    /// with [`ProtectedResourceMetadata`](crate::metadata::ProtectedResourceMetadata).
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

    /// Whether responses counted against a [`Limit`](crate::limit::Limit)
    /// carry the IETF `RateLimit-Policy` and `RateLimit` headers
    /// (draft-ietf-httpapi-ratelimit-headers), allowed ones and 429s alike
    /// (default: yes). A 429 keeps its `Retry-After` either way.
    pub fn rate_limit_headers(mut self, enabled: bool) -> Self {
        self.rate_limit_headers = enabled;
        self
    }

    /// Shares the limits with the service's other instances through Redis
    /// ([cluster mode](crate::cluster)) instead of keeping them in this
    /// process alone. [`build`](Self::build) then starts the sync task, so
    /// it must run inside a Tokio runtime.
    #[cfg(feature = "redis")]
    pub fn cluster(mut self, redis: crate::cluster::RedisLimits) -> Self {
        self.cluster = Some(redis);
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
    /// [`ConfigError::Entitlement`] for an invalid default entitlement;
    /// `ConfigError::Cluster` in cluster mode outside a Tokio runtime.
    pub fn build(self) -> Result<Gate, ConfigError> {
        let mut implications = Implications::default();
        for (granted, implied) in &self.implications {
            implications.add(Scope::new(granted)?, Scope::new(implied)?);
        }
        if let Some(name) = &self.entitlement {
            entitlement_name(name)?;
        }
        self.render.validate()?;
        #[cfg(feature = "redis")]
        let shared = self.cluster.clone().map(RedisLimits::start).transpose()?;
        let limiter = Limiter::new(self.render.clone(), self.rate_limit_headers);
        #[cfg(feature = "redis")]
        let limiter = match shared {
            Some(shared) => limiter.with_shared(shared),
            None => limiter,
        };
        Ok(self.into_gate(implications, limiter))
    }

    fn into_gate(self, implications: Implications, limiter: Limiter) -> Gate {
        let core = Core {
            fixed: FixedResponses::new(&self.render),
            resolver: self.resolver,
            token_filter: self.token_filter,
            usage: self.usage,
            scope_headers: self.scope_headers,
            limiter,
        };
        let entitlement = self.entitlement.map(Arc::from);
        Gate {
            inner: Arc::new(GateInner {
                core: core.shared(),
                rules: Rules::new(self.render, implications, entitlement),
            }),
        }
    }
}

impl fmt::Debug for GateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder")
            .field("implications", &self.implications)
            .field("render", &self.render)
            .field("scope_headers", &self.scope_headers)
            .field("rate_limit_headers", &self.rate_limit_headers)
            .finish_non_exhaustive()
    }
}
