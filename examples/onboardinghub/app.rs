//! The OnboardingHub API over in-memory data, protected by scopegate.
//!
//! `main.rs` serves it; the integration tests in `tests/` include this file and
//! serve it on an ephemeral loopback port.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use scopegate::credential::TokenHash;
use scopegate::error::{ConfigError, ErrorEnvelope};
use scopegate::key::ApiKey;
use scopegate::layer::ScopeLayer;
use scopegate::limit::Limit;
#[cfg(feature = "postgres")]
use scopegate::store::postgres::PgCredentialStore;
use scopegate::store::{ChainStore, EntitlementSource, StoreError};
use scopegate::{CachedStore, Gate, MemoryStore};
use serde_json::{json, Map, Value};

use crate::demo::{credential, plan, plan_of, DEMO_KEYS, SCOPES, WORKSPACE};

#[path = "developer.rs"]
mod developer;

/// The server's state: where keys live, the admin token's hash, and the
/// signed-in sessions of the developer-settings page.
#[derive(Clone)]
pub struct App {
    keys: Keys,
    admin: TokenHash,
    sessions: Arc<developer::Sessions>,
    /// Cluster mode: the limits shared with the other instances.
    #[cfg(feature = "redis")]
    cluster: Option<scopegate::cluster::RedisLimits>,
}

/// Where API keys live: in memory (the default), or in PostgreSQL shared by
/// every instance (with `DATABASE_URL` and the `postgres` feature).
#[derive(Clone)]
enum Keys {
    Memory {
        store: MemoryStore,
        cache: CachedStore<ChainStore>,
        registry: Arc<Mutex<BTreeMap<String, KeyRecord>>>,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        store: PgCredentialStore,
        cache: CachedStore<ChainStore>,
        usage: scopegate::store::postgres::PgUsageRecorder,
        _listener: Arc<scopegate::store::postgres::InvalidationListener>,
    },
}

/// Each in-memory key's last use, set as the gate admits it.
#[derive(Clone)]
struct MemoryUsage(Arc<Mutex<BTreeMap<String, KeyRecord>>>);

impl scopegate::store::UsageRecorder for MemoryUsage {
    fn record(&self, credential: &Arc<scopegate::Credential>) {
        if let Some(key) = lock(&self.0).get_mut(credential.id()) {
            key.last_used = Some(std::time::SystemTime::now());
        }
    }
}

/// OAuth 2.0 access tokens from one authorization server, accepted next to
/// API keys (features `jwt` and `introspection`): JWTs are verified against
/// its JWKS, opaque tokens introspected when the API has a client secret.
/// Both endpoints come from the issuer's metadata (discovery) unless given.
#[cfg(all(feature = "jwt", feature = "introspection"))]
#[derive(Clone)]
pub struct OAuth {
    /// The issuer and the shape of its tokens.
    pub provider: scopegate::store::oauth::provider::Provider,
    /// This API's resource identifier: the tokens' `aud` (for Cognito, the
    /// app client id).
    pub audience: String,
    /// The issuer's JWKS; `None`: from its metadata.
    pub jwks_uri: Option<String>,
    /// The issuer's RFC 7662 endpoint; `None`: from its metadata.
    pub introspection_endpoint: Option<String>,
    /// This API's client at the issuer, for introspection calls.
    pub client_id: String,
    /// Its secret; without one, opaque tokens are not accepted.
    pub client_secret: Option<String>,
    /// The claim naming the workspace: a name or a JSON pointer.
    pub account_claim: String,
    /// Where the scopes are.
    pub scope_claims: Vec<scopegate::store::oauth::ScopeClaim>,
    /// Only scope names with this prefix count, without it (Cognito's
    /// `{resource server}/{scope}`).
    pub scope_prefix: Option<String>,
    /// Whether JWTs with `typ: JWT`, or none, are accepted even where the
    /// provider's preset does not.
    pub accept_typ_jwt: bool,
    /// Least time between JWKS refreshes caused by unknown `kid`s.
    pub refresh_interval: std::time::Duration,
    /// How long an introspection answer is cached: the revocation window.
    pub introspection_max_age: std::time::Duration,
}

/// Everything but the client secret.
#[cfg(all(feature = "jwt", feature = "introspection"))]
impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("provider", &self.provider)
            .field("audience", &self.audience)
            .field("client_id", &self.client_id)
            .field("account_claim", &self.account_claim)
            .field("scope_claims", &self.scope_claims)
            .finish_non_exhaustive()
    }
}

#[cfg(all(feature = "jwt", feature = "introspection"))]
impl OAuth {
    /// The settings for an RFC 9068 `issuer` with the reference API's
    /// defaults: endpoints by discovery, the audience
    /// `https://api.onboardinghub.test`, the client `onboardinghub-api`,
    /// scopes in `scope`, and the workspace in `workspace_id`.
    pub fn new(issuer: &str, client_secret: Option<&str>) -> Self {
        let provider = scopegate::store::oauth::provider::Provider::rfc9068(issuer);
        OAuth {
            account_claim: "workspace_id".to_owned(),
            ..OAuth::for_provider(provider, client_secret)
        }
    }

    /// The settings for `provider`'s tokens: its preset's scope and account
    /// claims, and otherwise as [`OAuth::new`].
    pub fn for_provider(
        provider: scopegate::store::oauth::provider::Provider,
        client_secret: Option<&str>,
    ) -> Self {
        OAuth {
            audience: "https://api.onboardinghub.test".to_owned(),
            jwks_uri: None,
            introspection_endpoint: None,
            client_id: "onboardinghub-api".to_owned(),
            client_secret: client_secret.map(str::to_owned),
            account_claim: provider.account_claim().to_owned(),
            scope_claims: provider.scope_claims(),
            scope_prefix: None,
            accept_typ_jwt: false,
            refresh_interval: std::time::Duration::from_secs(10),
            introspection_max_age: std::time::Duration::from_secs(30),
            provider,
        }
    }

    /// API keys to `keys`, JWTs to a `JwtStore`, opaque tokens to an
    /// `IntrospectionStore` (with a client secret); both read plans from
    /// `plans`.
    fn chain(
        &self,
        keys: impl scopegate::store::CredentialStore + 'static,
        plans: impl scopegate::store::EntitlementSource + 'static,
    ) -> Result<ChainStore, scopegate::store::oauth::OAuthConfigError> {
        use scopegate::store::oauth::introspection::IntrospectionStore;
        let plans = Arc::new(plans);
        let mut jwt = self
            .provider
            .jwt(&self.audience)
            .account_claim(&self.account_claim)
            .scope_claims(self.scope_claims.clone())
            .refresh_interval(self.refresh_interval)
            .leeway(std::time::Duration::from_secs(5))
            .entitlements(Arc::clone(&plans));
        if let Some(uri) = &self.jwks_uri {
            jwt = jwt.jwks_uri(uri);
        }
        if let Some(prefix) = &self.scope_prefix {
            jwt = jwt.scope_prefix(prefix);
        }
        if self.accept_typ_jwt {
            jwt = jwt.accept_typ_jwt(true);
        }
        let chain = ChainStore::new().api_keys(keys).jwt(jwt.build()?);
        let Some(secret) = &self.client_secret else {
            return Ok(chain);
        };
        let mut opaque = match &self.introspection_endpoint {
            Some(endpoint) => IntrospectionStore::builder(endpoint, &self.audience),
            None => IntrospectionStore::discover(self.provider.issuer(), &self.audience),
        }
        .client_credentials(&self.client_id, secret)
        .account_field(&self.account_claim)
        .scope_claims(self.scope_claims.clone())
        .max_cache_age(self.introspection_max_age)
        .entitlements(plans);
        if let Some(prefix) = &self.scope_prefix {
            opaque = opaque.scope_prefix(prefix);
        }
        Ok(chain.opaque(opaque.build()?))
    }
}

/// The settings of OAuth support; nothing without the `jwt` and
/// `introspection` features.
#[cfg(not(all(feature = "jwt", feature = "introspection")))]
#[derive(Clone, Debug)]
pub enum OAuth {}

/// What developer settings show of a key: never its token.
#[derive(Clone)]
struct KeyRecord {
    name: String,
    scopes: Vec<String>,
    last_used: Option<std::time::SystemTime>,
}

impl App {
    /// The app with the demo keys in memory; `admin_token` guards
    /// `/developer/keys`.
    pub fn new(admin_token: &str) -> Self {
        let keys_only = |keys: MemoryStore, _| {
            Ok::<_, std::convert::Infallible>(ChainStore::new().api_keys(keys))
        };
        match Self::in_memory(admin_token, keys_only) {
            Ok(app) => app,
            Err(never) => match never {},
        }
    }

    /// [`new`](Self::new), also accepting OAuth tokens when `oauth` is set.
    pub fn with_oauth(admin_token: &str, oauth: Option<&OAuth>) -> Result<Self, OAuthError> {
        Self::in_memory(admin_token, |keys, plans| chain(keys, plans, oauth))
    }

    fn in_memory<E>(
        admin_token: &str,
        chain: impl FnOnce(MemoryStore, DemoPlans) -> Result<ChainStore, E>,
    ) -> Result<Self, E> {
        let store = crate::demo::store();
        let registry = DEMO_KEYS
            .iter()
            .map(|demo| {
                let record = KeyRecord {
                    name: demo.name.to_owned(),
                    scopes: to_strings(demo.scopes),
                    last_used: None,
                };
                (demo.id.to_owned(), record)
            })
            .collect();
        let keys = Keys::Memory {
            cache: CachedStore::new(chain(store.clone(), DemoPlans)?),
            store,
            registry: Arc::new(Mutex::new(registry)),
        };
        Ok(App {
            keys,
            admin: TokenHash::of(admin_token),
            sessions: Arc::default(),
            #[cfg(feature = "redis")]
            cluster: None,
        })
    }

    /// The app with its keys in PostgreSQL: runs the migrations, seeds the
    /// demo plans, workspaces and keys unless present, and starts this
    /// instance's invalidation listener.
    #[cfg(feature = "postgres")]
    pub async fn with_postgres(
        admin_token: &str,
        pool: sqlx::PgPool,
        oauth: Option<&OAuth>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let store = PgCredentialStore::new(pool);
        store.migrate().await?;
        for (_, name) in crate::demo::WORKSPACES {
            let created =
                sqlx::query("INSERT INTO scopegate_plans (id) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(name)
                    .execute(store.pool())
                    .await?;
            if created.rows_affected() == 1 {
                let (entitlements, limits) = plan(name);
                store.set_plan(name, entitlements).await?;
                store.set_plan_limits(name, &limits).await?;
            }
        }
        for (account, plan) in crate::demo::WORKSPACES {
            sqlx::query("INSERT INTO scopegate_accounts (id, plan_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(account)
                .bind(plan)
                .execute(store.pool())
                .await?;
        }
        for demo in DEMO_KEYS {
            let hash = TokenHash::of(demo.token);
            store
                .import_key(demo.id, demo.workspace, demo.name, &hash, demo.scopes)
                .await?;
        }
        let cache = CachedStore::new(chain(store.clone(), store.clone(), oauth)?);
        let listener =
            store.spawn_invalidation_listener(cache.clone(), std::time::Duration::from_secs(1));
        let keys = Keys::Postgres {
            usage: store.spawn_usage_recorder(std::time::Duration::from_secs(1)),
            store,
            cache,
            _listener: Arc::new(listener),
        };
        Ok(App {
            keys,
            admin: TokenHash::of(admin_token),
            sessions: Arc::default(),
            #[cfg(feature = "redis")]
            cluster: None,
        })
    }

    /// Shares the plans' limits with the other instances through `redis`
    /// (cluster mode) instead of counting them in this process.
    #[cfg(feature = "redis")]
    pub fn with_cluster(mut self, redis: scopegate::cluster::RedisLimits) -> Self {
        self.cluster = Some(redis);
        self
    }

    /// The gate: every route's scope layer also requires the plan's
    /// `api-access`, so one layer per route does both checks.
    pub fn gate(&self) -> Result<Gate, ConfigError> {
        let builder = match &self.keys {
            Keys::Memory {
                cache, registry, ..
            } => Gate::builder(cache.clone()).usage_recorder(MemoryUsage(Arc::clone(registry))),
            #[cfg(feature = "postgres")]
            Keys::Postgres { cache, usage, .. } => {
                Gate::builder(cache.clone()).usage_recorder(usage.clone())
            }
        };
        #[cfg(feature = "redis")]
        let builder = match &self.cluster {
            Some(redis) => builder.cluster(redis.clone()),
            None => builder,
        };
        builder.entitlement(scopegate::error::API_ACCESS).build()
    }

    /// The full router: `/api/v1/…` behind scopegate, `/developer/keys`
    /// behind the admin token; with the `openapi` feature, `/openapi.json`,
    /// written from the same layers.
    #[allow(dead_code)] // main.rs keeps its gate (router_with); the tests need not.
    pub fn router(&self) -> Result<Router, Box<dyn std::error::Error>> {
        self.router_with(&self.gate()?)
    }

    /// The full router, its API routes behind `gate` (one from
    /// [`App::gate`]), so that the caller keeps the gate: to flush its
    /// limits on shutdown, for one.
    pub fn router_with(&self, gate: &Gate) -> Result<Router, Box<dyn std::error::Error>> {
        let scope = |name: &str| gate.require_scope(name);
        let mut guarded = Guarded::default();
        let mut api = Router::new();
        for resource in RESOURCES {
            let read = scope(&format!("{}:read", resource.name))?;
            let write = scope(&format!("{}:write", resource.name))?;
            api = api.merge(crud(
                &format!("/api/v1/{}", resource.name),
                resource.collection(),
                read,
                write,
                &mut guarded,
            ));
        }
        let webhooks = scope("webhooks:manage")?;
        api = api
            .merge(crud(
                "/api/v1/webhooks",
                Collection::new("whk", "Webhook"),
                webhooks.clone(),
                webhooks,
                &mut guarded,
            ))
            .merge(guides(scope("guides:read")?, &mut guarded));
        #[cfg(feature = "openapi")]
        {
            api = api.merge(openapi_route(&guarded)?);
        }
        #[cfg(not(feature = "openapi"))]
        let _ = guarded;

        let developer = Router::new()
            .route("/developer/keys", post(create_key).get(list_keys))
            .route("/developer/keys/{id}", axum::routing::delete(revoke_key))
            .route_layer(middleware::from_fn_with_state(self.clone(), require_admin))
            .with_state(self.clone());

        Ok(api.merge(developer).merge(developer::routes(self.clone())))
    }
}

/// Each API route, and the layer that guards it, recorded as the route is
/// built: what `/openapi.json` documents is what the router enforces.
#[derive(Default)]
struct Guarded(Vec<(Method, String, ScopeLayer)>);

impl Guarded {
    fn add(&mut self, method: Method, path: &str, layer: &ScopeLayer) {
        self.0.push((method, path.to_owned(), layer.clone()));
    }
}

/// A resource with CRUD routes, and the record it starts with.
struct Resource {
    name: &'static str,
    prefix: &'static str,
    label: &'static str,
    seed: fn() -> Value,
}

impl Resource {
    /// A new collection of this resource, holding its seed record.
    fn collection(&self) -> Shared {
        let collection = Collection::new(self.prefix, self.label);
        if let Value::Object(fields) = (self.seed)() {
            collection.insert(fields);
        }
        collection
    }
}

const RESOURCES: [Resource; 3] = [
    Resource {
        name: "contacts",
        prefix: "con",
        label: "Contact",
        seed: || json!({"name": "Ada Lovelace", "email": "ada@example.com"}),
    },
    Resource {
        name: "organisations",
        prefix: "org",
        label: "Organisation",
        seed: || json!({"name": "Acme Ltd"}),
    },
    Resource {
        name: "enrollments",
        prefix: "enr",
        label: "Enrollment",
        seed: || json!({"contact_id": "con_1", "guide_id": "gui_1"}),
    },
];

/// The demo workspaces' plans (entitlements and limits), for OAuth tokens.
struct DemoPlans;

#[async_trait::async_trait]
impl EntitlementSource for DemoPlans {
    async fn entitlements(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(to_strings(plan(plan_of(account_id)).0))
    }

    async fn limits(&self, account_id: &str) -> Result<Vec<Limit>, StoreError> {
        Ok(plan(plan_of(account_id)).1)
    }
}

/// A bad OAuth setting (never, without the OAuth features).
#[cfg(all(feature = "jwt", feature = "introspection"))]
pub type OAuthError = scopegate::store::oauth::OAuthConfigError;
/// A bad OAuth setting (never, without the OAuth features).
#[cfg(not(all(feature = "jwt", feature = "introspection")))]
pub type OAuthError = std::convert::Infallible;

/// The store behind the cache: API keys from `keys`, and OAuth tokens when
/// configured, with workspaces' plans from `plans`.
#[allow(unused_variables)]
fn chain(
    keys: impl scopegate::store::CredentialStore + 'static,
    plans: impl scopegate::store::EntitlementSource + 'static,
    oauth: Option<&OAuth>,
) -> Result<ChainStore, OAuthError> {
    match oauth {
        #[cfg(all(feature = "jwt", feature = "introspection"))]
        Some(oauth) => oauth.chain(keys, plans),
        #[cfg(not(all(feature = "jwt", feature = "introspection")))]
        Some(never) => match *never {},
        None => Ok(ChainStore::new().api_keys(keys)),
    }
}

fn to_strings(items: &[impl AsRef<str>]) -> Vec<String> {
    items.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// A JSON error in scopegate's error shape.
fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Response {
    let message = message.into();
    (status, Json(ErrorEnvelope::new(kind, &message))).into_response()
}

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

/// One resource's records, by id.
struct Collection {
    prefix: &'static str,
    label: &'static str,
    items: RwLock<BTreeMap<String, Value>>,
    next: AtomicU64,
}

type Shared = Arc<Collection>;

impl Collection {
    fn new(prefix: &'static str, label: &'static str) -> Shared {
        Arc::new(Collection {
            prefix,
            label,
            items: RwLock::default(),
            next: AtomicU64::new(1),
        })
    }

    fn items(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Value>> {
        self.items.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn not_found(&self, id: &str) -> Response {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} '{id}' was not found.", self.label),
        )
    }

    fn insert(&self, mut fields: Map<String, Value>) -> Value {
        let id = format!(
            "{}_{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        fields.insert("id".into(), Value::String(id.clone()));
        let record = Value::Object(fields);
        self.items().insert(id, record.clone());
        record
    }
}

/// `GET|POST base` and `GET|PATCH|DELETE base/{id}`; reads need `read`,
/// changes need `write`.
fn crud(
    base: &str,
    collection: Shared,
    read: ScopeLayer,
    write: ScopeLayer,
    guarded: &mut Guarded,
) -> Router {
    let item = format!("{base}/{{id}}");
    guarded.add(Method::GET, base, &read);
    guarded.add(Method::POST, base, &write);
    guarded.add(Method::GET, &item, &read);
    guarded.add(Method::PATCH, &item, &write);
    guarded.add(Method::DELETE, &item, &write);
    Router::new()
        .route(
            base,
            get(list)
                .route_layer(read.clone())
                .merge(post(create).route_layer(write.clone())),
        )
        .route(
            &item,
            get(show).route_layer(read).merge(
                axum::routing::patch(update)
                    .delete(remove)
                    .route_layer(write),
            ),
        )
        .with_state(collection)
}

async fn list(State(c): State<Shared>) -> Json<Value> {
    Json(json!({ "data": c.items().values().collect::<Vec<_>>() }))
}

async fn show(State(c): State<Shared>, Path(id): Path<String>) -> Response {
    match c.items().get(&id) {
        Some(record) => Json(record).into_response(),
        None => c.not_found(&id),
    }
}

async fn create(State(c): State<Shared>, body: Bytes) -> Response {
    match json_object(&body) {
        Ok(fields) => (StatusCode::CREATED, Json(c.insert(fields))).into_response(),
        Err(message) => invalid(message),
    }
}

async fn update(State(c): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let fields = match json_object(&body) {
        Ok(fields) => fields,
        Err(message) => return invalid(message),
    };
    let mut items = c.items();
    let Some(Value::Object(record)) = items.get_mut(&id) else {
        drop(items);
        return c.not_found(&id);
    };
    for (key, value) in fields {
        if key != "id" {
            record.insert(key, value);
        }
    }
    Json(Value::Object(record.clone())).into_response()
}

async fn remove(State(c): State<Shared>, Path(id): Path<String>) -> Response {
    let removed = c.items().remove(&id);
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => c.not_found(&id),
    }
}

/// A request body that must be a JSON object; what is wrong otherwise.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err("The request body must be a JSON object.".to_owned()),
        Err(e) => Err(format!("The request body is not valid JSON: {e}.")),
    }
}

/// Published guides are listed and viewable; drafts are not found.
fn guides(read: ScopeLayer, guarded: &mut Guarded) -> Router {
    guarded.add(Method::GET, "/api/v1/guides", &read);
    guarded.add(Method::GET, "/api/v1/guides/{id}", &read);
    let guides = Collection::new("gui", "Guide");
    for (title, published) in [
        ("Getting started", true),
        ("Importing contacts", true),
        ("Draft: SSO setup", false),
    ] {
        let fields = json!({"title": title, "published": published});
        if let Value::Object(fields) = fields {
            guides.insert(fields);
        }
    }
    async fn list_published(State(c): State<Shared>) -> Json<Value> {
        let items = c.items();
        let published: Vec<_> = items.values().filter(|g| g["published"] == true).collect();
        Json(json!({ "data": published }))
    }
    async fn show_published(State(c): State<Shared>, Path(id): Path<String>) -> Response {
        match c.items().get(&id).filter(|g| g["published"] == true) {
            Some(guide) => Json(guide).into_response(),
            None => c.not_found(&id),
        }
    }
    Router::new()
        .route(
            "/api/v1/guides",
            get(list_published).route_layer(read.clone()),
        )
        .route("/api/v1/guides/{id}", get(show_published).route_layer(read))
        .with_state(guides)
}

// ---------------------------------------------------------------------------
// Developer settings: API keys
// ---------------------------------------------------------------------------

async fn require_admin(State(app): State<App>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compare hashes, so the comparison's timing says nothing about the token.
    match presented.map(TokenHash::of) {
        Some(hash) if hash == app.admin => next.run(request).await,
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Developer settings require the admin token: 'Authorization: Bearer <ADMIN_TOKEN>'.",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn create_key(State(app): State<App>, body: Bytes) -> Response {
    let fields = match json_object(&body) {
        Ok(fields) => fields,
        Err(message) => return invalid(message),
    };
    let name = match fields.get("name") {
        Some(Value::String(name)) => match checked_name(name) {
            Ok(name) => name,
            Err(message) => return invalid(message),
        },
        _ => return invalid(NAME_RULE),
    };
    let scopes: Vec<String> = match fields.get("scopes") {
        Some(Value::Array(items)) if !items.is_empty() => {
            let Some(names) = items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() else {
                return invalid("'scopes' must be an array of scope names.");
            };
            match checked_scopes(names) {
                Ok(scopes) => scopes,
                Err(message) => return invalid(message),
            }
        }
        _ => return invalid("'scopes' must be a non-empty array of scope names."),
    };
    if let Some(other) = fields
        .keys()
        .find(|k| !["name", "scopes"].contains(&k.as_str()))
    {
        return invalid(format!("Unknown field '{other}'."));
    }

    let (id, token) = match app.keys.create(&name, &scopes).await {
        Ok(created) => created,
        Err(message) => return unavailable(message),
    };
    /// The create response, fields in the documented order. The token is
    /// shown here and never again.
    #[derive(serde::Serialize)]
    struct Created {
        id: String,
        token: String,
        name: String,
        scopes: Vec<String>,
    }
    (
        StatusCode::CREATED,
        Json(Created {
            id,
            token,
            name,
            scopes,
        }),
    )
        .into_response()
}

const NAME_RULE: &str = "'name' must be a non-empty string of at most 100 characters.";

/// A new key's name, checked (`/developer/keys` and the page).
fn checked_name(name: &str) -> Result<String, &'static str> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(NAME_RULE);
    }
    Ok(name.to_owned())
}

/// A new key's scopes, each from the catalog, without repeats
/// (`/developer/keys` and the page).
fn checked_scopes<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut scopes: Vec<String> = Vec::new();
    for name in names {
        if !SCOPES.contains(&name) {
            return Err(format!(
                "Unknown scope '{name}'. Known scopes: {}.",
                SCOPES.join(", ")
            ));
        }
        if !scopes.iter().any(|have| have == name) {
            scopes.push(name.to_owned());
        }
    }
    Ok(scopes)
}

async fn list_keys(State(app): State<App>) -> Response {
    match app.keys.list().await {
        Ok(keys) => {
            let keys: Vec<Value> = keys
                .into_iter()
                .map(|(id, key)| json!({"id": id, "name": key.name, "scopes": key.scopes}))
                .collect();
            Json(json!({ "data": keys })).into_response()
        }
        Err(message) => unavailable(message),
    }
}

async fn revoke_key(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.keys.revoke(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("API key '{id}' was not found."),
        ),
        Err(message) => unavailable(message),
    }
}

fn unavailable(message: String) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        message,
    )
}

impl Keys {
    /// Creates a key in the `ohk_` format; returns its id and token.
    async fn create(&self, name: &str, scopes: &[String]) -> Result<(String, String), String> {
        match self {
            Keys::Memory {
                store,
                cache,
                registry,
            } => {
                let token =
                    ApiKey::generate().map_err(|e| format!("No key could be generated: {e}."))?;
                let id = format!("key_{}", &TokenHash::of(&token).to_hex()[..16]);
                let hash = store.insert_token(&token, credential(&id, WORKSPACE, scopes));
                // The hash may have been looked up (and found wanting) before it existed.
                cache.invalidate(&hash).await;
                let record = KeyRecord {
                    name: name.to_owned(),
                    scopes: scopes.to_vec(),
                    last_used: None,
                };
                lock(registry).insert(id.clone(), record);
                Ok((id, token))
            }
            #[cfg(feature = "postgres")]
            Keys::Postgres { store, .. } => {
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let key = store
                    .create_key(WORKSPACE, name, &scopes, None)
                    .await
                    .map_err(|e| format!("The key store is unavailable: {e}."))?;
                // The response shows the token once; the store's copy is
                // wiped when `key` goes.
                Ok((key.record.id, String::clone(&key.token)))
            }
        }
    }

    /// The workspace's live keys, by id.
    async fn list(&self) -> Result<Vec<(String, KeyRecord)>, String> {
        match self {
            Keys::Memory { registry, .. } => Ok(lock(registry)
                .iter()
                .map(|(id, k)| (id.clone(), k.clone()))
                .collect()),
            #[cfg(feature = "postgres")]
            Keys::Postgres { store, .. } => {
                let keys = store
                    .list_keys(WORKSPACE)
                    .await
                    .map_err(|e| format!("The key store is unavailable: {e}."))?;
                Ok(keys
                    .into_iter()
                    .filter(|k| k.revoked_at.is_none())
                    .map(|k| {
                        (
                            k.id,
                            KeyRecord {
                                name: k.name,
                                scopes: k.scopes,
                                last_used: k.last_used_at,
                            },
                        )
                    })
                    .collect())
            }
        }
    }

    /// Revokes a key: in the store first, then in this instance's cache, so
    /// the very next request with it is refused. (Other instances hear of it
    /// through the database's notifications.)
    async fn revoke(&self, id: &str) -> Result<bool, String> {
        match self {
            Keys::Memory {
                store,
                cache,
                registry,
            } => {
                if lock(registry).remove(id).is_none() {
                    return Ok(false);
                }
                store.revoke_credential(id);
                cache.invalidate_credential(id);
                Ok(true)
            }
            #[cfg(feature = "postgres")]
            Keys::Postgres { store, cache, .. } => {
                let revoked = store
                    .revoke_key(id)
                    .await
                    .map_err(|e| format!("The key store is unavailable: {e}."))?;
                cache.invalidate_credential(id);
                Ok(revoked)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// `GET /metrics`: scopegate's metrics (and any other `metrics` the process
/// records) in the Prometheus text format. Public, as scrape endpoints
/// usually are: no label holds a token, a hash or an id.
#[cfg(feature = "metrics")]
pub fn metrics_route() -> Result<axum::Router, Box<dyn std::error::Error>> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    Ok(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                scopegate::metrics::publish();
                handle.render()
            }
        }),
    ))
}

/// `GET /openapi.json`: the API's OpenAPI 3.1 document. The operations and
/// their success responses are written here; their `security`, their 400,
/// 401, 403 and 503 responses (the exact bodies) and the security schemes
/// come from the layers that guard them, by `scopegate::openapi`.
#[cfg(feature = "openapi")]
fn openapi_route(guarded: &Guarded) -> Result<Router, Box<dyn std::error::Error>> {
    use scopegate::openapi::{utoipa::openapi::OpenApi, ApiSecurity, ERROR_SCHEMA};

    let record = json!({
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string"}}
    });
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")}
            }}
        })
    };
    let ok = |status: &str, description: &str, schema: &Value| {
        json!({ status: {
            "description": description,
            "content": {"application/json": {"schema": schema}}
        }})
    };
    let mut paths = Map::new();
    for (method, path, _) in &guarded.0 {
        let resource = path.split('/').nth(3).unwrap_or("records");
        let one = path.ends_with("{id}");
        let (verb, mut responses) = match (method.as_str(), one) {
            ("GET", false) => (
                "list",
                ok(
                    "200",
                    "The records.",
                    &json!({
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"type": "array", "items": record}}
                    }),
                ),
            ),
            ("POST", _) => ("create", ok("201", "The new record.", &record)),
            ("GET", true) => ("show", ok("200", "The record.", &record)),
            ("PATCH", _) => ("update", ok("200", "The updated record.", &record)),
            _ => ("delete", json!({"204": {"description": "Deleted."}})),
        };
        let mut operation = json!({
            "tags": [resource],
            "operationId": format!("{verb}_{resource}"),
            "summary": format!("{verb} {resource}"),
        });
        if one {
            operation["parameters"] = json!([{
                "name": "id", "in": "path", "required": true, "schema": {"type": "string"}
            }]);
            responses["404"] = error("No record has this id.");
        }
        if matches!(verb, "create" | "update") {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object"}}}
            });
            responses["400"] = error("The body is not a JSON object.");
        }
        operation["responses"] = responses;
        let item = paths.entry(path.clone()).or_insert_with(|| json!({}));
        item[method.as_str().to_ascii_lowercase()] = operation;
    }
    let mut doc: OpenApi = serde_json::from_value(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "OnboardingHub API",
            "version": "1",
            "description": "Every request carries `Authorization: Bearer <token>`: an API key from Developer settings or an OAuth 2.0 access token."
        },
        "paths": paths,
    }))?;
    guarded
        .0
        .iter()
        .fold(
            ApiSecurity::new()
                .scopes(crate::demo::SCOPE_TABLE)
                .authorization_code(
                    "https://onboarding-hub.com/oauth/authorize",
                    "https://onboarding-hub.com/oauth/token",
                ),
            |security, (method, path, layer)| security.route(method.clone(), path, layer),
        )
        .apply(&mut doc)?;
    let body = Bytes::from(serde_json::to_vec(&doc)?);
    Ok(Router::new().route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) }),
    ))
}

// ---------------------------------------------------------------------------
// Benchmark tooling (benches/e2e.sh), never for production
// ---------------------------------------------------------------------------

/// Unprotected twins of `GET /api/v1/contacts` for the end-to-end
/// benchmark's baseline: the same handler over the same seed data with no
/// layers at `/unprotected/api/v1/contacts`, and behind a `route_layer` that
/// does nothing at `/noop-layer/api/v1/contacts`, to tell what axum's
/// route-layer plumbing costs apart from what scopegate's layer does.
/// `main.rs` merges them into the router only with `BENCH_UNPROTECTED=1`.
#[allow(dead_code)] // The tests that include this file serve no benchmark.
pub fn bench_twins() -> Router {
    let contacts = RESOURCES[0].collection();
    let noop = get(list)
        .route_layer(tower::layer::util::Identity::new())
        .with_state(Arc::clone(&contacts));
    Router::new()
        .route(
            "/unprotected/api/v1/contacts",
            get(list).with_state(contacts),
        )
        .route("/noop-layer/api/v1/contacts", noop)
}
