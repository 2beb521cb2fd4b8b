//! What a layer checks, and the request path's decisions.

use std::fmt;
use std::sync::Arc;

use http::Request;

use crate::bearer::{self, NoToken};
use crate::credential::{Credential, TokenHash};
use crate::error::ErrorResponse;
use crate::gate::{Gate, Lookup};
use crate::policy::{CompiledPolicy, Target};
use crate::scope::{CompiledRequirement, Scope};
use crate::store::StoreError;

/// One layer's policy: the gate, and what this layer checks.
pub(crate) struct Guard {
    gate: Gate,
    check: Check,
}

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
}

/// What to do with a request, decided without waiting where possible.
pub(crate) enum Decision<'a> {
    Allow,
    Deny(&'a ErrorResponse),
    /// Not cached: ask the store.
    Resolve(TokenHash),
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
            scopes: requirement.map(|requirement| ScopeRule {
                denied: requirement
                    .named()
                    .into_iter()
                    .map(|scope| (scope, gate.render(Rejection::InsufficientScope(scope))))
                    .collect(),
                requirement,
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
                // `denied` holds every scope `missing` can name.
                if let Some((_, response)) = rule.denied.iter().find(|(scope, _)| *scope == missing)
                {
                    return Err(response);
                }
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
                Target::Public => Err(Decision::Allow),
                Target::Unmatched => Err(Decision::Deny(&self.gate.fixed().no_route)),
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
            return rule.check(credential).into();
        }
        let fixed = self.gate.fixed();
        let hash = match bearer::token(request.headers()) {
            Ok(token) => TokenHash::of(token),
            Err(NoToken::Missing) => return Decision::Deny(&fixed.missing),
            Err(NoToken::Malformed(reason)) => return Decision::Deny(fixed.malformed(reason)),
        };
        match self.gate.cached(&hash) {
            Some(Some(credential)) => admit(rule, request, credential).into(),
            Some(None) => Decision::Deny(&fixed.invalid_token),
            None => Decision::Resolve(hash),
        }
    }

    /// The slow path's second half, once the store has answered.
    pub(crate) fn decide_resolved<B>(
        &self,
        request: &mut Request<B>,
        resolved: Result<Option<Arc<Credential>>, StoreError>,
    ) -> Result<(), &ErrorResponse> {
        let fixed = self.gate.fixed();
        match resolved {
            Ok(Some(credential)) => match self.rule(request) {
                Ok(rule) => admit(rule, request, credential),
                // Only protected routes reach the store.
                Err(_) => Err(&fixed.unavailable),
            },
            Ok(None) => Err(&fixed.invalid_token),
            Err(_) => Err(&fixed.unavailable),
        }
    }

    /// Starts the slow path: a boxed store lookup, single-flight per hash.
    pub(crate) fn load(&self, hash: TokenHash) -> Lookup {
        self.gate.load(hash)
    }

    /// The response for a future polled after it completed: fail closed.
    pub(crate) fn unavailable(&self) -> &ErrorResponse {
        &self.gate.fixed().unavailable
    }
}

fn admit<'a, B>(
    rule: &'a Rule,
    request: &mut Request<B>,
    credential: Arc<Credential>,
) -> Result<(), &'a ErrorResponse> {
    rule.check(&credential)?;
    request.extensions_mut().insert(credential);
    Ok(())
}

impl<'a> From<Result<(), &'a ErrorResponse>> for Decision<'a> {
    fn from(result: Result<(), &'a ErrorResponse>) -> Self {
        match result {
            Ok(()) => Decision::Allow,
            Err(rejection) => Decision::Deny(rejection),
        }
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
