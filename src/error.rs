//! Rejections and the error contract.
//!
//! Every refusal is an `Ok` response (never a service error, which would make
//! hyper drop the connection) with a compact JSON body, `content-type:
//! application/json` and `cache-control: no-store`:
//!
//! | [`Rejection`] | status | `type` | extra header |
//! |---|---|---|---|
//! | [`InsufficientScope`](Rejection::InsufficientScope) | 403 | `insufficient_scope` | `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` |
//! | [`MissingEntitlement`](Rejection::MissingEntitlement) | 403 | `forbidden` | |
//! | [`MissingCredential`](Rejection::MissingCredential) | 401 | `unauthorized` | `WWW-Authenticate: Bearer` |
//! | [`InvalidToken`](Rejection::InvalidToken) | 401 | `invalid_token` | `WWW-Authenticate: Bearer error="invalid_token"` |
//! | [`Malformed`](Rejection::Malformed) | 400 | `invalid_request` | `WWW-Authenticate: Bearer error="invalid_request"` |
//! | [`StoreUnavailable`](Rejection::StoreUnavailable) | 503 | `service_unavailable` | `Retry-After` |
//!
//! The [`Rejection`] is also put into the response's extensions, so outer
//! layers can log or count it. Messages can be replaced with [`Messages`].
//! Bodies are built once, when the gate or layer is built, not per request.
//!
//! # Example
//!
//! ```
//! use http::StatusCode;
//! use scopegate::{Messages, Rejection, RejectionKind, Scope};
//!
//! # fn main() -> Result<(), scopegate::ScopeError> {
//! let rejection = Rejection::InsufficientScope(Scope::new("contacts:write")?);
//! assert_eq!(rejection.status(), StatusCode::FORBIDDEN);
//! assert_eq!(rejection.kind().as_str(), "insufficient_scope");
//! assert_eq!(
//!     Messages::default().message(&rejection),
//!     "This action requires the 'contacts:write' scope. Your credential does not have this permission."
//! );
//!
//! let messages = Messages::default()
//!     .with(RejectionKind::InvalidToken, "Unknown key.")
//!     .with_insufficient_scope(|scope| format!("Missing {scope}."));
//! assert_eq!(messages.message(&Rejection::InvalidToken), "Unknown key.");
//! assert_eq!(messages.message(&rejection), "Missing contacts:write.");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Serialize;

use crate::body::ResponseBody;
use crate::scope::Scope;

/// The entitlement every API request needs by default.
pub const API_ACCESS: &str = "api-access";

const API_ACCESS_MESSAGE: &str =
    "API access is not enabled for this account. Please upgrade your plan.";

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization` header was sent.
    MissingCredential,
    /// The `Authorization` header is not a single well-formed Bearer credential.
    Malformed(Malformed),
    /// The token is unknown, revoked or expired.
    InvalidToken,
    /// The credential lacks the scope the route requires.
    InsufficientScope(Scope),
    /// The account's plan lacks an entitlement.
    MissingEntitlement(Arc<str>),
    /// The credential store failed or timed out; the request was refused
    /// (fail closed).
    StoreUnavailable,
    /// No entry of a [`RoutePolicy`](crate::RoutePolicy) matches the request,
    /// and the policy denies unmatched routes (the default).
    NoRoute,
}

/// What is wrong with an `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// The scheme is not `Bearer`.
    Scheme,
    /// `Bearer` with no token.
    EmptyToken,
    /// More than one `Authorization` header.
    MultipleHeaders,
    /// The token has characters outside RFC 6750's `b64token`.
    InvalidCharacters,
}

impl Malformed {
    const ALL: [Malformed; 4] = [
        Malformed::Scheme,
        Malformed::EmptyToken,
        Malformed::MultipleHeaders,
        Malformed::InvalidCharacters,
    ];

    fn default_message(self) -> &'static str {
        match self {
            Malformed::Scheme => {
                "The Authorization header must use the Bearer scheme: 'Authorization: Bearer <token>'."
            }
            Malformed::EmptyToken => "The Authorization header has an empty Bearer token.",
            Malformed::MultipleHeaders => "Send exactly one Authorization header.",
            Malformed::InvalidCharacters => {
                "The Bearer token contains characters that are not allowed in a token."
            }
        }
    }
}

/// The `type` of an error body; one per row of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// 401 `unauthorized`: no credential.
    Unauthorized,
    /// 400 `invalid_request`: malformed `Authorization`.
    InvalidRequest,
    /// 401 `invalid_token`: unknown, revoked or expired.
    InvalidToken,
    /// 403 `insufficient_scope`.
    InsufficientScope,
    /// 403 `forbidden`: a plan entitlement is missing.
    Forbidden,
    /// 503 `service_unavailable`: the store failed.
    ServiceUnavailable,
    /// 404 `not_found`: no route policy covers the request.
    NotFound,
}

impl RejectionKind {
    /// The `type` string of the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::Unauthorized => "unauthorized",
            RejectionKind::InvalidRequest => "invalid_request",
            RejectionKind::InvalidToken => "invalid_token",
            RejectionKind::InsufficientScope => "insufficient_scope",
            RejectionKind::Forbidden => "forbidden",
            RejectionKind::ServiceUnavailable => "service_unavailable",
            RejectionKind::NotFound => "not_found",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            RejectionKind::Unauthorized | RejectionKind::InvalidToken => StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidRequest => StatusCode::BAD_REQUEST,
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => StatusCode::FORBIDDEN,
            RejectionKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            RejectionKind::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The gRPC status code a gRPC client receives instead of the HTTP status:
    /// 16 UNAUTHENTICATED for 400 and 401, 7 PERMISSION_DENIED for 403,
    /// 14 UNAVAILABLE for 503, 12 UNIMPLEMENTED for an unmatched route.
    pub fn grpc_status(self) -> u8 {
        match self {
            RejectionKind::Unauthorized
            | RejectionKind::InvalidRequest
            | RejectionKind::InvalidToken => 16,
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => 7,
            RejectionKind::ServiceUnavailable => 14,
            RejectionKind::NotFound => 12,
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Rejection {
    /// The contract row this rejection falls under.
    pub fn kind(&self) -> RejectionKind {
        match self {
            Rejection::MissingCredential => RejectionKind::Unauthorized,
            Rejection::Malformed(_) => RejectionKind::InvalidRequest,
            Rejection::InvalidToken => RejectionKind::InvalidToken,
            Rejection::InsufficientScope(_) => RejectionKind::InsufficientScope,
            Rejection::MissingEntitlement(_) => RejectionKind::Forbidden,
            Rejection::StoreUnavailable => RejectionKind::ServiceUnavailable,
            Rejection::NoRoute => RejectionKind::NotFound,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::MissingCredential => f.write_str("no credential"),
            Rejection::Malformed(m) => write!(f, "malformed Authorization header ({m:?})"),
            Rejection::InvalidToken => f.write_str("invalid token"),
            Rejection::InsufficientScope(s) => write!(f, "missing scope {s}"),
            Rejection::MissingEntitlement(e) => write!(f, "missing entitlement {e}"),
            Rejection::StoreUnavailable => f.write_str("credential store unavailable"),
            Rejection::NoRoute => f.write_str("no route policy matches"),
        }
    }
}

type MessageFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The messages of error bodies.
///
/// Defaults follow the API reference; override any of them. Messages are
/// rendered once, when a gate or layer is built. See the
/// [module docs](crate::error) for an example.
#[derive(Clone, Default)]
pub struct Messages {
    fixed: Vec<(RejectionKind, Arc<str>)>,
    insufficient_scope: Option<MessageFn>,
    entitlement: Option<MessageFn>,
}

impl Messages {
    /// Replaces the message of a kind with a fixed text. For
    /// [`InvalidRequest`](RejectionKind::InvalidRequest) this replaces the
    /// message of every [`Malformed`] reason; for
    /// [`InsufficientScope`](RejectionKind::InsufficientScope) and
    /// [`Forbidden`](RejectionKind::Forbidden) it replaces the message for
    /// every scope or entitlement.
    pub fn with(mut self, kind: RejectionKind, message: impl Into<String>) -> Self {
        let message: Arc<str> = message.into().into();
        self.fixed.retain(|(k, _)| *k != kind);
        self.fixed.push((kind, message));
        self
    }

    /// Renders the `insufficient_scope` message from the scope's name.
    pub fn with_insufficient_scope(
        mut self,
        render: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.fixed
            .retain(|(k, _)| *k != RejectionKind::InsufficientScope);
        self.insufficient_scope = Some(Arc::new(render));
        self
    }

    /// Renders the `forbidden` message from the entitlement's name.
    pub fn with_entitlement(
        mut self,
        render: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.fixed.retain(|(k, _)| *k != RejectionKind::Forbidden);
        self.entitlement = Some(Arc::new(render));
        self
    }

    /// The message for `rejection`.
    pub fn message(&self, rejection: &Rejection) -> String {
        let kind = rejection.kind();
        if let Some((_, fixed)) = self.fixed.iter().find(|(k, _)| *k == kind) {
            return fixed.to_string();
        }
        match rejection {
            Rejection::MissingCredential => {
                "Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'.".to_owned()
            }
            Rejection::Malformed(m) => m.default_message().to_owned(),
            Rejection::InvalidToken => "The access token is invalid, expired or revoked.".to_owned(),
            Rejection::InsufficientScope(scope) => match &self.insufficient_scope {
                Some(render) => render(scope.as_str()),
                None => format!(
                    "This action requires the '{scope}' scope. Your credential does not have this permission."
                ),
            },
            Rejection::MissingEntitlement(entitlement) => match &self.entitlement {
                Some(render) => render(entitlement),
                None if &**entitlement == API_ACCESS => API_ACCESS_MESSAGE.to_owned(),
                None => format!(
                    "This action requires the '{entitlement}' entitlement, which is not enabled for this account. Please upgrade your plan."
                ),
            },
            Rejection::StoreUnavailable => {
                "Authentication is temporarily unavailable. Please retry shortly.".to_owned()
            }
            Rejection::NoRoute => "No route matches this request.".to_owned(),
        }
    }
}

impl fmt::Debug for Messages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Messages")
            .field("fixed", &self.fixed)
            .field("insufficient_scope", &self.insufficient_scope.is_some())
            .field("entitlement", &self.entitlement.is_some())
            .finish()
    }
}

/// Renders rejections your own way; set with
/// [`GateBuilder::renderer`](crate::GateBuilder::renderer).
///
/// Called once per possible rejection when a gate or layer is built (every
/// rejection a layer can produce is known then), for the HTTP form and for
/// the gRPC form, never per request. Return `None` to keep the default
/// response. `message` is what [`Messages`] says for the rejection. The
/// [`Rejection`] is added to the response's extensions either way.
///
/// A closure `Fn(&Rejection, &str, bool) -> Option<Response<Bytes>>` is a
/// renderer.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use scopegate::{CachedStore, Gate, MemoryStore, Rejection};
///
/// # fn main() -> Result<(), scopegate::ConfigError> {
/// // RFC 9457 problem details for HTTP clients; gRPC clients keep the default.
/// let gate = Gate::builder(CachedStore::new(MemoryStore::new()))
///     .renderer(|rejection: &Rejection, message: &str, grpc: bool| {
///         if grpc {
///             return None;
///         }
///         let body = serde_json::json!({
///             "type": format!("https://errors.example.com/{}", rejection.kind()),
///             "status": rejection.status().as_u16(),
///             "detail": message,
///         });
///         Response::builder()
///             .status(rejection.status())
///             .header("content-type", "application/problem+json")
///             .body(Bytes::from(body.to_string()))
///             .ok()
///     })
///     .build()?;
/// # let _ = gate;
/// # Ok(())
/// # }
/// ```
pub trait RenderRejection: Send + Sync + 'static {
    /// The response for `rejection`, or `None` for the default.
    fn render(&self, rejection: &Rejection, message: &str, grpc: bool) -> Option<Response<Bytes>>;
}

impl<F> RenderRejection for F
where
    F: Fn(&Rejection, &str, bool) -> Option<Response<Bytes>> + Send + Sync + 'static,
{
    fn render(&self, rejection: &Rejection, message: &str, grpc: bool) -> Option<Response<Bytes>> {
        self(rejection, message, grpc)
    }
}

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
        let value = match attributes.is_empty() {
            true => "Bearer".to_owned(),
            false => format!("Bearer {}", attributes.join(", ")),
        };
        // Every part was checked to be visible ASCII when configured.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    fn message(&self, rejection: &Rejection) -> String {
        match rejection {
            Rejection::InsufficientScope(_) if !self.disclose_scope => UNDISCLOSED_SCOPE.to_owned(),
            _ => self.messages.message(rejection),
        }
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

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
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

    /// The error responses of every rejection that does not depend on a route.
    pub(crate) fn fixed(render: &Render) -> FixedResponses {
        let make = |r| ErrorResponse::new(r, render);
        FixedResponses {
            missing: make(Rejection::MissingCredential),
            invalid_token: make(Rejection::InvalidToken),
            malformed: Malformed::ALL.map(|m| make(Rejection::Malformed(m))),
            unavailable: make(Rejection::StoreUnavailable),
            no_route: make(Rejection::NoRoute),
        }
    }

    /// The response: JSON for HTTP clients; for gRPC clients a trailers-only
    /// response (HTTP 200, `grpc-status`, `grpc-message`, no body).
    pub(crate) fn to_response<B>(&self, grpc: bool) -> Response<ResponseBody<B>> {
        let rendered = if grpc { &self.0.grpc } else { &self.0.http };
        let body = match rendered.body.is_empty() {
            true => ResponseBody::empty(),
            false => ResponseBody::error(rendered.body.clone()),
        };
        let mut response = Response::new(body);
        *response.status_mut() = rendered.status;
        *response.headers_mut() = rendered.headers.clone();
        response.extensions_mut().insert(self.0.rejection.clone());
        response
    }

    #[cfg(feature = "tracing")]
    pub(crate) fn rejection(&self) -> &Rejection {
        &self.0.rejection
    }
}

/// The documented JSON response.
fn default_http(rejection: &Rejection, message: &str, render: &Render) -> Rendered {
    let kind = rejection.kind();
    let body = serde_json::to_vec(&Envelope {
        error: ErrorBody {
            kind: kind.as_str(),
            message,
        },
    })
    .map(Bytes::from)
    .unwrap_or_default();
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

/// Rendered responses for the rejections every gate can produce.
#[derive(Clone, Debug)]
pub(crate) struct FixedResponses {
    pub(crate) missing: ErrorResponse,
    pub(crate) invalid_token: ErrorResponse,
    malformed: [ErrorResponse; 4],
    pub(crate) unavailable: ErrorResponse,
    pub(crate) no_route: ErrorResponse,
}

impl FixedResponses {
    pub(crate) fn malformed(&self, reason: Malformed) -> &ErrorResponse {
        match reason {
            Malformed::Scheme => &self.malformed[0],
            Malformed::EmptyToken => &self.malformed[1],
            Malformed::MultipleHeaders => &self.malformed[2],
            Malformed::InvalidCharacters => &self.malformed[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
                Rejection::StoreUnavailable,
                503,
                r#"{"error":{"type":"service_unavailable","message":"Authentication is temporarily unavailable. Please retry shortly."}}"#,
                Some(("retry-after", "3")),
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
