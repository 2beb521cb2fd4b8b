//! Authorization server metadata (RFC 8414, OpenID Connect Discovery 1.0):
//! where an issuer publishes its keys and its introspection endpoint.
//!
//! Fetched lazily, on the first lookup that needs it, so that an
//! application starts while its identity provider is down; single-flight;
//! retried with bounded backoff; refreshed periodically, keeping the last
//! good metadata when a refresh fails.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use super::OAuthConfigError;
use crate::store::StoreError;

/// How often metadata is fetched again by default.
pub(crate) const DEFAULT_METADATA_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What scopegate reads of an issuer's metadata.
#[derive(Debug)]
pub(crate) struct Metadata {
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) jwks_uri: Option<reqwest::Url>,
    #[cfg_attr(not(feature = "introspection"), allow(dead_code))]
    pub(crate) introspection_endpoint: Option<reqwest::Url>,
}

/// One issuer's metadata, fetched on demand.
pub(crate) struct Discovery {
    issuer: String,
    /// Where to look, in order: OpenID Connect's
    /// `{issuer}/.well-known/openid-configuration`, then RFC 8414's
    /// `/.well-known/oauth-authorization-server{path}`.
    locations: [reqwest::Url; 2],
    client: reqwest::Client,
    refresh_every: Duration,
    /// The last good metadata, and until when it is fresh.
    current: RwLock<Option<(Arc<Metadata>, Instant)>>,
    /// Held while fetching: one fetch at a time, and the backoff's state.
    fetch: Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    not_before: Option<Instant>,
    failures: u32,
    last_error: Option<StoreError>,
}

impl Discovery {
    /// Discovery for `issuer` (checked to be an http(s) URL).
    pub(crate) fn new(
        issuer: &str,
        client: reqwest::Client,
        refresh_every: Duration,
    ) -> Result<Self, OAuthConfigError> {
        let url = super::check_url(issuer)?;
        let trimmed = issuer.trim_end_matches('/');
        let oidc = super::check_url(&format!("{trimmed}/.well-known/openid-configuration"))?;
        // RFC 8414 §3.1: the well-known segment between the host and the
        // issuer's path.
        let path = url.path().trim_end_matches('/');
        let mut rfc8414 = url.clone();
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        rfc8414.set_query(None);
        Ok(Discovery {
            issuer: issuer.to_owned(),
            locations: [oidc, rfc8414],
            client,
            refresh_every,
            current: RwLock::new(None),
            fetch: Mutex::new(Backoff::default()),
        })
    }

    /// The issuer's metadata: the last good copy while it is fresh, else
    /// fetched now (one fetch at a time; within the backoff after a failure,
    /// the failure again). A failed refresh keeps the last good copy.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] (503) while no metadata could be had.
    pub(crate) async fn metadata(&self) -> Result<Arc<Metadata>, StoreError> {
        if let Some(metadata) = self.fresh() {
            return Ok(metadata);
        }
        let mut backoff = self.fetch.lock().await;
        if let Some(metadata) = self.fresh() {
            return Ok(metadata); // fetched while this lookup waited
        }
        let last_good = self.last_good();
        if backoff.not_before.is_some_and(|t| Instant::now() < t) {
            return match (last_good, &backoff.last_error) {
                (Some(metadata), _) => Ok(metadata),
                (None, Some(error)) => Err(error.clone()),
                (None, None) => Err(StoreError::new("authorization server metadata unavailable")),
            };
        }
        match self.fetch_now().await {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                let now = Instant::now();
                let fresh_until = now.checked_add(self.refresh_every).unwrap_or(now);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Some((Arc::clone(&metadata), fresh_until));
                *backoff = Backoff::default();
                Ok(metadata)
            }
            Err(error) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "scopegate::oauth", issuer = %self.issuer, %error, failures = backoff.failures + 1, "discovery failed");
                backoff.failures = backoff.failures.saturating_add(1);
                let wait = Duration::from_secs(1 << backoff.failures.min(7).saturating_sub(1));
                backoff.not_before = Some(Instant::now() + wait.min(MAX_BACKOFF));
                backoff.last_error = Some(error.clone());
                last_good.ok_or(error)
            }
        }
    }

    /// Makes the next lookup fetch the metadata again (keeping this copy if
    /// that fails): what it points at stopped working.
    pub(crate) fn expire(&self) {
        if let Some((_, fresh_until)) = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            *fresh_until = Instant::now();
        }
    }

    fn fresh(&self) -> Option<Arc<Metadata>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let (metadata, fresh_until) = current.as_ref()?;
        (Instant::now() < *fresh_until).then(|| Arc::clone(metadata))
    }

    fn last_good(&self) -> Option<Arc<Metadata>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|(metadata, _)| Arc::clone(metadata))
    }

    /// Tries each location in order; the first that answers with a JSON
    /// document decides.
    async fn fetch_now(&self) -> Result<Metadata, StoreError> {
        let mut failure = None;
        for location in &self.locations {
            match super::fetch_json(self.client.get(location.clone())).await {
                Ok(document) => return self.read(&document),
                // A timeout is no reason to think the other location answers.
                Err(error) if error.is_timeout() => return Err(error),
                Err(error) => failure = Some(error),
            }
        }
        Err(failure.unwrap_or_else(|| StoreError::new("no metadata location")))
    }

    /// Checks a metadata document and reads what scopegate needs.
    fn read(&self, document: &Value) -> Result<Metadata, StoreError> {
        // RFC 8414 §3.3: the issuer must be the one configured, exactly;
        // otherwise the metadata is not used (the mix-up defence).
        let issuer = document.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.issuer.as_str()) {
            return Err(StoreError::new(format!(
                "metadata names issuer {issuer:?}, not {:?}: refused",
                self.issuer
            )));
        }
        let url = |field: &str| -> Result<Option<reqwest::Url>, StoreError> {
            match document.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(url)) => super::check_url(url).map(Some).map_err(|_| {
                    StoreError::new(format!("metadata {field} {url:?} is not an http(s) URL"))
                }),
                Some(_) => Err(StoreError::new(format!("metadata {field} is not a string"))),
            }
        };
        Ok(Metadata {
            jwks_uri: url("jwks_uri")?,
            introspection_endpoint: url("introspection_endpoint")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(issuer: &str) -> Discovery {
        Discovery::new(issuer, reqwest::Client::new(), DEFAULT_METADATA_REFRESH).unwrap()
    }

    #[test]
    fn both_well_known_locations_of_an_issuer_with_and_without_a_path() {
        let at = |issuer: &str| {
            discovery(issuer)
                .locations
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            at("https://kc.example/realms/acme"),
            [
                "https://kc.example/realms/acme/.well-known/openid-configuration",
                "https://kc.example/.well-known/oauth-authorization-server/realms/acme",
            ]
        );
        assert_eq!(
            at("https://tenant.auth0.test/"),
            [
                "https://tenant.auth0.test/.well-known/openid-configuration",
                "https://tenant.auth0.test/.well-known/oauth-authorization-server",
            ]
        );
    }

    #[test]
    fn metadata_must_name_the_issuer_exactly() {
        let d = discovery("https://kc.example/realms/acme");
        let read = |doc: Value| d.read(&doc).map(|m| m.jwks_uri.map(|u| u.to_string()));
        assert_eq!(
            read(serde_json::json!({"issuer": "https://kc.example/realms/acme", "jwks_uri": "https://kc.example/certs"}))
                .unwrap(),
            Some("https://kc.example/certs".to_owned())
        );
        for issuer in [
            "https://kc.example/realms/acme/",
            "https://kc.example/realms/other",
            "https://evil.example/realms/acme",
        ] {
            assert!(
                read(serde_json::json!({"issuer": issuer, "jwks_uri": "https://kc.example/certs"}))
                    .is_err(),
                "{issuer}"
            );
        }
        assert!(read(serde_json::json!({"jwks_uri": "https://kc.example/certs"})).is_err());
        assert!(read(
            serde_json::json!({"issuer": "https://kc.example/realms/acme", "jwks_uri": "ftp://x"})
        )
        .is_err());
        assert_eq!(
            read(serde_json::json!({"issuer": "https://kc.example/realms/acme"})).unwrap(),
            None
        );
    }
}
