//! OAuth 2.0 access tokens from a third-party authorization server:
//! [`jwt`] verifies JWT access tokens (RFC 9068) against the issuer's keys
//! (feature `jwt`; [`provider`] has presets for Keycloak, Auth0, Entra ID,
//! Okta and Cognito), [`introspection`] asks the server about opaque tokens
//! (RFC 7662; feature `introspection`).
//!
//! Both turn a valid token into a [`Credential`] of kind
//! [`OAuthClient`](crate::credential::CredentialKind::OAuthClient), with the
//! account's plan from an [`EntitlementSource`], and are refused
//! with [`OAuthConfigError`] when misconfigured. A
//! [`ChainStore`](crate::store::ChainStore) serves them beside API keys,
//! behind one cache and one set of layers.
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "jwt", feature = "introspection"))]
//! # fn main() -> Result<(), scopegate::store::oauth::OAuthConfigError> {
//! use std::collections::HashMap;
//! use std::sync::Arc;
//! use scopegate::store::oauth::introspection::IntrospectionStore;
//! use scopegate::store::oauth::jwt::{JwsAlgorithm, JwtStore};
//! use scopegate::store::ChainStore;
//! use scopegate::{CachedStore, Gate, MemoryStore};
//!
//! let plans = Arc::new(HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]));
//! let jwt = JwtStore::builder("https://auth.onboardinghub.test", "https://api.onboardinghub.test")
//!     .jwks_uri("https://auth.onboardinghub.test/jwks")
//!     .algorithms([JwsAlgorithm::RS256])
//!     .entitlements(Arc::clone(&plans))
//!     .build()?;
//! let introspection = IntrospectionStore::builder(
//!     "https://auth.onboardinghub.test/token/introspection",
//!     "https://api.onboardinghub.test",
//! )
//! .client_credentials("onboardinghub-api", "its secret")
//! .entitlements(plans)
//! .build()?;
//!
//! // API keys, JWTs and opaque tokens, each to its store by the token's shape.
//! let store = ChainStore::new().api_keys(MemoryStore::new()).jwt(jwt).opaque(introspection);
//! let gate = Gate::new(CachedStore::new(store));
//! # let _ = gate;
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "jwt", feature = "introspection")))]
//! # fn main() {}
//! ```

/// The claim setters the JWT and introspection builders share; both have
/// `claims: ClaimMap` and `audiences: Vec<String>`.
macro_rules! claim_setters {
    () => {
        /// Where the scopes come from (default: [`ScopeClaim::Scope`], the
        /// space-separated `scope` of RFC 9068 and RFC 7662). Several
        /// sources are combined.
        pub fn scope_claims(mut self, sources: impl IntoIterator<Item = ScopeClaim>) -> Self {
            self.claims.scopes = sources.into_iter().collect();
            self
        }

        /// The claims that may name the client, tried in order (default
        /// `client_id`, as RFC 9068 and RFC 7662 say): `azp` for Keycloak,
        /// Auth0 and Entra ID, `cid` for Okta, `appid` for Entra ID v1
        /// tokens. The first present one must be a non-empty string.
        pub fn client_id_claims<I>(mut self, claims: I) -> Self
        where
            I: IntoIterator,
            I::Item: AsRef<str>,
        {
            self.claims.client = super::names(claims);
            self
        }

        /// Counts only the scope names that start with `prefix`, without
        /// it: Amazon Cognito names a custom scope
        /// `{resource server identifier}/{scope}`, so
        /// `scope_prefix("https://api.onboardinghub.com/")` reads
        /// `https://api.onboardinghub.com/contacts:read` as `contacts:read`,
        /// and ignores the scopes of other resource servers and bare names.
        pub fn scope_prefix(mut self, prefix: &str) -> Self {
            self.claims.scope_prefix = Some(prefix.into());
            self
        }

        /// Requires the claim `name` to be the string `value`, e.g.
        /// `token_use` = `access` for Amazon Cognito, whose ID tokens are
        /// otherwise shaped like its access tokens. A token without it, or
        /// with another value, is refused. May be called several times.
        pub fn require_claim(mut self, name: &str, value: &str) -> Self {
            self.claims.required.push((name.into(), value.into()));
            self
        }

        /// The audiences to accept, replacing the one given to the
        /// builder's constructor: `aud` (a string or an array) must hold at
        /// least one.
        pub fn audiences<I>(mut self, audiences: I) -> Self
        where
            I: IntoIterator,
            I::Item: AsRef<str>,
        {
            self.audiences = audiences
                .into_iter()
                .map(|a| a.as_ref().to_owned())
                .collect();
            self
        }
    };
}

mod claims;
mod discovery;
#[cfg(feature = "introspection")]
#[cfg_attr(docsrs, doc(cfg(feature = "introspection")))]
pub mod introspection;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod provider;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::credential::{Credential, CredentialKind};
use crate::scope::ScopeSet;
use crate::store::{EntitlementSource, StoreError};

#[cfg(feature = "jwt")]
pub(crate) use claims::first_string;
pub(crate) use claims::{holds_one_of, ClaimMap};
#[doc(inline)]
pub use claims::{ClaimError, ScopeClaim};
pub(crate) use discovery::{Discovery, DEFAULT_METADATA_REFRESH};

/// The default timeout of a call to the authorization server.
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a JWKS or introspection response may weigh.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A JWT or introspection store was configured wrongly. Returned by `build`,
/// so that a bad setting stops the program at startup rather than failing
/// requests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthConfigError {
    /// A URL (issuer, JWKS, introspection endpoint) is not an absolute
    /// `http` or `https` URL.
    InvalidUrl(String),
    /// A required setting was not given.
    Missing(&'static str),
    /// A setting is out of its allowed range.
    OutOfRange(&'static str),
    /// The static JWKS document could not be read.
    InvalidJwks(String),
    /// The default HTTP client could not be built (its TLS backend failed).
    HttpClient(String),
    /// Two stores of a [`JwtIssuers`](jwt::JwtIssuers) have this issuer.
    DuplicateIssuer(String),
    /// [`Provider::named`](provider::Provider::named) was given a name
    /// with no preset.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    UnknownProvider(String),
}

impl fmt::Display for OAuthConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OAuthConfigError::InvalidUrl(url) => {
                write!(f, "{url:?} is not an absolute http or https URL")
            }
            OAuthConfigError::Missing(what) => write!(f, "{what} is required"),
            OAuthConfigError::OutOfRange(what) => write!(f, "{what} is out of range"),
            OAuthConfigError::InvalidJwks(why) => write!(f, "invalid JWKS: {why}"),
            OAuthConfigError::HttpClient(why) => write!(f, "cannot build the HTTP client: {why}"),
            OAuthConfigError::DuplicateIssuer(issuer) => {
                write!(f, "issuer {issuer:?} is configured twice")
            }
            #[cfg(feature = "jwt")]
            OAuthConfigError::UnknownProvider(name) => {
                write!(f, "unknown provider {name:?}: expected one of ")?;
                let mut separator = "";
                for known in provider::Provider::names() {
                    write!(f, "{separator}{known}")?;
                    separator = ", ";
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for OAuthConfigError {}

pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, OAuthConfigError> {
    reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| OAuthConfigError::InvalidUrl(url.to_owned()))
}

/// The client used when the user does not bring one: no redirects (an
/// authorization server's endpoints answer directly), a total timeout.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, OAuthConfigError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| OAuthConfigError::HttpClient(e.to_string()))
}

/// Sends `request`, and reads a JSON body of at most 1 MiB from a 2xx answer.
/// Timeouts become [`StoreError::timeout`]; everything else a backend error.
pub(crate) async fn fetch_json(request: reqwest::RequestBuilder) -> Result<Value, StoreError> {
    let failed = |error: reqwest::Error| {
        if error.is_timeout() {
            StoreError::timeout()
        } else {
            StoreError::new(error.without_url())
        }
    };
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(StoreError::new(format!(
            "authorization server answered {status}"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(StoreError::new("authorization server response over 1 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(StoreError::new)
}

/// What a validated access token grants, before the account's plan is known.
pub(crate) struct Grant {
    pub(crate) id: String,
    pub(crate) client_id: String,
    pub(crate) account_id: String,
    pub(crate) scopes: ScopeSet,
    pub(crate) expires_at: Option<SystemTime>,
}

impl Grant {
    /// Reads the fields RFC 9068 and RFC 7662 share from `claims`: the
    /// scopes, the account and the client where `map` says, and `exp`.
    pub(crate) fn from_claims(
        id: String,
        claims: &Map<String, Value>,
        map: &ClaimMap,
    ) -> Result<Grant, ClaimError> {
        map.check_required(claims)?;
        let client_id = map.client(claims)?.to_owned();
        Ok(Grant {
            id,
            client_id,
            account_id: map.account(claims)?.to_owned(),
            scopes: map.scopes(claims)?,
            expires_at: claims
                .get("exp")
                .and_then(Value::as_u64)
                .map(|exp| UNIX_EPOCH + Duration::from_secs(exp)),
        })
    }

    /// The credential, with the account's entitlements and limits from
    /// `source`.
    pub(crate) async fn into_credential(
        self,
        source: &dyn EntitlementSource,
    ) -> Result<Credential, StoreError> {
        let entitlements = source.entitlements(&self.account_id).await?;
        let limits = source.limits(&self.account_id).await?;
        let credential = Credential::new(
            self.id,
            self.account_id,
            CredentialKind::OAuthClient {
                client_id: self.client_id,
            },
        )
        .with_scopes(self.scopes)
        .with_entitlements(entitlements)
        .with_limits(limits);
        Ok(match self.expires_at {
            Some(at) => credential.with_expires_at(at),
            None => credential,
        })
    }
}

/// Claim names, as builders take them.
pub(crate) fn names<I>(names: I) -> Vec<Box<str>>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    names.into_iter().map(|n| n.as_ref().into()).collect()
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
