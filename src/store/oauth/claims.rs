//! Where a token's scopes and account come from: providers put them in
//! different claims.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::scope::{Scope, ScopeSet};

type ScopeFn = dyn Fn(&Map<String, Value>) -> Result<Vec<String>, ClaimError> + Send + Sync;

/// A claim (of a JWT, or a field of an introspection answer) that holds
/// scopes. Set with `scope_claims` on the JWT or introspection builder;
/// several sources are combined.
///
/// A source the token does not have grants nothing; a source of the wrong
/// shape (a number, an array holding a non-string) refuses the token: 401
/// `invalid_token`, with a DEBUG event naming the claim. Scope names this
/// process does not know are dropped, as from any source.
///
/// ```
/// use scopegate::store::oauth::ScopeClaim;
/// use serde_json::json;
///
/// let claims = json!({
///     "scp": ["contacts:read"],
///     "realm_access": {"roles": ["guides:read", "offline_access"]},
/// });
/// let claims = claims.as_object().unwrap();
/// assert_eq!(ScopeClaim::Scp.names(claims).unwrap(), ["contacts:read"]);
/// assert_eq!(
///     ScopeClaim::KeycloakRealmRoles.names(claims).unwrap(),
///     ["guides:read", "offline_access"]
/// );
/// assert!(ScopeClaim::Scope.names(claims).unwrap().is_empty());
/// assert!(ScopeClaim::Pointer("/scp/0".into()).names(claims).is_ok());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum ScopeClaim {
    /// `scope`: a space-separated string (RFC 9068 §2.2.3, RFC 7662). The
    /// default.
    Scope,
    /// `scp`: an array of strings, or a space-separated string (Microsoft
    /// Entra ID, Okta).
    Scp,
    /// `permissions`: an array of strings (Auth0 with RBAC).
    Permissions,
    /// `roles`: an array of strings (Microsoft Entra ID app roles).
    Roles,
    /// `realm_access.roles` (Keycloak realm roles).
    KeycloakRealmRoles,
    /// `resource_access.<client>.roles` (Keycloak client roles).
    KeycloakClientRoles(String),
    /// Any claim, by JSON pointer (RFC 6901: `/a/b`, with `~1` for `/` in a
    /// name): an array of strings, or a space-separated string.
    Pointer(String),
    /// A function of all the claims.
    Custom(Arc<ScopeFn>),
}

const MISSING: &str = "missing";

/// A claim the store needs could not be read; the token is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimError {
    claim: String,
    problem: &'static str,
}

impl ClaimError {
    /// `claim` is there but `problem` ("not a string", …).
    pub fn new(claim: impl Into<String>, problem: &'static str) -> Self {
        ClaimError {
            claim: claim.into(),
            problem,
        }
    }

    /// The claim, as configured.
    pub fn claim(&self) -> &str {
        &self.claim
    }

    /// Whether the claim is absent (rather than of the wrong shape).
    #[cfg(feature = "jwt")]
    pub(crate) fn is_missing(&self) -> bool {
        self.problem == MISSING
    }
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "claim {:?}: {}", self.claim, self.problem)
    }
}

impl std::error::Error for ClaimError {}

impl ScopeClaim {
    /// The scope names this source finds in `claims`; empty when the token
    /// lacks the claim.
    ///
    /// # Errors
    ///
    /// [`ClaimError`] when the claim has the wrong shape.
    pub fn names(&self, claims: &Map<String, Value>) -> Result<Vec<String>, ClaimError> {
        let (name, value) = match self {
            ScopeClaim::Scope => ("scope", claims.get("scope")),
            ScopeClaim::Scp => ("scp", claims.get("scp")),
            ScopeClaim::Permissions => ("permissions", claims.get("permissions")),
            ScopeClaim::Roles => ("roles", claims.get("roles")),
            ScopeClaim::KeycloakRealmRoles => {
                ("realm_access.roles", pointer(claims, "/realm_access/roles"))
            }
            ScopeClaim::KeycloakClientRoles(client) => {
                let client = client.replace('~', "~0").replace('/', "~1");
                let value = pointer(claims, &format!("/resource_access/{client}/roles"));
                return list("resource_access.<client>.roles", value);
            }
            ScopeClaim::Pointer(path) => return list(path, pointer(claims, path)),
            ScopeClaim::Custom(names) => return names(claims),
        };
        let value = value.filter(|v| !v.is_null());
        match (self, value) {
            // RFC 9068 and RFC 7662 say `scope` is a string, nothing else.
            (ScopeClaim::Scope, Some(value)) if !value.is_string() => {
                Err(ClaimError::new(name, "not a string"))
            }
            (ScopeClaim::Permissions | ScopeClaim::Roles, Some(value)) if !value.is_array() => {
                Err(ClaimError::new(name, "not an array of strings"))
            }
            _ => list(name, value),
        }
    }
}

/// An array of strings, or a space-separated string; nothing if absent.
fn list(claim: &str, value: Option<&Value>) -> Result<Vec<String>, ClaimError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(names)) => Ok(names
            .split(' ')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ClaimError::new(claim, "an array holding a non-string"))
            })
            .collect(),
        Some(_) => Err(ClaimError::new(
            claim,
            "not a string or an array of strings",
        )),
    }
}

impl fmt::Debug for ScopeClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeClaim::Scope => f.write_str("Scope"),
            ScopeClaim::Scp => f.write_str("Scp"),
            ScopeClaim::Permissions => f.write_str("Permissions"),
            ScopeClaim::Roles => f.write_str("Roles"),
            ScopeClaim::KeycloakRealmRoles => f.write_str("KeycloakRealmRoles"),
            ScopeClaim::KeycloakClientRoles(client) => {
                f.debug_tuple("KeycloakClientRoles").field(client).finish()
            }
            ScopeClaim::Pointer(path) => f.debug_tuple("Pointer").field(path).finish(),
            ScopeClaim::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The first of `names` that `claims` has, which must be a non-empty
/// string; the first name is reported when none is there.
pub(crate) fn first_string<'a>(
    claims: &'a Map<String, Value>,
    names: &[Box<str>],
) -> Result<&'a str, ClaimError> {
    for name in names {
        match claims.get(&**name) {
            None => continue,
            Some(Value::String(value)) if !value.is_empty() => return Ok(value),
            Some(_) => return Err(ClaimError::new(&**name, "not a non-empty string")),
        }
    }
    Err(ClaimError::new(
        names.first().map_or("", |name| &**name),
        MISSING,
    ))
}

/// Whether `value` (a string, or an array of strings, as `aud` may be)
/// holds one of `accepted`.
pub(crate) fn holds_one_of(value: &Value, accepted: &[String]) -> bool {
    let one = |value: &Value| {
        value
            .as_str()
            .is_some_and(|v| accepted.iter().any(|a| a == v))
    };
    match value {
        Value::Array(values) => values.iter().any(one),
        value => one(value),
    }
}

/// The value at an RFC 6901 JSON pointer into `claims`: `/a/b`.
fn pointer<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix('/')?;
    let (first, rest) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let first = first.replace("~1", "/").replace("~0", "~");
    claims.get(&first)?.pointer(rest)
}

/// What a store reads of a token's claims: its scopes, and the account it
/// acts for.
#[derive(Clone, Debug)]
pub(crate) struct ClaimMap {
    pub(crate) scopes: Vec<ScopeClaim>,
    /// A claim name, or a JSON pointer when it starts with `/`.
    pub(crate) account: Box<str>,
    /// The claims that may name the client, in order: the first present
    /// one does.
    pub(crate) client: Vec<Box<str>>,
    /// Claims that must be these strings (Cognito's `token_use: access`).
    pub(crate) required: Vec<(Box<str>, Box<str>)>,
    /// When set, only scope names with this prefix count, without it
    /// (Cognito's `{resource server}/{scope}`).
    pub(crate) scope_prefix: Option<Box<str>>,
}

impl ClaimMap {
    pub(crate) fn new(account: &str) -> Self {
        ClaimMap {
            scopes: vec![ScopeClaim::Scope],
            account: account.into(),
            client: vec!["client_id".into()],
            required: Vec::new(),
            scope_prefix: None,
        }
    }

    /// Each required claim is there, the string it must be.
    pub(crate) fn check_required(&self, claims: &Map<String, Value>) -> Result<(), ClaimError> {
        for (name, value) in &self.required {
            match claims.get(&**name) {
                Some(Value::String(v)) if v == &**value => {}
                None => return Err(ClaimError::new(&**name, MISSING)),
                Some(_) => return Err(ClaimError::new(&**name, "not the required value")),
            }
        }
        Ok(())
    }

    /// The client: the first of the client claims the token has, a
    /// non-empty string.
    pub(crate) fn client<'a>(&self, claims: &'a Map<String, Value>) -> Result<&'a str, ClaimError> {
        first_string(claims, &self.client)
    }

    /// The scopes of every source, those this process knows.
    pub(crate) fn scopes(&self, claims: &Map<String, Value>) -> Result<ScopeSet, ClaimError> {
        let mut scopes = ScopeSet::new();
        for source in &self.scopes {
            for name in source.names(claims)? {
                let name = match &self.scope_prefix {
                    Some(prefix) => match name.strip_prefix(&**prefix) {
                        Some(name) => name,
                        None => continue,
                    },
                    None => &name,
                };
                if let Some(scope) = Scope::known(name) {
                    scopes.insert(scope);
                }
            }
        }
        Ok(scopes)
    }

    /// The account: a non-empty string.
    pub(crate) fn account<'a>(
        &self,
        claims: &'a Map<String, Value>,
    ) -> Result<&'a str, ClaimError> {
        let account = &*self.account;
        let value = if account.starts_with('/') {
            pointer(claims, account)
        } else {
            claims.get(account)
        };
        match value {
            None => Err(ClaimError::new(account, MISSING)),
            Some(Value::String(id)) if !id.is_empty() => Ok(id),
            Some(_) => Err(ClaimError::new(account, "not a non-empty string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn each_source_reads_its_providers_shape() {
        let claims = map(json!({
            "scope": "a:read b:read",
            "scp": "c:read  d:read",
            "permissions": ["e:read"],
            "roles": ["f:read"],
            "realm_access": {"roles": ["g:read"]},
            "resource_access": {"onboardinghub": {"roles": ["h:read"]}, "a/b": {"roles": ["i:read"]}},
            "https://onboarding-hub.com/scopes": ["j:read"],
        }));
        let names = |source: ScopeClaim| source.names(&claims).unwrap();
        assert_eq!(names(ScopeClaim::Scope), ["a:read", "b:read"]);
        assert_eq!(names(ScopeClaim::Scp), ["c:read", "d:read"]);
        assert_eq!(names(ScopeClaim::Permissions), ["e:read"]);
        assert_eq!(names(ScopeClaim::Roles), ["f:read"]);
        assert_eq!(names(ScopeClaim::KeycloakRealmRoles), ["g:read"]);
        assert_eq!(
            names(ScopeClaim::KeycloakClientRoles("onboardinghub".into())),
            ["h:read"]
        );
        assert_eq!(
            names(ScopeClaim::KeycloakClientRoles("a/b".into())),
            ["i:read"]
        );
        assert_eq!(
            names(ScopeClaim::Pointer(
                "/https:~1~1onboarding-hub.com~1scopes".into()
            )),
            ["j:read"]
        );
        assert!(names(ScopeClaim::KeycloakClientRoles("other".into())).is_empty());
        assert!(names(ScopeClaim::Pointer("/nothing/here".into())).is_empty());
    }

    #[test]
    fn a_claim_of_the_wrong_shape_is_an_error_naming_it() {
        let err =
            |claims: Value, source: ScopeClaim| source.names(&map(claims)).unwrap_err().to_string();
        assert_eq!(
            err(json!({"scope": ["a:read"]}), ScopeClaim::Scope),
            r#"claim "scope": not a string"#
        );
        assert_eq!(
            err(json!({"scp": 7}), ScopeClaim::Scp),
            r#"claim "scp": not a string or an array of strings"#
        );
        assert_eq!(
            err(json!({"permissions": "a:read"}), ScopeClaim::Permissions),
            r#"claim "permissions": not an array of strings"#
        );
        assert_eq!(
            err(json!({"roles": ["a:read", 1]}), ScopeClaim::Roles),
            r#"claim "roles": an array holding a non-string"#
        );
    }

    #[test]
    fn the_account_is_a_claim_or_a_pointer() {
        let claims = map(json!({
            "org_id": "org_1", "tid": "", "n": 3,
            "https://onboarding-hub.com/workspace": "ws_acme",
            "app_metadata": {"workspace": "ws_nested"},
        }));
        let account = |claim: &str| ClaimMap::new(claim).account(&claims).map(str::to_owned);
        assert_eq!(account("org_id").unwrap(), "org_1");
        assert_eq!(
            account("https://onboarding-hub.com/workspace").unwrap(),
            "ws_acme"
        );
        assert_eq!(account("/app_metadata/workspace").unwrap(), "ws_nested");
        assert_eq!(
            account("tid").unwrap_err().to_string(),
            r#"claim "tid": not a non-empty string"#
        );
        assert_eq!(
            account("n").unwrap_err().to_string(),
            r#"claim "n": not a non-empty string"#
        );
        assert_eq!(
            account("sub").unwrap_err().to_string(),
            r#"claim "sub": missing"#
        );
    }

    #[test]
    fn with_a_prefix_only_names_with_it_count() {
        ScopeSet::parse(["contacts:read", "contacts:write"]).unwrap(); // known names
        let claims = map(json!({
            "scope": "openid https://api.test/contacts:read other/contacts:write contacts:write",
        }));
        let mut map_ = ClaimMap::new("sub");
        map_.scope_prefix = Some("https://api.test/".into());
        let scopes = map_.scopes(&claims).unwrap();
        assert_eq!(scopes, ScopeSet::parse(["contacts:read"]).unwrap());
    }

    #[test]
    fn required_claims_must_be_the_strings_given() {
        let mut map_ = ClaimMap::new("sub");
        map_.required = vec![("token_use".into(), "access".into())];
        let check = |claims: Value| map_.check_required(&map(claims)).map_err(|e| e.to_string());
        assert_eq!(check(json!({"token_use": "access"})), Ok(()));
        assert_eq!(
            check(json!({"token_use": "id"})),
            Err(r#"claim "token_use": not the required value"#.to_owned())
        );
        assert_eq!(
            check(json!({"token_use": ["access"]})),
            Err(r#"claim "token_use": not the required value"#.to_owned())
        );
        assert_eq!(
            check(json!({})),
            Err(r#"claim "token_use": missing"#.to_owned())
        );
    }
}
