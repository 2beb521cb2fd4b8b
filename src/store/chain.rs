//! Routing tokens to stores by their shape: API keys, JWTs, opaque tokens.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{CredentialStore, StoreError};
use crate::credential::{Credential, PresentedToken};
use crate::key::ApiKey;

/// What a bearer token looks like, judged without verifying anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenShape {
    /// Starts with the API-key prefix (by default [`ApiKey::PREFIX`], `ohk_`).
    ApiKey,
    /// A JWS compact serialization: three base64url parts joined by dots,
    /// the first one a JSON object (`eyJ…`). The signature may be empty, so
    /// that unsigned (`alg: none`) tokens reach the JWT store and are refused
    /// there.
    Jwt,
    /// Anything else, e.g. an opaque OAuth access token.
    Opaque,
}

impl TokenShape {
    /// The shape of `token`, given the API-key prefix in use.
    ///
    /// ```
    /// use scopegate::store::TokenShape;
    ///
    /// assert_eq!(TokenShape::of("ohk_0123", "ohk_"), TokenShape::ApiKey);
    /// assert_eq!(TokenShape::of("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "ohk_"), TokenShape::Jwt);
    /// assert_eq!(TokenShape::of("1CQC7hhfuk7K2GqUHUN_W4C8Deme6Ez6", "ohk_"), TokenShape::Opaque);
    /// ```
    pub fn of(token: &str, api_key_prefix: &str) -> Self {
        if !api_key_prefix.is_empty() && token.starts_with(api_key_prefix) {
            return TokenShape::ApiKey;
        }
        let b64url = |part: &str| {
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let mut parts = token.split('.');
        let is_jwt = token.starts_with("eyJ")
            && matches!(
                (parts.next(), parts.next(), parts.next(), parts.next()),
                (Some(header), Some(payload), Some(signature), None)
                    if b64url(header) && !payload.is_empty() && b64url(payload) && b64url(signature)
            );
        if is_jwt {
            TokenShape::Jwt
        } else {
            TokenShape::Opaque
        }
    }
}

/// A store that hands each token to the store for its [`TokenShape`]: API
/// keys to the key store, JWTs to a [`JwtStore`], the rest to an
/// [`IntrospectionStore`]. One API then accepts API keys and OAuth tokens side
/// by side, behind one cache and one set of layers; handlers tell them apart
/// by [`Credential::kind`].
///
/// A shape with no store resolves to "not found" (401), without a call.
///
/// [`JwtStore`]: crate::store::oauth::jwt::JwtStore
/// [`IntrospectionStore`]: crate::store::oauth::introspection::IntrospectionStore
///
/// # Example
///
/// ```
/// use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore};
/// use scopegate::credential::PresentedToken;
/// use scopegate::store::{ChainStore, CredentialStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), scopegate::store::StoreError> {
/// let keys = MemoryStore::new();
/// keys.insert_token("ohk_demo", Credential::new("key_1", "ws_acme", CredentialKind::ApiKey));
/// // With features `jwt` and `introspection`: `.jwt(jwt_store).opaque(introspection_store)`.
/// let chain = ChainStore::new().api_keys(keys);
///
/// assert!(chain.resolve(&PresentedToken::new("ohk_demo")).await?.is_some());
/// assert!(chain.resolve(&PresentedToken::new("opaque-token")).await?.is_none());
/// let gate = Gate::new(CachedStore::new(chain));
/// # let _ = gate;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ChainStore {
    api_key_prefix: Box<str>,
    api_keys: Option<Arc<dyn CredentialStore>>,
    jwt: Option<Arc<dyn CredentialStore>>,
    opaque: Option<Arc<dyn CredentialStore>>,
}

impl ChainStore {
    /// A chain with no stores, and the API-key prefix `ohk_`.
    pub fn new() -> Self {
        ChainStore {
            api_key_prefix: ApiKey::PREFIX.into(),
            api_keys: None,
            jwt: None,
            opaque: None,
        }
    }

    /// The prefix that marks API keys (default `ohk_`). An empty prefix sends
    /// no token to the key store.
    pub fn api_key_prefix(mut self, prefix: &str) -> Self {
        self.api_key_prefix = prefix.into();
        self
    }

    /// The store for API keys.
    pub fn api_keys(mut self, store: impl CredentialStore + 'static) -> Self {
        self.api_keys = Some(Arc::new(store));
        self
    }

    /// The store for JWT access tokens.
    pub fn jwt(mut self, store: impl CredentialStore + 'static) -> Self {
        self.jwt = Some(Arc::new(store));
        self
    }

    /// The store for every other token (opaque OAuth tokens).
    pub fn opaque(mut self, store: impl CredentialStore + 'static) -> Self {
        self.opaque = Some(Arc::new(store));
        self
    }

    fn route(&self, shape: TokenShape) -> Option<&Arc<dyn CredentialStore>> {
        match shape {
            TokenShape::ApiKey => self.api_keys.as_ref(),
            TokenShape::Jwt => self.jwt.as_ref(),
            TokenShape::Opaque => self.opaque.as_ref(),
        }
    }
}

impl Default for ChainStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl CredentialStore for ChainStore {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        match self.route(TokenShape::of(token.secret(), &self.api_key_prefix)) {
            Some(store) => store.resolve(token).await,
            None => Ok(None),
        }
    }
}

impl fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainStore")
            .field("api_key_prefix", &self.api_key_prefix)
            .field("api_keys", &self.api_keys.is_some())
            .field("jwt", &self.jwt.is_some())
            .field("opaque", &self.opaque.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CredentialKind, MemoryStore};

    #[test]
    fn shapes() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        for (token, shape) in [
            ("ohk_abc", TokenShape::ApiKey),
            (jwt, TokenShape::Jwt),
            ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", TokenShape::Jwt),
            ("eyJhbGciOiJub25lIn0..c2ln", TokenShape::Opaque),
            ("eyJ.a.b.c", TokenShape::Opaque),
            ("eyJ.a", TokenShape::Opaque),
            ("abc.def.ghi", TokenShape::Opaque),
            ("eyJ+.a.b", TokenShape::Opaque),
            ("opaque", TokenShape::Opaque),
        ] {
            assert_eq!(TokenShape::of(token, "ohk_"), shape, "{token}");
        }
        assert_eq!(TokenShape::of("ohk_abc", ""), TokenShape::Opaque);
    }

    #[tokio::test]
    async fn each_shape_goes_to_its_store_and_a_missing_one_is_not_found() {
        let store = |id: &str, token: &str| {
            let keys = MemoryStore::new();
            keys.insert_token(token, Credential::new(id, "ws", CredentialKind::ApiKey));
            keys
        };
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        let chain = ChainStore::new()
            .api_keys(store("from_keys", "ohk_1"))
            .jwt(store("from_jwt", jwt));
        let id = |token: &'static str| {
            let chain = chain.clone();
            async move {
                chain
                    .resolve(&PresentedToken::new(token))
                    .await
                    .unwrap()
                    .map(|c| c.id().to_owned())
            }
        };
        assert_eq!(id("ohk_1").await.as_deref(), Some("from_keys"));
        assert_eq!(id(jwt).await.as_deref(), Some("from_jwt"));
        assert_eq!(id("opaque").await, None, "no opaque store");
        let chain = chain.opaque(store("from_opaque", "opaque"));
        let found = chain.resolve(&PresentedToken::new("opaque")).await.unwrap();
        assert_eq!(found.unwrap().id(), "from_opaque");
    }
}
