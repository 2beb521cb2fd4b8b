//! Route policy tables: one layer, a requirement per method and path.
//!
//! For hyper and tonic servers, which have no per-route layers, and for axum
//! users who prefer one table. Each entry maps a method and a path pattern to
//! what a credential needs. Routes can be public (no credential at all).
//! Requests that no entry covers are **denied by default** (404 `not_found`,
//! or gRPC `UNIMPLEMENTED`), as OWASP API5 advises; allowing them is an
//! explicit [`allow_unmatched`](RoutePolicy::allow_unmatched).
//!
//! Patterns are `/api/v1/contacts`, `/api/v1/contacts/{id}` (one segment; at
//! most 16 in a pattern) and `/api/v1/webhooks/*` (the rest of the path); gRPC methods are paths like
//! `/contacts.v1.Contacts/ListContacts`. The table is compiled once into a
//! radix tree ([`matchit`], axum's router), so matching does not slow down as
//! routes are added. The request's path is matched as it came, exactly as
//! axum's router matches it: no percent-decoding, no dot-segment or slash
//! normalization, case-sensitive; `HEAD` falls back to `GET` as axum's
//! does. So the policy decides about the route the router dispatches to:
//! `tests/path_matrix.rs` sends 3,080 tricky requests (`%2F`, `%2e%2e`,
//! `//`, `..`, case, `OPTIONS`, absolute form; deny-by-default and
//! [`allow_unmatched`](RoutePolicy::allow_unmatched)) and checks that a
//! handler only ever runs with what its route requires. Put any path
//! normalization in front of both, not between them. Every misconfiguration (an invalid pattern, a duplicate
//! route, a scope outside the catalog) is an error from
//! [`Gate::policy`](crate::gate::Gate::policy), which builds the table into a
//! [`PolicyLayer`](crate::layer::PolicyLayer), never a panic or a silent
//! allow.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Method, Request, Response, StatusCode};
//! use http_body_util::Full;
//! use scopegate::policy::RoutePolicy;
//! use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = MemoryStore::new();
//! keys.insert_token(
//!     "ohk_reader",
//!     Credential::new("key_1", "ws_acme", CredentialKind::ApiKey)
//!         .with_scopes(ScopeSet::parse(["contacts:read"])?)
//!         .with_entitlements(["api-access"]),
//! );
//! let gate = Gate::new(CachedStore::new(keys));
//!
//! let policy = gate.policy(
//!     RoutePolicy::new()
//!         .require_entitlement("api-access")
//!         .scope_catalog(["contacts:read", "contacts:write"])
//!         .public(Method::GET, "/health")
//!         .scope(Method::GET, "/api/v1/contacts", "contacts:read")
//!         .scope(Method::GET, "/api/v1/contacts/{id}", "contacts:read")
//!         .scope(Method::DELETE, "/api/v1/contacts/{id}", "contacts:write")
//!         .grpc("/contacts.v1.Contacts/ListContacts", "contacts:read"),
//! )?;
//!
//! let app = policy.layer(service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
//! }));
//! let send = |method: Method, path: &str, token: Option<&str>| {
//!     let mut req = Request::builder().method(method).uri(path);
//!     if let Some(token) = token {
//!         req = req.header("authorization", format!("Bearer {token}"));
//!     }
//!     app.clone().oneshot(req.body(Full::default()).unwrap())
//! };
//!
//! assert_eq!(send(Method::GET, "/health", None).await?.status(), StatusCode::OK);
//! assert_eq!(send(Method::GET, "/api/v1/contacts/con_1", Some("ohk_reader")).await?.status(), StatusCode::OK);
//! assert_eq!(send(Method::DELETE, "/api/v1/contacts/con_1", Some("ohk_reader")).await?.status(), StatusCode::FORBIDDEN);
//! // Not in the table: denied by default.
//! assert_eq!(send(Method::GET, "/admin", Some("ohk_reader")).await?.status(), StatusCode::NOT_FOUND);
//!
//! // Mistakes are errors when the table is built.
//! let err = gate
//!     .policy(
//!         RoutePolicy::new()
//!             .scope_catalog(["contacts:read"])
//!             .scope(Method::GET, "/api/v1/contacts", "contacts:raed"),
//!     )
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"route "/api/v1/contacts" requires "contacts:raed", which is not in the scope catalog"#
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::Method;

use crate::error::ConfigError;
use crate::limit::{limit_names, Cost};
use crate::rule::{entitlement_name, Rule, Rules};
use crate::scope::{Requirement, ScopeSet};

/// A table of routes and what each requires; build it into a
/// [`PolicyLayer`](crate::layer::PolicyLayer) with
/// [`Gate::policy`](crate::gate::Gate::policy).
///
/// See the [module docs](crate::policy) for an example.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RoutePolicy {
    entries: Vec<Entry>,
    entitlement: Option<String>,
    catalog: Option<Vec<String>>,
    allow_unmatched: bool,
    prices: Vec<Price>,
}

/// What a route costs against the credential's limits, as given.
#[derive(Clone, Debug)]
struct Price {
    method: Method,
    pattern: String,
    pricing: Pricing,
}

#[derive(Clone, Debug)]
enum Pricing {
    Units(u32),
    Only(Vec<String>),
}

#[derive(Clone, Debug)]
struct Entry {
    method: Method,
    pattern: String,
    want: Want,
}

/// What an entry asks for, as given.
#[derive(Clone, Debug)]
enum Want {
    Public,
    Authenticated,
    Scope(String),
    Requirement(Requirement),
}

/// What a route needs, once checked.
enum Access {
    /// No credential at all.
    Public,
    /// A valid credential (and the policy's entitlement, if any).
    Authenticated,
    /// A credential with these scopes (and the entitlement).
    Scoped(Requirement),
}

impl Want {
    fn access(self) -> Result<Access, ConfigError> {
        Ok(match self {
            Want::Public => Access::Public,
            Want::Authenticated => Access::Authenticated,
            Want::Scope(scope) => Access::Scoped(Requirement::scope(&scope)?),
            Want::Requirement(requirement) => Access::Scoped(requirement),
        })
    }
}

impl RoutePolicy {
    /// An empty table: every request is denied until routes are added.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(mut self, method: Method, pattern: &str, want: Want) -> Self {
        self.entries.push(Entry {
            method,
            pattern: pattern.to_owned(),
            want,
        });
        self
    }

    /// `method pattern` requires one scope.
    pub fn scope(self, method: Method, pattern: &str, scope: &str) -> Self {
        self.entry(method, pattern, Want::Scope(scope.to_owned()))
    }

    /// `method pattern` requires `requirement` (all-of or any-of).
    pub fn require(self, method: Method, pattern: &str, requirement: Requirement) -> Self {
        self.entry(method, pattern, Want::Requirement(requirement))
    }

    /// `method pattern` requires a valid credential (and the policy's
    /// entitlement, if any), but no particular scope.
    pub fn authenticated(self, method: Method, pattern: &str) -> Self {
        self.entry(method, pattern, Want::Authenticated)
    }

    /// `method pattern` is public: no credential is looked at or needed.
    pub fn public(self, method: Method, pattern: &str) -> Self {
        self.entry(method, pattern, Want::Public)
    }

    /// A gRPC method, `/package.Service/Method`, requires one scope.
    pub fn grpc(self, path: &str, scope: &str) -> Self {
        self.scope(Method::POST, path, scope)
    }

    /// Every non-public route also requires this plan entitlement, usually
    /// `api-access` (default: the gate's
    /// [`entitlement`](crate::gate::GateBuilder::entitlement), if set).
    pub fn require_entitlement(mut self, entitlement: &str) -> Self {
        self.entitlement = Some(entitlement.to_owned());
        self
    }

    /// The scopes routes may require; any other is a build error, so a typo
    /// cannot make a route unreachable.
    pub fn scope_catalog<I>(mut self, scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.catalog = Some(scopes.into_iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }

    /// What a request on `method pattern` costs against the credential's
    /// [limits](crate::limit) (default 1; 0 counts nothing), as
    /// [`ScopeLayer::cost`](crate::layer::ScopeLayer::cost) says for a
    /// layer. The route must be in the table, before or after this call, and
    /// not public (a build error otherwise).
    pub fn cost(self, method: Method, pattern: &str, units: u32) -> Self {
        self.price(method, pattern, Pricing::Units(units))
    }

    /// Counts requests on `method pattern` against the named limits of the
    /// credential only, instead of all of them, as
    /// [`ScopeLayer::counts_against`](crate::layer::ScopeLayer::counts_against)
    /// does for a layer. An invalid name is a build error.
    pub fn counts_against<I>(self, method: Method, pattern: &str, limits: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let names = limits.into_iter().map(|n| n.as_ref().to_owned()).collect();
        self.price(method, pattern, Pricing::Only(names))
    }

    fn price(mut self, method: Method, pattern: &str, pricing: Pricing) -> Self {
        self.prices.push(Price {
            method,
            pattern: pattern.to_owned(),
            pricing,
        });
        self
    }

    /// Lets requests that no entry covers through, without a credential. Off
    /// by default: an unmatched request is denied.
    pub fn allow_unmatched(mut self) -> Self {
        self.allow_unmatched = true;
        self
    }

    /// Validates and compiles the table, making its rules with a gate's
    /// `rules`; see [`Gate::policy`](crate::gate::Gate::policy) for the
    /// errors.
    pub(crate) fn compile(self, rules: &Rules) -> Result<CompiledPolicy, ConfigError> {
        let entitlement = match self.entitlement.as_deref() {
            Some(name) => Some(entitlement_name(name)?),
            None => rules.default_entitlement(),
        };
        let catalog = self.catalog.as_ref().map(ScopeSet::parse).transpose()?;
        let mut router = matchit::Router::new();
        let mut paths: Vec<Vec<(Method, Target)>> = Vec::new();
        let mut by_shape: HashMap<String, usize> = HashMap::new();
        let mut costs = costs(self.prices)?;

        for entry in self.entries {
            let pattern = &entry.pattern;
            let (syntax, shape) = parse_pattern(pattern)?;
            let access = entry.want.access()?;
            let cost = costs.remove(&(entry.method.clone(), shape.clone()));
            if let (Some(catalog), Access::Scoped(requirement)) = (&catalog, &access) {
                if let Some(unknown) = requirement.scopes().iter().find(|s| !catalog.contains(**s))
                {
                    return Err(ConfigError::UnknownScope {
                        scope: unknown.as_str().to_owned(),
                        pattern: pattern.clone(),
                    });
                }
            }
            let slot = match by_shape.get(&shape) {
                Some(&slot) => slot,
                None => {
                    router
                        .insert(syntax, paths.len())
                        .map_err(|e| ConfigError::Route {
                            pattern: pattern.clone(),
                            reason: e.to_string(),
                        })?;
                    paths.push(Vec::new());
                    by_shape.insert(shape, paths.len() - 1);
                    paths.len() - 1
                }
            };
            let methods = &mut paths[slot];
            if methods.iter().any(|(m, _)| *m == entry.method) {
                return Err(ConfigError::DuplicateRoute {
                    method: entry.method.to_string(),
                    pattern: pattern.clone(),
                });
            }
            let rule = match access {
                Access::Public if cost.is_some() => {
                    return Err(ConfigError::Route {
                        pattern: pattern.clone(),
                        reason: format!(
                            "{} is public: a cost counts against a credential it never has",
                            entry.method
                        ),
                    });
                }
                Access::Public => None,
                Access::Authenticated => Some(rules.rule(entitlement.clone(), None)),
                Access::Scoped(requirement) => {
                    Some(rules.rule(entitlement.clone(), Some(&requirement)))
                }
            };
            let target = match (rule, cost) {
                (None, _) => Target::Public,
                (Some(rule), None) => Target::Protected(Arc::new(rule)),
                (Some(rule), Some((cost, _))) => Target::Protected(Arc::new(rule.with_cost(cost))),
            };
            methods.push((entry.method, target));
        }
        if let Some(((method, _), (_, pattern))) = costs.into_iter().next() {
            return Err(ConfigError::Route {
                reason: format!("a cost for {method} {pattern}, which the table does not have"),
                pattern,
            });
        }
        let routes = paths.iter().map(Vec::len).sum();
        Ok(CompiledPolicy {
            router,
            paths,
            routes,
            allow_unmatched: self.allow_unmatched,
        })
    }
}

/// The routes' costs, by method and shape, with a pattern each was given
/// for (to name it in an error).
type Costs = HashMap<(Method, String), (Cost, String)>;

fn costs(prices: Vec<Price>) -> Result<Costs, ConfigError> {
    let mut costs = Costs::new();
    for price in prices {
        let (_, shape) = parse_pattern(&price.pattern)?;
        let (cost, _) = costs
            .entry((price.method, shape))
            .or_insert_with(|| (Cost::default(), price.pattern));
        match price.pricing {
            Pricing::Units(units) => cost.units = units,
            Pricing::Only(names) => cost.only = Some(limit_names(names)?),
        }
    }
    Ok(costs)
}

/// The most `{name}` parameters one pattern may have.
const MAX_PARAMETERS: usize = 16;

/// Checks a pattern and turns it into matchit's syntax, plus a shape in which
/// parameter names are erased (`/a/{id}` and `/a/{key}` are the same route).
pub(crate) fn parse_pattern(pattern: &str) -> Result<(String, String), ConfigError> {
    let invalid = |reason: &str| ConfigError::Route {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(invalid("a pattern starts with '/'"));
    };
    if rest.is_empty() {
        return Ok(("/".to_owned(), "/".to_owned()));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    // matchit panics past 26 parameters in one route (the fuzzer found it):
    // refuse well before.
    if segments.iter().filter(|s| s.starts_with('{')).count() > MAX_PARAMETERS {
        return Err(invalid("at most 16 '{name}' parameters in one pattern"));
    }
    let (mut syntax, mut shape) = (String::new(), String::new());
    for (i, segment) in segments.iter().enumerate() {
        syntax.push('/');
        shape.push('/');
        if segment.is_empty() {
            return Err(invalid("empty segment ('//' or a trailing '/')"));
        }
        if *segment == "*" {
            if i + 1 != segments.len() {
                return Err(invalid("'*' must be the last segment"));
            }
            syntax.push_str("{*rest}");
            shape.push_str("{*}");
        } else if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid(
                    "a parameter is '{name}', with letters, digits or '_'",
                ));
            }
            syntax.push_str(segment);
            shape.push_str("{}");
        } else if segment.contains(['{', '}', '*']) {
            return Err(invalid("'{', '}' and '*' may only form a whole segment"));
        } else if !segment.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("segments are visible ASCII"));
        } else {
            syntax.push_str(segment);
            shape.push_str(segment);
        }
    }
    Ok((syntax, shape))
}

/// The compiled table.
pub(crate) struct CompiledPolicy {
    router: matchit::Router<usize>,
    /// Per path: what each method needs.
    paths: Vec<Vec<(Method, Target)>>,
    routes: usize,
    allow_unmatched: bool,
}

pub(crate) enum Target {
    Public,
    /// Shared with a request whose credential is being looked up.
    Protected(Arc<Rule>),
    /// Not stored: what a lookup answers when nothing matches.
    Unmatched,
}

static PUBLIC: Target = Target::Public;
static UNMATCHED: Target = Target::Unmatched;

impl CompiledPolicy {
    /// What a request to `method path` needs. `HEAD` falls back to `GET`.
    #[inline]
    pub(crate) fn target(&self, method: &Method, path: &str) -> &Target {
        let found = self.router.at(path).ok().and_then(|m| {
            let methods = &self.paths[*m.value];
            let find = |wanted: &Method| methods.iter().find(|(m, _)| m == wanted);
            find(method)
                .or_else(|| {
                    (*method == Method::HEAD)
                        .then(|| find(&Method::GET))
                        .flatten()
                })
                .map(|(_, target)| target)
        });
        match found {
            Some(target) => target,
            None if self.allow_unmatched => &PUBLIC,
            None => &UNMATCHED,
        }
    }
}

impl fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("routes", &self.routes)
            .field("allow_unmatched", &self.allow_unmatched)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let ok = |p: &str| parse_pattern(p).unwrap();
        assert_eq!(ok("/"), ("/".into(), "/".into()));
        assert_eq!(
            ok("/api/v1/contacts"),
            ("/api/v1/contacts".into(), "/api/v1/contacts".into())
        );
        assert_eq!(
            ok("/api/v1/contacts/{id}"),
            ("/api/v1/contacts/{id}".into(), "/api/v1/contacts/{}".into())
        );
        assert_eq!(
            ok("/api/v1/webhooks/*"),
            (
                "/api/v1/webhooks/{*rest}".into(),
                "/api/v1/webhooks/{*}".into()
            )
        );
        assert_eq!(
            ok("/contacts.v1.Contacts/ListContacts"),
            (
                "/contacts.v1.Contacts/ListContacts".into(),
                "/contacts.v1.Contacts/ListContacts".into()
            )
        );
        for (bad, why) in [
            ("api/v1", "a pattern starts with '/'"),
            ("/api//v1", "empty segment ('//' or a trailing '/')"),
            ("/api/v1/", "empty segment ('//' or a trailing '/')"),
            ("/a/*/b", "'*' must be the last segment"),
            (
                "/a/{}",
                "a parameter is '{name}', with letters, digits or '_'",
            ),
            (
                "/a/{i-d}",
                "a parameter is '{name}', with letters, digits or '_'",
            ),
            ("/a/x{id}", "'{', '}' and '*' may only form a whole segment"),
            ("/a/b*", "'{', '}' and '*' may only form a whole segment"),
            ("/a/caf\u{e9}", "segments are visible ASCII"),
        ] {
            check_refused(bad, why);
        }
        // matchit panics at the 26th parameter; 16 is the limit here.
        let params = |n: usize| (0..n).map(|i| format!("/{{p{i}}}")).collect::<String>();
        assert!(parse_pattern(&params(16)).is_ok());
        for n in [17, 26, 27, 100] {
            check_refused(&params(n), "at most 16 '{name}' parameters in one pattern");
        }
    }

    fn check_refused(bad: &str, why: &str) {
        let err = parse_pattern(bad).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Route {
                pattern: bad.into(),
                reason: why.into()
            },
            "{bad}"
        );
    }
}
