//! Plan limits in `scopegate_plan_limits`: set per plan, read with the
//! credential as one JSON column.

use std::time::Duration;

use serde::Deserialize;

use super::{PgCredentialStore, PgStoreError};
use crate::limit::{Limit, LimitKind, Per};
use crate::store::StoreError;

/// The limits of the plan of account `a`, as a JSON array (text): a
/// subquery of the resolve query, read by [`parse`]. A macro, for `concat!`.
macro_rules! limits_of_account_a {
    () => {
        "(SELECT COALESCE(json_agg(json_build_object(
                'name', l.name, 'kind', l.kind, 'count', l.count,
                'period_ms', l.period_ms, 'burst', l.burst, 'per', l.per)
            ORDER BY l.name), '[]')::TEXT
         FROM scopegate_plan_limits l WHERE l.plan_id = a.plan_id)"
    };
}
pub(super) use limits_of_account_a;

/// One row of `scopegate_plan_limits`, as `limits_of_account_a!` writes it.
#[derive(Deserialize)]
struct Row {
    name: String,
    kind: String,
    count: u64,
    period_ms: Option<u64>,
    burst: Option<u32>,
    per: String,
}

/// The limits in `json`. A row scopegate cannot read is corrupt data: the
/// credential is refused (503) rather than let through unlimited.
pub(super) fn parse(json: &str) -> Result<Vec<Limit>, StoreError> {
    let rows: Vec<Row> = serde_json::from_str(json).map_err(StoreError::new)?;
    rows.into_iter().map(Row::into_limit).collect()
}

impl Row {
    fn into_limit(self) -> Result<Limit, StoreError> {
        let corrupt = |what: &str| {
            StoreError::new(std::io::Error::other(format!(
                "scopegate_plan_limits row {:?}: {what}",
                self.name
            )))
        };
        let limit = match (self.kind.as_str(), self.period_ms) {
            ("rate", Some(ms)) => {
                let count = u32::try_from(self.count).map_err(|_| corrupt("count too large"))?;
                let limit = Limit::rate(&self.name, count, Duration::from_millis(ms))
                    .map_err(StoreError::new)?;
                match self.burst {
                    Some(burst) => limit.with_burst(burst).map_err(StoreError::new)?,
                    None => limit,
                }
            }
            ("monthly", None) => Limit::monthly(&self.name, self.count).map_err(StoreError::new)?,
            _ => return Err(corrupt("unknown kind, or a period that does not fit it")),
        };
        match self.per.as_str() {
            "key" => Ok(limit),
            "account" => Ok(limit.per_account()),
            _ => Err(corrupt("per is neither 'key' nor 'account'")),
        }
    }
}

impl PgCredentialStore {
    /// Replaces the limits of `plan` (creating the plan if needed). Every
    /// account on it is notified (`account:<id>`), so running instances
    /// count against the new limits from their next request.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Period`] for a rate period that is not a whole number
    /// of milliseconds (the column's unit); [`PgStoreError::Database`] when
    /// the database fails.
    pub async fn set_plan_limits(&self, plan: &str, limits: &[Limit]) -> Result<(), PgStoreError> {
        let rows = limits
            .iter()
            .map(|limit| {
                let (kind, count, period_ms, burst) = match limit.kind() {
                    LimitKind::Rate {
                        count,
                        period,
                        burst,
                    } => {
                        let ms = i64::try_from(period.as_millis())
                            .ok()
                            .filter(|ms| Duration::from_millis(ms.unsigned_abs()) == period)
                            .ok_or(PgStoreError::Period(period))?;
                        let burst = (burst != count).then_some(i64::from(burst.get()));
                        ("rate", i64::from(count.get()), Some(ms), burst)
                    }
                    LimitKind::Monthly { count } => {
                        // A monthly count over i64::MAX is unlimited in all but name.
                        (
                            "monthly",
                            i64::try_from(count).unwrap_or(i64::MAX),
                            None,
                            None,
                        )
                    }
                };
                let per = match limit.per() {
                    Per::Key => "key",
                    Per::Account => "account",
                };
                Ok((limit.name(), kind, count, period_ms, burst, per))
            })
            .collect::<Result<Vec<_>, PgStoreError>>()?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO scopegate_plans (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(plan)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM scopegate_plan_limits WHERE plan_id = $1")
            .bind(plan)
            .execute(&mut *tx)
            .await?;
        for (name, kind, count, period_ms, burst, per) in rows {
            sqlx::query(
                "INSERT INTO scopegate_plan_limits (plan_id, name, kind, count, period_ms, burst, per)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(plan)
            .bind(name)
            .bind(kind)
            .bind(count)
            .bind(period_ms)
            .bind(burst)
            .bind(per)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The limits of `plan`, by name; empty for a plan without limits or an
    /// unknown plan.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::Database`] when the database fails or holds a row
    /// scopegate cannot read.
    pub async fn plan_limits(&self, plan: &str) -> Result<Vec<Limit>, PgStoreError> {
        let json: String = sqlx::query_scalar(concat!(
            "SELECT ",
            limits_of_account_a!(),
            " FROM (SELECT $1::TEXT AS plan_id) a"
        ))
        .bind(plan)
        .fetch_one(&self.pool)
        .await?;
        parse(&json).map_err(|e| PgStoreError::Database(sqlx::Error::Decode(Box::new(e))))
    }
}
