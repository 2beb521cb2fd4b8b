//! Opaque OAuth access tokens, checked by token introspection (RFC 7662;
//! feature `introspection`).
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//! use scopegate::store::oauth::introspection::IntrospectionStore;
//! use scopegate::{CachedStore, Gate};
//! use scopegate::store::ChainStore;
//!
//! # fn main() -> Result<(), scopegate::store::oauth::OAuthConfigError> {
//! let plans = HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]);
//! let introspection = IntrospectionStore::builder(
//!     "https://auth.onboardinghub.test/token/introspection",
//!     "https://api.onboardinghub.test",
//! )
//! .client_credentials("onboardinghub-api", "its secret")
//! .account_field("workspace_id")
//! .max_cache_age(Duration::from_secs(30))
//! .timeout(Duration::from_secs(2))
//! .entitlements(plans)
//! .build()?;
//!
//! let gate = Gate::new(CachedStore::new(ChainStore::new().opaque(introspection)));
//! # let _ = gate;
//! # Ok(())
//! # }
//! ```
//!
//! # What is checked
//!
//! The store POSTs the token (`token_type_hint=access_token`) with HTTP Basic
//! client authentication, and grants it only when the response says
//! `"active": true`, its `aud` contains this API's audience (which also keeps
//! out refresh tokens and tokens for other APIs), its `token_type`, if given,
//! is `Bearer`, its `exp`, if given, is in the future, and it names a
//! `client_id` and the [account](IntrospectionStoreBuilder::account_field).
//! The scopes come from the
//! [`scope_claims`](IntrospectionStoreBuilder::scope_claims) (default
//! `scope`). `active: false` and everything else is "not
//! found": 401 `invalid_token`. An error status, a malformed answer or a
//! timeout is a store error: 503, never a grant.
//!
//! # The revocation window
//!
//! Each answer is cached (by the token's hash) for the least of
//! [`max_cache_age`](IntrospectionStoreBuilder::max_cache_age) (default
//! 60 s), the cache's `time_to_live` and the time to the token's `exp`. A
//! token revoked at the authorization server is therefore refused by this API
//! within `max_cache_age` at the latest: that is the price of not calling the
//! server on every request. Lower it to narrow the window; call
//! [`CachedStore::invalidate`](crate::cache::CachedStore::invalidate) to close it at
//! once when you learn of a revocation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{ClaimMap, Discovery, Grant, OAuthConfigError, ScopeClaim, DEFAULT_METADATA_REFRESH};
use crate::credential::{Credential, PresentedToken};
use crate::store::{CredentialStore, EntitlementSource, StoreError};

const DEFAULT_MAX_CACHE_AGE: Duration = Duration::from_secs(60);

/// Checks opaque access tokens at an RFC 7662 introspection endpoint. See the
/// [module docs](self).
///
/// Cheap to clone.
#[derive(Clone)]
pub struct IntrospectionStore {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    audiences: Vec<String>,
    client_id: String,
    client_secret: String,
    claims: ClaimMap,
    max_cache_age: Duration,
    entitlements: Arc<dyn EntitlementSource>,
    client: reqwest::Client,
}

/// The introspection endpoint: configured, or from the issuer's metadata.
enum Endpoint {
    Url(reqwest::Url),
    Discovered(Box<Discovery>),
}

/// The endpoint as given to the builder.
#[derive(Debug)]
enum EndpointSetting {
    Url(String),
    Issuer(String),
}

impl IntrospectionStore {
    /// Starts configuring a store that asks `endpoint` about tokens for
    /// `audience` (this API's resource identifier).
    pub fn builder(endpoint: &str, audience: &str) -> IntrospectionStoreBuilder {
        Self::configure(EndpointSetting::Url(endpoint.to_owned()), audience)
    }

    /// Starts configuring a store for `issuer`'s tokens for `audience`, at
    /// the `introspection_endpoint` of the issuer's metadata (OpenID Connect
    /// Discovery, else RFC 8414), whose `issuer` must be this one exactly.
    /// Lazy, like [`JwtStoreBuilder::discover`]: nothing is fetched before
    /// the first token, and tokens get 503 until the metadata can be had.
    ///
    /// [`JwtStoreBuilder::discover`]: crate::store::oauth::jwt::JwtStoreBuilder::discover
    pub fn discover(issuer: &str, audience: &str) -> IntrospectionStoreBuilder {
        Self::configure(EndpointSetting::Issuer(issuer.to_owned()), audience)
    }

    fn configure(endpoint: EndpointSetting, audience: &str) -> IntrospectionStoreBuilder {
        IntrospectionStoreBuilder {
            endpoint,
            metadata_refresh: DEFAULT_METADATA_REFRESH,
            audiences: vec![audience.to_owned()],
            client_credentials: None,
            claims: ClaimMap::new("sub"),
            max_cache_age: DEFAULT_MAX_CACHE_AGE,
            timeout: super::DEFAULT_HTTP_TIMEOUT,
            entitlements: None,
            client: None,
        }
    }

    /// What an introspection answer grants: `None` for an inactive,
    /// foreign, non-Bearer or expired token, or one whose claims cannot be
    /// read (a DEBUG event names the claim).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the answer is not a JSON object.
    pub(crate) fn read_answer(
        &self,
        answer: &Value,
        token: &PresentedToken,
    ) -> Result<Option<Grant>, StoreError> {
        let inner = &*self.inner;
        let Some(fields) = answer.as_object() else {
            return Err(StoreError::new("introspection answer is not a JSON object"));
        };
        if fields.get("active") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        let audience_ok = fields
            .get("aud")
            .is_some_and(|aud| super::holds_one_of(aud, &inner.audiences));
        let bearer = fields
            .get("token_type")
            .is_none_or(|t| t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")));
        let live = fields
            .get("exp")
            .is_none_or(|exp| exp.as_u64().is_some_and(|exp| exp > super::now_secs()));
        if !(audience_ok && bearer && live) {
            return Ok(None);
        }
        // RFC 7662 makes `jti` optional (oidc-provider leaves it out for
        // opaque tokens): fall back to the 4-byte hash prefix that logs show
        // anyway, which identifies the token without revealing it.
        let id = match fields.get("jti").and_then(Value::as_str) {
            Some(jti) => jti.to_owned(),
            None => {
                let [a, b, c, d, ..] = *token.hash().as_bytes();
                format!("introspected_{a:02x}{b:02x}{c:02x}{d:02x}")
            }
        };
        match Grant::from_claims(id, fields, &inner.claims) {
            Ok(grant) => Ok(Some(grant)),
            Err(_error) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(target: "scopegate::introspection", reason = "claim", claim = _error.claim(), problem = %_error, "token refused");
                Ok(None)
            }
        }
    }

    async fn introspect(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        let inner = &*self.inner;
        let endpoint = match &inner.endpoint {
            Endpoint::Url(url) => url.clone(),
            Endpoint::Discovered(discovery) => discovery
                .metadata()
                .await?
                .introspection_endpoint
                .clone()
                .ok_or_else(|| {
                    StoreError::new("the issuer's metadata has no introspection_endpoint")
                })?,
        };
        let request = inner
            .client
            .post(endpoint)
            .basic_auth(&inner.client_id, Some(&inner.client_secret))
            .header(http::header::ACCEPT, "application/json")
            .form(&[
                ("token", token.secret()),
                ("token_type_hint", "access_token"),
            ]);
        let answer = super::fetch_json(request).await.inspect_err(|_| {
            if let Endpoint::Discovered(discovery) = &inner.endpoint {
                // The endpoint moved, perhaps: look again next time.
                discovery.expire();
            }
        })?;
        let Some(grant) = self.read_answer(&answer, token)? else {
            return Ok(None);
        };
        let credential = grant.into_credential(&*inner.entitlements).await?;
        Ok(Some(credential.with_max_cache_age(inner.max_cache_age)))
    }
}

#[async_trait]
impl CredentialStore for IntrospectionStore {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        self.introspect(token).await
    }
}

impl fmt::Debug for IntrospectionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionStore")
            .field(
                "endpoint",
                &match &self.inner.endpoint {
                    Endpoint::Url(url) => url.as_str(),
                    Endpoint::Discovered(_) => "(discovered)",
                },
            )
            .field("audiences", &self.inner.audiences)
            .field("client_id", &self.inner.client_id)
            .field("max_cache_age", &self.inner.max_cache_age)
            .finish_non_exhaustive()
    }
}

/// Configures an [`IntrospectionStore`]; start with
/// [`IntrospectionStore::builder`].
#[must_use]
pub struct IntrospectionStoreBuilder {
    endpoint: EndpointSetting,
    metadata_refresh: Duration,
    audiences: Vec<String>,
    client_credentials: Option<(String, String)>,
    claims: ClaimMap,
    max_cache_age: Duration,
    timeout: Duration,
    entitlements: Option<Arc<dyn EntitlementSource>>,
    client: Option<reqwest::Client>,
}

impl IntrospectionStoreBuilder {
    claim_setters!();

    /// The API's own client id and secret at the authorization server, sent
    /// with HTTP Basic authentication (`client_secret_basic`). Required.
    pub fn client_credentials(mut self, client_id: &str, client_secret: &str) -> Self {
        self.client_credentials = Some((client_id.to_owned(), client_secret.to_owned()));
        self
    }

    /// The response field that names the account (default `sub`): a field
    /// name, or a JSON pointer when it starts with `/`. It must be a
    /// non-empty string; otherwise the token is refused.
    pub fn account_field(mut self, field: &str) -> Self {
        self.claims.account = field.into();
        self
    }

    /// The longest an answer is cached (default 60 s): the revocation
    /// window. See the [module docs](self#the-revocation-window).
    pub fn max_cache_age(mut self, age: Duration) -> Self {
        self.max_cache_age = age;
        self
    }

    /// The timeout of one introspection call with the default client
    /// (default 5 s). A timeout answers 503.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the account's plan entitlements come from. Required.
    pub fn entitlements(mut self, source: impl EntitlementSource + 'static) -> Self {
        self.entitlements = Some(Arc::new(source));
        self
    }

    /// How often discovered metadata is fetched again (default 24 h); see
    /// [`IntrospectionStore::discover`].
    pub fn metadata_refresh(mut self, every: Duration) -> Self {
        self.metadata_refresh = every;
        self
    }

    /// The HTTP client, e.g. one with your TLS settings; its own timeout
    /// then applies. By default a client without redirects and with
    /// [`timeout`](Self::timeout) is built.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the store.
    ///
    /// # Errors
    ///
    /// [`OAuthConfigError`] when the endpoint is not an http(s) URL, or the
    /// audience, client credentials or entitlement source are missing.
    pub fn build(self) -> Result<IntrospectionStore, OAuthConfigError> {
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(OAuthConfigError::Missing("audience"));
        }
        let (client_id, client_secret) = self
            .client_credentials
            .ok_or(OAuthConfigError::Missing("client_credentials"))?;
        let entitlements = self
            .entitlements
            .ok_or(OAuthConfigError::Missing("entitlements"))?;
        let client = match self.client {
            Some(client) => client,
            None => super::http_client(self.timeout)?,
        };
        let endpoint = match &self.endpoint {
            EndpointSetting::Url(url) => Endpoint::Url(super::check_url(url)?),
            EndpointSetting::Issuer(issuer) => Endpoint::Discovered(Box::new(Discovery::new(
                issuer,
                client.clone(),
                self.metadata_refresh,
            )?)),
        };
        Ok(IntrospectionStore {
            inner: Arc::new(Inner {
                endpoint,
                audiences: self.audiences,
                client_id,
                client_secret,
                claims: self.claims,
                max_cache_age: self.max_cache_age,
                entitlements,
                client,
            }),
        })
    }
}

impl fmt::Debug for IntrospectionStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionStoreBuilder")
            .field("endpoint", &self.endpoint)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map};

    /// One store for every case: building its HTTP client is the slow part.
    fn store() -> &'static IntrospectionStore {
        static STORE: std::sync::LazyLock<IntrospectionStore> = std::sync::LazyLock::new(build);
        &STORE
    }

    fn build() -> IntrospectionStore {
        IntrospectionStore::builder("http://127.0.0.1:9/introspect", "https://api.test")
            .client_credentials("api", "secret")
            .entitlements(std::collections::HashMap::<String, Vec<String>>::new())
            .build()
            .unwrap()
    }

    /// Each field an answer may have, of the right shape or not.
    fn answer() -> impl Strategy<Value = Value> {
        let now = super::super::now_secs();
        let field = |values: Vec<Value>| proptest::option::of(proptest::sample::select(values));
        (
            field(vec![json!(true), json!(false), json!("true"), json!(1)]),
            field(vec![
                json!("https://api.test"),
                json!(["x", "https://api.test"]),
                json!("https://other.test"),
                json!([]),
                json!(7),
            ]),
            field(vec![
                json!(now + 60),
                json!(now - 1),
                json!(-5),
                json!("soon"),
                json!(1.5),
            ]),
            field(vec![
                json!("Bearer"),
                json!("bearer"),
                json!("DPoP"),
                json!(null),
                json!(3),
            ]),
            field(vec![json!("app"), json!(""), json!(1), json!(["app"])]),
            field(vec![json!("ws"), json!(""), json!(false)]),
            field(vec![json!("a:read b:write"), json!(["a:read"]), json!(4)]),
            field(vec![json!("jti_1"), json!(9)]),
        )
            .prop_map(
                |(active, aud, exp, token_type, client_id, sub, scope, jti)| {
                    let mut fields = Map::new();
                    for (name, value) in [
                        ("active", active),
                        ("aud", aud),
                        ("exp", exp),
                        ("token_type", token_type),
                        ("client_id", client_id),
                        ("sub", sub),
                        ("scope", scope),
                        ("jti", jti),
                    ] {
                        if let Some(value) = value {
                            fields.insert(name.to_owned(), value);
                        }
                    }
                    Value::Object(fields)
                },
            )
    }

    proptest! {
        /// A grant only ever comes from an answer that is active (the JSON
        /// `true`), for this audience, Bearer or untyped, unexpired, with a
        /// client and an account; the reference is RFC 7662 §2.2 as the
        /// store's docs read it. Nothing panics.
        #[test]
        fn a_grant_comes_only_from_an_answer_that_allows_it(answer in answer()) {
            let store = store();
            let token = PresentedToken::new("opaque-token");
            let grant = store.read_answer(&answer, &token).unwrap();
            let get = |name: &str| answer.get(name);
            let expected = get("active") == Some(&json!(true))
                && get("aud").is_some_and(|aud| aud == "https://api.test" || aud.as_array().is_some_and(|a| a.contains(&json!("https://api.test"))))
                && get("exp").is_none_or(|exp| exp.as_u64().is_some_and(|exp| exp > super::super::now_secs()))
                && get("token_type").is_none_or(|t| t == "Bearer" || t == "bearer")
                && get("client_id").is_some_and(|c| c.as_str().is_some_and(|c| !c.is_empty()))
                && get("sub").is_some_and(|s| s.as_str().is_some_and(|s| !s.is_empty()))
                && get("scope").is_none_or(Value::is_string);
            prop_assert_eq!(grant.is_some(), expected, "{}", answer);
            if let Some(grant) = grant {
                prop_assert_eq!(grant.client_id, get("client_id").unwrap().as_str().unwrap());
                prop_assert_eq!(grant.account_id, get("sub").unwrap().as_str().unwrap());
            }
        }

        #[test]
        fn an_answer_that_is_not_an_object_is_an_error(value in prop_oneof![Just(json!([])), Just(json!(null)), Just(json!("active")), Just(json!(true))]) {
            prop_assert!(store().read_answer(&value, &PresentedToken::new("t")).is_err());
        }
    }
}
