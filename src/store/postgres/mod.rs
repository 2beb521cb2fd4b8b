//! A PostgreSQL credential store (feature `postgres`): API keys, accounts
//! (workspaces) and plans in the application's database, shared by every
//! instance of the API.
//!
//! Keys are stored by the SHA-256 of their token; the token itself is shown
//! once, by [`create_key`](PgCredentialStore::create_key), and never written.
//! [`resolve`](crate::store::CredentialStore::resolve) is one indexed query that
//! returns the key with its account's plan: entitlements and
//! [limits](crate::limit) ([`set_plan_limits`](PgCredentialStore::set_plan_limits)).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use scopegate::limit::Limit;
//! use scopegate::{CachedStore, Gate};
//! use scopegate::store::postgres::PgCredentialStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
//! let store = PgCredentialStore::new(pool);
//! store.migrate().await?; // the embedded migrations, idempotent
//!
//! store.set_plan("pro", &["api-access"]).await?;
//! let requests = Limit::rate("requests", 100, Duration::from_secs(60))?.with_burst(20)?;
//! store.set_plan_limits("pro", &[requests]).await?;
//! store.upsert_account("ws_acme", "pro").await?;
//! let key = store.create_key("ws_acme", "CRM sync", &["contacts:read"], None).await?;
//! println!("your key, shown once: {}", key.token.as_str());
//!
//! let gate = Gate::new(CachedStore::new(store.clone()));
//! # let _ = gate;
//! store.revoke_key(&key.record.id).await?;
//! # Ok(())
//! # }
//! ```

mod keys;
mod limits;
mod listener;
mod usage;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Row};

use crate::credential::{Credential, CredentialKind, PresentedToken};
use crate::limit::Limit;
use crate::scope::{ScopeError, ScopeSet};
use crate::store::{CredentialStore, EntitlementSource, StoreError};
use limits::limits_of_account_a;

#[doc(inline)]
pub use keys::{ApiKeyRecord, NewKey};
#[doc(inline)]
pub use listener::{InvalidationListener, INVALIDATION_CHANNEL};
#[doc(inline)]
pub use usage::PgUsageRecorder;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Credentials in PostgreSQL. Cheap to clone (the pool is shared).
///
/// See the [module docs](crate::store::postgres) for an example.
#[derive(Clone, Debug)]
pub struct PgCredentialStore {
    pool: PgPool,
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
    /// A rate limit's period is not a whole number of milliseconds, the unit
    /// `scopegate_plan_limits` stores.
    Period(Duration),
}

impl fmt::Display for PgStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgStoreError::Database(e) => write!(f, "database error: {e}"),
            PgStoreError::Migrate(e) => write!(f, "migration failed: {e}"),
            PgStoreError::Scope(e) => e.fmt(f),
            PgStoreError::Random(e) => write!(f, "OS random generator failed: {e}"),
            PgStoreError::Period(period) => write!(
                f,
                "a limit's period of {period:?} is not a whole number of milliseconds"
            ),
        }
    }
}

impl std::error::Error for PgStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgStoreError::Database(e) => Some(e),
            PgStoreError::Migrate(e) => Some(e),
            PgStoreError::Scope(e) => Some(e),
            PgStoreError::Random(_) | PgStoreError::Period(_) => None,
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
}

const RESOLVE: &str = concat!(
    "SELECT k.id, k.account_id, k.scopes,
           (EXTRACT(EPOCH FROM k.expires_at) * 1000)::BIGINT AS expires_ms,
           ARRAY(SELECT e.entitlement FROM scopegate_plan_entitlements e
                 WHERE e.plan_id = a.plan_id ORDER BY e.entitlement) AS entitlements, ",
    limits_of_account_a!(),
    " AS limits
    FROM scopegate_api_keys k
    JOIN scopegate_accounts a ON a.id = k.account_id
    WHERE k.token_sha256 = $1
      AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())"
);

/// An account's plan entitlements and limits, for OAuth tokens
/// ([`EntitlementSource`]): one indexed query each. Plan changes reach cached
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

    async fn limits(&self, account_id: &str) -> Result<Vec<Limit>, StoreError> {
        let json: Option<String> = sqlx::query_scalar(concat!(
            "SELECT ",
            limits_of_account_a!(),
            " FROM scopegate_accounts a WHERE a.id = $1"
        ))
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::new)?;
        json.map_or_else(|| Ok(Vec::new()), |json| limits::parse(&json))
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
        .with_entitlements(entitlements)
        .with_limits(limits::parse(
            row.try_get("limits").map_err(StoreError::new)?,
        )?);
        if let Some(ms) = row
            .try_get::<Option<i64>, _>("expires_ms")
            .map_err(StoreError::new)?
        {
            credential = credential.with_expires_at(to_time(ms));
        }
        Ok(Some(credential))
    }
}
