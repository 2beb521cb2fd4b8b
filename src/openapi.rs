//! OpenAPI 3.1 security, read from the layers that enforce it (feature
//! `openapi`, on [`utoipa`]).
//!
//! An API description says which operation needs which scope; the layers
//! decide it. [`ApiSecurity`] reads the layers themselves, so the two cannot
//! drift apart: give it the route layers (with the method and path each
//! guards), the [`PolicyLayer`]s, and the public routes, and
//! [`apply`](ApiSecurity::apply) writes into a [`utoipa`] document:
//!
//! - a `bearerAuth` HTTP Bearer scheme, and an `oauth2` scheme (authorization
//!   code flow) with the scope catalog and its descriptions;
//! - `security` on every operation: the scopes that satisfy it, implied ones
//!   included (one requirement object per alternative), `[]` on a public
//!   operation, and `{}` first on an optional one;
//! - its 400, 401, 403, 429 and 503 responses as the layer renders them: the
//!   exact bodies as examples, their headers (`WWW-Authenticate`,
//!   `Retry-After`, …), and the error envelope's schema (`ScopegateError`)
//!   when the bodies are in it (a custom renderer's are documented by their
//!   examples alone).
//!
//! Every operation of the document must be covered, and every route given
//! must be in the document: an operation nobody said how to protect, or one
//! a policy would refuse as unrouted, is an [`OpenApiError`], as is a scope
//! without a description. The document is left untouched on an error.
//!
//! # Example
//!
//! ```
//! use http::Method;
//! use scopegate::openapi::{utoipa::openapi::OpenApi, ApiSecurity};
//! use scopegate::{CachedStore, Gate, MemoryStore};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gate = Gate::builder(CachedStore::new(MemoryStore::new()))
//!     .entitlement("api-access")
//!     .build()?;
//! let read = gate.require_scope("contacts:read")?;
//! // The router would use `read` as its `route_layer`; the document, too:
//! let mut doc: OpenApi = serde_json::from_value(json!({
//!     "openapi": "3.1.0",
//!     "info": {"title": "Contacts", "version": "1"},
//!     "paths": {
//!         "/api/v1/contacts": {"get": {"responses": {"200": {"description": "The contacts."}}}},
//!         "/health": {"get": {"responses": {"200": {"description": "Up."}}}}
//!     }
//! }))?;
//! ApiSecurity::new()
//!     .scopes([("contacts:read", "List and view contacts")])
//!     .authorization_code("https://example.com/oauth/authorize", "https://example.com/oauth/token")
//!     .route(Method::GET, "/api/v1/contacts", &read)
//!     .public(Method::GET, "/health")
//!     .apply(&mut doc)?;
//!
//! let doc = serde_json::to_value(&doc)?;
//! let list = &doc["paths"]["/api/v1/contacts"]["get"];
//! assert_eq!(
//!     list["security"],
//!     json!([{"bearerAuth": ["contacts:read"]}, {"oauth2": ["contacts:read"]}])
//! );
//! assert_eq!(
//!     list["responses"]["403"]["content"]["application/json"]["examples"]["insufficient_scope"]["value"],
//!     json!({"error": {
//!         "type": "insufficient_scope",
//!         "message": "This action requires the 'contacts:read' scope. Your credential does not have this permission."
//!     }})
//! );
//! assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
//!
//! // An operation nobody said how to protect is an error.
//! let mut doc: OpenApi = serde_json::from_value(json!({
//!     "openapi": "3.1.0",
//!     "info": {"title": "Contacts", "version": "1"},
//!     "paths": {"/api/v1/contacts": {"delete": {"responses": {"204": {"description": "Gone."}}}}}
//! }))?;
//! let err = ApiSecurity::new().route(Method::GET, "/api/v1/contacts", &read).apply(&mut doc).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "DELETE /api/v1/contacts is in the document, but no route, policy or public entry covers it"
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use http::Method;
use serde_json::Value;
use utoipa::openapi::content::Content;
use utoipa::openapi::example::Example;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOf, Components, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::security::{
    AuthorizationCode, Flow, Http, HttpAuthScheme, OAuth2, Scopes, SecurityRequirement,
    SecurityScheme,
};
use utoipa::openapi::{OpenApi, PathItem, Ref, RefOr};

pub use utoipa;

use crate::error::RejectionKind;
use crate::guard::{Check, Guard};
use crate::layer::{EntitlementLayer, OptionalLayer, PolicyLayer, ScopeLayer};
use crate::policy::{parse_pattern, Target};
use crate::render::{ErrorResponse, FixedResponses};
use crate::rule::Rule;

/// The name of the HTTP Bearer security scheme.
pub const BEARER_SCHEME: &str = "bearerAuth";
/// The name of the OAuth 2.0 security scheme.
pub const OAUTH2_SCHEME: &str = "oauth2";
/// The name of the error envelope's schema in `components.schemas`.
pub const ERROR_SCHEMA: &str = "ScopegateError";

/// Past this many alternative scope sets (implications multiply them), an
/// operation's security names the scopes its requirement names, and no more.
const MAX_ALTERNATIVES: usize = 16;

/// What a set of layers enforces, to write into an OpenAPI document.
///
/// See the [module docs](crate::openapi) for an example.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ApiSecurity {
    scopes: Vec<(String, String)>,
    authorization_code: Option<(String, String)>,
    routes: Vec<Route>,
    policies: Vec<PolicyLayer>,
}

#[derive(Clone, Debug)]
struct Route {
    method: Method,
    pattern: String,
    guard: Option<Arc<Guard>>,
}

/// What one route layer enforces, as [`ApiSecurity::route`] reads it: made
/// from a `&`[`ScopeLayer`], `&`[`EntitlementLayer`] or `&`[`OptionalLayer`].
#[derive(Clone, Debug)]
pub struct RouteGuard(Arc<Guard>);

macro_rules! route_guard {
    ($($layer:ty),*) => {$(
        impl From<&$layer> for RouteGuard {
            fn from(layer: &$layer) -> Self {
                RouteGuard(Arc::clone(layer.guard()))
            }
        }
    )*};
}
route_guard!(ScopeLayer, EntitlementLayer, OptionalLayer);

impl ApiSecurity {
    /// Nothing yet: add the scope catalog, the routes and the policies.
    pub fn new() -> Self {
        Self::default()
    }

    /// The scope catalog: each scope and what it grants. Every scope an
    /// operation requires must be here.
    pub fn scopes<I, N, D>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = (N, D)>,
        N: Into<String>,
        D: Into<String>,
    {
        self.scopes
            .extend(scopes.into_iter().map(|(n, d)| (n.into(), d.into())));
        self
    }

    /// Adds the `oauth2` scheme: the authorization code flow at these
    /// endpoints, with the scope catalog. Without it, operations name only
    /// `bearerAuth` (with the scopes as its roles, as OpenAPI 3.1 allows).
    pub fn authorization_code(
        mut self,
        authorization_url: impl Into<String>,
        token_url: impl Into<String>,
    ) -> Self {
        self.authorization_code = Some((authorization_url.into(), token_url.into()));
        self
    }

    /// `method pattern` is guarded by `layer` (the `route_layer` of that
    /// route). Patterns are written as in a
    /// [`RoutePolicy`](crate::policy::RoutePolicy) and the document:
    /// `/api/v1/contacts/{id}`.
    pub fn route(mut self, method: Method, pattern: &str, layer: impl Into<RouteGuard>) -> Self {
        self.routes.push(Route {
            method,
            pattern: pattern.to_owned(),
            guard: Some(layer.into().0),
        });
        self
    }

    /// `method pattern` is public: no layer looks at a credential.
    pub fn public(mut self, method: Method, pattern: &str) -> Self {
        self.routes.push(Route {
            method,
            pattern: pattern.to_owned(),
            guard: None,
        });
        self
    }

    /// Every operation of the document that this policy routes is guarded
    /// as the policy says. Routes given with [`route`](Self::route) or
    /// [`public`](Self::public) come first; then policies, in order.
    pub fn policy(mut self, layer: &PolicyLayer) -> Self {
        self.policies.push(layer.clone());
        self
    }

    /// Writes the security schemes, each operation's `security` and its
    /// refusals into `doc`; on an error, `doc` is left as it was.
    ///
    /// # Errors
    ///
    /// [`OpenApiError`]: an invalid pattern, an operation nothing covers, a
    /// route given that the document lacks, or a scope without a
    /// description.
    pub fn apply(&self, doc: &mut OpenApi) -> Result<(), OpenApiError> {
        let mut shapes = Vec::with_capacity(self.routes.len());
        for route in &self.routes {
            let (_, shape) =
                parse_pattern(&route.pattern).map_err(|e| OpenApiError::Pattern(e.to_string()))?;
            shapes.push(shape);
        }
        let mut used = vec![false; self.routes.len()];
        let mut out = doc.clone();
        let mut envelope_used = false;
        for (path, item) in out.paths.paths.iter_mut() {
            // A path the patterns cannot write can still match a policy's.
            let shape = parse_pattern(path).map_or_else(|_| path.clone(), |(_, shape)| shape);
            for (method, operation) in operations(item) {
                // HEAD falls back to GET, as axum's router and policies do.
                let wanted = |route: &Method| {
                    *route == method || (method == Method::HEAD && *route == Method::GET)
                };
                let matching: Vec<usize> = (0..self.routes.len())
                    .filter(|&i| wanted(&self.routes[i].method) && covers(&shapes[i], &shape))
                    .collect();
                for &index in &matching {
                    used[index] = true;
                }
                // An exact method before HEAD's fallback to GET.
                let found = matching
                    .iter()
                    .copied()
                    .find(|&i| self.routes[i].method == method)
                    .or(matching.first().copied());
                let access = match found {
                    Some(index) => match &self.routes[index].guard {
                        None => Some(Access::Public),
                        Some(guard) => guard_access(guard, &method, path),
                    },
                    None => self
                        .policies
                        .iter()
                        .find_map(|p| guard_access(p.guard(), &method, path)),
                };
                let access = access.ok_or_else(|| OpenApiError::Uncovered {
                    method: method.to_string(),
                    path: path.clone(),
                })?;
                envelope_used |= self.document(operation, &access, &method, path)?;
            }
        }
        if let Some(index) = used.iter().position(|used| !used) {
            let route = &self.routes[index];
            return Err(OpenApiError::Undocumented {
                method: route.method.to_string(),
                path: route.pattern.clone(),
            });
        }
        self.components(
            out.components.get_or_insert_with(Components::new),
            envelope_used,
        );
        *doc = out;
        Ok(())
    }

    /// Sets one operation's security and refusals; whether a refusal's
    /// schema is the envelope's.
    fn document(
        &self,
        operation: &mut Operation,
        access: &Access<'_>,
        method: &Method,
        path: &str,
    ) -> Result<bool, OpenApiError> {
        let (rule, fixed, optional) = match access {
            Access::Public => {
                operation.security = Some(Vec::new());
                return Ok(false);
            }
            Access::Rule {
                rule,
                fixed,
                optional,
            } => (*rule, *fixed, *optional),
        };
        let alternatives = rule.scope_alternatives(MAX_ALTERNATIVES);
        let mut security = Vec::new();
        if optional {
            security.push(SecurityRequirement::default());
        }
        for alternative in &alternatives {
            let names: Vec<&str> = alternative.iter().map(|s| s.as_str()).collect();
            if let Some(scope) = names
                .iter()
                .find(|name| !self.scopes.iter().any(|(n, _)| n == *name))
            {
                return Err(OpenApiError::UndescribedScope {
                    scope: (*scope).to_owned(),
                    method: method.to_string(),
                    path: path.to_owned(),
                });
            }
            security.push(SecurityRequirement::new(
                BEARER_SCHEME,
                names.iter().copied(),
            ));
            if self.authorization_code.is_some() {
                security.push(SecurityRequirement::new(
                    OAUTH2_SCHEME,
                    names.iter().copied(),
                ));
            }
        }
        operation.security = Some(security);

        let refusals = fixed
            .every_malformed()
            .iter()
            .chain([&fixed.missing, &fixed.invalid_token])
            .chain(rule.refusals())
            .chain(fixed.limit_examples())
            .chain([&fixed.unavailable]);
        let mut by_status: BTreeMap<u16, Vec<&ErrorResponse>> = BTreeMap::new();
        for refusal in refusals {
            by_status
                .entry(refusal.rejection().kind().status().as_u16())
                .or_default()
                .push(refusal);
        }
        let mut envelope_used = false;
        for (status, refusals) in by_status {
            let description = describe(status, rule, optional);
            let (mut response, envelope) = response(description, &refusals);
            if status == 429 {
                // Added to the 429 as to every counted response.
                for name in ["RateLimit-Policy", "RateLimit"] {
                    response
                        .headers
                        .entry(name.to_owned())
                        .or_insert_with(|| RefOr::T(Header::new(string_schema())));
                }
            }
            envelope_used |= envelope;
            let responses = &mut operation.responses.responses;
            let merged = match responses.get(&status.to_string()) {
                Some(RefOr::T(theirs)) => merge(theirs.clone(), response),
                None => Some(response),
                // A shared response: merging into it would change every
                // operation that refers to it.
                Some(RefOr::Ref(_)) => None,
            };
            let merged = merged.ok_or_else(|| OpenApiError::Shared {
                status,
                method: method.to_string(),
                path: path.to_owned(),
            })?;
            responses.insert(status.to_string(), RefOr::T(merged));
        }
        Ok(envelope_used)
    }

    fn components(&self, components: &mut Components, envelope_used: bool) {
        components.security_schemes.insert(
            BEARER_SCHEME.to_owned(),
            RefOr::T(SecurityScheme::Http({
                let mut bearer = Http::new(HttpAuthScheme::Bearer);
                bearer.description = Some(
                    "An API key or an OAuth 2.0 access token: `Authorization: Bearer <token>`."
                        .to_owned(),
                );
                bearer
            })),
        );
        if let Some((authorization_url, token_url)) = &self.authorization_code {
            let scopes: Scopes = self
                .scopes
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_str()))
                .collect();
            components.security_schemes.insert(
                OAUTH2_SCHEME.to_owned(),
                RefOr::T(SecurityScheme::OAuth2(OAuth2::new([
                    Flow::AuthorizationCode(AuthorizationCode::new(
                        authorization_url,
                        token_url,
                        scopes,
                    )),
                ]))),
            );
        }
        if envelope_used {
            components
                .schemas
                .insert(ERROR_SCHEMA.to_owned(), RefOr::T(envelope_schema()));
        }
    }
}

/// How one operation is guarded.
enum Access<'a> {
    Public,
    Rule {
        rule: &'a Rule,
        fixed: &'a FixedResponses,
        /// Whether a request without a token is let through.
        optional: bool,
    },
}

/// How `guard` treats `method path` (the document's path, matched as a
/// request's would be); `None` if a policy does not route it.
fn guard_access<'a>(guard: &'a Guard, method: &Method, path: &str) -> Option<Access<'a>> {
    let (check, fixed) = guard.parts();
    let rule = |rule, optional| Access::Rule {
        rule,
        fixed,
        optional,
    };
    match check {
        Check::Rule(r) => Some(rule(r, false)),
        Check::Optional(r) => Some(rule(r, true)),
        Check::Policy(policy) => match policy.target(method, path) {
            Target::Public => Some(Access::Public),
            Target::Protected(r) => Some(rule(r, false)),
            Target::Unmatched => None,
        },
    }
}

/// Whether a route of shape `route` serves a document path of shape
/// `path`: the same shape, or a `*` route under which the path lies.
fn covers(route: &str, path: &str) -> bool {
    match route.strip_suffix("{*}") {
        Some(prefix) => path.len() > prefix.len() && path.starts_with(prefix),
        None => route == path,
    }
}

/// The operations of a path item, with their methods.
fn operations(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    let fixed = [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ];
    let mut all: Vec<(Method, &mut Operation)> = fixed
        .into_iter()
        .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
        .collect();
    for (name, operation) in item.additional_operations.iter_mut() {
        if let Ok(method) = Method::from_bytes(name.as_bytes()) {
            all.push((method, operation));
        }
    }
    all
}

fn describe(status: u16, rule: &Rule, optional: bool) -> String {
    match status {
        400 => "The `Authorization` header is not one well-formed Bearer credential.".to_owned(),
        401 if optional => {
            "A token was sent, but it is unknown, revoked or expired, or not a Bearer token."
                .to_owned()
        }
        401 => "No Bearer token was sent, or the token is unknown, revoked or expired.".to_owned(),
        403 => match (rule.entitlement(), rule.requires_scopes()) {
            (Some(name), true) => format!(
                "The workspace's plan lacks the `{name}` entitlement, or the credential lacks a scope this operation requires."
            ),
            (Some(name), false) => format!("The workspace's plan lacks the `{name}` entitlement."),
            (None, _) => "The credential lacks a scope this operation requires.".to_owned(),
        },
        429 => "A rate limit or quota of the credential's plan is spent: retry after `Retry-After` seconds (`RateLimit-Policy` and `RateLimit` name it). Only credentials whose plan has limits get it.".to_owned(),
        503 => "The credentials could not be checked: retry after `Retry-After` seconds.".to_owned(),
        _ => "Refused by scopegate.".to_owned(),
    }
}

/// One status's response: each refusal's body as an example, the headers
/// they carry; whether the envelope's schema describes them.
fn response(description: String, refusals: &[&ErrorResponse]) -> (Response, bool) {
    let mut response = Response::new(description);
    let mut content_type = None;
    let mut examples: BTreeMap<String, RefOr<Example>> = BTreeMap::new();
    let mut envelope = true;
    for refusal in refusals {
        let rendered = refusal.to_http_response();
        for (name, _) in rendered.headers() {
            if name == http::header::CONTENT_TYPE {
                continue;
            }
            response
                .headers
                .entry(header_name(name.as_str()))
                .or_insert_with(|| RefOr::T(Header::new(string_schema())));
        }
        if content_type.is_none() {
            content_type = rendered
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        let body = rendered.body();
        let value = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        envelope &= is_envelope(&value);
        let kind = refusal.rejection().kind().as_str();
        let mut name = kind.to_owned();
        let mut n = 1;
        while examples.contains_key(&name) {
            n += 1;
            name = format!("{kind}_{n}");
        }
        let mut example = Example::new();
        example.value = Some(value);
        examples.insert(name, RefOr::T(example));
    }
    let mut content = Content::new(envelope.then(|| Ref::from_schema_name(ERROR_SCHEMA)));
    content.examples = examples;
    response.content.insert(
        content_type.unwrap_or_else(|| "application/json".to_owned()),
        RefOr::T(content),
    );
    (response, envelope)
}

/// Header names as the HTTP specifications write them (`WWW-Authenticate`).
fn header_name(lower: &str) -> String {
    match lower {
        "www-authenticate" => "WWW-Authenticate".to_owned(),
        other => other
            .split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// The operation's own response for a status, and ours: one description,
/// both sets of examples, either schema (`anyOf`: a body may fit both).
/// Ours are what the layer sends before the handler runs; theirs, what the
/// handler sends. `None` if theirs refers to shared content.
fn merge(mut theirs: Response, ours: Response) -> Option<Response> {
    if !theirs.description.contains(&ours.description) {
        theirs.description = format!("{} Or: {}", theirs.description, ours.description);
    }
    for (content_type, content) in ours.content {
        let RefOr::T(content) = content else {
            continue;
        };
        match theirs.content.get_mut(&content_type) {
            Some(RefOr::Ref(_)) => return None,
            Some(RefOr::T(existing)) => {
                existing.schema = match (existing.schema.take(), content.schema) {
                    (Some(a), Some(b)) if a == b => Some(a),
                    // Merged before (the document given twice).
                    (Some(RefOr::T(Schema::AnyOf(any_of))), Some(b))
                        if any_of.items.contains(&b) =>
                    {
                        Some(RefOr::T(Schema::AnyOf(any_of)))
                    }
                    (Some(a), Some(b)) => {
                        let mut any_of = AnyOf::new();
                        any_of.items = vec![a, b];
                        Some(RefOr::T(Schema::AnyOf(any_of)))
                    }
                    // One side says nothing of its shape: neither may.
                    _ => None,
                };
                // `example` and `examples` exclude each other.
                if let Some(value) = existing.example.take() {
                    let mut example = Example::new();
                    example.value = Some(value);
                    existing
                        .examples
                        .insert("handler".to_owned(), RefOr::T(example));
                }
                existing.examples.extend(content.examples);
            }
            None => {
                theirs.content.insert(content_type, RefOr::T(content));
            }
        }
    }
    for (name, header) in ours.headers {
        theirs.headers.entry(name).or_insert(header);
    }
    Some(theirs)
}

fn string_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .build()
        .into()
}

/// `{"error":{"type":…,"message":…}}`, nothing else.
fn envelope_schema() -> Schema {
    let error = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(RejectionKind::ALL.map(RejectionKind::as_str))),
        )
        .required("type")
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("message")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("scopegate's error envelope."))
        .property("error", error)
        .required("error")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build()
        .into()
}

/// Whether `value` is exactly the envelope `envelope_schema` describes.
fn is_envelope(value: &Value) -> bool {
    let Some(outer) = value.as_object() else {
        return false;
    };
    let Some(Value::Object(error)) = outer.get("error") else {
        return false;
    };
    outer.len() == 1
        && error.len() == 2
        && matches!(error.get("message"), Some(Value::String(_)))
        && matches!(error.get("type"), Some(Value::String(t)) if RejectionKind::ALL.iter().any(|k| k.as_str() == t))
}

/// Why a document could not be given its security.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenApiError {
    /// A route's pattern is not a valid pattern (the reason).
    Pattern(String),
    /// An operation of the document that no route, policy or public entry
    /// covers (or that every policy would refuse as unrouted).
    Uncovered {
        /// The operation's method.
        method: String,
        /// Its path, as the document writes it.
        path: String,
    },
    /// A route that was given, but that the document does not have.
    Undocumented {
        /// The route's method.
        method: String,
        /// Its pattern.
        path: String,
    },
    /// An operation documents a status scopegate also sends by reference to
    /// a shared response (or shared content), which scopegate will not
    /// change for every operation that refers to it: describe it inline.
    Shared {
        /// The status.
        status: u16,
        /// The operation's method.
        method: String,
        /// Its path.
        path: String,
    },
    /// An operation requires a scope that the catalog does not describe.
    UndescribedScope {
        /// The scope.
        scope: String,
        /// The operation's method.
        method: String,
        /// Its path.
        path: String,
    },
}

impl fmt::Display for OpenApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenApiError::Pattern(reason) => f.write_str(reason),
            OpenApiError::Uncovered { method, path } => write!(
                f,
                "{method} {path} is in the document, but no route, policy or public entry covers it"
            ),
            OpenApiError::Undocumented { method, path } => {
                write!(
                    f,
                    "{method} {path} was given, but the document has no such operation"
                )
            }
            OpenApiError::Shared {
                status,
                method,
                path,
            } => write!(
                f,
                "{method} {path} documents its {status} by reference; scopegate adds its refusals to it, so describe it inline"
            ),
            OpenApiError::UndescribedScope {
                scope,
                method,
                path,
            } => write!(
                f,
                "{method} {path} requires {scope:?}, which the scope catalog does not describe"
            ),
        }
    }
}

impl std::error::Error for OpenApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RoutePolicy;
    use crate::scope::Requirement;
    use crate::{CachedStore, Gate, MemoryStore};
    use bytes::Bytes;
    use serde_json::json;

    const CATALOG: [(&str, &str); 3] = [
        ("contacts:read", "List and view contacts"),
        ("contacts:write", "Create, update, and delete contacts"),
        ("admin", "Everything"),
    ];

    fn gate() -> Gate {
        Gate::builder(CachedStore::new(MemoryStore::new()))
            .entitlement("api-access")
            .build()
            .unwrap()
    }

    /// A document with these operations, each with one 200 response.
    fn doc(operations: &[(&str, &str)]) -> OpenApi {
        let mut paths = serde_json::Map::new();
        for (method, path) in operations {
            let item = paths.entry(*path).or_insert_with(|| json!({}));
            item[method.to_ascii_lowercase()] =
                json!({"responses": {"200": {"description": "OK."}}});
        }
        serde_json::from_value(json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": paths
        }))
        .unwrap()
    }

    fn operation(doc: &OpenApi, method: &str, path: &str) -> Value {
        serde_json::to_value(doc).unwrap()["paths"][path][method].clone()
    }

    #[test]
    fn security_alternatives_follow_implications_and_any_of() {
        let gate = Gate::builder(CachedStore::new(MemoryStore::new()))
            .imply("contacts:write", "contacts:read")
            .build()
            .unwrap();
        let read = gate.require_scope("contacts:read").unwrap();
        let either = gate.require(Requirement::any_of(["contacts:write", "admin"]).unwrap());
        let mut d = doc(&[("GET", "/c"), ("POST", "/c")]);
        ApiSecurity::new()
            .scopes(CATALOG)
            .route(Method::GET, "/c", &read)
            .route(Method::POST, "/c", &either)
            .apply(&mut d)
            .unwrap();
        assert_eq!(
            operation(&d, "get", "/c")["security"],
            json!([{"bearerAuth": ["contacts:read"]}, {"bearerAuth": ["contacts:write"]}])
        );
        assert_eq!(
            operation(&d, "post", "/c")["security"],
            json!([{"bearerAuth": ["admin"]}, {"bearerAuth": ["contacts:write"]}])
        );
        // Without `authorization_code`, no oauth2 scheme.
        let schemes = serde_json::to_value(&d).unwrap()["components"]["securitySchemes"].clone();
        assert_eq!(
            schemes,
            json!({"bearerAuth": {"type": "http", "scheme": "bearer",
                "description": "An API key or an OAuth 2.0 access token: `Authorization: Bearer <token>`."}})
        );
    }

    #[test]
    fn all_of_with_implications_wildcards_and_head() {
        let gate = Gate::builder(CachedStore::new(MemoryStore::new()))
            .imply("admin", "contacts:read")
            .imply("admin", "contacts:write")
            .build()
            .unwrap();
        let both = gate.require(Requirement::all_of(["contacts:write", "contacts:read"]).unwrap());
        let read = gate.require_scope("contacts:read").unwrap();
        let mut d = doc(&[
            ("POST", "/c"),
            ("GET", "/files/{path}"),
            ("HEAD", "/files/{path}"),
        ]);
        ApiSecurity::new()
            .scopes(CATALOG)
            .route(Method::POST, "/c", &both)
            .route(Method::GET, "/files/*", &read)
            .apply(&mut d)
            .unwrap();
        // admin alone does it; admin with either other is a superset, left out.
        assert_eq!(
            operation(&d, "post", "/c")["security"],
            json!([{"bearerAuth": ["admin"]}, {"bearerAuth": ["contacts:read", "contacts:write"]}])
        );
        let read_security = json!([{"bearerAuth": ["admin"]}, {"bearerAuth": ["contacts:read"]}]);
        assert_eq!(
            operation(&d, "get", "/files/{path}")["security"],
            read_security
        );
        assert_eq!(
            operation(&d, "head", "/files/{path}")["security"],
            read_security
        );
    }

    #[test]
    fn their_responses_are_merged_and_shared_ones_refused() {
        let gate = gate();
        let read = gate.require_scope("contacts:read").unwrap();
        let with_400 = |response: Value| -> OpenApi {
            serde_json::from_value(json!({
                "openapi": "3.1.0",
                "info": {"title": "t", "version": "1"},
                "paths": {"/c": {"get": {"responses": {"200": {"description": "OK."}, "400": response}}}}
            }))
            .unwrap()
        };
        let mut d = with_400(
            json!({"description": "Bad query.", "content": {"application/json": {
                "schema": {"type": "object"}, "example": {"error": "bad"}
            }}}),
        );
        let security = ApiSecurity::new()
            .scopes(CATALOG)
            .route(Method::GET, "/c", &read);
        security.apply(&mut d).unwrap();
        let content =
            &operation(&d, "get", "/c")["responses"]["400"]["content"]["application/json"];
        assert_eq!(
            content["schema"],
            json!({"anyOf": [{"type": "object"}, {"$ref": "#/components/schemas/ScopegateError"}]})
        );
        assert_eq!(content.get("example"), None);
        assert_eq!(
            content["examples"]["handler"]["value"],
            json!({"error": "bad"})
        );
        assert!(content["examples"].get("invalid_request").is_some());
        // Applied twice, nothing grows.
        let once = d.clone();
        security.apply(&mut d).unwrap();
        assert!(d == once, "a second apply changed the document");
        assert_eq!(
            operation(&d, "get", "/c")["responses"]["400"]["description"],
            "Bad query. Or: The `Authorization` header is not one well-formed Bearer credential."
        );

        let mut d = with_400(json!({"$ref": "#/components/responses/BadRequest"}));
        assert_eq!(
            security.apply(&mut d).unwrap_err().to_string(),
            "GET /c documents its 400 by reference; scopegate adds its refusals to it, so describe it inline"
        );
    }

    #[test]
    fn policies_public_and_optional_routes() {
        let gate = gate();
        let policy = gate
            .policy(
                RoutePolicy::new()
                    .public(Method::GET, "/health")
                    .scope(Method::GET, "/c/{id}", "contacts:read")
                    .authenticated(Method::GET, "/me")
                    .grpc("/contacts.v1.Contacts/List", "contacts:read"),
            )
            .unwrap();
        let optional = gate.optional();
        let mut d = doc(&[
            ("GET", "/health"),
            ("GET", "/c/{contact}"),
            ("GET", "/me"),
            ("GET", "/feed"),
        ]);
        ApiSecurity::new()
            .scopes(CATALOG)
            .route(Method::GET, "/feed", &optional)
            .policy(&policy)
            .apply(&mut d)
            .unwrap();
        assert_eq!(operation(&d, "get", "/health")["security"], json!([]));
        assert_eq!(
            operation(&d, "get", "/health")["responses"]
                .as_object()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            operation(&d, "get", "/c/{contact}")["security"],
            json!([{"bearerAuth": ["contacts:read"]}])
        );
        assert_eq!(
            operation(&d, "get", "/me")["security"],
            json!([{"bearerAuth": []}])
        );
        let feed = operation(&d, "get", "/feed");
        assert_eq!(feed["security"], json!([{}, {"bearerAuth": []}]));
        // An optional route refuses a bad token, but never for a scope or plan.
        let statuses: Vec<&String> = feed["responses"].as_object().unwrap().keys().collect();
        // A token sent may be counted against its plan's limits: 429 too.
        assert_eq!(statuses, ["200", "400", "401", "429", "503"]);
        assert_eq!(
            feed["responses"]["429"]["content"]["application/json"]["examples"],
            json!({
                "rate_limited": {"value": {"error": {"type": "rate_limited",
                    "message": "Rate limit exceeded for 'requests'. Retry after 3 seconds."}}},
                "quota_exceeded": {"value": {"error": {"type": "quota_exceeded",
                    "message": "Quota exceeded for 'monthly'. Retry after 86400 seconds."}}}
            })
        );
        let headers: Vec<&String> = feed["responses"]["429"]["headers"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            headers,
            [
                "Cache-Control",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After"
            ]
        );
        let me = operation(&d, "get", "/me");
        assert_eq!(
            me["responses"]["403"]["content"]["application/json"]["examples"],
            json!({"forbidden": {"value": {"error": {"type": "forbidden",
                "message": "API access is not enabled for this account. Please upgrade your plan."}}}})
        );
        assert_eq!(
            me["responses"]["503"]["headers"],
            json!({"Cache-Control": {"schema": {"type": "string"}}, "Retry-After": {"schema": {"type": "string"}}})
        );
    }

    #[test]
    fn every_mistake_is_an_error_and_leaves_the_document_alone() {
        let gate = gate();
        let read = gate.require_scope("contacts:read").unwrap();
        let policy = gate
            .policy(RoutePolicy::new().scope(Method::GET, "/c", "contacts:read"))
            .unwrap();
        let check = |security: ApiSecurity, operations: &[(&str, &str)], want: OpenApiError| {
            let mut d = doc(operations);
            let before = d.clone();
            assert_eq!(security.apply(&mut d), Err(want));
            assert!(d == before, "the document changed");
        };
        check(
            ApiSecurity::new().scopes(CATALOG).policy(&policy),
            &[("GET", "/c"), ("DELETE", "/c")],
            OpenApiError::Uncovered {
                method: "DELETE".into(),
                path: "/c".into(),
            },
        );
        check(
            ApiSecurity::new()
                .scopes(CATALOG)
                .route(Method::GET, "/c", &read)
                .route(Method::GET, "/d", &read),
            &[("GET", "/c")],
            OpenApiError::Undocumented {
                method: "GET".into(),
                path: "/d".into(),
            },
        );
        check(
            ApiSecurity::new().route(Method::GET, "/c", &read),
            &[("GET", "/c")],
            OpenApiError::UndescribedScope {
                scope: "contacts:read".into(),
                method: "GET".into(),
                path: "/c".into(),
            },
        );
        check(
            ApiSecurity::new().public(Method::GET, "c"),
            &[("GET", "/c")],
            OpenApiError::Pattern(r#"invalid route "c": a pattern starts with '/'"#.into()),
        );
        assert_eq!(
            OpenApiError::UndescribedScope {
                scope: "contacts:read".into(),
                method: "GET".into(),
                path: "/c".into(),
            }
            .to_string(),
            r#"GET /c requires "contacts:read", which the scope catalog does not describe"#
        );
    }

    #[test]
    fn the_handlers_own_responses_are_kept_and_a_custom_body_has_no_schema() {
        let gate = Gate::builder(CachedStore::new(MemoryStore::new()))
            .renderer(|_: &crate::error::Rejection, message: &str, _grpc: bool| {
                let mut response = http::Response::new(Bytes::from(format!("denied: {message}")));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain"),
                );
                Some(response)
            })
            .build()
            .unwrap();
        let read = gate.require_scope("contacts:read").unwrap();
        let mut d: OpenApi = serde_json::from_value(json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {"/c": {"get": {"responses": {
                "200": {"description": "OK."},
                "400": {"description": "Bad query.", "content": {"application/json": {"schema": {"type": "object"}}}}
            }}}}
        }))
        .unwrap();
        ApiSecurity::new()
            .scopes(CATALOG)
            .route(Method::GET, "/c", &read)
            .apply(&mut d)
            .unwrap();
        let get = operation(&d, "get", "/c");
        let bad = &get["responses"]["400"];
        assert_eq!(
            bad["description"],
            "Bad query. Or: The `Authorization` header is not one well-formed Bearer credential."
        );
        assert_eq!(
            bad["content"]["application/json"],
            json!({"schema": {"type": "object"}})
        );
        let forbidden = &get["responses"]["403"]["content"]["text/plain"];
        assert_eq!(forbidden.get("schema"), None);
        assert_eq!(
            forbidden["examples"]["insufficient_scope"]["value"],
            "denied: This action requires the 'contacts:read' scope. Your credential does not have this permission."
        );
        let components = serde_json::to_value(&d).unwrap()["components"].clone();
        assert_eq!(components.get("schemas"), None);
    }
}
