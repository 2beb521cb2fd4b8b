//! Credentials and token hashes.
//!
//! A [`Credential`] is what a bearer token stands for: an API key or an OAuth
//! client acting for an account (workspace), with its scopes and the account's
//! plan entitlements. Stores return credentials; layers put them into request
//! extensions as `Arc<Credential>` for handlers to read.
//!
//! A [`TokenHash`] is the SHA-256 of a presented token. It is the only form
//! in which the cache and the stores keep a token; the raw token is never
//! stored. (A thread's own copies of recent answers are found by a keyed MAC
//! of the token instead, which reveals no more; the SHA-256 is taken when
//! they have no answer.) A store that must see the token itself, to verify
//! a JWT or ask an authorization server, gets it in a [`PresentedToken`] on
//! a cache miss, dropped when the store call returns.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use scopegate::{Credential, CredentialKind, ScopeSet};
//! use scopegate::credential::TokenHash;
//!
//! # fn main() -> Result<(), scopegate::scope::ScopeError> {
//! let credential = Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
//!     .with_scopes(ScopeSet::parse(["contacts:read"])?)
//!     .with_entitlements(["api-access"])
//!     .with_expires_at(SystemTime::now() + Duration::from_secs(3600));
//!
//! assert!(credential.has_entitlement("api-access"));
//! assert!(!credential.is_expired(SystemTime::now()));
//!
//! let hash = TokenHash::of("ohk_demo_all_scopes");
//! assert_eq!(hash.to_hex().len(), 64);
//! // Debug shows only a prefix of the hash, never a token.
//! assert!(format!("{hash:?}").ends_with("…)"));
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::limit::{Limit, Per};
use crate::scope::ScopeSet;

/// The SHA-256 digest of a bearer token.
///
/// Caches and stores are keyed by this value. `Debug` prints only the first
/// four bytes, which is enough to correlate log lines and useless to an
/// attacker.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenHash([u8; 32]);

impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The digest has a fixed length: no length prefix needed.
        state.write(&self.0);
    }
}

impl TokenHash {
    /// Hashes a token.
    pub fn of(token: impl AsRef<[u8]>) -> Self {
        TokenHash(Sha256::digest(token.as_ref()).into())
    }

    /// Wraps a digest computed elsewhere, e.g. read from a database column.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenHash(bytes)
    }

    /// The digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Parses 64 hex digits (either case).
    ///
    /// # Errors
    ///
    /// [`InvalidTokenHash`] when `hex` is not exactly 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, InvalidTokenHash> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return Err(InvalidTokenHash);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(TokenHash(out))
    }
}

fn nibble(c: u8) -> Result<u8, InvalidTokenHash> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(InvalidTokenHash),
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.0;
        write!(f, "TokenHash({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// A bearer token as presented by a client, with its [`TokenHash`].
///
/// Stores receive one on a cache miss. Stores keyed by hash read
/// [`hash`](Self::hash); stores that must see the token itself (a JWT's
/// signature, an introspection call) read [`secret`](Self::secret). It lives
/// only as long as that one store call, and is wiped (`zeroize`) when
/// dropped: scopegate never caches, logs or `Debug`-prints it, and it is
/// neither `Clone` nor `Display`.
///
/// A store that answers "not found" for a reason that may soon pass (a JWT
/// signed with a key it cannot fetch yet) says how long that answer may be
/// cached with [`cache_not_found_for`](Self::cache_not_found_for).
///
/// ```
/// use scopegate::credential::{PresentedToken, TokenHash};
///
/// let token = PresentedToken::new("ohk_demo_all_scopes");
/// assert_eq!(*token.hash(), TokenHash::of("ohk_demo_all_scopes"));
/// assert_eq!(token.secret(), "ohk_demo_all_scopes");
/// assert!(!format!("{token:?}").contains("ohk_demo"));
/// ```
pub struct PresentedToken {
    secret: Box<str>,
    hash: TokenHash,
    /// The most a "not found" for this token may be cached, in nanoseconds;
    /// `u64::MAX`: as long as the cache keeps any.
    not_found_nanos: AtomicU64,
}

impl PresentedToken {
    /// Wraps a token, hashing it.
    pub fn new(token: &str) -> Self {
        Self::with_hash(token, TokenHash::of(token))
    }

    /// Wraps a token whose hash the caller already computed.
    pub(crate) fn with_hash(token: &str, hash: TokenHash) -> Self {
        PresentedToken {
            secret: token.into(),
            hash,
            not_found_nanos: AtomicU64::new(u64::MAX),
        }
    }

    /// The token's SHA-256: what caches and hash-keyed stores look up.
    pub fn hash(&self) -> &TokenHash {
        &self.hash
    }

    /// The token itself. Verify it, send it to an introspection endpoint, but
    /// never keep, log or return it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Says that if this lookup answers "not found", the answer may be
    /// cached for `max` at most (`Duration::ZERO`: not at all), instead of
    /// the cache's `negative_time_to_live`. The least of several calls
    /// holds.
    pub fn cache_not_found_for(&self, max: Duration) {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX - 1);
        self.not_found_nanos.fetch_min(nanos, Ordering::Relaxed);
    }

    /// What [`cache_not_found_for`](Self::cache_not_found_for) said, if
    /// anything.
    pub(crate) fn not_found_max_age(&self) -> Option<Duration> {
        match self.not_found_nanos.load(Ordering::Relaxed) {
            u64::MAX => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

/// The one copy of the token scopegate makes is wiped when it goes.
impl Drop for PresentedToken {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// A string that is not 64 hex digits was given as a [`TokenHash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidTokenHash;

impl fmt::Display for InvalidTokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token hash is 64 hexadecimal digits (SHA-256)")
    }
}

impl std::error::Error for InvalidTokenHash {}

/// What kind of client a credential belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// An API key created in a workspace's developer settings.
    ApiKey,
    /// An OAuth 2.0 access token issued to a third-party application.
    OAuthClient {
        /// The OAuth `client_id` of the application.
        client_id: String,
    },
}

/// What a bearer token stands for.
///
/// A credential holds no secret: neither the token nor its hash. Its `Debug`
/// output is safe to log.
///
/// A credential's limits, and what the first limiter to count them bound
/// to them (`limiter.rs`'s states and budgets, opaque here), so that the
/// credential's later requests look nothing up. Copies of the credential
/// share it: they are counted under the same key and account.
pub(crate) struct LimitSet {
    list: Box<[Limit]>,
    pub(crate) bound: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl LimitSet {
    /// The limits, in their order.
    #[inline]
    pub(crate) fn limits(&self) -> &[Limit] {
        &self.list
    }
}

impl PartialEq for LimitSet {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Eq for LimitSet {}

impl fmt::Debug for LimitSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.list.fmt(f)
    }
}

/// See the [module docs](crate::credential) for an example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    id: Box<str>,
    account_id: Box<str>,
    kind: CredentialKind,
    scopes: ScopeSet,
    /// Shared by every credential of the same plan (see [`Plans`]).
    entitlements: Entitlements,
    /// The plan's and the key's limits; `None` for none, so that a
    /// credential without limits allocates nothing for them.
    limits: Option<Arc<LimitSet>>,
    expires_at: Option<SystemTime>,
    max_cache_age: Option<Duration>,
}

impl Credential {
    /// A credential with no scopes, no entitlements and no expiry.
    pub fn new(id: impl Into<String>, account_id: impl Into<String>, kind: CredentialKind) -> Self {
        Credential {
            id: id.into().into_boxed_str(),
            account_id: account_id.into().into_boxed_str(),
            kind,
            scopes: ScopeSet::new(),
            entitlements: Plans::shared(Vec::new()),
            limits: None,
            expires_at: None,
            max_cache_age: None,
        }
    }

    /// Sets the scopes the credential was granted.
    pub fn with_scopes(mut self, scopes: ScopeSet) -> Self {
        self.scopes = scopes;
        self
    }

    /// Sets the account's plan entitlements, e.g. `["api-access"]`.
    ///
    /// Credentials with the same entitlements share one copy of them, so a
    /// cache of many keys of a few plans holds each plan's strings once.
    pub fn with_entitlements<I>(mut self, entitlements: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut list: Vec<Box<str>> = entitlements
            .into_iter()
            .map(|e| e.into().into_boxed_str())
            .collect();
        list.sort_unstable();
        list.dedup();
        self.entitlements = Plans::shared(list);
        self
    }

    /// Sets the limits the credential is counted against (see
    /// [`limit`](crate::limit)): its plan's, and its own. A name given
    /// twice keeps the last, so a key's own limit can follow its plan's to
    /// override it.
    pub fn with_limits(mut self, limits: impl IntoIterator<Item = Limit>) -> Self {
        let mut list: Vec<Limit> = Vec::new();
        for limit in limits {
            list.retain(|l| l.name() != limit.name());
            list.push(limit);
        }
        self.limits = (!list.is_empty()).then(|| {
            Arc::new(LimitSet {
                list: list.into(),
                bound: OnceLock::new(),
            })
        });
        self
    }

    /// Sets when the credential stops being valid.
    pub fn with_expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Caps how long a cache may keep this credential, counted from when it
    /// was resolved: a store whose answers go stale sooner than its
    /// credentials expire (token introspection, say) sets it. The cache
    /// keeps an entry for the least of this, its own `time_to_live` and the
    /// time to [`expires_at`](Self::expires_at).
    pub fn with_max_cache_age(mut self, age: Duration) -> Self {
        self.max_cache_age = Some(age);
        self
    }

    /// The credential's id (an API key id or an OAuth grant id). Not a secret.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The account (workspace) the credential acts for.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// API key or OAuth client.
    pub fn kind(&self) -> &CredentialKind {
        &self.kind
    }

    /// The scopes the credential was granted.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// The account's entitlements, sorted.
    pub fn entitlements(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entitlements.iter().map(|e| &**e)
    }

    /// Whether the account's plan includes `entitlement`.
    #[inline]
    pub fn has_entitlement(&self, entitlement: &str) -> bool {
        self.entitlements.iter().any(|e| **e == *entitlement)
    }

    /// The limits the credential is counted against.
    #[inline]
    pub fn limits(&self) -> &[Limit] {
        self.limits.as_deref().map_or(&[], LimitSet::limits)
    }

    /// The limits, with what a limiter bound to them; `None` without limits.
    #[inline]
    pub(crate) fn limit_set(&self) -> Option<&LimitSet> {
        self.limits.as_deref()
    }

    /// What a limit counted `per` is counted under: this key's id, or its
    /// account's.
    pub(crate) fn subject(&self, per: Per) -> &str {
        match per {
            Per::Key => &self.id,
            Per::Account => &self.account_id,
        }
    }

    /// When the credential expires, if ever.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// How long a cache may keep this credential, if the store capped it.
    pub fn max_cache_age(&self) -> Option<Duration> {
        self.max_cache_age
    }

    /// Whether the credential has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The entitlement lists credentials share: one per distinct list, so
/// 100,000 cached keys of three plans hold three copies of the plans'
/// strings, not 100,000 (`cargo bench --bench memory` measures it).
///
/// Bounded: at [`Plans::MAX`] distinct lists it first forgets those no
/// credential holds any more, and past that gives a credential its own copy,
/// as before. Only credentials being built take the lock, never a request
/// that a cache answers.
struct Plans;

/// A plan's entitlements, sorted and deduplicated.
type Entitlements = Arc<[Box<str>]>;

impl Plans {
    const MAX: usize = 1024;

    fn shared(list: Vec<Box<str>>) -> Entitlements {
        static PLANS: OnceLock<Mutex<HashSet<Entitlements>>> = OnceLock::new();
        let mut plans = PLANS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = plans.get(&*list) {
            return Arc::clone(plan);
        }
        if plans.len() >= Self::MAX {
            plans.retain(|plan| Arc::strong_count(plan) > 1);
        }
        let plan: Entitlements = list.into();
        if plans.len() < Self::MAX {
            plans.insert(Arc::clone(&plan));
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_of_one_plan_share_its_entitlements() {
        let plan = ["sso", "api-access", "webhooks"];
        let a = Credential::new("a", "ws_1", CredentialKind::ApiKey).with_entitlements(plan);
        let b = Credential::new("b", "ws_2", CredentialKind::ApiKey).with_entitlements([
            "webhooks",
            "sso",
            "api-access",
            "sso",
        ]);
        assert!(Arc::ptr_eq(&a.entitlements, &b.entitlements));
        let other = Credential::new("c", "ws_3", CredentialKind::ApiKey).with_entitlements(["sso"]);
        assert!(!Arc::ptr_eq(&a.entitlements, &other.entitlements));
        assert_eq!(other.entitlements().collect::<Vec<_>>(), ["sso"]);

        // Past the bound, lists nobody holds are forgotten, and a list that
        // finds no room is the credential's own: still correct, not shared.
        for i in 0..2 * Plans::MAX {
            let c = Credential::new("k", "ws", CredentialKind::ApiKey)
                .with_entitlements([format!("plan-{i}")]);
            assert!(c.has_entitlement(&format!("plan-{i}")));
        }
        let c = Credential::new("d", "ws_4", CredentialKind::ApiKey).with_entitlements(plan);
        assert!(Arc::ptr_eq(&a.entitlements, &c.entitlements));
    }

    #[test]
    fn hash_is_sha256_and_round_trips_hex() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let hash = TokenHash::of("abc");
        assert_eq!(
            hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Ok(hash));
        assert_eq!(TokenHash::from_hex(&hash.to_hex().to_uppercase()), Ok(hash));
        assert_eq!(TokenHash::from_hex("ba78"), Err(InvalidTokenHash));
        assert_eq!(TokenHash::from_hex(&"g".repeat(64)), Err(InvalidTokenHash));
        assert_eq!(format!("{hash:?}"), "TokenHash(ba7816bf…)");
    }

    #[test]
    fn credential_accessors_and_expiry() {
        let now = SystemTime::now();
        let c = Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
            .with_entitlements(["b", "api-access", "b"])
            .with_expires_at(now + Duration::from_secs(1));
        assert_eq!(c.entitlements().collect::<Vec<_>>(), ["api-access", "b"]);
        assert!(c.has_entitlement("api-access"));
        assert!(!c.has_entitlement("api"));
        assert!(!c.is_expired(now));
        assert!(c.is_expired(now + Duration::from_secs(1)));
        assert!(!Credential::new("k", "a", CredentialKind::ApiKey).is_expired(now));
    }
}
