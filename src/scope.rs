//! Scopes, scope sets and route requirements.
//!
//! A [`Scope`] is a validated scope token such as `contacts:read`. Scopes are
//! interned once, when a credential is resolved or a layer is built, so that a
//! [`ScopeSet`] is a bitset and checking a [`Requirement`] on the request path
//! is a handful of `AND`s with no string comparison.
//!
//! A requirement is one scope, all of several, or any of several. Scopes imply
//! nothing by default: `contacts:write` does not grant `contacts:read` unless
//! the [`Gate`](crate::gate::Gate) is configured with
//! [`imply`](crate::gate::GateBuilder::imply).
//!
//! # Example
//!
//! ```
//! use scopegate::ScopeSet;
//! use scopegate::scope::Requirement;
//!
//! # fn main() -> Result<(), scopegate::scope::ScopeError> {
//! let granted = ScopeSet::parse(["contacts:read", "guides:read"])?;
//!
//! assert!(Requirement::scope("contacts:read")?.is_satisfied_by(&granted));
//! assert!(!Requirement::scope("contacts:write")?.is_satisfied_by(&granted));
//! assert!(Requirement::any_of(["contacts:write", "guides:read"])?.is_satisfied_by(&granted));
//! assert!(!Requirement::all_of(["contacts:read", "webhooks:manage"])?.is_satisfied_by(&granted));
//!
//! // Scope tokens are checked against RFC 6749's grammar.
//! assert!(ScopeSet::parse(["contacts read"]).is_err());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, PoisonError, RwLock};

/// The most distinct scope names one process can intern.
///
/// Scope names come from configuration and from the credential store, never
/// from request input, so this bound is far above any real catalogue; it only
/// stops a misbehaving store from growing the registry without limit.
pub const MAX_SCOPES: usize = 4096;

/// A validated, interned scope token such as `contacts:write`.
///
/// `Scope` is `Copy` and compares in O(1). Its text is an RFC 6749 §3.3
/// `scope-token`: one or more visible ASCII characters other than `"` and `\`.
/// The `resource:action` convention is recommended but not enforced, so OAuth
/// scopes such as `openid` work too.
///
/// See the [module docs](crate::scope) for an example.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(u16);

struct Registry {
    names: Vec<&'static str>,
    index: HashMap<&'static str, u16>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| {
    RwLock::new(Registry {
        names: Vec::new(),
        index: HashMap::new(),
    })
});

impl Scope {
    /// Validates and interns a scope token.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Invalid`] when `name` is not an RFC 6749 `scope-token`,
    /// [`ScopeError::TooMany`] when the process already holds
    /// [`MAX_SCOPES`] distinct scopes.
    pub fn new(name: &str) -> Result<Self, ScopeError> {
        if !is_scope_token(name) {
            return Err(ScopeError::Invalid(name.escape_debug().to_string()));
        }
        if let Some(&i) = REGISTRY
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .index
            .get(name)
        {
            return Ok(Scope(i));
        }
        let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&i) = registry.index.get(name) {
            return Ok(Scope(i));
        }
        if registry.names.len() >= MAX_SCOPES {
            return Err(ScopeError::TooMany);
        }
        // Interned names live for the rest of the process; MAX_SCOPES bounds them.
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let i = u16::try_from(registry.names.len()).map_err(|_| ScopeError::TooMany)?;
        registry.names.push(name);
        registry.index.insert(name, i);
        Ok(Scope(i))
    }

    /// The scope named `name` if this process already knows it (a route, a
    /// catalog or a key named it), without interning anything: for scopes
    /// read from tokens, which must not grow the registry. A scope that no
    /// route names cannot satisfy any requirement, so dropping it loses
    /// nothing.
    #[cfg(any(feature = "jwt", feature = "introspection"))]
    pub(crate) fn known(name: &str) -> Option<Self> {
        REGISTRY
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .index
            .get(name)
            .map(|&i| Scope(i))
    }

    /// The scope's text, e.g. `"contacts:write"`.
    pub fn as_str(self) -> &'static str {
        REGISTRY
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("")
    }

    fn word(self) -> usize {
        usize::from(self.0) / 64
    }

    fn bit(self) -> u64 {
        1 << (self.0 % 64)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scope").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::new(s)
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
/// Whether `name` is an RFC 6749 §3.3 `scope-token`: one or more visible
/// ASCII characters other than `"` and `\`. A `const fn`, so that a scope
/// named in code can be checked when it compiles (as
/// [`scope_type!`](crate::scope_type) does).
///
/// ```
/// use scopegate::scope::is_scope_token;
/// const _: () = assert!(is_scope_token("contacts:read"));
/// assert!(!is_scope_token("contacts read"));
/// assert!(!is_scope_token(""));
/// ```
pub const fn is_scope_token(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !matches!(bytes[i], 0x21 | 0x23..=0x5B | 0x5D..=0x7E) {
            return false;
        }
        i += 1;
    }
    !bytes.is_empty()
}

/// Words of a [`ScopeSet`] kept inline: 128 scopes need no allocation and no
/// pointer chase, which matters when a million cached credentials are cold in
/// the CPU cache.
const INLINE_WORDS: usize = 2;

/// A set of scopes, stored as a bitset over interned [`Scope`]s.
///
/// Membership and requirement checks cost a few nanoseconds and do not grow
/// with the number of scopes a credential carries.
///
/// See the [module docs](crate::scope) for an example.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet {
    inline: [u64; INLINE_WORDS],
    /// Words from `INLINE_WORDS` on; empty (no allocation) for most processes.
    spill: Box<[u64]>,
}

impl ScopeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates and interns every name.
    ///
    /// # Errors
    ///
    /// The first name that [`Scope::new`] rejects.
    pub fn parse<I>(names: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        names
            .into_iter()
            .map(|name| Scope::new(name.as_ref()))
            .collect()
    }

    /// Adds a scope; returns `false` if it was already present.
    pub fn insert(&mut self, scope: Scope) -> bool {
        let word = match scope.word().checked_sub(INLINE_WORDS) {
            None => &mut self.inline[scope.word()],
            Some(spilled) => {
                if self.spill.len() <= spilled {
                    let mut words = std::mem::take(&mut self.spill).into_vec();
                    words.resize(spilled + 1, 0);
                    self.spill = words.into_boxed_slice();
                }
                &mut self.spill[spilled]
            }
        };
        let added = *word & scope.bit() == 0;
        *word |= scope.bit();
        added
    }

    /// Whether the set holds `scope`.
    #[inline]
    pub fn contains(&self, scope: Scope) -> bool {
        let word = match scope.word().checked_sub(INLINE_WORDS) {
            None => self.inline[scope.word()],
            Some(spilled) => self.spill.get(spilled).copied().unwrap_or(0),
        };
        word & scope.bit() != 0
    }

    /// Whether the two sets share at least one scope.
    #[inline]
    pub fn intersects(&self, other: &ScopeSet) -> bool {
        self.inline
            .iter()
            .zip(&other.inline)
            .any(|(a, b)| a & b != 0)
            || self
                .spill
                .iter()
                .zip(other.spill.iter())
                .any(|(a, b)| a & b != 0)
    }

    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.inline.iter().chain(self.spill.iter()).copied()
    }

    /// The number of scopes in the set.
    pub fn len(&self) -> usize {
        self.words().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words().all(|w| w == 0)
    }

    /// The scopes in the set, in interning order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.words().enumerate().flat_map(|(i, word)| {
            (0..64u16)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| Scope(i as u16 * 64 + bit))
        })
    }

    fn union_with(&mut self, other: &ScopeSet) {
        for scope in other.iter() {
            self.insert(scope);
        }
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        let mut set = ScopeSet::new();
        for scope in iter {
            set.insert(scope);
        }
        set
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Scope::as_str))
            .finish()
    }
}

/// What a route requires: one scope, all of several, or any of several.
///
/// Build one with [`Requirement::scope`], [`Requirement::all_of`] or
/// [`Requirement::any_of`], then hand it to
/// [`Gate::require`](crate::gate::Gate::require). For an all-of requirement the
/// rejection names the first missing scope in declared order; for an any-of
/// requirement it names the first declared scope.
///
/// See the [module docs](crate::scope) for an example.
#[derive(Clone, PartialEq, Eq)]
pub struct Requirement {
    mode: Mode,
    scopes: Box<[Scope]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    All,
    Any,
}

impl Requirement {
    /// One scope.
    ///
    /// # Errors
    ///
    /// See [`Scope::new`].
    pub fn scope(name: &str) -> Result<Self, ScopeError> {
        Ok(Scope::new(name)?.into())
    }

    /// Every one of `names`.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Empty`] for no names, or see [`Scope::new`].
    pub fn all_of<I>(names: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::build(Mode::All, names)
    }

    /// At least one of `names`.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Empty`] for no names, or see [`Scope::new`].
    pub fn any_of<I>(names: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::build(Mode::Any, names)
    }

    fn build<I>(mode: Mode, names: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut scopes = Vec::new();
        for name in names {
            let scope = Scope::new(name.as_ref())?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Requirement {
            mode,
            scopes: scopes.into_boxed_slice(),
        })
    }

    /// The scopes named by this requirement, in declared order.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Whether `granted` satisfies this requirement, with no implications.
    pub fn is_satisfied_by(&self, granted: &ScopeSet) -> bool {
        self.compile(&Implications::default())
            .missing(granted)
            .is_none()
    }

    pub(crate) fn compile(&self, implications: &Implications) -> CompiledRequirement {
        let acceptors = self.scopes.iter().map(|&s| implications.acceptors(s));
        match self.mode {
            Mode::All => {
                CompiledRequirement::All(self.scopes.iter().copied().zip(acceptors).collect())
            }
            Mode::Any => {
                let mut any = ScopeSet::new();
                for set in acceptors {
                    any.union_with(&set);
                }
                CompiledRequirement::Any {
                    named: self.scopes[0],
                    acceptors: any,
                }
            }
        }
    }
}

impl From<Scope> for Requirement {
    fn from(scope: Scope) -> Self {
        Requirement {
            mode: Mode::All,
            scopes: Box::new([scope]),
        }
    }
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.scopes.iter().map(|s| s.as_str()).collect();
        match (self.mode, names.as_slice()) {
            (_, [one]) => f.debug_tuple("Requirement::scope").field(one).finish(),
            (Mode::All, _) => f.debug_tuple("Requirement::all_of").field(&names).finish(),
            (Mode::Any, _) => f.debug_tuple("Requirement::any_of").field(&names).finish(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = match self.mode {
            Mode::All => " and ",
            Mode::Any => " or ",
        };
        for (i, scope) in self.scopes.iter().enumerate() {
            if i > 0 {
                f.write_str(sep)?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

/// A requirement with implications folded in: each required scope becomes the
/// set of granted scopes that satisfy it, so the request path never follows
/// implication chains.
#[derive(Clone, Debug)]
pub(crate) enum CompiledRequirement {
    All(Box<[(Scope, ScopeSet)]>),
    Any { named: Scope, acceptors: ScopeSet },
}

impl CompiledRequirement {
    /// The scope to name in a rejection, or `None` when `granted` suffices.
    #[inline]
    pub(crate) fn missing(&self, granted: &ScopeSet) -> Option<Scope> {
        match self {
            CompiledRequirement::All(items) => items
                .iter()
                .find(|(_, acceptors)| !granted.intersects(acceptors))
                .map(|(scope, _)| *scope),
            CompiledRequirement::Any { named, acceptors } => {
                (!granted.intersects(acceptors)).then_some(*named)
            }
        }
    }

    /// Every scope that satisfies some part of the requirement, implied
    /// ones included: what `X-Accepted-OAuth-Scopes` lists.
    pub(crate) fn accepted(&self) -> ScopeSet {
        match self {
            CompiledRequirement::All(items) => {
                let mut all = ScopeSet::new();
                for (_, acceptors) in items.iter() {
                    all.union_with(acceptors);
                }
                all
            }
            CompiledRequirement::Any { acceptors, .. } => acceptors.clone(),
        }
    }

    /// The requirement as alternatives, each a set of scopes that together
    /// satisfy it (implied scopes included), by name, none a superset of
    /// another: `None` if an all-of requirement makes more than `limit` of
    /// them. For documentation (OpenAPI security requirements), not requests.
    #[cfg(feature = "openapi")]
    pub(crate) fn alternatives(&self, limit: usize) -> Option<Vec<Vec<Scope>>> {
        let mut all: Vec<Vec<Scope>> = match self {
            CompiledRequirement::Any { acceptors, .. } => {
                acceptors.iter().map(|scope| vec![scope]).collect()
            }
            CompiledRequirement::All(items) => {
                let mut all: Vec<Vec<Scope>> = vec![Vec::new()];
                for (_, acceptors) in items.iter() {
                    let mut next = Vec::new();
                    for partial in &all {
                        for scope in acceptors.iter() {
                            let mut set = partial.clone();
                            if !set.contains(&scope) {
                                set.push(scope);
                            }
                            next.push(set);
                        }
                    }
                    all = minimal(next);
                    if all.len() > limit {
                        return None;
                    }
                }
                all
            }
        };
        for set in &mut all {
            set.sort_by_key(|scope| scope.as_str());
        }
        all.sort_by(|a, b| {
            let names = |set: &[Scope]| set.iter().map(|s| s.as_str()).collect::<Vec<_>>();
            names(a).cmp(&names(b))
        });
        Some(all)
    }

    /// Every scope a rejection may name.
    pub(crate) fn named(&self) -> Vec<Scope> {
        match self {
            CompiledRequirement::All(items) => items.iter().map(|(s, _)| *s).collect(),
            CompiledRequirement::Any { named, .. } => vec![*named],
        }
    }
}

/// The sets of `sets` that hold no other set of it: the same sets, or a
/// superset of another, add no way to satisfy a requirement.
#[cfg(feature = "openapi")]
fn minimal(sets: Vec<Vec<Scope>>) -> Vec<Vec<Scope>> {
    let within = |small: &[Scope], big: &[Scope]| small.iter().all(|s| big.contains(s));
    let mut kept: Vec<Vec<Scope>> = Vec::new();
    for set in sets {
        if kept.iter().any(|k| within(k, &set)) {
            continue;
        }
        kept.retain(|k| !within(&set, k));
        kept.push(set);
    }
    kept
}

/// Configured implications: `granted ⇒ implied`, applied transitively.
#[derive(Clone, Debug, Default)]
pub(crate) struct Implications {
    edges: Vec<(Scope, Scope)>,
}

impl Implications {
    pub(crate) fn add(&mut self, granted: Scope, implied: Scope) {
        if !self.edges.contains(&(granted, implied)) {
            self.edges.push((granted, implied));
        }
    }

    /// Every scope that grants `required`, itself included.
    fn acceptors(&self, required: Scope) -> ScopeSet {
        let mut set = ScopeSet::new();
        set.insert(required);
        let mut frontier = vec![required];
        while let Some(implied) = frontier.pop() {
            for &(granted, target) in &self.edges {
                if target == implied && set.insert(granted) {
                    frontier.push(granted);
                }
            }
        }
        set
    }
}

/// Why a scope or requirement could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeError {
    /// The text is not an RFC 6749 `scope-token` (empty, or a space, `"`, `\`
    /// or a non-visible character). Holds the escaped text.
    Invalid(String),
    /// An all-of or any-of requirement named no scope.
    Empty,
    /// The process already holds [`MAX_SCOPES`] distinct scopes.
    TooMany,
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Invalid(name) => write!(
                f,
                "invalid scope \"{name}\": a scope is one or more visible ASCII characters other than space, '\"' and '\\'"
            ),
            ScopeError::Empty => f.write_str("a requirement must name at least one scope"),
            ScopeError::TooMany => write!(f, "more than {MAX_SCOPES} distinct scopes in one process"),
        }
    }
}

impl std::error::Error for ScopeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> ScopeSet {
        ScopeSet::parse(names).unwrap()
    }

    #[test]
    fn interning_is_stable_and_validates() {
        let a = Scope::new("contacts:read").unwrap();
        assert_eq!(a, Scope::new("contacts:read").unwrap());
        assert_ne!(a, Scope::new("contacts:write").unwrap());
        assert_eq!(a.as_str(), "contacts:read");
        assert_eq!(a.to_string(), "contacts:read");
        assert_eq!("openid".parse::<Scope>().unwrap().as_str(), "openid");
        for bad in [
            "",
            "contacts read",
            "a\"b",
            "a\\b",
            "tab\t",
            "é:read",
            "nul\0",
        ] {
            assert!(
                matches!(Scope::new(bad), Err(ScopeError::Invalid(_))),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn set_membership_and_len() {
        let s = set(&["contacts:read", "guides:read", "contacts:read"]);
        assert_eq!(s.len(), 2);
        assert!(s.contains(Scope::new("guides:read").unwrap()));
        assert!(!s.contains(Scope::new("guides:write").unwrap()));
        assert!(ScopeSet::new().is_empty());
        assert_eq!(format!("{s:?}"), r#"{"contacts:read", "guides:read"}"#);
    }

    #[test]
    fn sets_span_several_words() {
        let names: Vec<String> = (0..150).map(|i| format!("wide:{i}")).collect();
        let s = ScopeSet::parse(&names).unwrap();
        assert_eq!(s.len(), 150);
        assert!(names.iter().all(|n| s.contains(Scope::new(n).unwrap())));
        let last = ScopeSet::parse([&names[149]]).unwrap();
        assert!(s.intersects(&last));
        assert!(!set(&["contacts:read"]).intersects(&last));
    }

    #[test]
    fn requirements() {
        let granted = set(&["contacts:read", "guides:read"]);
        let none = Implications::default();
        let all =
            Requirement::all_of(["contacts:read", "contacts:write", "webhooks:manage"]).unwrap();
        assert_eq!(
            all.compile(&none).missing(&granted).unwrap().as_str(),
            "contacts:write"
        );
        let any = Requirement::any_of(["webhooks:manage", "contacts:write"]).unwrap();
        assert_eq!(
            any.compile(&none).missing(&granted).unwrap().as_str(),
            "webhooks:manage"
        );
        assert!(Requirement::any_of(["webhooks:manage", "guides:read"])
            .unwrap()
            .is_satisfied_by(&granted));
        assert_eq!(
            Requirement::all_of(Vec::<&str>::new()),
            Err(ScopeError::Empty)
        );
        assert_eq!(
            all.to_string(),
            "contacts:read and contacts:write and webhooks:manage"
        );
        assert_eq!(
            format!("{any:?}"),
            r#"Requirement::any_of(["webhooks:manage", "contacts:write"])"#
        );
    }

    #[test]
    fn no_implication_unless_configured() {
        let writer = set(&["contacts:write"]);
        let read = Requirement::scope("contacts:read").unwrap();
        assert!(!read.is_satisfied_by(&writer));

        let mut imp = Implications::default();
        imp.add(
            Scope::new("contacts:write").unwrap(),
            Scope::new("contacts:read").unwrap(),
        );
        imp.add(
            Scope::new("contacts:admin").unwrap(),
            Scope::new("contacts:write").unwrap(),
        );
        assert_eq!(read.compile(&imp).missing(&writer), None);
        // Transitive: admin ⇒ write ⇒ read.
        assert_eq!(read.compile(&imp).missing(&set(&["contacts:admin"])), None);
        // Not the other way round.
        let write = Requirement::scope("contacts:write").unwrap();
        assert!(write
            .compile(&imp)
            .missing(&set(&["contacts:read"]))
            .is_some());
    }
}
