//! What a layer checks of a credential: a plan entitlement, a scope
//! requirement, or both, each with its refusal rendered in advance; and the
//! GitHub-style scope headers.
//!
//! Private. Rules are made when a layer or policy is built, by [`Rules`],
//! from a gate's configuration (its implications and how it renders), and
//! checked on every request by the guard. Nothing here knows of the gate or
//! the cache.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

use crate::credential::Credential;
use crate::error::{ConfigError, Rejection};
use crate::limit::Cost;
use crate::render::{AddedHeaders, ErrorResponse, Render};
use crate::scope::{CompiledRequirement, Implications, Requirement, Scope};

/// What a credential must have: an entitlement, scopes, or both, each with
/// its rejection rendered in advance; and what a request costs.
#[derive(Clone)]
pub(crate) struct Rule {
    entitlement: Option<(Arc<str>, ErrorResponse)>,
    scopes: Option<ScopeRule>,
    cost: Cost,
}

#[derive(Clone)]
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

impl Rule {
    /// Entitlement first, then scopes: a plan without API access is refused
    /// as such, whatever the key's scopes.
    #[inline]
    pub(crate) fn check(&self, credential: &Credential) -> Result<(), &ErrorResponse> {
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

    /// The GitHub-style headers for `credential` on this rule's route.
    pub(crate) fn scope_headers(&self, credential: &Credential) -> Box<AddedHeaders> {
        Box::new(AddedHeaders {
            granted: Some(scope_list(credential.scopes().iter())),
            accepted: self.scopes.as_ref().map(|r| r.accepted.clone()),
            ..AddedHeaders::default()
        })
    }

    /// What a request on this rule's route costs, and against which limits.
    #[inline]
    pub(crate) fn cost(&self) -> &Cost {
        &self.cost
    }

    /// The same rule at another cost.
    pub(crate) fn with_cost(&self, cost: Cost) -> Rule {
        Rule {
            cost,
            ..self.clone()
        }
    }
}

/// What a rule asks for, read back for documentation.
#[cfg(feature = "openapi")]
impl Rule {
    /// The entitlement required, if any.
    pub(crate) fn entitlement(&self) -> Option<&str> {
        self.entitlement.as_ref().map(|(name, _)| &**name)
    }

    /// The sets of scopes that satisfy the rule, any one of them (see
    /// `CompiledRequirement::alternatives`): one empty set when it requires
    /// no scope; past `limit` sets, just the scopes the requirement names.
    pub(crate) fn scope_alternatives(&self, limit: usize) -> Vec<Vec<Scope>> {
        match &self.scopes {
            None => vec![Vec::new()],
            Some(rule) => rule
                .requirement
                .alternatives(limit)
                .unwrap_or_else(|| vec![rule.requirement.named()]),
        }
    }

    /// Whether the rule requires any scope.
    pub(crate) fn requires_scopes(&self) -> bool {
        self.scopes.is_some()
    }

    /// Every refusal this rule can send, as rendered.
    pub(crate) fn refusals(&self) -> impl Iterator<Item = &ErrorResponse> {
        let entitlement = self.entitlement.iter().map(|(_, denied)| denied);
        let scopes = self
            .scopes
            .iter()
            .flat_map(|rule| rule.denied.iter().map(|(_, denied)| denied));
        entitlement.chain(scopes)
    }
}

/// Makes [`Rule`]s with a gate's configuration: how it renders refusals,
/// which scopes imply which, and the entitlement every scoped layer
/// requires, if any.
#[derive(Debug)]
pub(crate) struct Rules {
    render: Render,
    implications: Implications,
    entitlement: Option<Arc<str>>,
}

impl Rules {
    pub(crate) fn new(
        render: Render,
        implications: Implications,
        entitlement: Option<Arc<str>>,
    ) -> Self {
        Rules {
            render,
            implications,
            entitlement,
        }
    }

    /// The entitlement every scope and policy layer requires, if any.
    pub(crate) fn default_entitlement(&self) -> Option<Arc<str>> {
        self.entitlement.clone()
    }

    /// A rule requiring `entitlement` and `requirement`, either optional.
    pub(crate) fn rule(
        &self,
        entitlement: Option<Arc<str>>,
        requirement: Option<&Requirement>,
    ) -> Rule {
        let render = |rejection| ErrorResponse::new(rejection, &self.render);
        Rule {
            entitlement: entitlement.map(|name| {
                let denied = render(Rejection::MissingEntitlement(Arc::clone(&name)));
                (name, denied)
            }),
            scopes: requirement.map(|requirement| {
                let requirement = requirement.compile(&self.implications);
                let denied: Box<[(Scope, ErrorResponse)]> = requirement
                    .named()
                    .iter()
                    .map(|&scope| (scope, render(Rejection::InsufficientScope(scope))))
                    .collect();
                // A requirement names at least one scope.
                let fallback = denied.first().map_or_else(
                    || render(Rejection::StoreUnavailable),
                    |(_, response)| response.clone(),
                );
                ScopeRule {
                    denied,
                    fallback,
                    accepted: scope_list(requirement.accepted().iter()),
                    requirement,
                }
            }),
            cost: Cost::default(),
        }
    }
}

/// Checks an entitlement name: one or more visible ASCII characters.
pub(crate) fn entitlement_name(name: &str) -> Result<Arc<str>, ConfigError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Entitlement(name.escape_debug().to_string()));
    }
    Ok(name.into())
}

/// `a, b, c`, as GitHub writes scope lists.
fn scope_list(scopes: impl Iterator<Item = Scope>) -> HeaderValue {
    let list: Vec<&str> = scopes.map(Scope::as_str).collect();
    // Scope tokens are visible ASCII (RFC 6749 §3.3).
    HeaderValue::from_str(&list.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field(
                "entitlement",
                &self.entitlement.as_ref().map(|(name, _)| name),
            )
            .field("requirement", &self.scopes.as_ref().map(|r| &r.requirement))
            .field("cost", &self.cost)
            .finish()
    }
}
