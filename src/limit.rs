//! Plan limits: how much a credential may do, next to what (its scopes and
//! entitlements).
//!
//! A [`Limit`] is a named rate limit (`requests`: 100 per minute, burst 20)
//! or a quota (`monthly`: 100,000 per calendar month), counted per key or
//! per account (workspace). Stores attach a plan's limits to the
//! [`Credential`](crate::Credential) with
//! [`with_limits`](crate::Credential::with_limits), so they are resolved,
//! cached and invalidated with it. The layers count an admitted request
//! against them once, after its scopes and entitlement were checked (a
//! refused request spends nothing, even when an inner layer or an axum
//! [`RequireScope`](crate::extract) refuses it), at
//! the innermost layer's cost (1 unless the layer says otherwise with
//! [`ScopeLayer::cost`](crate::layer::ScopeLayer::cost)). A spent
//! limit is a 429 `rate_limited` or `quota_exceeded` with `Retry-After`;
//! every counted response carries the IETF `RateLimit-Policy` and
//! `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers).
//!
//! Rate limits use GCRA (the algorithm of `governor` and `redis-cell`):
//! `count` per `period` sustained, up to `burst` at once (`count` unless
//! set). Quotas count exactly, per calendar month in UTC. Both are kept in
//! the process, per gate, with no lock that all requests share; in cluster
//! mode (feature `redis`, module `cluster`) the instances of a service also
//! share them through Redis.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use scopegate::limit::{Limit, Per};
//! use scopegate::{Credential, CredentialKind};
//!
//! # fn main() -> Result<(), scopegate::limit::LimitError> {
//! let requests = Limit::rate("requests", 100, Duration::from_secs(60))?.with_burst(20)?;
//! let writes = Limit::rate("writes", 10, Duration::from_secs(1))?.per_account();
//! let monthly = Limit::monthly("monthly", 100_000)?.per_account();
//! assert_eq!(requests.policy_item(), r#""requests";q=100;w=60"#);
//! assert_eq!(monthly.per(), Per::Account);
//!
//! let credential = Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
//!     .with_entitlements(["api-access"])
//!     .with_limits([requests, writes, monthly]);
//! assert_eq!(credential.limits().len(), 3);
//!
//! assert!(Limit::rate("Requests!", 1, Duration::from_secs(1)).is_err());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// What a limit is counted per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Per {
    /// Each credential (API key, OAuth grant) has its own budget.
    Key,
    /// The credentials of one account (workspace) share one budget.
    Account,
}

/// A limit's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// GCRA: `count` per `period` sustained, up to `burst` at once.
    Rate {
        /// Requests (cost units) per period.
        count: NonZeroU32,
        /// The period.
        period: Duration,
        /// How many may come at once.
        burst: NonZeroU32,
    },
    /// `count` per calendar month (UTC), counted exactly.
    Monthly {
        /// Cost units per month.
        count: u64,
    },
}

/// A named rate limit or quota; see the [module docs](crate::limit).
///
/// Cloning is cheap (one `Arc`). Two limits are equal when their name, shape
/// and [`Per`] are: credentials of one plan count against the same budget
/// state, and a changed plan (another count or period) starts a new one.
#[derive(Clone)]
pub struct Limit(Arc<Spec>);

#[derive(PartialEq, Eq)]
struct Spec {
    name: Arc<str>,
    per: Per,
    kind: LimitKind,
    /// A hash of the above, taken once: limits key the state tables.
    digest: u64,
}

/// The longest limit name.
const MAX_NAME: usize = 64;

impl Limit {
    /// A rate limit of `count` per `period`, per key, with a burst of `count`.
    ///
    /// # Errors
    ///
    /// [`LimitError`] for an invalid name (see [`LimitError::Name`]), a
    /// `count` of 0, or a period under a millisecond or over a year.
    pub fn rate(name: &str, count: u32, period: Duration) -> Result<Limit, LimitError> {
        let count = NonZeroU32::new(count).ok_or(LimitError::Zero)?;
        if period < Duration::from_millis(1) || period > Duration::from_secs(366 * 86_400) {
            return Err(LimitError::Period(period));
        }
        Limit::new(
            name,
            Per::Key,
            LimitKind::Rate {
                count,
                period,
                burst: count,
            },
        )
    }

    /// A quota of `count` per calendar month (UTC), per key.
    ///
    /// # Errors
    ///
    /// [`LimitError`] for an invalid name or a `count` of 0 (an account that
    /// may not call the API lacks an entitlement instead).
    pub fn monthly(name: &str, count: u64) -> Result<Limit, LimitError> {
        if count == 0 {
            return Err(LimitError::Zero);
        }
        Limit::new(name, Per::Key, LimitKind::Monthly { count })
    }

    /// How many a rate limit lets through at once (default: its `count`).
    ///
    /// # Errors
    ///
    /// [`LimitError::Zero`] for 0; [`LimitError::NotRate`] on a quota.
    pub fn with_burst(self, burst: u32) -> Result<Limit, LimitError> {
        let burst = NonZeroU32::new(burst).ok_or(LimitError::Zero)?;
        match self.0.kind {
            LimitKind::Rate { count, period, .. } => Limit::new(
                &self.0.name,
                self.0.per,
                LimitKind::Rate {
                    count,
                    period,
                    burst,
                },
            ),
            LimitKind::Monthly { .. } => Err(LimitError::NotRate),
        }
    }

    /// Counts the limit per account (workspace) instead of per key.
    #[must_use]
    pub fn per_account(self) -> Limit {
        self.counted_per(Per::Account)
    }

    /// Counts the limit per `per` (a store reading it from a column).
    #[must_use]
    pub fn counted_per(self, per: Per) -> Limit {
        Limit::spec(Arc::clone(&self.0.name), per, self.0.kind)
    }

    fn new(name: &str, per: Per, kind: LimitKind) -> Result<Limit, LimitError> {
        Ok(Limit::spec(limit_name(name)?, per, kind))
    }

    fn spec(name: Arc<str>, per: Per, kind: LimitKind) -> Limit {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&*name, per, kind).hash(&mut hasher);
        Limit(Arc::new(Spec {
            name,
            per,
            kind,
            digest: hasher.finish(),
        }))
    }

    /// The name, e.g. `requests`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The name, shared.
    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.0.name
    }

    /// Per key or per account.
    pub fn per(&self) -> Per {
        self.0.per
    }

    /// Rate or quota, and its numbers.
    pub fn kind(&self) -> LimitKind {
        self.0.kind
    }

    /// This limit as an item of the `RateLimit-Policy` header:
    /// `"requests";q=100;w=60` (the quota and the window in seconds; a
    /// period that is not whole seconds is given over the next whole
    /// second, its quota rounded down, 1 at least); a monthly quota has no
    /// fixed window:
    /// `"monthly";q=100000`.
    pub fn policy_item(&self) -> String {
        let name = &self.0.name;
        match self.0.kind {
            LimitKind::Rate { count, period, .. } => {
                let (q, w) = if period.subsec_nanos() == 0 {
                    (u64::from(count.get()), period.as_secs())
                } else {
                    // The whole seconds around the period, and what they hold.
                    let w = period.as_secs() + 1;
                    let q = f64::from(count.get()) * w as f64 / period.as_secs_f64();
                    // Saturating: a float to integer cast cannot overflow.
                    ((q as u64).max(1), w)
                };
                format!(r#""{name}";q={q};w={w}"#)
            }
            LimitKind::Monthly { count } => format!(r#""{name}";q={count}"#),
        }
    }
}

impl PartialEq for Limit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Limit {}

impl Hash for Limit {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.digest);
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.0.name)
            .field("per", &self.0.per)
            .field("kind", &self.0.kind)
            .finish()
    }
}

/// Checks a limit name: 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`, starting
/// with a letter. It appears as is in messages, headers and storage keys.
pub(crate) fn limit_name(name: &str) -> Result<Arc<str>, LimitError> {
    let bytes = name.as_bytes();
    let ok = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.len() <= MAX_NAME
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    if ok {
        Ok(name.into())
    } else {
        Err(LimitError::Name(name.escape_debug().to_string()))
    }
}

/// The names a route counts against ([`Cost::only`]), each checked.
pub(crate) fn limit_names<I>(names: I) -> Result<Arc<[Arc<str>]>, LimitError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    names.into_iter().map(|n| limit_name(n.as_ref())).collect()
}

/// A limit could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitError {
    /// The name is not 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.` starting
    /// with a letter; holds the escaped name.
    Name(String),
    /// A count or burst of 0.
    Zero,
    /// A period under a millisecond or over a year.
    Period(Duration),
    /// A burst was given to a quota.
    NotRate,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::Name(name) => write!(
                f,
                "invalid limit name \"{name}\": use 1 to {MAX_NAME} of a-z, 0-9, '_', '-', '.', starting with a letter"
            ),
            LimitError::Zero => f.write_str("a limit's count and burst are at least 1"),
            LimitError::Period(period) => write!(
                f,
                "a rate limit's period is 1 ms to 366 days, not {period:?}"
            ),
            LimitError::NotRate => f.write_str("only a rate limit has a burst"),
        }
    }
}

impl std::error::Error for LimitError {}

/// What a route counts: how many units a request costs, and against which
/// of the credential's limits (all of them unless named).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) units: u32,
    pub(crate) only: Option<Arc<[Arc<str>]>>,
}

impl Default for Cost {
    fn default() -> Self {
        Cost {
            units: 1,
            only: None,
        }
    }
}

impl Cost {
    /// Whether a request on this route counts against `limit`.
    #[inline]
    pub(crate) fn counts(&self, limit: &Limit) -> bool {
        self.only
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| **n == *limit.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["requests", "writes", "a", "per-day.v2_x"] {
            assert!(limit_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Requests",
            "1st",
            "req uests",
            "req\"",
            "é",
            long.as_str(),
        ] {
            assert_eq!(
                limit_name(bad),
                Err(LimitError::Name(bad.escape_debug().to_string()))
            );
        }
    }

    #[test]
    fn shapes_are_checked_and_compared_by_value() {
        let minute = Duration::from_secs(60);
        assert_eq!(Limit::rate("r", 0, minute).unwrap_err(), LimitError::Zero);
        assert_eq!(
            Limit::rate("r", 1, Duration::ZERO).unwrap_err(),
            LimitError::Period(Duration::ZERO)
        );
        assert_eq!(Limit::monthly("m", 0).unwrap_err(), LimitError::Zero);
        assert_eq!(
            Limit::monthly("m", 1).unwrap().with_burst(2).unwrap_err(),
            LimitError::NotRate
        );
        let a = Limit::rate("requests", 100, minute).unwrap();
        let b = Limit::rate("requests", 100, minute).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0.digest, b.0.digest);
        assert_ne!(a, b.clone().per_account());
        assert_ne!(a, b.with_burst(20).unwrap());
        assert_ne!(a, Limit::rate("requests", 200, minute).unwrap());
    }

    #[test]
    fn policy_items() {
        let limit = Limit::rate("requests", 5, Duration::from_secs(60)).unwrap();
        assert_eq!(limit.policy_item(), r#""requests";q=5;w=60"#);
        let limit = Limit::rate("fast", 10, Duration::from_millis(500)).unwrap();
        assert_eq!(limit.policy_item(), r#""fast";q=20;w=1"#);
        let limit = Limit::rate("slow", 1, Duration::from_millis(1500)).unwrap();
        assert_eq!(limit.policy_item(), r#""slow";q=1;w=2"#);
        let limit = Limit::monthly("monthly", 100_000).unwrap();
        assert_eq!(limit.policy_item(), r#""monthly";q=100000"#);
    }
}
