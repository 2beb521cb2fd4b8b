//! Presets for the mainstream authorization servers (feature `jwt`): name
//! the provider and its tenant or realm, and get a [`JwtStoreBuilder`] set
//! for the tokens it issues.
//!
//! A preset is configuration over the building blocks, nothing more: the
//! issuer URL in the provider's form, [discovery](JwtStoreBuilder::discover)
//! of its keys, the header `typ` it sends, where its scopes, client, token
//! id and usual account are, and the claims that tell its access tokens
//! from its ID tokens. Every setting can still be changed on the builder it
//! returns.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use scopegate::store::oauth::provider::Provider;
//! use scopegate::store::oauth::ScopeClaim;
//! use scopegate::{CachedStore, Gate};
//!
//! # fn main() -> Result<(), scopegate::store::oauth::OAuthConfigError> {
//! let plans = HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]);
//! let keycloak = Provider::keycloak("https://sso.example.com", "acme");
//! assert_eq!(keycloak.issuer(), "https://sso.example.com/realms/acme");
//!
//! let store = keycloak
//!     .jwt("onboardinghub-api")
//!     // Changed like any builder: here, realm roles count as scopes too.
//!     .scope_claims([ScopeClaim::Scope, ScopeClaim::KeycloakRealmRoles])
//!     .entitlements(plans)
//!     .build()?; // fetches nothing: the keys are discovered on first use
//! let gate = Gate::new(CachedStore::new(store));
//! # let _ = gate;
//! # Ok(())
//! # }
//! ```
//!
//! # The presets
//!
//! | Provider | Issuer | `typ` | Scopes | Account | Client | Token id |
//! |---|---|---|---|---|---|---|
//! | [`keycloak`](Provider::keycloak) | `{base}/realms/{realm}` | `JWT` | `scope` | `sub` | `azp` | `jti` |
//! | [`auth0`](Provider::auth0) | `https://{domain}/` | `JWT` | `scope`, `permissions` | `org_id` | `azp`, `client_id` | `jti`, if any |
//! | [`entra`](Provider::entra) | `https://login.microsoftonline.com/{tenant}/v2.0` | `JWT` | `scp`, `roles` | `tid` | `azp` | `uti` |
//! | [`okta`](Provider::okta) | `https://{domain}/oauth2/{server}` | none | `scp` | `sub` | `cid` | `jti` |
//! | [`cognito`](Provider::cognito) | `https://cognito-idp.{region}.amazonaws.com/{pool}` | none | `scope`, with [a prefix](JwtStoreBuilder::scope_prefix) | `sub` | `client_id` (no `aud`) | `jti` |
//! | [`rfc9068`](Provider::rfc9068) | as given | `at+jwt` | `scope` | `sub` | `client_id` | `jti` |
//!
//! Every preset also accepts `typ: at+jwt`, discovers the keys from the
//! issuer's metadata, and checks `iss`, `aud`, `exp`, `nbf` and `iat` as
//! [`JwtStore`] always does. Each constructor's docs
//! say what the provider's tokens hold, with a link to its documentation.
//!
//! # Tests, sovereign clouds and proxies
//!
//! [`authority`](Provider::authority) replaces the scheme, host and port of
//! the issuer and keeps its path: `Provider::entra(tenant)
//! .authority("https://login.microsoftonline.us")` for Entra ID's US
//! Government cloud, or an `http://127.0.0.1:…` fixture in tests.

use std::fmt;

use super::jwt::{JwtStore, JwtStoreBuilder};
use super::{OAuthConfigError, ScopeClaim};

/// An authorization server's issuer, and the shape of its access tokens.
/// See the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    kind: Kind,
    issuer: String,
}

/// The providers with a preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Keycloak,
    Auth0,
    Entra,
    Okta,
    Cognito,
    Rfc9068,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Keycloak,
        Kind::Auth0,
        Kind::Entra,
        Kind::Okta,
        Kind::Cognito,
        Kind::Rfc9068,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Keycloak => "keycloak",
            Kind::Auth0 => "auth0",
            Kind::Entra => "entra",
            Kind::Okta => "okta",
            Kind::Cognito => "cognito",
            Kind::Rfc9068 => "rfc9068",
        }
    }
}

/// `https://{domain}`, or the domain as given when it already names a
/// scheme (`http://127.0.0.1:8080`).
fn origin(domain: &str) -> String {
    let domain = domain.trim_end_matches('/');
    if domain.contains("://") {
        domain.to_owned()
    } else {
        format!("https://{domain}")
    }
}

impl Provider {
    /// A Keycloak realm: issuer `{base}/realms/{realm}`, where `base` is the
    /// server's URL (with `/auth` for versions before 17).
    ///
    /// Keycloak's access tokens have `typ: JWT` in the header and `"typ":
    /// "Bearer"` in the payload (its ID tokens have `"ID"`, which is
    /// refused), the client scopes in the space-separated `scope`, the client
    /// in `azp` (service accounts also have `client_id`), and a `jti`. They
    /// carry an `aud` only when the client has an audience mapper: add one
    /// that names this API. Realm and client roles are in
    /// `realm_access.roles` and `resource_access.<client>.roles`; add
    /// [`ScopeClaim::KeycloakRealmRoles`] or
    /// [`ScopeClaim::KeycloakClientRoles`] to count them as scopes.
    ///
    /// See <https://www.keycloak.org/docs/latest/server_admin/#audience-support>
    /// and <https://www.keycloak.org/docs/latest/server_admin/#_oidc_token_and_saml_assertion_mappings>.
    pub fn keycloak(base: &str, realm: &str) -> Self {
        Provider {
            kind: Kind::Keycloak,
            issuer: format!("{}/realms/{realm}", base.trim_end_matches('/')),
        }
    }

    /// An Auth0 tenant: issuer `https://{domain}/`, with the trailing slash
    /// Auth0 puts in `iss` (`domain` is the tenant's domain or custom
    /// domain).
    ///
    /// Auth0's access tokens for an API have its identifier in `aud` (an
    /// array that also holds `https://{domain}/userinfo` when `openid` was
    /// asked for), the granted scopes in the space-separated `scope`, and,
    /// with RBAC's "Add Permissions in the Access Token", the permissions in
    /// the `permissions` array. The default token profile has `typ: JWT`,
    /// the client in `azp` and no `jti`; the RFC 9068 profile has `typ:
    /// at+jwt`, `client_id` and a `jti`. Both are accepted. The account is
    /// the organization, `org_id`: set
    /// [`account_claim`](JwtStoreBuilder::account_claim) to another claim
    /// (`sub`, or a namespaced custom claim) for tenants without
    /// Organizations.
    ///
    /// See <https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles>
    /// and <https://auth0.com/docs/manage-users/organizations/using-tokens>.
    pub fn auth0(domain: &str) -> Self {
        Provider {
            kind: Kind::Auth0,
            issuer: format!("{}/", origin(domain)),
        }
    }

    /// A Microsoft Entra ID tenant, v2.0 tokens: issuer
    /// `https://login.microsoftonline.com/{tenant}/v2.0`, where `tenant` is
    /// the tenant's id (a GUID, as `iss` and `tid` hold it; not a domain
    /// name, and not `common` or `organizations`). The API's app
    /// registration must have `accessTokenAcceptedVersion: 2` (v1.0 tokens
    /// have another issuer).
    ///
    /// Entra ID's access tokens have `typ: JWT`, the API's application
    /// (client) id in `aud`, delegated scopes in the space-separated `scp`
    /// and application permissions in the `roles` array (both count as
    /// scopes), the client in `azp`, the tenant in `tid` (the account), and
    /// the token's id in `uti`: there is no `jti`.
    ///
    /// See <https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference>.
    pub fn entra(tenant: &str) -> Self {
        Provider {
            kind: Kind::Entra,
            issuer: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        }
    }

    /// An Okta custom authorization server: issuer
    /// `https://{domain}/oauth2/{server}` (`server` is `default` or the
    /// server's id). Tokens of the org authorization server (issuer
    /// `https://{domain}`) are for Okta's own APIs, not yours.
    ///
    /// Okta's access tokens have no `typ` in the header, the audience the
    /// server is configured with in `aud` (such as `api://default`), the
    /// scopes in the `scp` array, the client in `cid`, the user's id in
    /// `uid`, the subject (the user's login, or the client for client
    /// credentials) in `sub` (the account), and a `jti`.
    ///
    /// See <https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/#access-token>.
    pub fn okta(domain: &str, server: &str) -> Self {
        Provider {
            kind: Kind::Okta,
            issuer: format!("{}/oauth2/{server}", origin(domain)),
        }
    }

    /// An Amazon Cognito user pool: issuer
    /// `https://cognito-idp.{region}.amazonaws.com/{pool}` (`pool` is the
    /// pool's id, `us-east-1_AbC123`).
    ///
    /// Cognito's access tokens have no `typ` in the header and no `aud`:
    /// the app client is in `client_id`, so the audiences given to
    /// [`jwt`](Self::jwt) are the app client ids to accept
    /// ([`client_id_as_audience`](JwtStoreBuilder::client_id_as_audience)).
    /// `token_use` must be `access`: Cognito's ID tokens are otherwise
    /// alike. The scopes are in the space-separated `scope`, the user (or
    /// the client, for client credentials) in `sub` (the account), groups in
    /// `cognito:groups`, and a `jti`. A custom scope is named `{resource
    /// server identifier}/{scope}`: set
    /// [`scope_prefix`](JwtStoreBuilder::scope_prefix) to the identifier
    /// and a `/` to read `https://api.example.com/contacts:read` as
    /// `contacts:read`.
    ///
    /// See <https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html>.
    pub fn cognito(region: &str, pool: &str) -> Self {
        Provider {
            kind: Kind::Cognito,
            issuer: format!("https://cognito-idp.{region}.amazonaws.com/{pool}"),
        }
    }

    /// Any issuer of RFC 9068 JWT access tokens, its URL given whole: `typ:
    /// at+jwt`, `scope`, `client_id`, `jti` and the account in `sub`. The
    /// same as [`JwtStore::builder`] with
    /// [`discover`](JwtStoreBuilder::discover).
    ///
    /// See <https://www.rfc-editor.org/rfc/rfc9068>.
    pub fn rfc9068(issuer: &str) -> Self {
        Provider {
            kind: Kind::Rfc9068,
            issuer: issuer.to_owned(),
        }
    }

    /// The preset `name` (`keycloak`, `auth0`, `entra`, `okta`, `cognito`,
    /// `rfc9068`, in any case) for an issuer given whole, as configuration
    /// files and environment variables give it.
    ///
    /// ```
    /// use scopegate::store::oauth::provider::Provider;
    ///
    /// let okta = Provider::named("okta", "https://acme.okta.com/oauth2/default").unwrap();
    /// assert_eq!(okta, Provider::okta("acme.okta.com", "default"));
    /// assert_eq!(
    ///     Provider::named("ping", "https://auth.example.com").unwrap_err().to_string(),
    ///     "unknown provider \"ping\": expected one of keycloak, auth0, entra, okta, cognito, rfc9068"
    /// );
    /// ```
    ///
    /// # Errors
    ///
    /// [`OAuthConfigError::UnknownProvider`] for any other name.
    pub fn named(name: &str, issuer: &str) -> Result<Self, OAuthConfigError> {
        let kind = Kind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| OAuthConfigError::UnknownProvider(name.to_owned()))?;
        Ok(Provider {
            kind,
            issuer: issuer.to_owned(),
        })
    }

    /// The names [`named`](Self::named) takes.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Kind::ALL.into_iter().map(Kind::name)
    }

    /// Replaces the issuer's scheme, host and port with `authority`
    /// (`https://login.microsoftonline.us`, `http://127.0.0.1:8080`),
    /// keeping its path.
    ///
    /// ```
    /// use scopegate::store::oauth::provider::Provider;
    ///
    /// let tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    /// let gov = Provider::entra(tenant).authority("https://login.microsoftonline.us");
    /// assert_eq!(gov.issuer(), format!("https://login.microsoftonline.us/{tenant}/v2.0"));
    /// let local = Provider::auth0("acme.eu.auth0.com").authority("http://127.0.0.1:8080/");
    /// assert_eq!(local.issuer(), "http://127.0.0.1:8080/");
    /// ```
    pub fn authority(mut self, authority: &str) -> Self {
        let after_scheme = self.issuer.find("://").map_or(0, |i| i + 3);
        let path = self.issuer[after_scheme..]
            .find('/')
            .map_or("", |i| &self.issuer[after_scheme + i..]);
        self.issuer = format!("{}{path}", authority.trim_end_matches('/'));
        self
    }

    /// The issuer URL, exactly as the provider's tokens name it in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The preset's name, as [`named`](Self::named) takes it.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Where this provider's tokens hold their scopes (the table in the
    /// [module docs](self)); what [`jwt`](Self::jwt) sets, and what an
    /// [`IntrospectionStore`](super::introspection::IntrospectionStore) of
    /// the same issuer reads too.
    pub fn scope_claims(&self) -> Vec<ScopeClaim> {
        match self.kind {
            Kind::Auth0 => vec![ScopeClaim::Scope, ScopeClaim::Permissions],
            Kind::Entra => vec![ScopeClaim::Scp, ScopeClaim::Roles],
            Kind::Okta => vec![ScopeClaim::Scp],
            Kind::Keycloak | Kind::Cognito | Kind::Rfc9068 => vec![ScopeClaim::Scope],
        }
    }

    /// The claim that usually names the account: `org_id` for Auth0,
    /// `tid` for Entra ID, `sub` for the others.
    pub fn account_claim(&self) -> &'static str {
        match self.kind {
            Kind::Auth0 => "org_id",
            Kind::Entra => "tid",
            Kind::Keycloak | Kind::Okta | Kind::Cognito | Kind::Rfc9068 => "sub",
        }
    }

    /// A [`JwtStore`] builder for this provider's access tokens meant for
    /// `audience` (this API's identifier; for Cognito, an app client id),
    /// with the preset's settings. [`audiences`](JwtStoreBuilder::audiences)
    /// accepts several.
    pub fn jwt(&self, audience: &str) -> JwtStoreBuilder {
        let builder = JwtStore::builder(&self.issuer, audience)
            .discover()
            .scope_claims(self.scope_claims())
            .account_claim(self.account_claim())
            // Every preset but the generic one sends `JWT`, or no `typ`.
            .accept_typ_jwt(self.kind != Kind::Rfc9068);
        match self.kind {
            Kind::Keycloak => builder
                .client_id_claims(["azp", "client_id"])
                .require_claim("typ", "Bearer"),
            Kind::Auth0 => builder
                .client_id_claims(["azp", "client_id"])
                .allow_missing_token_id(true),
            Kind::Entra => builder.client_id_claims(["azp"]).token_id_claims(["uti"]),
            Kind::Okta => builder.client_id_claims(["cid"]),
            Kind::Cognito => builder
                .client_id_as_audience(true)
                .require_claim("token_use", "access"),
            Kind::Rfc9068 => builder,
        }
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name())
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_preset_names_its_issuer_in_the_providers_form() {
        let issuer = |p: Provider| p.issuer().to_owned();
        assert_eq!(
            issuer(Provider::keycloak("https://sso.example.com/", "acme")),
            "https://sso.example.com/realms/acme"
        );
        assert_eq!(
            issuer(Provider::keycloak("https://sso.example.com/auth", "acme")),
            "https://sso.example.com/auth/realms/acme"
        );
        assert_eq!(
            issuer(Provider::auth0("acme.eu.auth0.com")),
            "https://acme.eu.auth0.com/"
        );
        assert_eq!(
            issuer(Provider::entra("t-1")),
            "https://login.microsoftonline.com/t-1/v2.0"
        );
        assert_eq!(
            issuer(Provider::okta("acme.okta.com", "default")),
            "https://acme.okta.com/oauth2/default"
        );
        assert_eq!(
            issuer(Provider::okta("http://127.0.0.1:9/", "aus1")),
            "http://127.0.0.1:9/oauth2/aus1"
        );
        assert_eq!(
            issuer(Provider::cognito("eu-west-1", "eu-west-1_AbC")),
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"
        );
        assert_eq!(
            issuer(Provider::rfc9068("https://auth.example.com")),
            "https://auth.example.com"
        );
    }

    #[test]
    fn authority_keeps_the_path_exactly() {
        let local = |p: Provider| p.authority("http://127.0.0.1:9").issuer().to_owned();
        assert_eq!(local(Provider::auth0("a.auth0.com")), "http://127.0.0.1:9/");
        assert_eq!(
            local(Provider::cognito("us-east-1", "us-east-1_X")),
            "http://127.0.0.1:9/us-east-1_X"
        );
        assert_eq!(
            local(Provider::rfc9068("https://auth.example.com")),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            local(Provider::rfc9068("https://auth.example.com/t/1?x")),
            "http://127.0.0.1:9/t/1?x"
        );
    }

    #[test]
    fn named_takes_every_preset_in_any_case() {
        for name in Provider::names() {
            let provider = Provider::named(&name.to_uppercase(), "https://a.example").unwrap();
            assert_eq!(provider.name(), name);
            assert_eq!(provider.issuer(), "https://a.example");
        }
        assert_eq!(
            Provider::named("", "https://a.example"),
            Err(OAuthConfigError::UnknownProvider(String::new()))
        );
    }

    #[test]
    fn debug_shows_the_name_and_issuer() {
        assert_eq!(
            format!("{:?}", Provider::okta("acme.okta.com", "default")),
            r#"Provider { name: "okta", issuer: "https://acme.okta.com/oauth2/default" }"#
        );
    }
}
