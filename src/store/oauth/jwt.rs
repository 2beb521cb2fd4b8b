//! JWT access tokens (RFC 9068), verified against the issuer's JWKS
//! (feature `jwt`).
//!
//! [`JwtStore`] checks a token's signature and claims on a cache miss; the
//! [`CachedStore`](crate::cache::CachedStore) in front keeps the credential, keyed by
//! the token's hash and never past its `exp`, so later requests skip the
//! signature check.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//! use scopegate::store::oauth::jwt::{JwsAlgorithm, JwtStore};
//! use scopegate::{CachedStore, Gate};
//! use scopegate::credential::PresentedToken;
//! use scopegate::store::{ChainStore, CredentialStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let plans = HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]);
//! let jwt = JwtStore::builder("https://auth.onboardinghub.test", "https://api.onboardinghub.test")
//!     .jwks_uri("https://auth.onboardinghub.test/jwks")
//!     .algorithms([JwsAlgorithm::RS256, JwsAlgorithm::ES256])
//!     .account_claim("workspace_id")
//!     .leeway(Duration::from_secs(30))
//!     .entitlements(plans)
//!     .build()?;
//!
//! // Not a JWT at all: refused without fetching any key.
//! assert!(jwt.resolve(&PresentedToken::new("eyJub3QiOiJhIGp3dCJ9.e30.c2ln")).await?.is_none());
//!
//! let gate = Gate::new(CachedStore::new(ChainStore::new().jwt(jwt)));
//! # let _ = gate;
//! # Ok(())
//! # }
//! ```
//!
//! # What is checked
//!
//! - the header: `typ` is `at+jwt` (or `application/at+jwt`; configurable
//!   with [`typ`](JwtStoreBuilder::typ), and
//!   [`accept_typ_jwt`](JwtStoreBuilder::accept_typ_jwt) for issuers that
//!   send `JWT` or none), `alg` is one of the
//!   [`algorithms`](JwtStoreBuilder::algorithms) allowed (asymmetric only:
//!   `none` and the HMAC algorithms cannot be named), and the key is one of the
//!   JWKS's signature keys for that algorithm;
//! - the signature;
//! - the claims RFC 9068 requires: `iss` equal to the issuer, `aud` holding
//!   one of the [`audiences`](JwtStoreBuilder::audiences), `exp` and `nbf`
//!   (with the leeway), `iat` not in the future, `sub`, `client_id` and
//!   `jti`; and the [account claim](JwtStoreBuilder::account_claim).
//!
//! Anything else is "not found": the client gets 401 `invalid_token`.
//!
//! The scopes come from the [`scope_claims`](JwtStoreBuilder::scope_claims)
//! (default `scope`; see [`ScopeClaim`] for each provider's shape). The
//! leeway holds end to end: the credential expires, in the cache too, at
//! `exp` plus the leeway.
//!
//! # Keys
//!
//! The JWKS is fetched on first use and kept for
//! [`keys_ttl`](JwtStoreBuilder::keys_ttl), then refetched in the
//! background while requests go on with the old set. A token signed with a
//! `kid` the set lacks (the issuer rotated its keys) triggers a refresh, but
//! at most one per [`refresh_interval`](JwtStoreBuilder::refresh_interval)
//! (10 s), and only one at a time: forged `kid`s cannot make a refresh storm.
//! Such a token's refusal is cached only until the next refresh is allowed,
//! so a rotated key is accepted within the refresh interval. A failed fetch
//! keeps the last good keys and is retried with exponential backoff (1 s
//! doubling to 60 s); while no key can be had, lookups fail with a store
//! error (503), never with a grant.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::{
    ClaimError, ClaimMap, Discovery, Grant, OAuthConfigError, ScopeClaim, DEFAULT_METADATA_REFRESH,
};
use crate::credential::{Credential, PresentedToken};
use crate::store::{CredentialStore, EntitlementSource, StoreError};

const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const MAX_LEEWAY: Duration = Duration::from_secs(300);
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(600);
const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A JWS signature algorithm a [`JwtStore`] may accept. Only asymmetric
/// algorithms exist here: an access token verified with a shared secret could
/// be minted by anyone holding it, and `none` is not an algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(clippy::upper_case_acronyms)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256: the one RFC 9068 requires.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// ECDSA with P-384 and SHA-384.
    ES384,
    /// EdDSA with Ed25519.
    EdDSA,
}

impl JwsAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            JwsAlgorithm::RS256 => Algorithm::RS256,
            JwsAlgorithm::RS384 => Algorithm::RS384,
            JwsAlgorithm::RS512 => Algorithm::RS512,
            JwsAlgorithm::PS256 => Algorithm::PS256,
            JwsAlgorithm::PS384 => Algorithm::PS384,
            JwsAlgorithm::PS512 => Algorithm::PS512,
            JwsAlgorithm::ES256 => Algorithm::ES256,
            JwsAlgorithm::ES384 => Algorithm::ES384,
            JwsAlgorithm::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// Verifies RFC 9068 JWT access tokens. See the [module docs](self).
///
/// Cheap to clone: clones share the key cache.
#[derive(Clone)]
pub struct JwtStore {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: Box<str>,
    typ: Box<str>,
    /// Whether `typ: JWT`, or no `typ`, is accepted too.
    typ_jwt: bool,
    /// One validation per allowed algorithm: issuer, audience, leeway, and
    /// the required claims are set once.
    validations: Vec<(Algorithm, Validation)>,
    /// `Some`: the audiences are matched against `client_id` when the token
    /// has no `aud` (jsonwebtoken then does not check `aud`).
    client_id_audiences: Option<Vec<String>>,
    leeway: u64,
    claims: ClaimMap,
    /// The claims that may hold the token's id, in order (RFC 9068: `jti`).
    token_id: Vec<Box<str>>,
    /// Whether a token without any of them is accepted, with an id made of
    /// its hash.
    token_id_optional: bool,
    entitlements: Arc<dyn EntitlementSource>,
    keys: Arc<Keys>,
}

impl JwtStore {
    /// Starts configuring a store for tokens that `issuer` issues for
    /// `audience` (this API's resource identifier).
    pub fn builder(issuer: &str, audience: &str) -> JwtStoreBuilder {
        JwtStoreBuilder {
            issuer: issuer.to_owned(),
            audiences: vec![audience.to_owned()],
            client_id_audience: false,
            source: None,
            algorithms: vec![JwsAlgorithm::RS256],
            typ: "at+jwt".into(),
            typ_jwt: false,
            leeway: DEFAULT_LEEWAY,
            claims: ClaimMap::new("sub"),
            token_id: vec!["jti".into()],
            token_id_optional: false,
            entitlements: None,
            client: None,
            timeout: super::DEFAULT_HTTP_TIMEOUT,
            keys_ttl: DEFAULT_KEYS_TTL,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            metadata_refresh: DEFAULT_METADATA_REFRESH,
        }
    }

    /// How many times the JWKS was fetched (successfully or not).
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.keys.fetches.load(Ordering::Relaxed)
    }

    /// The issuer whose tokens this store verifies.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    async fn verify(&self, presented: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        let inner = &*self.inner;
        let token = presented.secret();
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return refused("malformed");
        };
        let Some((_, validation)) = inner.validations.iter().find(|(a, _)| *a == header.alg) else {
            return refused("algorithm not allowed");
        };
        let typ_ok = match header.typ.as_deref() {
            Some(typ) => {
                typ_matches(typ, &inner.typ) || (inner.typ_jwt && typ.eq_ignore_ascii_case("JWT"))
            }
            None => inner.typ_jwt,
        };
        if !typ_ok {
            return refused("typ");
        }
        let Some(key) = inner.keys.find(header.kid.as_deref(), header.alg).await? else {
            // The key may be published by the next allowed refresh (a
            // rotation): refuse until then, not for the cache's whole
            // negative time-to-live.
            if let Some(wait) = inner.keys.until_next_refresh().await {
                presented.cache_not_found_for(wait);
            }
            return refused("no key for kid");
        };
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &key.decoding,
            validation,
        ) {
            Ok(data) => data.claims,
            Err(_error) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(target: "scopegate::jwt", reason = ?_error.kind(), "JWT refused");
                return Ok(None);
            }
        };
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat <= super::now_secs() + inner.leeway => {}
            _ => return refused("iat missing or in the future"),
        }
        if let Some(audiences) = &inner.client_id_audiences {
            if !audience_or_client_id(&claims, audiences) {
                return refused("InvalidAudience");
            }
        }
        let id = match super::first_string(&claims, &inner.token_id) {
            Ok(id) => id.to_owned(),
            Err(missing) if missing.is_missing() && inner.token_id_optional => {
                // What logs show of the token anyway: its hash's prefix.
                let [a, b, c, d, ..] = *presented.hash().as_bytes();
                format!("jwt_{a:02x}{b:02x}{c:02x}{d:02x}")
            }
            Err(error) => return refused_claim(&error),
        };
        let mut grant = match Grant::from_claims(id, &claims, &inner.claims) {
            Ok(grant) => grant,
            Err(error) => return refused_claim(&error),
        };
        // The leeway holds end to end: the cached credential expires with
        // the token as this store judges it, `exp` plus the leeway.
        grant.expires_at = grant
            .expires_at
            .map(|at| at + Duration::from_secs(inner.leeway));
        grant.into_credential(&*inner.entitlements).await.map(Some)
    }
}

#[async_trait]
impl CredentialStore for JwtStore {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        self.verify(token).await
    }
}

/// JWT access tokens from several issuers, each verified by its own
/// [`JwtStore`]: its keys, audiences, claims, leeway, `typ` rule and
/// entitlement source.
///
/// A token goes to the store of the issuer its `iss` names, read from the
/// unverified payload only to choose; that store alone then verifies it,
/// `iss` included, so no issuer's key ever verifies a token that names
/// another. A token naming no configured issuer is refused at once, with no
/// network call.
///
/// ```
/// use std::collections::HashMap;
/// use scopegate::store::oauth::jwt::{JwtIssuers, JwtStore};
/// use scopegate::store::oauth::ScopeClaim;
/// use scopegate::{CachedStore, Gate};
///
/// # fn main() -> Result<(), scopegate::store::oauth::OAuthConfigError> {
/// let plans = HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]);
/// let realm = JwtStore::builder("https://sso.example/realms/acme", "onboardinghub-api")
///     .discover()
///     .accept_typ_jwt(true)
///     .scope_claims([ScopeClaim::KeycloakRealmRoles])
///     .entitlements(plans.clone())
///     .build()?;
/// let partner = JwtStore::builder("https://partner.example.com", "https://api.example.com")
///     .discover()
///     .entitlements(plans)
///     .build()?;
/// let issuers = JwtIssuers::new([realm, partner])?;
/// assert_eq!(issuers.issuers().count(), 2);
/// let gate = Gate::new(CachedStore::new(issuers));
/// # let _ = gate;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JwtIssuers {
    by_issuer: Arc<std::collections::HashMap<Box<str>, JwtStore>>,
}

impl JwtIssuers {
    /// One store per issuer.
    ///
    /// # Errors
    ///
    /// [`OAuthConfigError::DuplicateIssuer`] when two stores have the same
    /// issuer; [`OAuthConfigError::Missing`] when there are none.
    pub fn new(stores: impl IntoIterator<Item = JwtStore>) -> Result<Self, OAuthConfigError> {
        let mut by_issuer = std::collections::HashMap::new();
        for store in stores {
            let issuer: Box<str> = store.issuer().into();
            if by_issuer.contains_key(&issuer) {
                return Err(OAuthConfigError::DuplicateIssuer(issuer.into()));
            }
            by_issuer.insert(issuer, store);
        }
        if by_issuer.is_empty() {
            return Err(OAuthConfigError::Missing("issuers"));
        }
        Ok(JwtIssuers {
            by_issuer: Arc::new(by_issuer),
        })
    }

    /// The issuers, in no particular order.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.by_issuer.keys().map(|issuer| &**issuer)
    }

    /// The store for `issuer`, if configured.
    pub fn get(&self, issuer: &str) -> Option<&JwtStore> {
        self.by_issuer.get(issuer)
    }
}

/// The only claim read before a signature is checked: which issuer to ask.
#[derive(Deserialize)]
struct Unverified {
    iss: String,
}

#[async_trait]
impl CredentialStore for JwtIssuers {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        let Ok(unverified) =
            jsonwebtoken::dangerous::insecure_decode_claims::<Unverified>(token.secret())
        else {
            return refused("malformed or no iss");
        };
        match self.by_issuer.get(unverified.iss.as_str()) {
            Some(store) => store.verify(token).await,
            None => refused("unknown issuer"),
        }
    }
}

impl fmt::Debug for JwtIssuers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_issuer.values()).finish()
    }
}

impl fmt::Debug for JwtStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtStore")
            .field("issuer", &self.inner.issuer)
            .field("typ", &self.inner.typ)
            .field("claims", &self.inner.claims)
            .field("jwks_fetches", &self.jwks_fetches())
            .finish_non_exhaustive()
    }
}

/// Refuses the token (401). The reason is logged at DEBUG, never the token.
fn refused(_reason: &'static str) -> Result<Option<Credential>, StoreError> {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "scopegate::jwt", reason = _reason, "JWT refused");
    Ok(None)
}

/// Refuses the token (401) for a claim it cannot read, and logs which.
fn refused_claim(_error: &ClaimError) -> Result<Option<Credential>, StoreError> {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "scopegate::jwt", reason = "claim", claim = _error.claim(), problem = %_error, "JWT refused");
    Ok(None)
}

/// For issuers that name the client instead of the audience (Amazon
/// Cognito): an `aud`, if there is one, must hold one of `audiences`; if
/// there is none, `client_id` must be one of them.
fn audience_or_client_id(claims: &Map<String, Value>, audiences: &[String]) -> bool {
    match claims.get("aud") {
        Some(aud) => super::holds_one_of(aud, audiences),
        None => claims
            .get("client_id")
            .is_some_and(|client| client.is_string() && super::holds_one_of(client, audiences)),
    }
}

/// RFC 9068 §4: `at+jwt`, or with the `application/` prefix, any case.
fn typ_matches(typ: &str, expected: &str) -> bool {
    fn bare(typ: &str) -> &str {
        match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
            _ => typ,
        }
    }
    bare(typ).eq_ignore_ascii_case(bare(expected))
}

/// Configures a [`JwtStore`]; start with [`JwtStore::builder`].
#[must_use]
pub struct JwtStoreBuilder {
    issuer: String,
    audiences: Vec<String>,
    client_id_audience: bool,
    source: Option<Source>,
    algorithms: Vec<JwsAlgorithm>,
    typ: Box<str>,
    typ_jwt: bool,
    leeway: Duration,
    claims: ClaimMap,
    token_id: Vec<Box<str>>,
    token_id_optional: bool,
    entitlements: Option<Arc<dyn EntitlementSource>>,
    client: Option<reqwest::Client>,
    timeout: Duration,
    keys_ttl: Duration,
    refresh_interval: Duration,
    metadata_refresh: Duration,
}

enum Source {
    Uri(String),
    Static(String),
    Discover,
}

impl JwtStoreBuilder {
    claim_setters!();

    /// Where the issuer publishes its keys (its metadata's `jwks_uri`).
    pub fn jwks_uri(mut self, uri: &str) -> Self {
        self.source = Some(Source::Uri(uri.to_owned()));
        self
    }

    /// Takes the `jwks_uri` from the issuer's metadata (OpenID Connect
    /// Discovery's `/.well-known/openid-configuration`, else RFC 8414's
    /// `/.well-known/oauth-authorization-server`), whose `issuer` must be
    /// this store's exactly. Lazy: `build` fetches nothing, so the
    /// application starts while the issuer is down; its tokens get 503 until
    /// the metadata and keys can be had. Refetched every
    /// [`metadata_refresh`](Self::metadata_refresh), and when the keys can
    /// no longer be fetched; the last good metadata is kept meanwhile.
    pub fn discover(mut self) -> Self {
        self.source = Some(Source::Discover);
        self
    }

    /// How often discovered metadata is fetched again (default 24 h).
    pub fn metadata_refresh(mut self, every: Duration) -> Self {
        self.metadata_refresh = every;
        self
    }

    /// A fixed JWKS document instead of a `jwks_uri`: never refreshed.
    pub fn jwks_json(mut self, jwks: &str) -> Self {
        self.source = Some(Source::Static(jwks.to_owned()));
        self
    }

    /// The algorithms to accept (default: RS256 only).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = JwsAlgorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The header `typ` to require (default `at+jwt`, as RFC 9068 says).
    /// Compared without case and without an `application/` prefix.
    pub fn typ(mut self, typ: &str) -> Self {
        self.typ = typ.into();
        self
    }

    /// Also accepts `typ: JWT`, and tokens without a `typ`, for the issuers
    /// that send them (Keycloak, Entra ID, Okta, Cognito). Off by default:
    /// `at+jwt` is what tells an access token from an ID token, which the
    /// audience check must then do alone.
    pub fn accept_typ_jwt(mut self, accept: bool) -> Self {
        self.typ_jwt = accept;
        self
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat` (default 30 s, at most
    /// 5 minutes). It holds end to end: a token is accepted, and its cached
    /// credential kept, until `exp` plus the leeway.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// For issuers whose access tokens carry no `aud` and name the client in
    /// `client_id` instead (Amazon Cognito): a token without `aud` is
    /// accepted when its `client_id` is one of the audiences. A token with
    /// an `aud` is still checked against them.
    pub fn client_id_as_audience(mut self, enabled: bool) -> Self {
        self.client_id_audience = enabled;
        self
    }

    /// The claim that names the account (workspace) the token acts for
    /// (default `sub`): a claim name (`org_id`, `tid`,
    /// `https://onboarding-hub.com/workspace`), or a JSON pointer when it
    /// starts with `/` (`/app_metadata/workspace`). It must be a non-empty
    /// string; otherwise the token is refused.
    pub fn account_claim(mut self, claim: &str) -> Self {
        self.claims.account = claim.into();
        self
    }

    /// The claims that may hold the token's id, the credential's id, tried
    /// in order (default `jti`, as RFC 9068 says; Entra ID has `uti`).
    pub fn token_id_claims<I>(mut self, claims: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.token_id = super::names(claims);
        self
    }

    /// Accepts tokens with none of the [`token_id_claims`](Self::token_id_claims)
    /// (Auth0's default profile has no `jti`); their credential's id is then
    /// `jwt_` and the first 4 bytes of the token's hash, as logs show it.
    /// Off by default.
    pub fn allow_missing_token_id(mut self, allow: bool) -> Self {
        self.token_id_optional = allow;
        self
    }

    /// Where the account's plan entitlements come from. Required.
    pub fn entitlements(mut self, source: impl EntitlementSource + 'static) -> Self {
        self.entitlements = Some(Arc::new(source));
        self
    }

    /// The HTTP client for JWKS fetches, e.g. one with your TLS settings.
    /// By default a client without redirects and with
    /// [`timeout`](Self::timeout) is built. HTTPS needs a TLS backend: the
    /// `rustls` feature, or one enabled on `reqwest` by your application.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The timeout of a JWKS fetch with the default client (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long fetched keys are used before being fetched again (default
    /// 10 minutes). The refetch runs in the background: the request that
    /// finds the keys stale is served with them. When a fetch fails, the old
    /// keys stay in use.
    pub fn keys_ttl(mut self, ttl: Duration) -> Self {
        self.keys_ttl = ttl;
        self
    }

    /// The least time between two fetches after a success (default 10 s):
    /// the bound on refreshes caused by unknown `kid`s, and so on how long a
    /// token signed with a newly rotated key can be refused. A token refused
    /// for an unknown `kid` is cached as refused only until the next
    /// refresh is allowed.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Builds the store. Nothing is fetched yet.
    ///
    /// # Errors
    ///
    /// [`OAuthConfigError`] when the issuer or JWKS URI is not an http(s) URL,
    /// no key source, algorithm or entitlement source was given, the leeway
    /// is over 5 minutes, or a static JWKS has no usable signature key.
    pub fn build(self) -> Result<JwtStore, OAuthConfigError> {
        super::check_url(&self.issuer)?;
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(OAuthConfigError::Missing("audience"));
        }
        if self.algorithms.is_empty() {
            return Err(OAuthConfigError::Missing("algorithms"));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(OAuthConfigError::OutOfRange("leeway (at most 5 minutes)"));
        }
        let entitlements = self
            .entitlements
            .ok_or(OAuthConfigError::Missing("entitlements"))?;
        let leeway = self.leeway.as_secs();
        let validations = self
            .algorithms
            .iter()
            .map(|a| {
                let alg = a.algorithm();
                let mut v = Validation::new(alg);
                v.set_issuer(&[&self.issuer]);
                v.set_audience(&self.audiences);
                if self.client_id_audience {
                    // Checked after decoding, against `client_id` too.
                    v.validate_aud = false;
                    v.set_required_spec_claims(&["exp", "iss", "sub"]);
                } else {
                    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                }
                v.validate_nbf = true;
                v.leeway = leeway;
                (alg, v)
            })
            .collect();
        let client = || match self.client.clone() {
            Some(client) => Ok(client),
            None => super::http_client(self.timeout),
        };
        let (remote, current) = match self.source.ok_or(OAuthConfigError::Missing("jwks_uri"))? {
            Source::Uri(uri) => {
                let at = KeysAt::Url(super::check_url(&uri)?);
                (
                    Some(Remote {
                        at,
                        client: client()?,
                    }),
                    KeySet::default(),
                )
            }
            Source::Discover => {
                let client = client()?;
                let discovery =
                    Discovery::new(&self.issuer, client.clone(), self.metadata_refresh)?;
                let at = KeysAt::Discovered(Box::new(discovery));
                (Some(Remote { at, client }), KeySet::default())
            }
            Source::Static(json) => {
                let value = serde_json::from_str(&json)
                    .map_err(|e| OAuthConfigError::InvalidJwks(e.to_string()))?;
                let set = KeySet::from_jwks(&value, 1)
                    .map_err(|e| OAuthConfigError::InvalidJwks(e.to_string()))?;
                (None, set)
            }
        };
        Ok(JwtStore {
            inner: Arc::new(Inner {
                issuer: self.issuer.as_str().into(),
                typ: self.typ,
                typ_jwt: self.typ_jwt,
                validations,
                client_id_audiences: self.client_id_audience.then_some(self.audiences.clone()),
                leeway,
                claims: self.claims,
                token_id: self.token_id,
                token_id_optional: self.token_id_optional,
                entitlements,
                keys: Arc::new(Keys {
                    remote,
                    current: RwLock::new(Arc::new(current)),
                    refresh: Mutex::new(Refresh::default()),
                    ttl: self.keys_ttl,
                    refresh_interval: self.refresh_interval,
                    fetches: AtomicU64::new(0),
                    refreshing: AtomicBool::new(false),
                }),
            }),
        })
    }
}

impl fmt::Debug for JwtStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtStoreBuilder")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The issuer's keys, fetched and cached.
struct Keys {
    /// `None` for a static JWKS.
    remote: Option<Remote>,
    current: RwLock<Arc<KeySet>>,
    /// Held while fetching: one fetch at a time, and the rate limit's state.
    refresh: Mutex<Refresh>,
    ttl: Duration,
    refresh_interval: Duration,
    fetches: AtomicU64,
    /// Whether a background refresh is under way: one at a time.
    refreshing: AtomicBool,
}

struct Remote {
    at: KeysAt,
    client: reqwest::Client,
}

/// Where the keys are: a configured `jwks_uri`, or the issuer's metadata's.
enum KeysAt {
    Url(reqwest::Url),
    Discovered(Box<Discovery>),
}

impl Remote {
    /// Fetches the key set (through discovery, if need be).
    async fn fetch(&self, generation: u64) -> Result<KeySet, StoreError> {
        let url = match &self.at {
            KeysAt::Url(url) => url.clone(),
            KeysAt::Discovered(discovery) => discovery
                .metadata()
                .await?
                .jwks_uri
                .clone()
                .ok_or_else(|| StoreError::new("the issuer's metadata has no jwks_uri"))?,
        };
        let fetched = super::fetch_json(self.client.get(url))
            .await
            .and_then(|jwks| KeySet::from_jwks(&jwks, generation));
        if let (Err(_), KeysAt::Discovered(discovery)) = (&fetched, &self.at) {
            // The keys moved, perhaps: look again at the next attempt.
            discovery.expire();
        }
        fetched
    }
}

#[derive(Default)]
struct Refresh {
    /// No fetch before this instant (after a success: the refresh interval;
    /// after failures: the backoff).
    not_before: Option<Instant>,
    failures: u32,
    /// Why the last fetch failed, while it is the latest word.
    last_error: Option<StoreError>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    fetched_at: Option<Instant>,
    /// Bumped by every successful fetch.
    generation: u64,
}

struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

impl KeySet {
    /// The signature keys of a JWKS document. Symmetric (`oct`) keys, keys
    /// for encryption and keys of unknown types are skipped.
    fn from_jwks(jwks: &Value, generation: u64) -> Result<KeySet, StoreError> {
        let entries = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| StoreError::new("JWKS has no \"keys\" array"))?;
        let keys: Vec<Arc<Key>> = entries
            .iter()
            .filter(|jwk| {
                jwk.get("use")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u == "sig")
            })
            .filter_map(|jwk| {
                let text = |name| jwk.get(name).and_then(Value::as_str);
                let decoding = DecodingKey::from_jwk(&Jwk::deserialize(jwk).ok()?).ok()?;
                if decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                    return None;
                }
                Some(Arc::new(Key {
                    kid: text("kid").map(str::to_owned),
                    alg: text("alg").and_then(|a| Algorithm::from_str(a).ok()),
                    decoding,
                }))
            })
            .collect();
        if keys.is_empty() {
            return Err(StoreError::new("JWKS has no usable signature key"));
        }
        Ok(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
            generation,
        })
    }

    /// The key for a token's `kid` and `alg`: of the algorithm's family, with
    /// a matching `alg` if the JWK names one. Without a `kid`, only when
    /// exactly one key fits.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        let mut fits = self.keys.iter().filter(|key| {
            key.decoding.family() == alg.family()
                && key.alg.is_none_or(|a| a == alg)
                && kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
        });
        let first = fits.next()?;
        (kid.is_some() || fits.next().is_none()).then(|| Arc::clone(first))
    }

    fn is_fresh(&self, ttl: Duration) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() < ttl)
    }
}

impl Keys {
    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The key for `kid` and `alg`. A set that lacks the key is refreshed
    /// now, within the rate limit; a stale set that has it is used, and
    /// refreshed in the background.
    async fn find(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<Arc<Key>>, StoreError> {
        let seen = self.current();
        let found = seen.find(kid, alg);
        if self.remote.is_none() {
            return Ok(found);
        }
        match found {
            Some(key) => {
                if !seen.is_fresh(self.ttl) {
                    self.refresh_in_background(&seen);
                }
                Ok(Some(key))
            }
            None => self.refresh(&seen, kid, alg).await,
        }
    }

    /// Refreshes a stale set off the request path, on the current Tokio
    /// runtime (there is one wherever a store is called from a server).
    fn refresh_in_background(self: &Arc<Self>, seen: &Arc<KeySet>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (keys, seen) = (Arc::clone(self), Arc::clone(seen));
        runtime.spawn(async move {
            let _ = keys.refresh(&seen, None, Algorithm::RS256).await;
            keys.refreshing.store(false, Ordering::Release);
        });
    }

    /// How long until a refresh is allowed again; `None` for a static set.
    async fn until_next_refresh(&self) -> Option<Duration> {
        self.remote.as_ref()?;
        let refresh = self.refresh.lock().await;
        let not_before = refresh.not_before?;
        Some(not_before.saturating_duration_since(Instant::now()))
    }

    /// Fetches the set unless another lookup did since `seen` was read, or
    /// the rate limit forbids it, and answers the key for `kid` and `alg`
    /// from the newest set.
    async fn refresh(
        &self,
        seen: &KeySet,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<Arc<Key>>, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(seen.find(kid, alg));
        };
        let mut refresh = self.refresh.lock().await;
        let latest = self.current();
        if latest.generation != seen.generation {
            // Another lookup refreshed while this one waited.
            if let Some(key) = latest.find(kid, alg) {
                return Ok(Some(key));
            }
        }
        if refresh.not_before.is_some_and(|t| Instant::now() < t) {
            return match (latest.find(kid, alg), &refresh.last_error) {
                (Some(key), _) => Ok(Some(key)),
                (None, Some(error)) => Err(error.clone()),
                (None, None) => Ok(None),
            };
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = remote.fetch(latest.generation + 1).await;
        match fetched {
            Ok(set) => {
                let set = Arc::new(set);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&set);
                *refresh = Refresh {
                    not_before: Some(Instant::now() + self.refresh_interval),
                    failures: 0,
                    last_error: None,
                };
                Ok(set.find(kid, alg))
            }
            Err(error) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "scopegate::jwt", %error, failures = refresh.failures + 1, "JWKS fetch failed; keeping the last good keys");
                refresh.failures = refresh.failures.saturating_add(1);
                let backoff = Duration::from_secs(1 << refresh.failures.min(7).saturating_sub(1));
                refresh.not_before = Some(Instant::now() + backoff.min(MAX_BACKOFF));
                refresh.last_error = Some(error.clone());
                match latest.find(kid, alg) {
                    Some(key) => Ok(Some(key)),
                    None => Err(error),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn typ_is_at_jwt_with_or_without_the_media_type_prefix() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+JWT",
        ] {
            assert!(typ_matches(typ, "at+jwt"), "{typ}");
        }
        for typ in ["JWT", "at+jwt2", "application/", "app/at+jwt", ""] {
            assert!(!typ_matches(typ, "at+jwt"), "{typ}");
        }
        assert!(typ_matches("JWT", "jwt"));
    }

    #[test]
    fn build_refuses_what_cannot_work() {
        let base = || {
            JwtStore::builder("https://issuer.test", "https://api.test")
                .jwks_uri("https://issuer.test/jwks")
                .entitlements(HashMap::<String, Vec<String>>::new())
        };
        assert!(base().build().is_ok());
        let err = |b: JwtStoreBuilder| b.build().unwrap_err().to_string();
        assert_eq!(
            err(base().jwks_uri("ftp://issuer.test/jwks")),
            r#""ftp://issuer.test/jwks" is not an absolute http or https URL"#
        );
        assert_eq!(
            err(JwtStore::builder("issuer", "https://api.test").jwks_uri("https://i.test/j")),
            r#""issuer" is not an absolute http or https URL"#
        );
        assert_eq!(err(base().algorithms([])), "algorithms is required");
        assert_eq!(
            err(base().leeway(Duration::from_secs(301))),
            "leeway (at most 5 minutes) is out of range"
        );
        assert_eq!(
            err(JwtStore::builder("https://i.test", "https://api.test")
                .jwks_uri("https://i.test/j")),
            "entitlements is required"
        );
        assert_eq!(
            err(base().jwks_json(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#)),
            "invalid JWKS: credential store failed: JWKS has no usable signature key"
        );
        assert_eq!(
            err(JwtStore::builder("https://i.test", "")
                .jwks_uri("https://i.test/j")
                .entitlements(HashMap::<String, Vec<String>>::new())),
            "audience is required"
        );
    }
}
