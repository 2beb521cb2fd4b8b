//! Turning rejections into responses: rendered once, when a gate or layer is
//! built, and cloned into each response.
//!
//! Private: the contract these bytes follow is public in
//! [`error`](crate::error). This module holds how a gate renders (the
//! messages, the challenge's attributes, a custom renderer), the prerendered
//! responses, and the HTTP and gRPC defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{Entry, HeaderName, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::body::ResponseBody;
use crate::error::{ConfigError, ErrorEnvelope, Malformed, Messages, Rejection, RenderRejection};
use crate::scope::Scope;

/// How a gate renders rejections: everything that shapes an error response.
#[derive(Clone)]
pub(crate) struct Render {
    pub(crate) messages: Messages,
    pub(crate) retry_after: Duration,
    /// `realm="…"` in challenges, already checked to be quotable.
    pub(crate) realm: Option<String>,
    /// RFC 9728 `resource_metadata="…"` in challenges, already checked.
    pub(crate) resource_metadata: Option<String>,
    /// Whether a 403 names the missing scope (the documented default).
    pub(crate) disclose_scope: bool,
    pub(crate) renderer: Option<Arc<dyn RenderRejection>>,
}

impl Default for Render {
    fn default() -> Self {
        Render {
            messages: Messages::default(),
            retry_after: Duration::from_secs(5),
            realm: None,
            resource_metadata: None,
            disclose_scope: true,
            renderer: None,
        }
    }
}

impl fmt::Debug for Render {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Render")
            .field("messages", &self.messages)
            .field("retry_after", &self.retry_after)
            .field("realm", &self.realm)
            .field("resource_metadata", &self.resource_metadata)
            .field("disclose_scope", &self.disclose_scope)
            .field("renderer", &self.renderer.is_some())
            .finish()
    }
}

const UNDISCLOSED_SCOPE: &str =
    "Your credential does not have the permission this action requires.";

impl Render {
    /// The `WWW-Authenticate` value: `Bearer`, then realm, error, scope and
    /// resource_metadata attributes, as RFC 6750 §3 and RFC 9728 §5.1 order them.
    fn challenge(&self, error: Option<&str>, scope: Option<Scope>) -> HeaderValue {
        let mut attributes = Vec::new();
        if let Some(realm) = &self.realm {
            attributes.push(format!(r#"realm="{realm}""#));
        }
        if let Some(error) = error {
            attributes.push(format!(r#"error="{error}""#));
        }
        if let Some(scope) = scope {
            // A scope token has no '"' or '\' (RFC 6749 §3.3): it can be quoted as is.
            attributes.push(format!(r#"scope="{scope}""#));
        }
        if let Some(url) = &self.resource_metadata {
            attributes.push(format!(r#"resource_metadata="{url}""#));
        }
        let value = if attributes.is_empty() {
            "Bearer".to_owned()
        } else {
            format!("Bearer {}", attributes.join(", "))
        };
        // Every part was checked to be visible ASCII when configured.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// Checks that the realm and the metadata URL can be quoted in a
    /// challenge.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (what, value) in [
            ("realm", &self.realm),
            ("resource_metadata", &self.resource_metadata),
        ] {
            if let Some(value) = value {
                quotable(what, value)?;
            }
        }
        Ok(())
    }

    fn message(&self, rejection: &Rejection) -> String {
        match rejection {
            Rejection::InsufficientScope(_) if !self.disclose_scope => UNDISCLOSED_SCOPE.to_owned(),
            _ => self.messages.message(rejection),
        }
    }
}

/// A value that can sit inside a quoted-string as is.
fn quotable(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Header {
            what,
            value: value.escape_debug().to_string(),
        })
    }
}

/// A rejection rendered once, at build time, and cloned into each response.
/// Cloning it is a reference-count increment.
#[derive(Clone, Debug)]
pub(crate) struct ErrorResponse(Arc<Prerendered>);

#[derive(Debug)]
struct Prerendered {
    rejection: Rejection,
    http: Rendered,
    grpc: Rendered,
}

/// One response's parts, ready to clone.
#[derive(Clone, Debug)]
struct Rendered {
    status: StatusCode,
    headers: HeaderMap,
    /// Empty for a body-less response (a gRPC trailers-only response).
    body: Bytes,
}

impl From<Response<Bytes>> for Rendered {
    fn from(response: Response<Bytes>) -> Self {
        let (parts, body) = response.into_parts();
        Rendered {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// What the gRPC spec leaves unencoded in `grpc-message`: %x20-%x24 and
/// %x26-%x7E. Everything else, `%` included, is percent-encoded.
const GRPC_MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Whether a request speaks gRPC (`content-type: application/grpc…`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl ErrorResponse {
    pub(crate) fn new(rejection: Rejection, render: &Render) -> Self {
        let message = render.message(&rejection);
        let custom = |grpc| {
            render
                .renderer
                .as_ref()
                .and_then(|r| r.render(&rejection, &message, grpc))
                .map(Rendered::from)
        };
        let http = custom(false).unwrap_or_else(|| default_http(&rejection, &message, render));
        let grpc = custom(true).unwrap_or_else(|| default_grpc(&rejection, &message));
        ErrorResponse(Arc::new(Prerendered {
            rejection,
            http,
            grpc,
        }))
    }

    /// The response: JSON for HTTP clients; for gRPC clients a trailers-only
    /// response (HTTP 200, `grpc-status`, `grpc-message`, no body).
    pub(crate) fn to_response<B>(&self, grpc: bool) -> Response<ResponseBody<B>> {
        let rendered = if grpc { &self.0.grpc } else { &self.0.http };
        let body = if rendered.body.is_empty() {
            ResponseBody::empty()
        } else {
            ResponseBody::error(rendered.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = rendered.status;
        *response.headers_mut() = rendered.headers.clone();
        response.extensions_mut().insert(self.0.rejection.clone());
        response
    }

    /// The HTTP response, its body as bytes (for the axum extractors and
    /// the OpenAPI document's examples).
    #[cfg(any(feature = "axum", feature = "openapi"))]
    pub(crate) fn to_http_response(&self) -> Response<Bytes> {
        let rendered = &self.0.http;
        let mut response = Response::new(rendered.body.clone());
        *response.status_mut() = rendered.status;
        *response.headers_mut() = rendered.headers.clone();
        response.extensions_mut().insert(self.0.rejection.clone());
        response
    }

    #[cfg(any(test, feature = "tracing", feature = "metrics", feature = "openapi"))]
    pub(crate) fn rejection(&self) -> &Rejection {
        &self.0.rejection
    }
}

/// The documented JSON response.
fn default_http(rejection: &Rejection, message: &str, render: &Render) -> Rendered {
    let kind = rejection.kind();
    let body = ErrorEnvelope::new(kind.as_str(), message).to_bytes();
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(CONTENT_TYPE, JSON.clone());
    headers.insert(CACHE_CONTROL, NO_STORE.clone());
    match rejection {
        Rejection::MissingCredential => {
            headers.insert(WWW_AUTHENTICATE, render.challenge(None, None));
        }
        Rejection::Malformed(_) => {
            headers.insert(
                WWW_AUTHENTICATE,
                render.challenge(Some("invalid_request"), None),
            );
        }
        Rejection::InvalidToken => {
            headers.insert(
                WWW_AUTHENTICATE,
                render.challenge(Some("invalid_token"), None),
            );
        }
        Rejection::InsufficientScope(scope) => {
            let scope = render.disclose_scope.then_some(*scope);
            headers.insert(
                WWW_AUTHENTICATE,
                render.challenge(Some("insufficient_scope"), scope),
            );
        }
        Rejection::StoreUnavailable => {
            let retry = render.retry_after;
            let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        Rejection::RateLimited { retry_after, .. }
        | Rejection::QuotaExceeded { retry_after, .. } => {
            headers.insert(RETRY_AFTER, HeaderValue::from((*retry_after).max(1)));
        }
        Rejection::MissingEntitlement(_) | Rejection::NoRoute => {}
    }
    Rendered {
        status: kind.status(),
        headers,
        body,
    }
}

/// A trailers-only gRPC response carrying the same message.
fn default_grpc(rejection: &Rejection, message: &str) -> Rendered {
    let encoded = utf8_percent_encode(message, GRPC_MESSAGE_ESCAPES).to_string();
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(CONTENT_TYPE, GRPC.clone());
    headers.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(u16::from(rejection.kind().grpc_status())),
    );
    // Percent-encoding leaves only visible ASCII and spaces: always valid.
    headers.insert(
        GRPC_MESSAGE.clone(),
        HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static("")),
    );
    Rendered {
        status: StatusCode::OK,
        headers,
        body: Bytes::new(),
    }
}

/// Headers a layer adds to the response of a request it decided, each
/// unless an inner layer already set it (it knows its route better than an
/// outer one): the GitHub-style scope headers and the IETF rate-limit ones.
#[derive(Debug, Default)]
pub(crate) struct AddedHeaders {
    /// `X-OAuth-Scopes`: the scopes the credential has.
    pub(crate) granted: Option<HeaderValue>,
    /// `X-Accepted-OAuth-Scopes`: the scopes the route accepts.
    pub(crate) accepted: Option<HeaderValue>,
    /// `RateLimit-Policy`: the limits counted.
    pub(crate) policy: Option<HeaderValue>,
    /// `RateLimit`: what is left of them.
    pub(crate) limit: Option<HeaderValue>,
    /// This layer counted a request an outer layer had counted: the outer
    /// layer's limit headers are out of date.
    pub(crate) recounted: bool,
}

/// On a response, in its extensions: an inner layer counted the request
/// again, so outer layers leave their limit headers off.
#[derive(Clone, Copy)]
struct Recounted;

static X_OAUTH_SCOPES: HeaderName = HeaderName::from_static("x-oauth-scopes");
static X_ACCEPTED_OAUTH_SCOPES: HeaderName = HeaderName::from_static("x-accepted-oauth-scopes");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl AddedHeaders {
    /// Adds each header that is set and not already in `headers`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        self.apply_to(headers, true);
    }

    /// Adds the headers to the inner service's response. The limits are left
    /// off an inner layer's refusal (that layer gave back what was counted)
    /// and off a response an inner layer counted again.
    pub(crate) fn apply_to_inner<B>(&self, response: &mut http::Response<B>) {
        let extensions = response.extensions();
        let current = self.policy.is_none()
            || (extensions.get::<Rejection>().is_none() && extensions.get::<Recounted>().is_none());
        if self.recounted {
            response.extensions_mut().insert(Recounted);
        }
        self.apply_to(response.headers_mut(), current);
    }

    fn apply_to(&self, headers: &mut HeaderMap, limits: bool) {
        for (name, value) in [
            (&X_OAUTH_SCOPES, self.granted.as_ref()),
            (&X_ACCEPTED_OAUTH_SCOPES, self.accepted.as_ref()),
            (&RATELIMIT_POLICY, self.policy.as_ref().filter(|_| limits)),
            (&RATELIMIT, self.limit.as_ref().filter(|_| limits)),
        ] {
            if let Some(value) = value {
                if let Entry::Vacant(entry) = headers.entry(name) {
                    entry.insert(value.clone());
                }
            }
        }
    }
}

/// Rendered responses for the rejections every gate can produce.
#[derive(Clone, Debug)]
pub(crate) struct FixedResponses {
    pub(crate) missing: ErrorResponse,
    pub(crate) invalid_token: ErrorResponse,
    /// Indexed by `Malformed as usize`: in the order of `Malformed::ALL`.
    malformed: [ErrorResponse; Malformed::ALL.len()],
    pub(crate) unavailable: ErrorResponse,
    pub(crate) no_route: ErrorResponse,
    /// A spent rate limit and a spent quota, as examples for documents (a
    /// real 429 names its own limit and wait).
    #[cfg(feature = "openapi")]
    limits: [ErrorResponse; 2],
}

impl FixedResponses {
    /// The responses of every rejection that does not depend on a route.
    pub(crate) fn new(render: &Render) -> Self {
        let make = |r| ErrorResponse::new(r, render);
        FixedResponses {
            missing: make(Rejection::MissingCredential),
            invalid_token: make(Rejection::InvalidToken),
            malformed: Malformed::ALL.map(|m| make(Rejection::Malformed(m))),
            unavailable: make(Rejection::StoreUnavailable),
            no_route: make(Rejection::NoRoute),
            #[cfg(feature = "openapi")]
            limits: [
                make(Rejection::RateLimited {
                    limit: "requests".into(),
                    retry_after: 3,
                }),
                make(Rejection::QuotaExceeded {
                    limit: "monthly".into(),
                    retry_after: 86_400,
                }),
            ],
        }
    }

    /// Example 429s: a rate limit's and a quota's.
    #[cfg(feature = "openapi")]
    pub(crate) fn limit_examples(&self) -> &[ErrorResponse] {
        &self.limits
    }

    /// Every `invalid_request` response, one per [`Malformed`] reason.
    #[cfg(feature = "openapi")]
    pub(crate) fn every_malformed(&self) -> &[ErrorResponse] {
        &self.malformed
    }

    pub(crate) fn malformed(&self, reason: Malformed) -> &ErrorResponse {
        // `Malformed::ALL` lists every variant at its index, so the index is
        // in bounds.
        &self.malformed[reason as usize]
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{RejectionKind, API_ACCESS};
    use http_body_util::BodyExt;

    fn with_messages(messages: &Messages) -> Render {
        Render {
            messages: messages.clone(),
            ..Render::default()
        }
    }

    async fn render(rejection: Rejection) -> (StatusCode, Vec<(String, String)>, String) {
        let render = Render {
            retry_after: Duration::from_millis(2500),
            ..Render::default()
        };
        let response = ErrorResponse::new(rejection.clone(), &render)
            .to_response::<http_body_util::Empty<Bytes>>(false);
        assert_eq!(response.extensions().get::<Rejection>(), Some(&rejection));
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn headers(extra: Option<(&str, &str)>) -> Vec<(String, String)> {
        let mut h = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        h.extend(extra.map(|(k, v)| (k.to_owned(), v.to_owned())));
        h
    }

    #[tokio::test]
    async fn every_row_of_the_contract_byte_for_byte() {
        let cases = [
            (
                Rejection::InsufficientScope(Scope::new("contacts:write").unwrap()),
                403,
                r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'contacts:write' scope. Your credential does not have this permission."}}"#,
                Some((
                    "www-authenticate",
                    r#"Bearer error="insufficient_scope", scope="contacts:write""#,
                )),
            ),
            (
                Rejection::MissingEntitlement(API_ACCESS.into()),
                403,
                r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#,
                None,
            ),
            (
                Rejection::MissingEntitlement("sso".into()),
                403,
                r#"{"error":{"type":"forbidden","message":"This action requires the 'sso' entitlement, which is not enabled for this account. Please upgrade your plan."}}"#,
                None,
            ),
            (
                Rejection::MissingCredential,
                401,
                r#"{"error":{"type":"unauthorized","message":"Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'."}}"#,
                Some(("www-authenticate", "Bearer")),
            ),
            (
                Rejection::InvalidToken,
                401,
                r#"{"error":{"type":"invalid_token","message":"The access token is invalid, expired or revoked."}}"#,
                Some(("www-authenticate", r#"Bearer error="invalid_token""#)),
            ),
            (
                Rejection::Malformed(Malformed::Scheme),
                400,
                r#"{"error":{"type":"invalid_request","message":"The Authorization header must use the Bearer scheme: 'Authorization: Bearer <token>'."}}"#,
                Some(("www-authenticate", r#"Bearer error="invalid_request""#)),
            ),
            (
                Rejection::NoRoute,
                404,
                r#"{"error":{"type":"not_found","message":"No route matches this request."}}"#,
                None,
            ),
            (
                Rejection::StoreUnavailable,
                503,
                r#"{"error":{"type":"service_unavailable","message":"Authentication is temporarily unavailable. Please retry shortly."}}"#,
                Some(("retry-after", "3")),
            ),
            (
                Rejection::RateLimited {
                    limit: "requests".into(),
                    retry_after: 3,
                },
                429,
                r#"{"error":{"type":"rate_limited","message":"Rate limit exceeded for 'requests'. Retry after 3 seconds."}}"#,
                Some(("retry-after", "3")),
            ),
            (
                Rejection::RateLimited {
                    limit: "writes".into(),
                    retry_after: 1,
                },
                429,
                r#"{"error":{"type":"rate_limited","message":"Rate limit exceeded for 'writes'. Retry after 1 second."}}"#,
                Some(("retry-after", "1")),
            ),
            (
                Rejection::QuotaExceeded {
                    limit: "monthly".into(),
                    retry_after: 86_400,
                },
                429,
                r#"{"error":{"type":"quota_exceeded","message":"Quota exceeded for 'monthly'. Retry after 86400 seconds."}}"#,
                Some(("retry-after", "86400")),
            ),
        ];
        for (rejection, status, body, extra) in cases {
            let got = render(rejection).await;
            assert_eq!(
                got,
                (
                    StatusCode::from_u16(status).unwrap(),
                    headers(extra),
                    body.to_owned()
                )
            );
        }
    }

    #[tokio::test]
    async fn overridden_messages_are_json_escaped() {
        let messages = Messages::default()
            .with(RejectionKind::InvalidRequest, "Say \"Bearer\"")
            .with_entitlement(|e| format!("no {e}"));
        let r = ErrorResponse::new(
            Rejection::Malformed(Malformed::EmptyToken),
            &with_messages(&messages),
        );
        assert_eq!(
            r.0.http.body,
            r#"{"error":{"type":"invalid_request","message":"Say \"Bearer\""}}"#
        );
        let r = ErrorResponse::new(
            Rejection::MissingEntitlement("api-access".into()),
            &with_messages(&messages),
        );
        assert_eq!(
            r.0.http.body,
            r#"{"error":{"type":"forbidden","message":"no api-access"}}"#
        );
        // A later fixed text replaces a renderer, and the other way round.
        let messages = messages.with(RejectionKind::Forbidden, "fixed");
        assert_eq!(
            messages.message(&Rejection::MissingEntitlement("x".into())),
            "fixed"
        );
        let messages = messages.with_entitlement(|e| e.to_owned());
        assert_eq!(
            messages.message(&Rejection::MissingEntitlement("x".into())),
            "x"
        );
    }

    #[tokio::test]
    async fn grpc_clients_get_trailers_only_responses() {
        use http_body::Body;
        let cases = [
            (Rejection::Malformed(Malformed::EmptyToken), "16", "The Authorization header has an empty Bearer token."),
            (Rejection::MissingCredential, "16", "Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'."),
            (Rejection::InvalidToken, "16", "The access token is invalid, expired or revoked."),
            (
                Rejection::InsufficientScope(Scope::new("contacts:write").unwrap()),
                "7",
                "This action requires the 'contacts:write' scope. Your credential does not have this permission.",
            ),
            (Rejection::MissingEntitlement(API_ACCESS.into()), "7", "API access is not enabled for this account. Please upgrade your plan."),
            (Rejection::StoreUnavailable, "14", "Authentication is temporarily unavailable. Please retry shortly."),
            (Rejection::NoRoute, "12", "No route matches this request."),
            (
                Rejection::RateLimited { limit: "requests".into(), retry_after: 3 },
                "8",
                "Rate limit exceeded for 'requests'. Retry after 3 seconds.",
            ),
            (
                Rejection::QuotaExceeded { limit: "monthly".into(), retry_after: 5 },
                "8",
                "Quota exceeded for 'monthly'. Retry after 5 seconds.",
            ),
        ];
        for (rejection, status, message) in cases {
            let response = ErrorResponse::new(rejection.clone(), &Render::default())
                .to_response::<http_body_util::Empty<Bytes>>(true);
            assert_eq!(response.status(), StatusCode::OK);
            let headers: Vec<_> = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
                .collect();
            // Only '%' and non-printable bytes are escaped; these messages have none.
            assert_eq!(
                headers,
                [
                    ("content-type", "application/grpc"),
                    ("grpc-status", status),
                    ("grpc-message", message)
                ],
                "{rejection:?}"
            );
            assert_eq!(response.extensions().get(), Some(&rejection));
            assert!(
                response.body().is_end_stream(),
                "trailers-only: no DATA frame"
            );
        }
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        let messages = Messages::default().with(RejectionKind::InvalidToken, "100% wrong – sorry");
        let r = ErrorResponse::new(Rejection::InvalidToken, &with_messages(&messages));
        assert_eq!(
            r.0.grpc.headers["grpc-message"],
            "100%25 wrong %E2%80%93 sorry"
        );
        let messages = Messages::default().with(RejectionKind::InvalidToken, "line\nbreak");
        let r = ErrorResponse::new(Rejection::InvalidToken, &with_messages(&messages));
        assert_eq!(r.0.grpc.headers["grpc-message"], "line%0Abreak");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        for (retry, want) in [
            (Duration::ZERO, "1"),
            (Duration::from_secs(5), "5"),
            (Duration::from_millis(5001), "6"),
        ] {
            let render = Render {
                retry_after: retry,
                ..Render::default()
            };
            let r = ErrorResponse::new(Rejection::StoreUnavailable, &render);
            assert_eq!(r.0.http.headers["retry-after"], want);
        }
    }
}
