//! Key management: plans, accounts and API keys, as developer settings
//! need them.

use std::fmt;
use std::time::SystemTime;

use sqlx::Row;
use zeroize::Zeroizing;

use super::{to_millis, to_time, PgCredentialStore, PgStoreError};
use crate::credential::TokenHash;
use crate::key::ApiKey;
use crate::scope::Scope;

/// A key just created: its token (shown once) and its stored record.
pub struct NewKey {
    /// The plaintext token. Show it to the user once; it is not stored, and
    /// it is wiped from memory when dropped.
    pub token: Zeroizing<String>,
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

fn check_scopes(scopes: &[&str]) -> Result<Vec<String>, PgStoreError> {
    scopes
        .iter()
        .map(|s| Scope::new(s).map(|scope| scope.as_str().to_owned()))
        .collect::<Result<_, _>>()
        .map_err(PgStoreError::Scope)
}

impl PgCredentialStore {
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
        Ok(NewKey {
            token: Zeroizing::new(token),
            record,
        })
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
