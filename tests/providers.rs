//! Each provider preset against a fixture of that provider on loopback: it
//! serves discovery and the JWKS at the provider's real paths, and signs
//! tokens whose header and claims have exactly the shape the provider's
//! documentation shows. Through a real server, each preset must allow the
//! right scope, refuse a missing scope and a plan without `api-access` with
//! the exact 403 bodies, refuse another issuer's key and a wrong audience
//! with 401, and pick up a rotated key without a restart.
#![cfg(feature = "jwt")]

mod common;

#[cfg(feature = "introspection")]
#[allow(dead_code)]
#[path = "../examples/onboardinghub/app.rs"]
mod app;
#[cfg(feature = "introspection")]
#[path = "../examples/demo/mod.rs"]
mod demo;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use scopegate::store::oauth::jwt::JwtStoreBuilder;
use scopegate::store::oauth::provider::Provider;
use scopegate::{CachedStore, Gate};
use serde_json::{json, Value};

use common::{serve, Server};

const CONTACTS: &str = "/api/v1/contacts";
const FORBIDDEN: &str = r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#;
const INVALID_TOKEN: &str = r#"{"error":{"type":"invalid_token","message":"The access token is invalid, expired or revoked."}}"#;
const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer error="invalid_token""#;
const NEEDS_CONTACTS_READ: &str = r#"{"error":{"type":"insufficient_scope","message":"This action requires the 'contacts:read' scope. Your credential does not have this permission."}}"#;
const NEEDS_CONTACTS_READ_CHALLENGE: &str =
    r#"Bearer error="insufficient_scope", scope="contacts:read""#;
/// The refresh interval the tests give the stores, so that a rotation is
/// picked up quickly.
const REFRESH: Duration = Duration::from_millis(300);

struct Key {
    encoding: EncodingKey,
    kid: &'static str,
}

impl Key {
    fn rsa(pem: &[u8], kid: &'static str) -> Key {
        Key {
            encoding: EncodingKey::from_rsa_pem(pem).unwrap(),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        let jwk = Jwk::from_encoding_key(&self.encoding, Algorithm::RS256).unwrap();
        let mut jwk = serde_json::to_value(jwk).unwrap();
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk
    }

    /// Signed as `kid`, which need not be this key's.
    fn sign_as(&self, kid: &str, typ: Option<&str>, claims: &Value) -> String {
        let header = Header {
            typ: typ.map(str::to_owned),
            kid: Some(kid.to_owned()),
            ..Header::new(Algorithm::RS256)
        };
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
        self.sign_as(self.kid, typ, claims)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token's claims: for `account`, granting `scope`, for `audience`.
struct Grant<'a> {
    issuer: &'a str,
    audience: &'a str,
    account: &'a str,
    scope: &'a str,
}

/// One provider's fixture: where it publishes, what its tokens look like.
struct Shape {
    provider: Provider,
    /// The path of its discovery document, as the provider serves it.
    metadata: String,
    /// The path of its JWKS.
    jwks: String,
    /// The header `typ` its access tokens carry.
    typ: Option<&'static str>,
    /// What the store is configured to accept in `aud` (for Cognito, the
    /// app client).
    audience: &'static str,
    /// The account that has `api-access`, and one on a plan without it.
    accounts: [&'static str; 2],
    claims: fn(&Grant<'_>) -> Value,
    /// Settings a user adds to the preset for this provider.
    configure: fn(JwtStoreBuilder) -> JwtStoreBuilder,
}

/// A fixture authorization server, its JWKS replaceable.
struct Fixture {
    keys: Arc<Mutex<Value>>,
    jwks_hits: Arc<AtomicUsize>,
}

async fn fixture(
    shape: &Shape,
    base: &str,
    listener: tokio::net::TcpListener,
    key: &Key,
) -> Fixture {
    let keys = Arc::new(Mutex::new(json!({ "keys": [key.jwk()] })));
    let jwks_hits = Arc::new(AtomicUsize::new(0));
    let metadata = json!({
        "issuer": shape.provider.issuer(),
        "jwks_uri": format!("{base}{}", shape.jwks),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string();
    let (served, hits) = (Arc::clone(&keys), Arc::clone(&jwks_hits));
    let router = axum::Router::new()
        .route(&shape.metadata, get(move || async move { metadata }))
        .route(
            &shape.jwks,
            get(move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                served.lock().unwrap().to_string()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Fixture { keys, jwks_hits }
}

/// The API, behind the preset's store: `GET /api/v1/contacts` needs
/// `contacts:read` and `api-access`.
async fn api(shape: &Shape) -> Server {
    let [paid, free] = shape.accounts;
    let plans = HashMap::from([
        (paid.to_owned(), vec!["api-access".to_owned()]),
        (free.to_owned(), vec!["webhooks".to_owned()]),
    ]);
    let builder = shape
        .provider
        .jwt(shape.audience)
        .refresh_interval(REFRESH)
        .entitlements(plans);
    let store = (shape.configure)(builder).build().unwrap();
    let gate = Gate::new(CachedStore::new(store));
    let router = axum::Router::new()
        .route(CONTACTS, get(|| async { "ok" }))
        .layer(gate.require_scope("contacts:read").unwrap())
        .layer(gate.api_access());
    serve(router).await
}

/// Every assertion the issue asks of a preset, and `extra` for the
/// provider's own traps.
async fn check(shape: impl FnOnce(&str) -> Shape, extra: &[(&str, Value, Option<&str>)]) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shape = shape(&base);
    let key = Key::rsa(
        include_bytes!("../benches/fixtures/rs256-private.pem"),
        "k1",
    );
    let other = Key::rsa(include_bytes!("fixtures/rs256-other-private.pem"), "k1");
    let rotated = Key::rsa(include_bytes!("fixtures/rs256-rotated-private.pem"), "k2");
    let fixture = fixture(&shape, &base, listener, &key).await;
    let server = api(&shape).await;

    let issuer = shape.provider.issuer();
    let [paid, free] = shape.accounts;
    let grant = |account, scope, audience| {
        (shape.claims)(&Grant {
            issuer,
            audience,
            account,
            scope,
        })
    };
    let good = grant(paid, "contacts:read", shape.audience);
    // Signed before anything is timed: RSA signing is slow in a debug build.
    let tokens = [
        key.sign(shape.typ, &good),
        key.sign(shape.typ, &grant(paid, "guides:read", shape.audience)),
        key.sign(shape.typ, &grant(free, "contacts:read", shape.audience)),
        other.sign(shape.typ, &good),
        key.sign(
            shape.typ,
            &grant(paid, "contacts:read", "https://other-api.example"),
        ),
        rotated.sign(shape.typ, &good),
    ];
    let extras: Vec<(String, &str)> = extra
        .iter()
        .map(|(what, claims, typ)| {
            let mut claims_ = good.clone();
            for (name, value) in claims.as_object().unwrap() {
                match value {
                    Value::Null => claims_.as_object_mut().unwrap().remove(name),
                    value => claims_
                        .as_object_mut()
                        .unwrap()
                        .insert(name.clone(), value.clone()),
                };
            }
            (key.sign(typ.or(shape.typ), &claims_), *what)
        })
        .collect();
    let [allowed, no_scope, no_plan, other_key, other_audience, rotated_token] = tokens;
    let name = shape.provider.name();

    let reply = server.get(CONTACTS, &allowed).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "ok"),
        "{name}: the right scope"
    );
    server.get(CONTACTS, &no_scope).await.assert_rejected(
        403,
        NEEDS_CONTACTS_READ,
        Some(NEEDS_CONTACTS_READ_CHALLENGE),
    );
    server
        .get(CONTACTS, &no_plan)
        .await
        .assert_rejected(403, FORBIDDEN, None);
    for (token, what) in [
        (&other_key, "another issuer's key"),
        (&other_audience, "a wrong audience"),
    ] {
        let reply = server.get(CONTACTS, token).await;
        assert_eq!(reply.status.as_u16(), 401, "{name}: {what}");
        reply.assert_rejected(401, INVALID_TOKEN, Some(INVALID_TOKEN_CHALLENGE));
    }
    for (token, what) in &extras {
        let reply = server.get(CONTACTS, token).await;
        assert_eq!(reply.status.as_u16(), 401, "{name}: {what}");
        reply.assert_rejected(401, INVALID_TOKEN, Some(INVALID_TOKEN_CHALLENGE));
    }

    // The provider rotates: it publishes the new key and signs with it.
    *fixture.keys.lock().unwrap() = json!({ "keys": [key.jwk(), rotated.jwk()] });
    let rotated_at = Instant::now();
    let picked_up = loop {
        let reply = server.get(CONTACTS, &rotated_token).await;
        if reply.status == 200 {
            break rotated_at.elapsed();
        }
        assert_eq!(reply.status.as_u16(), 401, "{name}: before the refresh");
        assert!(
            rotated_at.elapsed() < Duration::from_secs(5),
            "{name}: rotated key still refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        picked_up <= REFRESH + Duration::from_millis(500),
        "{name}: {picked_up:?}"
    );
    assert_eq!(
        fixture.jwks_hits.load(Ordering::SeqCst),
        2,
        "{name}: one fetch, one refresh"
    );
    let reply = server.get(CONTACTS, &allowed).await;
    assert_eq!(
        reply.status.as_u16(),
        200,
        "{name}: the old key still verifies"
    );
}

/// Keycloak's fixture.
fn keycloak_shape(base: &str) -> Shape {
    Shape {
        provider: Provider::keycloak(base, "acme"),
        metadata: "/realms/acme/.well-known/openid-configuration".into(),
        jwks: "/realms/acme/protocol/openid-connect/certs".into(),
        typ: Some("JWT"),
        audience: "onboardinghub-api",
        accounts: [
            "7f3c1b6e-2d4a-4e8f-9b0a-1c2d3e4f5a6b",
            "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
        ],
        // https://www.keycloak.org/docs/latest/server_admin/#audience-support
        claims: |g| {
            json!({
                "exp": now() + 300, "iat": now(), "jti": "onrtcc:2b5d7c4e-8f1a-4b3c-9d2e-6f7a8b9c0d1e",
                "iss": g.issuer, "aud": [g.audience, "account"], "sub": g.account, "typ": "Bearer",
                "azp": "partner-app", "sid": "4c1d8e2f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "acr": "1",
                "allowed-origins": ["https://partner.example"],
                "realm_access": {"roles": ["offline_access", "uma_authorization", "default-roles-acme"]},
                "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
                "scope": format!("openid profile email {}", g.scope),
                "email_verified": true, "preferred_username": "ada",
            })
        },
        configure: |builder| builder,
    }
}

#[tokio::test]
async fn keycloak() {
    check(
        keycloak_shape,
        &[
            (
                "an ID token",
                json!({"typ": "ID", "aud": "onboardinghub-api"}),
                None,
            ),
            ("no audience mapper", json!({"aud": "account"}), None),
        ],
    )
    .await;
}

#[tokio::test]
async fn auth0() {
    let shape = |base: &str| Shape {
        provider: Provider::auth0("onboardinghub.eu.auth0.com").authority(base),
        metadata: "/.well-known/openid-configuration".into(),
        jwks: "/.well-known/jwks.json".into(),
        typ: Some("JWT"),
        audience: "https://api.onboardinghub.com",
        accounts: ["org_W5RQ8w1mHqTL6yJb", "org_Z2vT4n9kLpQ3xR7s"],
        // https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles
        // (the default profile: no `jti`, the client in `azp`)
        claims: |g| {
            json!({
                "iss": g.issuer, "sub": "auth0|64f1c2d3e4b5a6978a9b0c1d",
                "aud": [g.audience, format!("{}userinfo", g.issuer)],
                "iat": now(), "exp": now() + 86400, "azp": "my_client_id",
                "scope": format!("openid profile {}", g.scope),
                "permissions": [g.scope], "org_id": g.account,
            })
        },
        configure: |builder| builder,
    };
    check(
        shape,
        &[
            ("an ID token", json!({"aud": "my_client_id"}), None),
            ("no organization", json!({"org_id": null}), None),
        ],
    )
    .await;
}

const ENTRA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Entra ID's fixture, its tokens' claims given.
fn entra_shape(base: &str, claims: fn(&Grant<'_>) -> Value) -> Shape {
    Shape {
        provider: Provider::entra(ENTRA_TENANT).authority(base),
        metadata: format!("/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration"),
        jwks: format!("/{ENTRA_TENANT}/discovery/v2.0/keys"),
        typ: Some("JWT"),
        audience: "6e74172b-be56-4843-9ff4-e66a39bb12e3",
        accounts: [ENTRA_TENANT, "72f988bf-86f1-41af-91ab-2d7cd011db47"],
        claims,
        configure: |builder| builder,
    }
}

#[tokio::test]
async fn entra() {
    // https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference
    // (a delegated token: the scopes in `scp`)
    let shape = |base: &str| {
        entra_shape(base, |g| {
            json!({
                "aud": g.audience, "iss": g.issuer, "iat": now(), "nbf": now(), "exp": now() + 3600,
                "aio": "AXQAi/8UAAAAr8PkQ5aF0", "azp": "2a4c6e8f-1b3d-4f5a-8c7e-9d0b1a2c3e4f", "azpacr": "0",
                "name": "Ada Lovelace", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
                "preferred_username": "ada@contoso.onmicrosoft.com", "rh": "0.AAAA",
                "scp": g.scope, "sub": "MF4f-ggWMEji12KynJUNQZphaUTvLcQug5jdF2nl01Q",
                "tid": g.account, "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "2.0",
            })
        })
    };
    let v1_issuer = format!("https://sts.windows.net/{ENTRA_TENANT}/");
    check(
        shape,
        &[
            (
                "a v1.0 token",
                json!({"iss": v1_issuer, "ver": "1.0"}),
                None,
            ),
            ("no token id", json!({"uti": null}), None),
        ],
    )
    .await;
}

/// Entra ID's app-only tokens (client credentials) carry application
/// permissions in `roles`, and no `scp`.
#[tokio::test]
async fn entra_app_roles() {
    let shape = |base: &str| {
        entra_shape(base, |g| {
            json!({
                "aud": g.audience, "iss": g.issuer, "iat": now(), "nbf": now(), "exp": now() + 3600,
                "azp": "2a4c6e8f-1b3d-4f5a-8c7e-9d0b1a2c3e4f", "azpacr": "1", "idtyp": "app",
                "oid": "c3f1b2a4-5d6e-4f7a-8b9c-0d1e2f3a4b5c", "roles": [g.scope],
                "sub": "c3f1b2a4-5d6e-4f7a-8b9c-0d1e2f3a4b5c", "tid": g.account,
                "uti": "dBKpL0yT5kWn6cVb2M0QAA", "ver": "2.0",
            })
        })
    };
    check(
        shape,
        &[(
            "roles not an array",
            json!({"roles": "contacts:read"}),
            None,
        )],
    )
    .await;
}

#[tokio::test]
async fn okta() {
    let shape = |base: &str| Shape {
        provider: Provider::okta("onboardinghub.okta.com", "default").authority(base),
        metadata: "/oauth2/default/.well-known/openid-configuration".into(),
        jwks: "/oauth2/default/v1/keys".into(),
        typ: None,
        audience: "api://default",
        accounts: ["ada@onboardinghub.com", "grace@onboardinghub.com"],
        // https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/#access-token
        claims: |g| {
            json!({
                "ver": 1, "jti": "AT.0mP4JKAZX1iACIT4vbEDF7LpvDVjxypPMf0D7uX39RE", "iss": g.issuer,
                "aud": g.audience, "iat": now(), "exp": now() + 3600, "cid": "0oaoesxtxmPf08QHk0h7",
                "uid": "00uoesxtxmPf08QHk0h7", "scp": ["openid", g.scope], "auth_time": now() - 60,
                "sub": g.account,
            })
        },
        configure: |builder| builder,
    };
    check(
        shape,
        &[
            ("an ID token", json!({"aud": "0oaoesxtxmPf08QHk0h7"}), None),
            ("scp not strings", json!({"scp": [1]}), None),
        ],
    )
    .await;
}

#[tokio::test]
async fn cognito() {
    const POOL: &str = "eu-west-1_AbC123xYz";
    let shape = |base: &str| Shape {
        provider: Provider::cognito("eu-west-1", POOL).authority(base),
        metadata: format!("/{POOL}/.well-known/openid-configuration"),
        jwks: format!("/{POOL}/.well-known/jwks.json"),
        typ: None,
        audience: "1example23456789",
        accounts: [
            "aaaaaaaa-bbbb-cccc-dddd-example",
            "eeeeeeee-ffff-0000-1111-example",
        ],
        // https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html
        // (custom scopes are `{resource server}/{scope}`; a wrong audience is
        // another app client)
        claims: |g| {
            json!({
                "sub": g.account, "cognito:groups": ["admin"], "iss": g.issuer, "version": 2,
                "client_id": if g.audience.starts_with("https://") { "7other123456789" } else { g.audience },
                "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                "event_id": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff", "token_use": "access",
                "scope": format!("aws.cognito.signin.user.admin https://api.onboardinghub.com/{}", g.scope),
                "auth_time": now() - 60, "exp": now() + 3600, "iat": now(),
                "jti": "cccccccc-dddd-eeee-ffff-aaaaaaaaaaaa", "username": "ada",
            })
        },
        configure: |builder| builder.scope_prefix("https://api.onboardinghub.com/"),
    };
    check(
        shape,
        &[
            (
                "an ID token",
                json!({"token_use": "id", "aud": "1example23456789", "client_id": null}),
                None,
            ),
            ("no token_use", json!({"token_use": null}), None),
        ],
    )
    .await;
}

/// A generic RFC 9068 issuer whose metadata is only at RFC 8414's location.
#[tokio::test]
async fn rfc9068() {
    let shape = |base: &str| Shape {
        provider: Provider::rfc9068(&format!("{base}/as")),
        metadata: "/.well-known/oauth-authorization-server/as".into(),
        jwks: "/as/jwks".into(),
        typ: Some("at+jwt"),
        audience: "https://api.onboardinghub.com",
        accounts: ["ws_acme", "ws_free"],
        // https://www.rfc-editor.org/rfc/rfc9068#section-2.2
        claims: |g| {
            json!({
                "iss": g.issuer, "exp": now() + 3600, "aud": g.audience, "sub": g.account,
                "client_id": "s6BhdRkqt3", "iat": now(), "jti": "dbe39bf3a3ba4238a513f51d6e1691c4",
                "scope": g.scope,
            })
        },
        configure: |builder| builder,
    };
    check(
        shape,
        &[
            ("typ JWT", json!({}), Some("JWT")),
            ("no client_id", json!({"client_id": null}), None),
        ],
    )
    .await;
}

/// The example server, given the issuer's URL and a preset's name only (as
/// `OAUTH_ISSUER` and `OAUTH_PROVIDER`), and the claim that holds the
/// workspace (`OAUTH_ACCOUNT_CLAIM`).
#[cfg(feature = "introspection")]
#[tokio::test]
async fn the_example_takes_a_preset_by_name() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shape = keycloak_shape(&base);
    let key = Key::rsa(
        include_bytes!("../benches/fixtures/rs256-private.pem"),
        "k1",
    );
    let _fixture = fixture(&shape, &base, listener, &key).await;

    let provider = Provider::named("keycloak", shape.provider.issuer()).unwrap();
    let mut oauth = app::OAuth::for_provider(provider, None);
    oauth.audience = shape.audience.to_owned();
    oauth.account_claim = "workspace_id".to_owned();
    let example = app::App::with_oauth("admin", Some(&oauth)).unwrap();
    let server = serve(example.router().unwrap()).await;

    let grant = |scope| {
        let mut claims = (shape.claims)(&Grant {
            issuer: shape.provider.issuer(),
            audience: shape.audience,
            account: "7f3c1b6e-2d4a-4e8f-9b0a-1c2d3e4f5a6b",
            scope,
        });
        claims["workspace_id"] = json!(demo::WORKSPACE);
        key.sign(shape.typ, &claims)
    };
    let (allowed, refused) = (grant("contacts:read"), grant("guides:read"));
    let reply = server.get(CONTACTS, &allowed).await;
    assert_eq!(reply.status.as_u16(), 200, "{reply:?}");
    server.get(CONTACTS, &refused).await.assert_rejected(
        403,
        NEEDS_CONTACTS_READ,
        Some(NEEDS_CONTACTS_READ_CHALLENGE),
    );
}
