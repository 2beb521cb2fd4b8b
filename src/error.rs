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
//! | [`MissingCredential`](Rejection::MissingCredential) (no header, or another scheme) | 401 | `unauthorized` | `WWW-Authenticate: Bearer` |
//! | [`InvalidToken`](Rejection::InvalidToken) | 401 | `invalid_token` | `WWW-Authenticate: Bearer error="invalid_token"` |
//! | [`Malformed`](Rejection::Malformed) | 400 | `invalid_request` | `WWW-Authenticate: Bearer error="invalid_request"` |
//! | [`NoRoute`](Rejection::NoRoute) | 404 | `not_found` | |
//! | [`StoreUnavailable`](Rejection::StoreUnavailable) | 503 | `service_unavailable` | `Retry-After` |
//! | [`RateLimited`](Rejection::RateLimited) | 429 | `rate_limited` | `Retry-After`, `RateLimit-Policy`, `RateLimit` |
//! | [`QuotaExceeded`](Rejection::QuotaExceeded) | 429 | `quota_exceeded` | `Retry-After`, `RateLimit-Policy`, `RateLimit` |
//!
//! Those are all the statuses scopegate sends. Every body has the shape of
//! [`ErrorEnvelope`], `{"error":{"type":"…","message":"…"}}`; an application
//! can answer its own errors in the same shape with it. gRPC clients
//! (`content-type: application/grpc…`) get a trailers-only response instead:
//! HTTP 200, the [`grpc_status`](RejectionKind::grpc_status) and the same
//! message, percent-encoded, in `grpc-message`.
//!
//! The [`Rejection`] is also put into the response's extensions, so outer
//! layers can log or count it. Messages can be replaced with [`Messages`],
//! whole responses with a [`RenderRejection`]. Bodies are built once, when
//! the gate or layer is built, not per request; a 429's body names its wait,
//! so it is built the first time a gate sends it for that limit and that
//! many seconds, and kept (waits past a minute, a quota's, are built each
//! time). Configuration mistakes are
//! [`ConfigError`]s, returned when a gate, layer or policy is built.
//!
//! # Example
//!
//! ```
//! use http::StatusCode;
//! use scopegate::error::{ErrorEnvelope, Messages, Rejection, RejectionKind};
//! use scopegate::scope::Scope;
//!
//! # fn main() -> Result<(), scopegate::scope::ScopeError> {
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
//!
//! // The same shape for an application's own errors.
//! let body = ErrorEnvelope::new("validation_error", "name is required").to_bytes();
//! assert_eq!(body, r#"{"error":{"type":"validation_error","message":"name is required"}}"#);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;

use crate::limit::LimitError;
use crate::scope::{Scope, ScopeError};

/// The entitlement every API request needs by default.
pub const API_ACCESS: &str = "api-access";

const API_ACCESS_MESSAGE: &str =
    "API access is not enabled for this account. Please upgrade your plan.";

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No Bearer credential was sent: no `Authorization` header, or one of
    /// another scheme (`Basic …`, `Token …`), which RFC 6750 §3.1 counts as
    /// no authentication information.
    MissingCredential,
    /// The `Authorization` header is not a single well-formed Bearer
    /// credential: no scheme to read, an empty token, characters outside
    /// `b64token`, or several headers.
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
    /// No entry of a [`RoutePolicy`](crate::policy::RoutePolicy) matches the request,
    /// and the policy denies unmatched routes (the default).
    NoRoute,
    /// A rate [`Limit`](crate::limit::Limit) of the credential is spent for
    /// now (429 `rate_limited`).
    RateLimited {
        /// The limit's name, e.g. `requests`.
        limit: Arc<str>,
        /// Whole seconds until the request would be admitted, at least 1.
        retry_after: u64,
    },
    /// A quota [`Limit`](crate::limit::Limit) of the credential is spent
    /// until its period ends (429 `quota_exceeded`).
    QuotaExceeded {
        /// The quota's name, e.g. `monthly`.
        limit: Arc<str>,
        /// Whole seconds until the period ends, at least 1.
        retry_after: u64,
    },
}

/// Declares [`Malformed`] with each variant's default message, and
/// `Malformed::ALL`, its variants in order: the list of variants is written
/// once, so the prerendered responses indexed by `Malformed as usize` cover
/// every variant by construction.
macro_rules! malformed {
    ($($(#[$doc:meta])* $variant:ident => $message:expr,)*) => {
        /// What is wrong with an `Authorization` header.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Malformed {
            $($(#[$doc])* $variant,)*
        }

        impl Malformed {
            /// Every variant, in declaration order: `ALL[m as usize] == m`.
            pub(crate) const ALL: [Malformed; [$(Malformed::$variant),*].len()] =
                [$(Malformed::$variant),*];

            fn default_message(self) -> &'static str {
                match self {
                    $(Malformed::$variant => $message,)*
                }
            }
        }
    };
}

malformed! {
    /// The header has no scheme to read: it is empty, or does not start
    /// with an RFC 9110 `token` and a space (`Bearer\tabc`, `Bearer, abc`).
    /// Another scheme, such as `Basic`, is not malformed: it is no
    /// credential ([`Rejection::MissingCredential`]).
    Scheme =>
        "The Authorization header must use the Bearer scheme: 'Authorization: Bearer <token>'.",
    /// `Bearer` with no token.
    EmptyToken => "The Authorization header has an empty Bearer token.",
    /// More than one `Authorization` header.
    MultipleHeaders => "Send exactly one Authorization header.",
    /// The token has characters outside RFC 6750's `b64token`.
    InvalidCharacters => "The Bearer token contains characters that are not allowed in a token.",
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
    /// 429 `rate_limited`: a rate limit is spent for now.
    RateLimited,
    /// 429 `quota_exceeded`: a quota is spent until its period ends.
    QuotaExceeded,
}

impl RejectionKind {
    /// Every kind, one per row of the contract.
    #[cfg(feature = "openapi")]
    pub(crate) const ALL: [RejectionKind; 9] = [
        RejectionKind::Unauthorized,
        RejectionKind::InvalidRequest,
        RejectionKind::InvalidToken,
        RejectionKind::InsufficientScope,
        RejectionKind::Forbidden,
        RejectionKind::ServiceUnavailable,
        RejectionKind::NotFound,
        RejectionKind::RateLimited,
        RejectionKind::QuotaExceeded,
    ];

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
            RejectionKind::RateLimited => "rate_limited",
            RejectionKind::QuotaExceeded => "quota_exceeded",
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
            RejectionKind::RateLimited | RejectionKind::QuotaExceeded => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// The gRPC status code a gRPC client receives instead of the HTTP status:
    /// 16 UNAUTHENTICATED for 400 and 401, 7 PERMISSION_DENIED for 403,
    /// 14 UNAVAILABLE for 503, 12 UNIMPLEMENTED for an unmatched route,
    /// 8 RESOURCE_EXHAUSTED for 429.
    pub fn grpc_status(self) -> u8 {
        match self {
            RejectionKind::Unauthorized
            | RejectionKind::InvalidRequest
            | RejectionKind::InvalidToken => 16,
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => 7,
            RejectionKind::ServiceUnavailable => 14,
            RejectionKind::NotFound => 12,
            RejectionKind::RateLimited | RejectionKind::QuotaExceeded => 8,
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
            Rejection::RateLimited { .. } => RejectionKind::RateLimited,
            Rejection::QuotaExceeded { .. } => RejectionKind::QuotaExceeded,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }

    /// The seconds a client is told to wait (`Retry-After`) by a 429.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Rejection::RateLimited { retry_after, .. }
            | Rejection::QuotaExceeded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
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
            Rejection::RateLimited { limit, retry_after } => {
                write!(f, "rate limit {limit} spent for {retry_after} s")
            }
            Rejection::QuotaExceeded { limit, retry_after } => {
                write!(f, "quota {limit} spent for {retry_after} s")
            }
        }
    }
}

type MessageFn = Arc<dyn Fn(&str) -> String + Send + Sync>;
type LimitMessageFn = Arc<dyn Fn(&str, u64) -> String + Send + Sync>;

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
    rate_limited: Option<LimitMessageFn>,
    quota_exceeded: Option<LimitMessageFn>,
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

    /// Renders the `rate_limited` message from the limit's name and the
    /// seconds to wait.
    pub fn with_rate_limited(
        mut self,
        render: impl Fn(&str, u64) -> String + Send + Sync + 'static,
    ) -> Self {
        self.fixed.retain(|(k, _)| *k != RejectionKind::RateLimited);
        self.rate_limited = Some(Arc::new(render));
        self
    }

    /// Renders the `quota_exceeded` message from the quota's name and the
    /// seconds to wait.
    pub fn with_quota_exceeded(
        mut self,
        render: impl Fn(&str, u64) -> String + Send + Sync + 'static,
    ) -> Self {
        self.fixed
            .retain(|(k, _)| *k != RejectionKind::QuotaExceeded);
        self.quota_exceeded = Some(Arc::new(render));
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
            Rejection::RateLimited { limit, retry_after } => match &self.rate_limited {
                Some(render) => render(limit, *retry_after),
                None => format!(
                    "Rate limit exceeded for '{limit}'. Retry after {}.",
                    seconds(*retry_after)
                ),
            },
            Rejection::QuotaExceeded { limit, retry_after } => match &self.quota_exceeded {
                Some(render) => render(limit, *retry_after),
                None => format!(
                    "Quota exceeded for '{limit}'. Retry after {}.",
                    seconds(*retry_after)
                ),
            },
        }
    }
}

/// `1 second`, `3 seconds`.
fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".to_owned()
    } else {
        format!("{n} seconds")
    }
}

impl fmt::Debug for Messages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Messages")
            .field("fixed", &self.fixed)
            .field("insufficient_scope", &self.insufficient_scope.is_some())
            .field("entitlement", &self.entitlement.is_some())
            .field("rate_limited", &self.rate_limited.is_some())
            .field("quota_exceeded", &self.quota_exceeded.is_some())
            .finish()
    }
}

/// Renders rejections your own way; set with
/// [`GateBuilder::renderer`](crate::gate::GateBuilder::renderer).
///
/// Called once per possible rejection when a gate or layer is built (every
/// rejection a layer can produce is known then), for the HTTP form and for
/// the gRPC form, never per request; a 429, whose wait differs, the first
/// time the gate sends it for a limit and a number of seconds up to a
/// minute, and each time for longer waits. Return `None` to keep the default
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
/// use scopegate::error::Rejection;
/// use scopegate::{CachedStore, Gate, MemoryStore};
///
/// # fn main() -> Result<(), scopegate::error::ConfigError> {
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

/// The shape of every error body: `{"error":{"type":"…","message":"…"}}`,
/// compact, `type` before `message`, as the API reference documents.
///
/// scopegate renders its own rejections with it; use it for an
/// application's errors (validation, not found) so that clients parse one
/// shape. It serializes with serde, for example as `axum::Json(envelope)`.
/// See the [module docs](crate::error) for an example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

impl<'a> ErrorEnvelope<'a> {
    /// An error of type `kind` (`"not_found"`, `"validation_error"`, …).
    pub fn new(kind: &'a str, message: &'a str) -> Self {
        ErrorEnvelope {
            error: ErrorBody { kind, message },
        }
    }

    /// The `type`.
    pub fn kind(&self) -> &'a str {
        self.error.kind
    }

    /// The `message`.
    pub fn message(&self) -> &'a str {
        self.error.message
    }

    /// The compact JSON bytes.
    pub fn to_bytes(&self) -> Bytes {
        // Two strings in a struct: serde_json cannot fail on them.
        serde_json::to_vec(self)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// A gate or layer could not be configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A scope name is invalid.
    Scope(ScopeError),
    /// An entitlement name is empty or not visible ASCII; holds the escaped name.
    Entitlement(String),
    /// A route pattern of a [`RoutePolicy`](crate::policy::RoutePolicy) is invalid.
    Route {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries of a [`RoutePolicy`](crate::policy::RoutePolicy) cover the same
    /// method and path.
    DuplicateRoute {
        /// The method, or `*` for any method.
        method: String,
        /// The pattern of the second entry.
        pattern: String,
    },
    /// A realm or metadata URL cannot be put into a challenge header.
    Header {
        /// `realm` or `resource_metadata`.
        what: &'static str,
        /// The escaped value.
        value: String,
    },
    /// A limit name is invalid.
    Limit(LimitError),
    /// Cluster mode cannot start: the Redis URL is invalid, or the gate is
    /// built outside a Tokio runtime.
    #[cfg(feature = "redis")]
    Cluster(String),
    /// A route requires a scope outside the policy's scope catalog.
    UnknownScope {
        /// The scope.
        scope: String,
        /// The route's pattern.
        pattern: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Scope(e) => e.fmt(f),
            ConfigError::Limit(e) => e.fmt(f),
            ConfigError::Route { pattern, reason } => {
                write!(f, "invalid route \"{pattern}\": {reason}")
            }
            ConfigError::Header { what, value } => write!(
                f,
                "invalid {what} \"{value}\": use visible ASCII and spaces, without '\"' or '\\'"
            ),
            ConfigError::DuplicateRoute { method, pattern } => {
                write!(
                    f,
                    "duplicate route: {method} {pattern} is already in the policy"
                )
            }
            #[cfg(feature = "redis")]
            ConfigError::Cluster(reason) => write!(f, "cluster mode: {reason}"),
            ConfigError::UnknownScope { scope, pattern } => {
                write!(
                    f,
                    "route \"{pattern}\" requires \"{scope}\", which is not in the scope catalog"
                )
            }
            ConfigError::Entitlement(name) => {
                write!(
                    f,
                    "invalid entitlement \"{name}\": use one or more visible ASCII characters"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Scope(e) => Some(e),
            ConfigError::Limit(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LimitError> for ConfigError {
    fn from(e: LimitError) -> Self {
        ConfigError::Limit(e)
    }
}

impl From<ScopeError> for ConfigError {
    fn from(e: ScopeError) -> Self {
        ConfigError::Scope(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_compact_with_type_first_and_escapes() {
        let envelope = ErrorEnvelope::new("not_found", "No \"contact\" con_9.");
        assert_eq!(
            envelope.to_bytes(),
            r#"{"error":{"type":"not_found","message":"No \"contact\" con_9."}}"#
        );
        assert_eq!(
            (envelope.kind(), envelope.message()),
            ("not_found", "No \"contact\" con_9.")
        );
    }

    #[test]
    fn malformed_all_lists_each_variant_at_its_index() {
        for (index, reason) in Malformed::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
    }
}
