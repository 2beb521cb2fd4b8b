//! A PostgreSQL credential store (feature `postgres`): API keys, accounts
//! (workspaces) and plans in the application's database, shared by every
//! instance of the API.
//!
//! Keys are stored by the SHA-256 of their token; the token itself is shown
//! once, by [`create_key`](PgCredentialStore::create_key), and never written.
//! [`resolve`](crate::CredentialStore::resolve) is one indexed query that
//! returns the key with its account's plan entitlements.
//!
//! # Example
//!
//! ```no_run
//! use scopegate::{CachedStore, Gate, PgCredentialStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
//! let store = PgCredentialStore::new(pool);
//! store.migrate().await?; // the embedded migrations, idempotent
//!
//! store.set_plan("pro", &["api-access"]).await?;
//! store.upsert_account("ws_acme", "pro").await?;
//! let key = store.create_key("ws_acme", "CRM sync", &["contacts:read"], None).await?;
//! println!("your key, shown once: {}", key.token);
//!
//! let gate = Gate::new(CachedStore::new(store.clone()));
//! # let _ = gate;
//! store.revoke_key(&key.record.id).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::{CredentialStore, EntitlementSource, StoreError, UsageRecorder};
use crate::cache::CachedStore;
use crate::credential::{Credential, CredentialKind, PresentedToken, TokenHash};
use crate::key::ApiKey;
use crate::scope::{Scope, ScopeError, ScopeSet};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Credentials in PostgreSQL. Cheap to clone (the pool is shared).
///
/// See the [module docs](crate::store::postgres) for an example.
#[derive(Clone, Debug)]
pub struct PgCredentialStore {
    pool: PgPool,
}

/// A key just created: its token (shown once) and its stored record.
pub struct NewKey {
    /// The plaintext token. Show it to the user once; it is not stored.
    pub token: String,
    /// What is stored.
    pub record: ApiKeyRecord,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("token", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// A stored API key, as developer settings list it: never its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's id, e.g. `key_3f6c0a8e5d1b47c2`.
    pub id: String,
    /// The account (workspace) it belongs to.
    pub account_id: String,
    /// The name its creator gave it.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// When it was last used, if recorded.
    pub last_used_at: Option<SystemTime>,
}

/// A database operation of [`PgCredentialStore`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PgStoreError {
    /// The query failed.
    Database(sqlx::Error),
    /// The migrations failed.
    Migrate(sqlx::migrate::MigrateError),
    /// A scope name is invalid.
    Scope(ScopeError),
    /// The OS random generator failed; no key was made.
    Random(getrandom::Error),
}

impl fmt::Display for PgStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgStoreError::Database(e) => write!(f, "database error: {e}"),
            PgStoreError::Migrate(e) => write!(f, "migration failed: {e}"),
            PgStoreError::Scope(e) => e.fmt(f),
            PgStoreError::Random(e) => write!(f, "OS random generator failed: {e}"),
        }
    }
}

impl std::error::Error for PgStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgStoreError::Database(e) => Some(e),
            PgStoreError::Migrate(e) => Some(e),
            PgStoreError::Scope(e) => Some(e),
            PgStoreError::Random(_) => None,
        }
    }
}

impl From<sqlx::Error> for PgStoreError {
    fn from(e: sqlx::Error) -> Self {
        PgStoreError::Database(e)
    }
}

/// Timestamps cross the wire as Unix milliseconds: no date-time crate needed.
fn to_time(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    }
}

fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn check_scopes(scopes: &[&str]) -> Result<Vec<String>, PgStoreError> {
    scopes
        .iter()
        .map(|s| Scope::new(s).map(|scope| scope.as_str().to_owned()))
        .collect::<Result<_, _>>()
        .map_err(PgStoreError::Scope)
}

impl PgCredentialStore {
    /// A store over `pool`. Run [`migrate`](Self::migrate) once before use.
    pub fn new(pool: PgPool) -> Self {
        PgCredentialStore { pool }
    }

    /// The embedded migrations, to run with your own migration tooling.
    pub fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    /// Runs the embedded migrations (idempotent).
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Migrate`].
    pub async fn migrate(&self) -> Result<(), PgStoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(PgStoreError::Migrate)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates `plan`, or replaces its entitlements.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Database`].
    pub async fn set_plan(&self, plan: &str, entitlements: &[&str]) -> Result<(), PgStoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO scopegate_plans (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(plan)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM scopegate_plan_entitlements WHERE plan_id = $1")
            .bind(plan)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO scopegate_plan_entitlements (plan_id, entitlement) SELECT $1, unnest($2::TEXT[])")
            .bind(plan)
            .bind(entitlements)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates `account` on `plan`, or moves it to `plan`.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Database`], for example when the plan does not exist.
    pub async fn upsert_account(&self, account: &str, plan: &str) -> Result<(), PgStoreError> {
        sqlx::query(
            "INSERT INTO scopegate_accounts (id, plan_id) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET plan_id = EXCLUDED.plan_id",
        )
        .bind(account)
        .bind(plan)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates a key in the `ohk_` format ([`ApiKey`]) and returns its token,
    /// once, with the stored record. Only the token's SHA-256 is written.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Scope`] for an invalid scope name,
    /// [`PgStoreError::Random`], or [`PgStoreError::Database`] (for example
    /// for an unknown account).
    pub async fn create_key(
        &self,
        account: &str,
        name: &str,
        scopes: &[&str],
        expires_at: Option<SystemTime>,
    ) -> Result<NewKey, PgStoreError> {
        let scopes = check_scopes(scopes)?;
        let token = ApiKey::generate().map_err(PgStoreError::Random)?;
        let mut id_bytes = [0u8; 8];
        getrandom::fill(&mut id_bytes).map_err(PgStoreError::Random)?;
        let id: String = std::iter::once("key_".to_owned())
            .chain(id_bytes.iter().map(|b| format!("{b:02x}")))
            .collect();
        let record = self
            .insert_key(
                &id,
                account,
                name,
                &TokenHash::of(&token),
                &scopes,
                expires_at,
            )
            .await?;
        Ok(NewKey { token, record })
    }

    /// Stores a key made elsewhere, by its token's hash, unless a key with
    /// this id exists already (so seeding is idempotent). Returns whether it
    /// was inserted.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Scope`] or [`PgStoreError::Database`].
    pub async fn import_key(
        &self,
        id: &str,
        account: &str,
        name: &str,
        hash: &TokenHash,
        scopes: &[&str],
    ) -> Result<bool, PgStoreError> {
        let scopes = check_scopes(scopes)?;
        let inserted = sqlx::query(
            "INSERT INTO scopegate_api_keys (id, account_id, name, token_sha256, scopes)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(account)
        .bind(name)
        .bind(&hash.as_bytes()[..])
        .bind(&scopes)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn insert_key(
        &self,
        id: &str,
        account: &str,
        name: &str,
        hash: &TokenHash,
        scopes: &[String],
        expires_at: Option<SystemTime>,
    ) -> Result<ApiKeyRecord, PgStoreError> {
        let query = format!(
            "INSERT INTO scopegate_api_keys (id, account_id, name, token_sha256, scopes, expires_at)
             VALUES ($1, $2, $3, $4, $5, to_timestamp($6::BIGINT / 1000.0))
             RETURNING {RECORD_COLUMNS}"
        );
        let row = sqlx::query(&query)
            .bind(id)
            .bind(account)
            .bind(name)
            .bind(&hash.as_bytes()[..])
            .bind(scopes)
            .bind(expires_at.map(to_millis))
            .fetch_one(&self.pool)
            .await?;
        Ok(record(&row)?)
    }

    /// Revokes a key: it stops resolving at once in the database; cached
    /// copies expire with the cache's `time_to_live` unless invalidated.
    /// Returns whether a live key was revoked.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Database`].
    pub async fn revoke_key(&self, id: &str) -> Result<bool, PgStoreError> {
        let done = sqlx::query(
            "UPDATE scopegate_api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a key's scopes. Returns whether the key exists.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Scope`] or [`PgStoreError::Database`].
    pub async fn set_scopes(&self, id: &str, scopes: &[&str]) -> Result<bool, PgStoreError> {
        let scopes = check_scopes(scopes)?;
        let done = sqlx::query("UPDATE scopegate_api_keys SET scopes = $2 WHERE id = $1")
            .bind(id)
            .bind(&scopes)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The keys of `account`, revoked ones included, oldest first.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Database`].
    pub async fn list_keys(&self, account: &str) -> Result<Vec<ApiKeyRecord>, PgStoreError> {
        let query =
            format!("SELECT {RECORD_COLUMNS} FROM scopegate_api_keys WHERE account_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&query)
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| record(row).map_err(PgStoreError::from))
            .collect()
    }
}

/// The columns of an [`ApiKeyRecord`], timestamps as Unix milliseconds.
const RECORD_COLUMNS: &str = "id, account_id, name, scopes,
    (EXTRACT(EPOCH FROM created_at) * 1000)::BIGINT AS created_ms,
    (EXTRACT(EPOCH FROM expires_at) * 1000)::BIGINT AS expires_ms,
    (EXTRACT(EPOCH FROM revoked_at) * 1000)::BIGINT AS revoked_ms,
    (EXTRACT(EPOCH FROM last_used_at) * 1000)::BIGINT AS last_used_ms";

fn record(row: &sqlx::postgres::PgRow) -> Result<ApiKeyRecord, sqlx::Error> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        scopes: row.try_get("scopes")?,
        created_at: to_time(row.try_get("created_ms")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_ms")?.map(to_time),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_ms")?.map(to_time),
        last_used_at: row.try_get::<Option<i64>, _>("last_used_ms")?.map(to_time),
    })
}

/// The channel the migrations' triggers notify.
pub const INVALIDATION_CHANNEL: &str = "scopegate_invalidate";

/// What the invalidation listener reports through its handle.
#[derive(Debug, Default)]
struct ListenerState {
    connected: AtomicBool,
    reconnects: AtomicU64,
    applied: AtomicU64,
}

/// The running invalidation listener of one instance; see
/// [`PgCredentialStore::spawn_invalidation_listener`]. Dropping the handle
/// stops the listener.
#[derive(Debug)]
pub struct InvalidationListener {
    state: Arc<ListenerState>,
    task: tokio::task::JoinHandle<()>,
}

impl InvalidationListener {
    /// Whether the listener is connected: while it is, changes reach this
    /// instance's cache as soon as their transaction commits.
    pub fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::SeqCst)
    }

    /// How many times the listener has (re)connected.
    pub fn connections(&self) -> u64 {
        self.state.reconnects.load(Ordering::SeqCst)
    }

    /// How many notifications it has applied.
    pub fn applied(&self) -> u64 {
        self.state.applied.load(Ordering::SeqCst)
    }
}

impl Drop for InvalidationListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgCredentialStore {
    /// Starts this instance's invalidation listener: a task on a connection
    /// of its own (`application_name = scopegate-listener`) that applies the
    /// migrations' notifications to `cache`, so that a key revoked, a scope
    /// changed or a plan downgraded through any instance stops working on
    /// this one as soon as the change commits.
    ///
    /// If the connection drops, this instance cannot know what it missed: it
    /// invalidates its whole cache at once, and again every `fallback` until
    /// it is reconnected (then once more). The revocation bound is therefore
    /// the notification's delivery while connected, and `fallback` while not.
    ///
    /// Needs a Tokio runtime.
    pub fn spawn_invalidation_listener<S>(
        &self,
        cache: CachedStore<S>,
        fallback: Duration,
    ) -> InvalidationListener
    where
        S: CredentialStore + 'static,
    {
        let options = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name("scopegate-listener");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let state = Arc::new(ListenerState::default());
        let task = tokio::spawn(listen(pool, cache, fallback, Arc::clone(&state)));
        InvalidationListener { state, task }
    }
}

async fn listen<S: CredentialStore>(
    pool: PgPool,
    cache: CachedStore<S>,
    fallback: Duration,
    state: Arc<ListenerState>,
) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(INVALIDATION_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(_error) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "scopegate::store", error = %_error, "invalidation listener cannot connect; dropping the cache every {fallback:?}");
                cache.invalidate_all();
                tokio::time::sleep(fallback).await;
                continue;
            }
        };
        // Whatever happened while not listening is unknown: start afresh.
        cache.invalidate_all();
        state.connected.store(true, Ordering::SeqCst);
        state.reconnects.fetch_add(1, Ordering::SeqCst);
        // `None` or `Err`: the connection was lost or failed.
        while let Ok(Some(notification)) = listener.try_recv().await {
            apply(&cache, notification.payload()).await;
            state.applied.fetch_add(1, Ordering::SeqCst);
        }
        state.connected.store(false, Ordering::SeqCst);
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "scopegate::store", "invalidation listener disconnected; dropping the cache until it reconnects");
        cache.invalidate_all();
    }
}

/// Batches `last_used_at` updates off the request path; see
/// [`PgCredentialStore::spawn_usage_recorder`]. Give it to
/// [`GateBuilder::usage_recorder`](crate::GateBuilder::usage_recorder).
/// Dropping every clone stops the flusher after a last flush.
#[derive(Clone, Debug)]
pub struct PgUsageRecorder {
    queue: tokio::sync::mpsc::Sender<Arc<Credential>>,
}

impl UsageRecorder for PgUsageRecorder {
    fn record(&self, credential: &Arc<Credential>) {
        // Never waits: when the queue is full the use is not recorded, and
        // the key's next use will be.
        let _ = self.queue.try_send(Arc::clone(credential));
    }
}

/// Uses queued before the flusher drops what it cannot take.
const USAGE_QUEUE: usize = 4096;

impl PgCredentialStore {
    /// Starts a task that sets `last_used_at` for the keys used since its
    /// last flush, every `every`, in one `UPDATE`; returns the recorder to
    /// give the gate. Requests never wait for it; under extreme load a use
    /// may go unrecorded (the next one is recorded). Needs a Tokio runtime.
    pub fn spawn_usage_recorder(&self, every: Duration) -> PgUsageRecorder {
        let (queue, mut uses) = tokio::sync::mpsc::channel::<Arc<Credential>>(USAGE_QUEUE);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
            loop {
                tokio::time::sleep(every).await;
                let closed = loop {
                    match uses.try_recv() {
                        Ok(credential) => {
                            if !used.contains(credential.id()) {
                                used.insert(credential.id().to_owned());
                            }
                        }
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break false,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break true,
                    }
                };
                if !used.is_empty() {
                    let ids: Vec<String> = used.drain().collect();
                    let _result = sqlx::query(
                        "UPDATE scopegate_api_keys SET last_used_at = now() WHERE id = ANY($1)",
                    )
                    .bind(&ids)
                    .execute(&pool)
                    .await;
                    #[cfg(feature = "tracing")]
                    if let Err(error) = _result {
                        tracing::warn!(target: "scopegate::store", %error, keys = ids.len(), "last_used_at not recorded");
                    }
                }
                if closed {
                    return;
                }
            }
        });
        PgUsageRecorder { queue }
    }
}

/// Applies one notification to the cache.
async fn apply<S: CredentialStore>(cache: &CachedStore<S>, payload: &str) {
    match payload.split_once(':') {
        Some(("credential", id)) => cache.invalidate_credential(id),
        Some(("account", id)) => cache.invalidate_account(id),
        Some(("hash", hex)) => match TokenHash::from_hex(hex) {
            Ok(hash) => cache.invalidate_not_found(&hash).await,
            Err(_) => cache.invalidate_all(),
        },
        // Unknown: be safe.
        _ => cache.invalidate_all(),
    }
}

const RESOLVE: &str = "
    SELECT k.id, k.account_id, k.scopes,
           (EXTRACT(EPOCH FROM k.expires_at) * 1000)::BIGINT AS expires_ms,
           ARRAY(SELECT e.entitlement FROM scopegate_plan_entitlements e
                 WHERE e.plan_id = a.plan_id ORDER BY e.entitlement) AS entitlements
    FROM scopegate_api_keys k
    JOIN scopegate_accounts a ON a.id = k.account_id
    WHERE k.token_sha256 = $1
      AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())";

/// An account's plan entitlements, for OAuth tokens
/// ([`EntitlementSource`]): one indexed query. Plan changes reach cached
/// OAuth credentials through the same `account:` notifications as keys.
#[async_trait]
impl EntitlementSource for PgCredentialStore {
    async fn entitlements(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT e.entitlement FROM scopegate_accounts a
             JOIN scopegate_plan_entitlements e ON e.plan_id = a.plan_id
             WHERE a.id = $1 ORDER BY e.entitlement",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::new)
    }
}

#[async_trait]
impl CredentialStore for PgCredentialStore {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        let hash = token.hash();
        let row = sqlx::query(RESOLVE)
            .bind(&hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::new)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let scopes: Vec<String> = row.try_get("scopes").map_err(StoreError::new)?;
        let entitlements: Vec<String> = row.try_get("entitlements").map_err(StoreError::new)?;
        let mut credential = Credential::new(
            row.try_get::<String, _>("id").map_err(StoreError::new)?,
            row.try_get::<String, _>("account_id")
                .map_err(StoreError::new)?,
            CredentialKind::ApiKey,
        )
        // A scope the database holds but scopegate cannot parse is corrupt
        // data: refuse (503) rather than guess.
        .with_scopes(ScopeSet::parse(&scopes).map_err(StoreError::new)?)
        .with_entitlements(entitlements);
        if let Some(ms) = row
            .try_get::<Option<i64>, _>("expires_ms")
            .map_err(StoreError::new)?
        {
            credential = credential.with_expires_at(to_time(ms));
        }
        Ok(Some(credential))
    }
}
