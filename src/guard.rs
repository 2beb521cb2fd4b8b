//! The request path, top to bottom: take the token, ask the cache, check the
//! rule, decide.
//!
//! Private. A [`Guard`] is what one layer enforces: its [`Check`] (one rule,
//! or a rule per route) and the request-time state of the gate it was built
//! from ([`Core`]). [`Guard::decide`] answers every request it can without
//! waiting; what it cannot (a token no cache answers for) it hands back as a
//! [`Miss`], with the store lookup already started, for
//! [`Guard::decide_resolved`] to finish.

use std::borrow::Cow;
#[cfg(feature = "axum")]
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
#[cfg(feature = "axum")]
use std::sync::{PoisonError, RwLock, Weak};

use http::Request;

use crate::bearer::{self, NoToken};
use crate::cache::{Cached, Key, Lookup, Resolver};
use crate::credential::{Credential, PresentedToken, TokenHash};
use crate::limit::Cost;
use crate::limiter::Limiter;
use crate::policy::{CompiledPolicy, Target};
use crate::render::{AddedHeaders, ErrorResponse, FixedResponses};
use crate::rule::Rule;
use crate::store::{StoreError, UsageRecorder};

/// One layer's policy, and the state of its gate.
pub(crate) struct Guard {
    core: Arc<Core>,
    check: Check,
}

/// What every layer of one gate needs at request time, shared by them.
pub(crate) struct Core {
    /// The cache, without its store's type.
    pub(crate) resolver: Arc<dyn Resolver>,
    /// Tokens the gate refuses before any lookup.
    pub(crate) token_filter: Option<fn(&[u8]) -> bool>,
    pub(crate) usage: Option<Arc<dyn UsageRecorder>>,
    /// The rendered rejections that do not depend on a route.
    pub(crate) fixed: FixedResponses,
    /// Whether to send the GitHub-style scope headers.
    pub(crate) scope_headers: bool,
    /// The budgets of the credentials' limits.
    pub(crate) limiter: Limiter,
}

/// What the layer that admitted a request counted, in its extensions.
///
/// Stacked layers of one gate count a request once, at the innermost
/// layer's cost: the innermost knows the route best. An inner layer that
/// refuses the request gives the units back; one with another cost gives
/// them back and counts its own. Layers of another gate keep budgets of
/// their own and count separately. A handler's extractor that refuses
/// the request gives them back too ([`Refund`], feature `axum`).
#[cfg_attr(not(feature = "axum"), derive(Clone))] // `Extensions` requires it.
struct Counted {
    /// The gate's limiter's id: an identity (an `Arc` here would be a
    /// reference count every request of the gate shares).
    gate: u64,
    cost: Cost,
    /// A copy of another request's note (a retry's, a fan-out's): what it
    /// says was counted once, for the original, so an extractor's refusal
    /// gives nothing back for it.
    #[cfg(feature = "axum")]
    copy: bool,
}

/// `Extensions` requires it; the crate never copies a note itself.
#[cfg(feature = "axum")]
impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted {
            gate: self.gate,
            cost: self.cost.clone(),
            copy: true,
        }
    }
}

/// The gates alive, by their limiter's id: where an extractor that refuses
/// a request the layers counted finds the gate to give the units back to.
/// Read only on that cold path; the request carries only the id.
#[cfg(feature = "axum")]
static GATES: RwLock<BTreeMap<u64, Weak<Core>>> = RwLock::new(BTreeMap::new());

impl Core {
    /// Shared by the gate's layers (and, with the `axum` feature, found by
    /// the extractors' refunds).
    pub(crate) fn shared(self) -> Arc<Core> {
        let core = Arc::new(self);
        #[cfg(feature = "axum")]
        GATES
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(core.limiter.id(), Arc::downgrade(&core));
        core
    }
}

#[cfg(feature = "axum")]
impl Drop for Core {
    fn drop(&mut self) {
        GATES
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.limiter.id());
    }
}

/// What a handler's extractor that refuses a request the layers let
/// through gives back when its refusal becomes the response, so that the
/// request spends nothing, as with a layer's refusal. Taken at the refusal,
/// given only with the response: a refusal the handler catches (a
/// `Result` or `Either` extractor) and serves past keeps the units spent.
#[cfg(feature = "axum")]
pub(crate) struct Refund(Counted);

#[cfg(feature = "axum")]
impl Refund {
    /// The request's note, taken so that it is given back once at most;
    /// none for a copy of another request's note. Where layers of two gates
    /// counted the request, the note is the innermost counting gate's, and
    /// only its units can go back.
    pub(crate) fn take(extensions: &mut http::Extensions) -> Option<Refund> {
        extensions
            .remove::<Counted>()
            .filter(|counted| !counted.copy)
            .map(Refund)
    }

    /// Gives `credential`'s units back to the gate that counted them, if
    /// it is still there.
    #[cold]
    pub(crate) fn give(self, credential: &Credential) {
        let core = GATES
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&self.0.gate)
            .and_then(Weak::upgrade);
        if let Some(core) = core {
            core.limiter.give_back(credential, &self.0.cost);
        }
    }
}

/// What a decision changes of the request's [`Counted`] note.
enum Mark {
    Keep,
    /// This gate's count was given back.
    Forget,
    /// This gate counted: the note replaces any other.
    Set(Counted),
}

impl Mark {
    fn apply<B>(self, request: &mut Request<B>) {
        match self {
            Mark::Keep => {}
            Mark::Forget => {
                request.extensions_mut().remove::<Counted>();
            }
            Mark::Set(counted) => {
                request.extensions_mut().insert(counted);
            }
        }
    }
}

/// What a layer checks.
pub(crate) enum Check {
    /// The same rule for every request (`ScopeLayer`, `EntitlementLayer`).
    Rule(Arc<Rule>),
    /// A rule per route (`PolicyLayer`).
    Policy(CompiledPolicy),
    /// A credential if a token is sent, none if none is (`OptionalLayer`):
    /// a token sent is resolved and held to the rule all the same, so a
    /// wrong one is refused, never taken for no token.
    Optional(Arc<Rule>),
}

/// What to do with a request.
pub(crate) enum Decision<'a> {
    /// Decided without waiting.
    Now(Verdict<'a>),
    /// No cache answers for the token: its lookup is under way.
    Resolve(Miss),
}

/// Let the request through, or refuse it.
pub(crate) enum Verdict<'a> {
    Allow(Option<Box<AddedHeaders>>),
    /// Refused: a response rendered with the gate, or a 429 made for this
    /// wait.
    Deny(Cow<'a, ErrorResponse>, Option<Box<AddedHeaders>>),
}

/// A request waiting for the store: the lookup, and the rule to check the
/// credential against once it is found.
pub(crate) struct Miss {
    pub(crate) lookup: Lookup,
    pub(crate) rule: Arc<Rule>,
}

impl Guard {
    pub(crate) fn new(core: Arc<Core>, check: Check) -> Arc<Self> {
        Arc::new(Guard { core, check })
    }

    /// The same guard, its route's cost changed by `price`. A policy's
    /// routes have their own costs: it is returned as it is.
    pub(crate) fn priced(self: &Arc<Self>, price: impl FnOnce(&mut Cost)) -> Arc<Guard> {
        let repriced = |rule: &Rule| {
            let mut cost = rule.cost().clone();
            price(&mut cost);
            Arc::new(rule.with_cost(cost))
        };
        let check = match &self.check {
            Check::Rule(rule) => Check::Rule(repriced(rule)),
            Check::Optional(rule) => Check::Optional(repriced(rule)),
            Check::Policy(_) => return Arc::clone(self),
        };
        Guard::new(Arc::clone(&self.core), check)
    }

    /// What this guard checks, and the refusals every route of its gate can
    /// send, for documentation.
    #[cfg(feature = "openapi")]
    pub(crate) fn parts(&self) -> (&Check, &FixedResponses) {
        (&self.check, &self.core.fixed)
    }

    /// Decides what it can at once: a public or unmatched route, a credential
    /// already in the extensions (an outer layer resolved it), a malformed or
    /// missing header, a refused token, or a cached answer. On an allowed
    /// request the credential is put into the request's extensions.
    pub(crate) fn decide<B>(&self, request: &mut Request<B>) -> Decision<'_> {
        // 1. The rule for this route.
        let rule = match &self.check {
            Check::Rule(rule) | Check::Optional(rule) => rule,
            Check::Policy(policy) => match policy.target(request.method(), request.uri().path()) {
                Target::Protected(rule) => rule,
                Target::Public => return Decision::Now(anonymous()),
                Target::Unmatched => return self.deny(request, &self.core.fixed.no_route),
            },
        };
        if let Some(credential) = request.extensions().get::<Arc<Credential>>() {
            let mut verdict = self.judge(rule, request, credential);
            let mut mark = Mark::Keep;
            if !credential.limits().is_empty() {
                (verdict, mark) = self.recount(rule, request, credential, verdict);
            }
            // The layer that resolved it counted the request allowed.
            #[cfg(feature = "metrics")]
            if let Verdict::Deny(..) = verdict {
                crate::metrics::overruled(credential);
            }
            mark.apply(request);
            return Decision::Now(verdict);
        }

        // 2. The token.
        let fixed = &self.core.fixed;
        let token = match bearer::token(request.headers()) {
            Ok(token) => token,
            // Only a request with no `Authorization` at all is anonymous: a
            // credential under another scheme is refused, not ignored.
            Err(NoToken::Missing)
                if matches!(self.check, Check::Optional(_))
                    && !request.headers().contains_key(http::header::AUTHORIZATION) =>
            {
                return Decision::Now(anonymous());
            }
            Err(NoToken::Missing) => return self.deny(request, &fixed.missing),
            Err(NoToken::Malformed(reason)) => return self.deny(request, fixed.malformed(reason)),
        };

        // 3. The gate's token filter, before any lookup: a flood of made-up
        // keys costs little more than missing headers. It runs on every token,
        // cached or not, since another gate may have cached it. (A token it
        // refuses that is not even a `b64token` is malformed, as on a miss.)
        if !self.core.admits(token) {
            return match bearer::check(token) {
                Err(reason) => self.deny(request, fixed.malformed(reason)),
                Ok(()) => self.deny(request, &fixed.invalid_token),
            };
        }

        // 4. The cache: this thread's copy, then moka, then the store. A
        // token this thread has an answer for passed the syntax check when
        // it was first resolved (no other bytes have its front key, a MAC).
        // Its SHA-256 is taken only when the front has no answer.
        let resolver = &self.core.resolver;
        let key = Key::of(token);
        let answer = match resolver.on_this_thread(&key) {
            Ok(answer) => answer,
            Err(epochs) => {
                if let Err(reason) = bearer::check(token) {
                    return self.deny(request, fixed.malformed(reason));
                }
                let hash = TokenHash::of(token);
                match resolver.cached_now(&hash, &key, epochs) {
                    Some(answer) => answer,
                    // The only copy of the token scopegate makes: for the
                    // store call, dropped with it. A `b64token` is ASCII, so
                    // the conversion cannot fail.
                    None => {
                        let Ok(token) = std::str::from_utf8(token) else {
                            return self.deny(request, &fixed.invalid_token);
                        };
                        let token = PresentedToken::with_hash(token, hash);
                        return Decision::Resolve(Miss {
                            lookup: Arc::clone(resolver).load(token),
                            rule: Arc::clone(rule),
                        });
                    }
                }
            }
        };

        // 5. The rule.
        Decision::Now(self.admit(rule, request, answer))
    }

    /// Finishes a [`Miss`] once the store has answered.
    pub(crate) fn decide_resolved<'a, B>(
        &'a self,
        rule: &'a Rule,
        request: &mut Request<B>,
        resolved: Result<Cached, StoreError>,
    ) -> Verdict<'a> {
        match resolved {
            Ok(answer) => self.admit(rule, request, answer),
            Err(_) => self.refuse(
                request,
                Cow::Borrowed(&self.core.fixed.unavailable),
                None,
                None,
            ),
        }
    }

    /// The response for a future polled after it completed: fail closed.
    pub(crate) fn unavailable(&self) -> &ErrorResponse {
        &self.core.fixed.unavailable
    }

    /// Checks a cache's or the store's answer; if allowed, reports the use
    /// and puts the credential into the extensions.
    fn admit<'a, B>(
        &'a self,
        rule: &'a Rule,
        request: &mut Request<B>,
        answer: Cached,
    ) -> Verdict<'a> {
        let Cached::Found(credential) = answer else {
            return self.refuse(
                request,
                Cow::Borrowed(&self.core.fixed.invalid_token),
                None,
                None,
            );
        };
        let mut verdict = self.judge(rule, request, &credential);
        // 6. The limits, once the rule let the request through: a refused
        // request spends nothing.
        if !credential.limits().is_empty() {
            if let Verdict::Allow(headers) = verdict {
                let mark;
                (verdict, mark) = self.count(rule, request, &credential, headers);
                mark.apply(request);
            }
        }
        if let Verdict::Allow(_) = verdict {
            #[cfg(feature = "metrics")]
            crate::metrics::allowed(&credential);
            if let Some(usage) = &self.core.usage {
                usage.record(&credential);
            }
            request.extensions_mut().insert(credential);
        }
        verdict
    }

    /// Counts a request the rule allowed against its credential's limits:
    /// allowed with the limit headers added, or the 429; and what to note
    /// in the extensions, for an inner layer to give back.
    fn count<'a, B>(
        &'a self,
        rule: &Rule,
        request: &Request<B>,
        credential: &Credential,
        mut headers: Option<Box<AddedHeaders>>,
    ) -> (Verdict<'a>, Mark) {
        let cost = rule.cost();
        match self.core.limiter.count(credential, cost) {
            Ok(limits) => {
                add_limit_headers(&mut headers, limits);
                let mark = if cost.units > 0 {
                    Mark::Set(Counted {
                        gate: self.gate(),
                        cost: cost.clone(),
                        #[cfg(feature = "axum")]
                        copy: false,
                    })
                } else {
                    Mark::Keep
                };
                (Verdict::Allow(headers), mark)
            }
            Err((refused, limits)) => {
                add_limit_headers(&mut headers, limits);
                let verdict = self.refuse(request, Cow::Owned(refused), Some(credential), headers);
                (verdict, Mark::Keep)
            }
        }
    }

    /// An inner layer's verdict on a request an outer one admitted (and
    /// counted): the same count stands if this layer allows the request at
    /// the same cost; otherwise the outer layer's units go back, and an
    /// allowed request is counted at this layer's cost. What another gate
    /// counted is that gate's.
    #[cold]
    #[inline(never)]
    fn recount<'a, B>(
        &'a self,
        rule: &Rule,
        request: &Request<B>,
        credential: &Credential,
        verdict: Verdict<'a>,
    ) -> (Verdict<'a>, Mark) {
        let ours = request
            .extensions()
            .get::<Counted>()
            .filter(|counted| counted.gate == self.gate());
        if let Some(counted) = ours {
            if matches!(verdict, Verdict::Allow(_)) && counted.cost == *rule.cost() {
                return (verdict, Mark::Keep);
            }
            self.core.limiter.give_back(credential, &counted.cost);
        }
        let (verdict, mark) = match verdict {
            Verdict::Allow(mut headers) => {
                headers.get_or_insert_with(Box::default).recounted = true;
                self.count(rule, request, credential, headers)
            }
            deny => (deny, Mark::Keep),
        };
        match (ours, mark) {
            (Some(_), Mark::Keep) => (verdict, Mark::Forget),
            (_, mark) => (verdict, mark),
        }
    }

    /// This guard's gate, as an identity.
    fn gate(&self) -> u64 {
        self.core.limiter.id()
    }

    /// Checks `credential` against `rule`.
    #[inline]
    fn judge<'a, B>(
        &'a self,
        rule: &'a Rule,
        request: &Request<B>,
        credential: &Credential,
    ) -> Verdict<'a> {
        let headers = self
            .core
            .scope_headers
            .then(|| rule.scope_headers(credential));
        match rule.check(credential) {
            Ok(()) => Verdict::Allow(headers),
            Err(rejection) => {
                self.refuse(request, Cow::Borrowed(rejection), Some(credential), headers)
            }
        }
    }

    /// A refusal decided at once, without a credential.
    fn deny<'a, B>(&'a self, request: &Request<B>, rejection: &'a ErrorResponse) -> Decision<'a> {
        Decision::Now(self.refuse(request, Cow::Borrowed(rejection), None, None))
    }

    /// A refusal, reported to `tracing` (with the `tracing` feature): the
    /// rejection, the credential if known, what was required, and the route.
    /// Never the token, nor its hash. Cold: kept out of the hit path's code.
    #[cold]
    #[inline(never)]
    fn refuse<'a, B>(
        &'a self,
        request: &Request<B>,
        rejection: Cow<'a, ErrorResponse>,
        credential: Option<&Credential>,
        headers: Option<Box<AddedHeaders>>,
    ) -> Verdict<'a> {
        #[cfg(feature = "tracing")]
        trace_rejection(request, rejection.rejection(), credential);
        #[cfg(feature = "metrics")]
        crate::metrics::rejected(rejection.rejection().kind(), credential);
        #[cfg(not(feature = "tracing"))]
        let _ = (request, credential);
        Verdict::Deny(rejection, headers)
    }
}

/// Adds the `RateLimit-Policy` and `RateLimit` values to a response's added
/// headers.
fn add_limit_headers(
    headers: &mut Option<Box<AddedHeaders>>,
    limits: Option<crate::limiter::LimitHeaders>,
) {
    if let Some((policy, left)) = limits {
        let headers = headers.get_or_insert_with(Box::default);
        headers.policy = Some(policy);
        headers.limit = Some(left);
    }
}

/// A request let through without a credential: a public route, or no
/// token on an optional one.
fn anonymous<'a>() -> Verdict<'a> {
    #[cfg(feature = "metrics")]
    crate::metrics::anonymous();
    Verdict::Allow(None)
}

impl Core {
    /// Whether the gate's token filter lets `token` be looked up at all.
    #[inline]
    fn admits(&self, token: &[u8]) -> bool {
        self.token_filter.is_none_or(|filter| filter(token))
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
        Rejection::RateLimited { limit, .. } | Rejection::QuotaExceeded { limit, .. } => {
            Some(&**limit)
        }
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
            Check::Rule(rule) => s.field("rule", rule),
            Check::Policy(policy) => s.field("policy", policy),
            Check::Optional(rule) => s.field("optional", rule),
        }
        .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use super::*;
    use crate::{CachedStore, Gate, MemoryStore};

    fn registered(id: u64) -> bool {
        GATES
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    #[test]
    fn a_note_gives_back_once_and_a_copy_never() {
        let note = Counted {
            gate: 7,
            cost: Cost::default(),
            copy: false,
        };
        let mut extensions = http::Extensions::new();
        // A retry's or a fan-out's copy of the request carries a copy.
        extensions.insert(note.clone());
        assert!(Refund::take(&mut extensions).is_none());
        assert!(extensions.get::<Counted>().is_none(), "taken all the same");
        extensions.insert(note);
        assert!(Refund::take(&mut extensions).is_some());
        assert!(Refund::take(&mut extensions).is_none(), "once");
    }

    #[test]
    fn a_gate_is_registered_while_it_lives_and_no_longer() {
        let gate = Gate::new(CachedStore::new(MemoryStore::new()));
        let layer = gate.api_access();
        let id = gate.core().limiter.id();
        assert!(registered(id));
        // A layer holds the gate's core: the gate lives on in it.
        drop(gate);
        assert!(registered(id));
        drop(layer);
        assert!(!registered(id));
    }
}
