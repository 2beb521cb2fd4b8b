//! What a layer checks, and the request path's decisions.

use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request};

use crate::bearer::{self, NoToken};
use crate::credential::{Credential, PresentedToken, TokenHash};
use crate::error::ErrorResponse;
use crate::gate::{Gate, Lookup};
use crate::policy::{CompiledPolicy, Target};
use crate::scope::{CompiledRequirement, Scope};
use crate::store::front::Key;
use crate::store::StoreError;

/// One layer's policy: the gate, and what this layer checks.
pub(crate) struct Guard {
    gate: Gate,
    check: Check,
}

// One per layer, inside an `Arc`: its size costs nothing, while boxing the
// rule would add a pointer chase to every request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Check {
    /// The same rule for every request (`ScopeLayer`, `EntitlementLayer`).
    Rule(Rule),
    /// A rule per route (`PolicyLayer`).
    Policy(CompiledPolicy),
}

/// What a credential must have: an entitlement, scopes, or both, each with
/// its rejection rendered in advance.
#[derive(Debug)]
pub(crate) struct Rule {
    entitlement: Option<(Arc<str>, ErrorResponse)>,
    scopes: Option<ScopeRule>,
}

#[derive(Debug)]
struct ScopeRule {
    requirement: CompiledRequirement,
    /// A rendered rejection for each scope the requirement can name.
    denied: Box<[(Scope, ErrorResponse)]>,
    /// The rejection naming the requirement's first scope, should a missing
    /// scope ever not be found in `denied`.
    fallback: ErrorResponse,
    /// `X-Accepted-OAuth-Scopes`: the scopes the route accepts.
    accepted: HeaderValue,
}

/// What to do with a request, decided without waiting where possible.
pub(crate) enum Decision<'a> {
    Allow(Option<Box<ScopeHeaders>>),
    Deny(&'a ErrorResponse, Option<Box<ScopeHeaders>>),
    /// Not cached: ask the store.
    Resolve(PresentedToken),
}

/// GitHub-style scope headers for one response, when the gate enables them.
#[derive(Debug)]
pub(crate) struct ScopeHeaders {
    granted: HeaderValue,
    accepted: Option<HeaderValue>,
}

static X_OAUTH_SCOPES: HeaderName = HeaderName::from_static("x-oauth-scopes");
static X_ACCEPTED_OAUTH_SCOPES: HeaderName = HeaderName::from_static("x-accepted-oauth-scopes");

impl ScopeHeaders {
    /// Adds the headers unless an inner layer already did (it knows the
    /// route's scopes better than an outer entitlement layer).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(&X_OAUTH_SCOPES) {
            headers.insert(X_OAUTH_SCOPES.clone(), self.granted.clone());
        }
        if let Some(accepted) = &self.accepted {
            if !headers.contains_key(&X_ACCEPTED_OAUTH_SCOPES) {
                headers.insert(X_ACCEPTED_OAUTH_SCOPES.clone(), accepted.clone());
            }
        }
    }
}

/// `a, b, c`, as GitHub writes scope lists.
fn scope_list(scopes: impl Iterator<Item = Scope>) -> HeaderValue {
    let list: Vec<&str> = scopes.map(Scope::as_str).collect();
    // Scope tokens are visible ASCII (RFC 6749 §3.3).
    HeaderValue::from_str(&list.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Rule {
    pub(crate) fn new(
        gate: &Gate,
        entitlement: Option<Arc<str>>,
        requirement: Option<CompiledRequirement>,
    ) -> Self {
        use crate::error::Rejection;
        Rule {
            entitlement: entitlement.map(|name| {
                let denied = gate.render(Rejection::MissingEntitlement(Arc::clone(&name)));
                (name, denied)
            }),
            scopes: requirement.map(|requirement| {
                let named = requirement.named();
                let denied: Box<[(Scope, ErrorResponse)]> = named
                    .iter()
                    .map(|&scope| (scope, gate.render(Rejection::InsufficientScope(scope))))
                    .collect();
                // A requirement names at least one scope.
                let fallback = denied.first().map_or_else(
                    || gate.fixed().unavailable.clone(),
                    |(_, response)| response.clone(),
                );
                ScopeRule {
                    denied,
                    fallback,
                    accepted: scope_list(requirement.accepted().iter()),
                    requirement,
                }
            }),
        }
    }

    /// Entitlement first, then scopes: a plan without API access is refused
    /// as such, whatever the key's scopes.
    #[inline]
    fn check(&self, credential: &Credential) -> Result<(), &ErrorResponse> {
        if let Some((name, denied)) = &self.entitlement {
            if !credential.has_entitlement(name) {
                return Err(denied);
            }
        }
        if let Some(rule) = &self.scopes {
            if let Some(missing) = rule.requirement.missing(credential.scopes()) {
                // `denied` holds every scope `missing` can name; whatever
                // happens, a missing scope is a refusal (fail closed).
                let denied = rule.denied.iter().find(|(scope, _)| *scope == missing);
                return Err(denied.map_or(&rule.fallback, |(_, response)| response));
            }
        }
        Ok(())
    }
}

impl Guard {
    pub(crate) fn new(gate: Gate, check: Check) -> Arc<Self> {
        Arc::new(Guard { gate, check })
    }

    /// The rule for this request; `Err` when it is decided without one.
    #[inline]
    fn rule<B>(&self, request: &Request<B>) -> Result<&Rule, Decision<'_>> {
        match &self.check {
            Check::Rule(rule) => Ok(rule),
            Check::Policy(policy) => match policy.target(request.method(), request.uri().path()) {
                Target::Protected(rule) => Ok(rule),
                Target::Public => Err(Decision::Allow(None)),
                Target::Unmatched => {
                    Err(self.deny(request, &self.gate.fixed().no_route, None, None))
                }
            },
        }
    }

    /// The fast path: a public or unmatched route, a credential already in
    /// the extensions, a malformed or missing header, or a cache hit is
    /// decided here, synchronously. On an allowed hit the credential is put
    /// into the request's extensions.
    pub(crate) fn decide<B>(&self, request: &mut Request<B>) -> Decision<'_> {
        let rule = match self.rule(request) {
            Ok(rule) => rule,
            Err(decision) => return decision,
        };
        if let Some(credential) = request.extensions().get::<Arc<Credential>>() {
            let headers = self.scope_headers(rule, credential);
            return match rule.check(credential) {
                Ok(()) => Decision::Allow(headers),
                Err(rejection) => self.deny(request, rejection, Some(credential), headers),
            };
        }
        let fixed = self.gate.fixed();
        let token = match bearer::token(request.headers()) {
            Ok(token) => token,
            Err(NoToken::Missing) => return self.deny(request, &fixed.missing, None, None),
            Err(NoToken::Malformed(reason)) => {
                return self.deny(request, fixed.malformed(reason), None, None)
            }
        };
        // A token this thread has an answer for passed the syntax check when
        // it was first resolved (no other bytes have its front key, a MAC),
        // so only the gate's own filter runs again. Its SHA-256 is taken
        // only when the front has no answer.
        let key = Key::of(token);
        let answer = match self.gate.front(&key) {
            Ok(answer) if self.gate.admits_token(token) => answer,
            Ok(_) => return self.deny(request, &fixed.invalid_token, None, None),
            Err(epochs) => {
                if let Err(reason) = bearer::check(token) {
                    return self.deny(request, fixed.malformed(reason), None, None);
                }
                if !self.gate.admits_token(token) {
                    return self.deny(request, &fixed.invalid_token, None, None);
                }
                let hash = TokenHash::of(token);
                match self.gate.cached_in_moka(&hash, &key, epochs) {
                    Some(answer) => answer,
                    // The only copy of the token scopegate makes: for the
                    // store call, dropped with it. A `b64token` is ASCII, so
                    // the conversion cannot fail.
                    None => {
                        return match std::str::from_utf8(token) {
                            Ok(token) => Decision::Resolve(PresentedToken::with_hash(token, hash)),
                            Err(_) => self.deny(request, &fixed.invalid_token, None, None),
                        }
                    }
                }
            }
        };
        match answer {
            Some(credential) => self.admit(rule, request, credential),
            None => self.deny(request, &fixed.invalid_token, None, None),
        }
    }

    /// The GitHub-style headers for `credential`, if the gate sends them.
    fn scope_headers(&self, rule: &Rule, credential: &Credential) -> Option<Box<ScopeHeaders>> {
        self.gate.scope_headers().then(|| {
            Box::new(ScopeHeaders {
                granted: scope_list(credential.scopes().iter()),
                accepted: rule.scopes.as_ref().map(|r| r.accepted.clone()),
            })
        })
    }

    /// Checks a resolved credential; if allowed, puts it into the extensions.
    fn admit<'a, B>(
        &'a self,
        rule: &'a Rule,
        request: &mut Request<B>,
        credential: Arc<Credential>,
    ) -> Decision<'a> {
        let headers = self.scope_headers(rule, &credential);
        match rule.check(&credential) {
            Ok(()) => {
                self.gate.record_use(&credential);
                request.extensions_mut().insert(credential);
                Decision::Allow(headers)
            }
            Err(rejection) => self.deny(request, rejection, Some(&credential), headers),
        }
    }

    /// A refusal, reported to `tracing` (with the `tracing` feature): the
    /// rejection, the credential if known, what was required, and the route.
    /// Never the token, nor its hash. Cold: kept out of the hit path's code.
    #[cold]
    #[inline(never)]
    fn deny<'a, B>(
        &'a self,
        request: &Request<B>,
        rejection: &'a ErrorResponse,
        credential: Option<&Credential>,
        headers: Option<Box<ScopeHeaders>>,
    ) -> Decision<'a> {
        #[cfg(feature = "tracing")]
        trace_rejection(request, rejection.rejection(), credential);
        #[cfg(not(feature = "tracing"))]
        let _ = (request, credential);
        Decision::Deny(rejection, headers)
    }

    /// The slow path's second half, once the store has answered.
    pub(crate) fn decide_resolved<B>(
        &self,
        request: &mut Request<B>,
        resolved: Result<Option<Arc<Credential>>, StoreError>,
    ) -> Decision<'_> {
        let fixed = self.gate.fixed();
        match resolved {
            Ok(Some(credential)) => match self.rule(request) {
                Ok(rule) => self.admit(rule, request, credential),
                // Only protected routes reach the store.
                Err(_) => self.deny(request, &fixed.unavailable, None, None),
            },
            Ok(None) => self.deny(request, &fixed.invalid_token, None, None),
            Err(_) => self.deny(request, &fixed.unavailable, None, None),
        }
    }

    /// Starts the slow path: a boxed store lookup, single-flight per hash.
    pub(crate) fn load(&self, token: PresentedToken) -> Lookup {
        self.gate.load(token)
    }

    /// The response for a future polled after it completed: fail closed.
    pub(crate) fn unavailable(&self) -> &ErrorResponse {
        &self.gate.fixed().unavailable
    }
}

#[cfg(feature = "tracing")]
fn trace_rejection<B>(
    request: &Request<B>,
    rejection: &crate::error::Rejection,
    credential: Option<&Credential>,
) {
    use crate::error::{Rejection, RejectionKind};
    let required = match rejection {
        Rejection::InsufficientScope(scope) => Some(scope.as_str()),
        Rejection::MissingEntitlement(entitlement) => Some(&**entitlement),
        _ => None,
    };
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: "scopegate",
                $level,
                rejection = rejection.kind().as_str(),
                reason = %rejection,
                credential_id = credential.map(Credential::id),
                account_id = credential.map(Credential::account_id),
                required,
                method = %request.method(),
                path = request.uri().path(),
                "request refused"
            )
        };
    }
    match rejection.kind() {
        RejectionKind::ServiceUnavailable => event!(tracing::Level::WARN),
        RejectionKind::InsufficientScope | RejectionKind::Forbidden => event!(tracing::Level::INFO),
        _ => event!(tracing::Level::DEBUG),
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Guard");
        match &self.check {
            Check::Rule(rule) => s
                .field(
                    "entitlement",
                    &rule.entitlement.as_ref().map(|(name, _)| name),
                )
                .field("requirement", &rule.scopes.as_ref().map(|r| &r.requirement)),
            Check::Policy(policy) => s.field("policy", policy),
        }
        .finish_non_exhaustive()
    }
}
