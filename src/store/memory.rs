//! The embedded in-process store.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;

use super::{CredentialStore, StoreError};
use crate::credential::{Credential, CredentialKind, PresentedToken, TokenHash};
use crate::limit::Limit;
use crate::scope::{ScopeError, ScopeSet};

/// An in-process credential store keyed by token hash.
///
/// Cloning is cheap and every clone sees the same credentials, so an
/// application can keep one clone to manage keys while a [`Gate`](crate::gate::Gate)
/// reads through another. Changes here are not pushed into a cache: after a
/// revocation, call the matching `invalidate_*` method of the gate's
/// [`CachedStore`](crate::cache::CachedStore), or wait for its `time_to_live`.
///
/// # Example
///
/// ```
/// use scopegate::{Credential, CredentialKind, MemoryStore, ScopeSet};
/// use scopegate::credential::{PresentedToken, TokenHash};
/// use scopegate::store::CredentialStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // From a JSON file of hashed keys …
/// let store = MemoryStore::from_json(&format!(
///     r#"{{"credentials": [{{
///         "token_sha256": "{}",
///         "id": "key_1", "account_id": "ws_acme",
///         "scopes": ["contacts:read"], "entitlements": ["api-access"]
///     }}]}}"#,
///     TokenHash::of("ohk_demo_contacts_read").to_hex(),
/// ))?;
/// // … or one at a time. The token is hashed at once and not kept.
/// store.insert_token(
///     "ohk_demo_all_scopes",
///     Credential::new("key_2", "ws_acme", CredentialKind::ApiKey)
///         .with_scopes(ScopeSet::parse(["contacts:write"])?),
/// );
///
/// let hash = TokenHash::of("ohk_demo_contacts_read");
/// let token = PresentedToken::new("ohk_demo_contacts_read");
/// assert_eq!(store.resolve(&token).await?.unwrap().id(), "key_1");
/// assert_eq!(store.revoke_credential("key_1"), vec![hash]);
/// assert!(store.resolve(&token).await?.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    map: Arc<RwLock<HashMap<TokenHash, Credential>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<TokenHash, Credential>> {
        // The map is never left half-updated, so a poisoned lock is still valid.
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<TokenHash, Credential>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `credential` under `hash`, returning what was there before.
    pub fn insert(&self, hash: TokenHash, credential: Credential) -> Option<Credential> {
        self.write().insert(hash, credential)
    }

    /// The credential stored for `hash`, if any.
    pub fn get(&self, hash: &TokenHash) -> Option<Credential> {
        self.read().get(hash).cloned()
    }

    /// Hashes `token` and stores `credential` under the hash. The token itself
    /// is not kept.
    pub fn insert_token(&self, token: &str, credential: Credential) -> TokenHash {
        let hash = TokenHash::of(token);
        self.insert(hash, credential);
        hash
    }

    /// Removes the credential stored under `hash`.
    pub fn revoke(&self, hash: &TokenHash) -> Option<Credential> {
        self.write().remove(hash)
    }

    /// Removes every token of the credential `id`, returning their hashes.
    pub fn revoke_credential(&self, id: &str) -> Vec<TokenHash> {
        let mut map = self.write();
        let hashes: Vec<TokenHash> = map
            .iter()
            .filter(|(_, c)| c.id() == id)
            .map(|(h, _)| *h)
            .collect();
        for hash in &hashes {
            map.remove(hash);
        }
        hashes
    }

    /// Replaces the entitlements of every credential of `account_id` (a plan
    /// change), returning how many credentials changed.
    pub fn set_account_entitlements<I>(&self, account_id: &str, entitlements: I) -> usize
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let entitlements: Vec<String> = entitlements.into_iter().map(Into::into).collect();
        let mut changed = 0;
        for credential in self.write().values_mut() {
            if credential.account_id() == account_id {
                *credential = credential
                    .clone()
                    .with_entitlements(entitlements.iter().cloned());
                changed += 1;
            }
        }
        changed
    }

    /// Replaces the limits of every credential of `account_id` (a plan
    /// change), returning how many credentials changed. Running gates see
    /// the new limits once the cache forgets the old credentials
    /// ([`CachedStore::invalidate_account`](crate::CachedStore::invalidate_account)).
    pub fn set_account_limits<I>(&self, account_id: &str, limits: I) -> usize
    where
        I: IntoIterator<Item = Limit>,
    {
        let limits: Vec<Limit> = limits.into_iter().collect();
        let mut changed = 0;
        for credential in self.write().values_mut() {
            if credential.account_id() == account_id {
                *credential = credential.clone().with_limits(limits.iter().cloned());
                changed += 1;
            }
        }
        changed
    }

    /// Every stored credential with its hash, in no particular order.
    pub fn credentials(&self) -> Vec<(TokenHash, Credential)> {
        self.read().iter().map(|(h, c)| (*h, c.clone())).collect()
    }

    /// How many tokens the store holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Builds a store from JSON text.
    ///
    /// The document is `{"credentials": [entry, …]}`; each entry has
    /// `token_sha256` (64 hex digits), `id`, `account_id`, and optionally
    /// `scopes`, `entitlements` (arrays of strings), `expires_at` (Unix
    /// seconds) and `client_id` (which makes the credential an OAuth client
    /// rather than an API key). Unknown fields are rejected.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming the entry and field at fault.
    pub fn from_json(json: &str) -> Result<Self, LoadError> {
        let file: JsonFile = serde_json::from_str(json).map_err(LoadError::Json)?;
        let store = MemoryStore::new();
        {
            let mut map = store.write();
            for (index, entry) in file.credentials.into_iter().enumerate() {
                let (hash, credential) = entry
                    .into_credential()
                    .map_err(|reason| LoadError::Entry { index, reason })?;
                if map.insert(hash, credential).is_some() {
                    return Err(LoadError::Entry {
                        index,
                        reason: "duplicate token_sha256".to_owned(),
                    });
                }
            }
        }
        Ok(store)
    }

    /// Reads a file and calls [`from_json`](Self::from_json).
    ///
    /// # Errors
    ///
    /// [`LoadError::Io`] when the file cannot be read, or see
    /// [`from_json`](Self::from_json).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(LoadError::Io)?;
        Self::from_json(&text)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .finish()
    }
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        Ok(self.get(token.hash()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    credentials: Vec<JsonEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry {
    token_sha256: String,
    id: String,
    account_id: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    entitlements: Vec<String>,
    #[serde(default)]
    expires_at: Option<u64>,
}

impl JsonEntry {
    fn into_credential(self) -> Result<(TokenHash, Credential), String> {
        let hash =
            TokenHash::from_hex(&self.token_sha256).map_err(|e| format!("token_sha256: {e}"))?;
        let scopes =
            ScopeSet::parse(&self.scopes).map_err(|e: ScopeError| format!("scopes: {e}"))?;
        let kind = match self.client_id {
            Some(client_id) => CredentialKind::OAuthClient { client_id },
            None => CredentialKind::ApiKey,
        };
        let mut credential = Credential::new(self.id, self.account_id, kind)
            .with_scopes(scopes)
            .with_entitlements(self.entitlements);
        if let Some(secs) = self.expires_at {
            credential = credential.with_expires_at(UNIX_EPOCH + Duration::from_secs(secs));
        }
        Ok((hash, credential))
    }
}

/// A JSON credential file could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The text is not a credential document.
    Json(serde_json::Error),
    /// Entry `index` (from 0) is invalid.
    Entry {
        /// Position of the entry in `credentials`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "cannot read credential file: {e}"),
            LoadError::Json(e) => write!(f, "invalid credential JSON: {e}"),
            LoadError::Entry { index, reason } => write!(f, "credentials[{index}]: {reason}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io(e) => Some(e),
            LoadError::Json(e) => Some(e),
            LoadError::Entry { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn unix(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn entry(extra: &str) -> String {
        format!(
            r#"{{"credentials":[{{"token_sha256":"{}","id":"key_1","account_id":"ws_acme"{extra}}}]}}"#,
            TokenHash::of("t").to_hex()
        )
    }

    #[tokio::test]
    async fn loads_json_with_every_field() {
        let exp = unix(SystemTime::now()) + 3600;
        let store = MemoryStore::from_json(&entry(&format!(
            r#","client_id":"app_9","scopes":["contacts:read"],"entitlements":["api-access"],"expires_at":{exp}"#
        )))
        .unwrap();
        let c = store.get(&TokenHash::of("t")).unwrap();
        assert_eq!(c.id(), "key_1");
        assert_eq!(c.account_id(), "ws_acme");
        assert_eq!(
            c.kind(),
            &CredentialKind::OAuthClient {
                client_id: "app_9".into()
            }
        );
        assert_eq!(format!("{:?}", c.scopes()), r#"{"contacts:read"}"#);
        assert!(c.has_entitlement("api-access"));
        assert_eq!(c.expires_at(), Some(UNIX_EPOCH + Duration::from_secs(exp)));
    }

    #[test]
    fn rejects_bad_json_with_a_clear_message() {
        let cases = [
            (
                entry(r#","scopes":["bad scope"]"#),
                "credentials[0]: scopes: invalid scope \"bad scope\"",
            ),
            (
                entry(r#","token":"plain""#),
                "invalid credential JSON: unknown field `token`",
            ),
            (
                r#"{"credentials":[{"token_sha256":"abc","id":"k","account_id":"a"}]}"#.to_owned(),
                "credentials[0]: token_sha256: a token hash is 64 hexadecimal digits (SHA-256)",
            ),
        ];
        for (json, want) in cases {
            let err = MemoryStore::from_json(&json)
                .expect_err("must fail")
                .to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
        let twice = format!(
            r#"{{"credentials":[{{"token_sha256":"{h}","id":"a","account_id":"w"}},{{"token_sha256":"{h}","id":"b","account_id":"w"}}]}}"#,
            h = TokenHash::of("t").to_hex()
        );
        assert_eq!(
            MemoryStore::from_json(&twice).err().unwrap().to_string(),
            "credentials[1]: duplicate token_sha256"
        );
        assert!(matches!(
            MemoryStore::from_json_file("/nonexistent/creds.json"),
            Err(LoadError::Io(_))
        ));
    }

    #[tokio::test]
    async fn revoke_and_plan_changes() {
        let store = MemoryStore::new();
        let a = store.insert_token(
            "a",
            Credential::new("key_a", "ws_1", CredentialKind::ApiKey)
                .with_entitlements(["api-access"]),
        );
        let b = store.insert_token(
            "b",
            Credential::new("key_b", "ws_1", CredentialKind::ApiKey)
                .with_entitlements(["api-access"]),
        );
        store.insert_token(
            "c",
            Credential::new("key_c", "ws_2", CredentialKind::ApiKey),
        );
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.set_account_entitlements("ws_1", Vec::<String>::new()),
            2
        );
        assert!(!store.get(&a).unwrap().has_entitlement("api-access"));
        assert_eq!(store.revoke(&b).unwrap().id(), "key_b");
        assert!(store.revoke(&b).is_none());
        assert_eq!(store.revoke_credential("key_a"), vec![a]);
        assert_eq!(store.len(), 1);
        assert_eq!(format!("{store:?}"), "MemoryStore { len: 1 }");
    }
}
