//! OAuth 2.0 Protected Resource Metadata (RFC 9728).
//!
//! Clients that receive a 401 can discover which authorization servers issue
//! tokens for this API and which scopes it knows by fetching
//! `/.well-known/oauth-protected-resource`. Point challenges at it with
//! [`GateBuilder::resource_metadata`](crate::gate::GateBuilder::resource_metadata)
//! and serve it with [`ProtectedResourceMetadata::response`].
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use scopegate::metadata::ProtectedResourceMetadata;
//!
//! let metadata = ProtectedResourceMetadata::new("https://api.example.com")
//!     .authorization_server("https://auth.example.com")
//!     .scopes_supported(["contacts:read", "contacts:write"]);
//! assert_eq!(
//!     metadata.to_json(),
//!     r#"{"resource":"https://api.example.com","authorization_servers":["https://auth.example.com"],"scopes_supported":["contacts:read","contacts:write"],"bearer_methods_supported":["header"]}"#
//! );
//!
//! let app: Router = Router::new().route(
//!     ProtectedResourceMetadata::PATH,
//!     get(move || async move { metadata.response::<axum::body::Body>() }),
//! );
//! # let _ = app;
//! ```

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use serde::Serialize;

/// The metadata document of a protected resource (RFC 9728 §2).
///
/// See the [module docs](crate::metadata) for an example.
#[derive(Clone, Debug, Serialize)]
#[must_use]
pub struct ProtectedResourceMetadata {
    resource: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorization_servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes_supported: Vec<String>,
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<String>,
}

impl ProtectedResourceMetadata {
    /// Where the document is served, relative to the resource.
    pub const PATH: &'static str = "/.well-known/oauth-protected-resource";

    /// Metadata for the resource identified by `resource` (its URL).
    pub fn new(resource: &str) -> Self {
        ProtectedResourceMetadata {
            resource: resource.to_owned(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            bearer_methods_supported: ["header"],
            resource_name: None,
        }
    }

    /// Adds an authorization server that issues tokens for this resource.
    pub fn authorization_server(mut self, issuer: &str) -> Self {
        self.authorization_servers.push(issuer.to_owned());
        self
    }

    /// The scopes this resource understands.
    pub fn scopes_supported<I>(mut self, scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.scopes_supported = scopes.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    /// A human-readable name for the resource.
    pub fn resource_name(mut self, name: &str) -> Self {
        self.resource_name = Some(name.to_owned());
        self
    }

    /// The JSON document.
    pub fn to_json(&self) -> Bytes {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// A `200 application/json` response carrying the document, with any
    /// body type that can be made from `Bytes` (axum's `Body`,
    /// `Full<Bytes>`, …).
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        let mut response = Response::new(B::from(self.to_json()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        response
    }
}
