//! OAuth 2.0 access tokens from a real authorization server, next to API
//! keys, through the example server.
//!
//! The server is oidc-provider (`tests/authserver`), one Node.js process per
//! test on loopback. The first test installs it with `npm ci` if needed.
//! Without Node.js and npm these tests print why and pass without running;
//! with `CI` set they fail instead.
#![cfg(all(feature = "jwt", feature = "introspection"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/onboardinghub/app.rs"]
mod app;
#[path = "../examples/demo/mod.rs"]
mod demo;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{serve, Server};
use http::Method;
use scopegate::credential::PresentedToken;
use scopegate::store::oauth::introspection::IntrospectionStore;
use scopegate::store::oauth::jwt::JwtStore;
use scopegate::store::{ChainStore, CredentialStore};
use scopegate::{CachedStore, CredentialKind, Gate};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const API: &str = "https://api.onboardinghub.test";
const API_OPAQUE: &str = "https://api.onboardinghub.test/opaque";
const OTHER_API: &str = "https://other.example";
const CONTACTS: &str = "/api/v1/contacts";

const FORBIDDEN: &str = r#"{"error":{"type":"forbidden","message":"API access is not enabled for this account. Please upgrade your plan."}}"#;
/// The example's `exp` leeway (`examples/onboardinghub/app.rs`).
const EXAMPLE_LEEWAY: Duration = Duration::from_secs(5);
const INVALID_TOKEN: &str = r#"{"error":{"type":"invalid_token","message":"The access token is invalid, expired or revoked."}}"#;
const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer error="invalid_token""#;
const UNAVAILABLE: &str = r#"{"error":{"type":"service_unavailable","message":"Authentication is temporarily unavailable. Please retry shortly."}}"#;

fn insufficient_scope(scope: &str) -> String {
    format!(
        r#"{{"error":{{"type":"insufficient_scope","message":"This action requires the '{scope}' scope. Your credential does not have this permission."}}}}"#
    )
}

/// One oidc-provider process, killed on drop.
struct AuthServer {
    issuer: String,
    other_issuer: String,
    /// A third issuer with a path (`…/realms/acme`), mounted like Keycloak's.
    realm_issuer: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AuthServer {
    /// Starts the server, or says why it cannot (and fails under CI).
    fn start() -> Option<AuthServer> {
        if let Err(why) = install() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the OAuth tests need their authorization server: {why}"
            );
            eprintln!("skipping: the OAuth tests need their authorization server: {why}");
            return None;
        }
        // A node that has not printed its URLs within 30 s is stuck (seen
        // once in a full run, with no CPU spent): start another, once.
        let (child, line) = (0..2)
            .find_map(|_| Self::spawn(Duration::from_secs(30)))
            .expect("the authorization server printed no URLs within 30 s, twice");
        let urls: Value = serde_json::from_str(&line).expect("the server prints its URLs");
        Some(AuthServer {
            issuer: urls["issuer"].as_str().expect("issuer").to_owned(),
            other_issuer: urls["other_issuer"].as_str().expect("other").to_owned(),
            realm_issuer: urls["realm_issuer"].as_str().expect("realm").to_owned(),
            child,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        })
    }

    /// Starts `node server.mjs` and reads its first line (its URLs), or kills
    /// it after `within`.
    fn spawn(within: Duration) -> Option<(std::process::Child, String)> {
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(AUTH_SERVER_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = stdout.read_line(&mut line);
            let _ = sender.send(read.map(|_| line));
            // oidc-provider logs notices to stdout: keep reading, so that its
            // writes never fail on a closed pipe.
            std::io::copy(&mut stdout, &mut std::io::sink())
        });
        match receiver.recv_timeout(within) {
            Ok(Ok(line)) if !line.is_empty() => Some((child, line)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    /// A client-credentials token of `client` for `resource`.
    async fn client_credentials(&self, client: &str, scope: &str, resource: &str) -> String {
        token_request(
            &self.http,
            &self.issuer,
            client,
            &[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", resource),
            ],
        )
        .await
    }

    /// The same from the second issuer, which signs with the same keys.
    /// A client-credentials token of `client` from the issuer with a path.
    async fn realm_token(&self, client: &str, scope: &str, resource: &str) -> String {
        token_request(
            &self.http,
            &self.realm_issuer,
            client,
            &[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", resource),
            ],
        )
        .await
    }

    async fn other_issuer_token(&self) -> String {
        token_request(
            &self.http,
            &self.other_issuer,
            "crm-sync",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "contacts:read"),
                ("resource", API),
            ],
        )
        .await
    }

    /// An authorization-code token for `user`, through oidc-provider's
    /// development login and consent pages, driven headlessly.
    async fn authorization_code(&self, user: &str, scope: &str) -> String {
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let verifier = B64.encode(Sha256::digest(format!("verifier-{user}-{scope}")));
        let challenge = B64.encode(Sha256::digest(&verifier));
        let redirect_uri = "http://127.0.0.1/callback";
        let mut url = reqwest::Url::parse(&format!("{}/auth", self.issuer)).expect("url");
        url.query_pairs_mut()
            .append_pair("client_id", "web-app")
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &format!("openid {scope}"))
            .append_pair("resource", API)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "state-1");
        let mut response = browser.get(url).send().await.expect("auth");
        let code = loop {
            if response.status().is_redirection() {
                let location = response.headers()["location"].to_str().expect("location");
                let next = reqwest::Url::parse(&self.issuer)
                    .and_then(|base| base.join(location))
                    .expect("location url");
                if next.as_str().starts_with(redirect_uri) {
                    let pairs: Vec<(String, String)> = next.query_pairs().into_owned().collect();
                    let code = pairs.iter().find(|(k, _)| k == "code");
                    break code
                        .unwrap_or_else(|| panic!("no code in {next}"))
                        .1
                        .clone();
                }
                response = browser.get(next).send().await.expect("redirect");
                continue;
            }
            let url = response.url().clone();
            let page = response.text().await.expect("page");
            let prompt = if page.contains(r#"value="login""#) {
                vec![("prompt", "login"), ("login", user), ("password", "any")]
            } else if page.contains(r#"value="consent""#) {
                vec![("prompt", "consent")]
            } else {
                panic!("unexpected page at {url}: {page}");
            };
            response = browser
                .post(url)
                .form(&prompt)
                .send()
                .await
                .expect("submit");
        };
        token_request(
            &self.http,
            &self.issuer,
            "web-app",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await
    }

    /// Revokes `token` at the server (RFC 7009), as its client.
    async fn revoke(&self, client: &str, token: &str) {
        let status = self
            .http
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("token", token)])
            .send()
            .await
            .expect("revocation")
            .status();
        assert_eq!(status, 200);
    }

    /// Puts a new signing key first in the server's JWKS.
    async fn rotate_keys(&self) {
        let response = self
            .http
            .post(format!("{}/admin/rotate", self.issuer))
            .send()
            .await
            .expect("rotate");
        assert_eq!(response.status(), 200);
    }

    /// How many times the JWKS was fetched from the server.
    async fn jwks_fetches(&self) -> u64 {
        let stats: Value = serde_json::from_str(
            &self
                .http
                .get(format!("{}/admin/stats", self.issuer))
                .send()
                .await
                .expect("stats")
                .text()
                .await
                .expect("body"),
        )
        .expect("json");
        stats["jwks_fetches"].as_u64().expect("count")
    }

    fn settings(&self) -> app::OAuth {
        let mut oauth = app::OAuth::new(&self.issuer, Some("onboardinghub-api-secret"));
        oauth.refresh_interval = Duration::from_millis(200);
        oauth.introspection_max_age = Duration::from_secs(1);
        oauth
    }

    /// The example server, accepting API keys and this server's tokens.
    async fn example(&self, oauth: &app::OAuth) -> Server {
        let app = app::App::with_oauth("admin", Some(oauth)).expect("oauth settings");
        serve(app.router().expect("router")).await
    }
}

const AUTH_SERVER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/authserver");

/// Installs oidc-provider with `npm ci` (from `package-lock.json`) unless it
/// is there already: once per test run.
fn install() -> Result<(), String> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = std::path::Path::new(AUTH_SERVER_DIR);
            if dir.join("node_modules/oidc-provider").exists() {
                return Ok(());
            }
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run npm ({e}); install Node.js"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("`npm ci` in tests/authserver failed ({status})"))
            }
        })
        .clone()
}

async fn token_request(
    http: &reqwest::Client,
    issuer: &str,
    client: &str,
    form: &[(&str, &str)],
) -> String {
    let response = http
        .post(format!("{issuer}/token"))
        .basic_auth(client, Some(format!("{client}-secret")))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status();
    let body: Value = serde_json::from_str(&response.text().await.expect("body")).expect("json");
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// The parts of a compact JWS, decoded header and claims, and the signature.
fn split(token: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    let json = |part: &str| serde_json::from_slice(&B64.decode(part).expect("b64")).expect("json");
    (json(parts[0]), json(parts[1]), parts[2].to_owned())
}

fn join(header: &Value, claims: &Value, signature: &str) -> String {
    let encode = |v: &Value| B64.encode(serde_json::to_vec(v).expect("json"));
    format!("{}.{}.{signature}", encode(header), encode(claims))
}

fn assert_invalid_token(reply: &common::Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply:?}");
    reply.assert_rejected(401, INVALID_TOKEN, Some(INVALID_TOKEN_CHALLENGE));
}

#[tokio::test]
async fn client_credentials_jwts_are_held_to_scopes_and_plans_next_to_api_keys() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let server = auth.example(&auth.settings()).await;
    let read = auth
        .client_credentials("crm-sync", "contacts:read guides:read", API)
        .await;
    assert_eq!(
        scopegate::store::TokenShape::of(&read, "ohk_"),
        scopegate::store::TokenShape::Jwt
    );

    let reply = server.get(CONTACTS, &read).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(server.get("/api/v1/guides", &read).await.status, 200);
    let reply = server
        .call(Method::POST, CONTACTS, &read, r#"{"name":"Grace"}"#)
        .await;
    reply.assert_rejected(
        403,
        &insufficient_scope("contacts:write"),
        Some(r#"Bearer error="insufficient_scope", scope="contacts:write""#),
    );
    let reply = server.get("/api/v1/organisations", &read).await;
    reply.assert_rejected(
        403,
        &insufficient_scope("organisations:read"),
        Some(r#"Bearer error="insufficient_scope", scope="organisations:read""#),
    );

    // ws_free's plan lacks api-access: 403 forbidden, whatever the scope.
    let free = auth
        .client_credentials("free-app", "contacts:read", API)
        .await;
    server
        .get(CONTACTS, &free)
        .await
        .assert_rejected(403, FORBIDDEN, None);

    // API keys still work through the same layers.
    assert_eq!(
        server.get(CONTACTS, "ohk_demo_all_scopes").await.status,
        200
    );
    server
        .get(CONTACTS, "ohk_demo_no_api_access")
        .await
        .assert_rejected(403, FORBIDDEN, None);

    // What a handler sees: an OAuth credential with the client id, the
    // workspace from the claim, the token's scopes and its expiry.
    let plans =
        std::collections::HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]);
    let jwt = JwtStore::builder(&auth.issuer, API)
        .jwks_uri(&format!("{}/jwks", auth.issuer))
        .account_claim("workspace_id")
        .entitlements(plans)
        .build()
        .expect("jwt store");
    let credential = jwt
        .resolve(&PresentedToken::new(&read))
        .await
        .expect("store")
        .expect("valid");
    let (_, claims, _) = split(&read);
    assert_eq!(credential.id(), claims["jti"].as_str().unwrap());
    assert_eq!(credential.account_id(), "ws_acme");
    assert_eq!(
        credential.kind(),
        &CredentialKind::OAuthClient {
            client_id: "crm-sync".into()
        }
    );
    assert_eq!(
        format!("{:?}", credential.scopes()),
        r#"{"contacts:read", "guides:read"}"#
    );
    assert_eq!(
        credential.entitlements().collect::<Vec<_>>(),
        ["api-access"]
    );
    // `exp` plus the default 30 s leeway, which holds end to end.
    let exp = UNIX_EPOCH + Duration::from_secs(claims["exp"].as_u64().unwrap());
    assert_eq!(credential.expires_at(), Some(exp + Duration::from_secs(30)));
}

#[tokio::test]
async fn authorization_code_tokens_act_for_the_users_workspace() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let server = auth.example(&auth.settings()).await;
    let ada = auth.authorization_code("ada", "contacts:read").await;
    let (_, claims, _) = split(&ada);
    assert_eq!(claims["sub"], "ada");
    assert_eq!(claims["client_id"], "web-app");
    assert_eq!(server.get(CONTACTS, &ada).await.status, 200);
    let reply = server.call(Method::POST, CONTACTS, &ada, "{}").await;
    assert_eq!(reply.body, insufficient_scope("contacts:write"));

    let bob = auth.authorization_code("bob", "contacts:read").await;
    server
        .get(CONTACTS, &bob)
        .await
        .assert_rejected(403, FORBIDDEN, None);
}

#[tokio::test]
async fn forged_expired_and_misdirected_jwts_are_401() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let server = auth.example(&auth.settings()).await;
    let good = auth
        .client_credentials("crm-sync", "contacts:read", API)
        .await;
    let (header, claims, signature) = split(&good);

    let mut cases: Vec<(&str, String)> = vec![
        (
            "wrong audience",
            auth.client_credentials("crm-sync", "contacts:read", OTHER_API)
                .await,
        ),
        ("wrong issuer, same keys", auth.other_issuer_token().await),
    ];
    let mut more = claims.clone();
    more["scope"] = json!("contacts:read contacts:write webhooks:manage");
    cases.push((
        "claims changed, signature kept",
        join(&header, &more, &signature),
    ));
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    cases.push((
        "tampered signature",
        format!(
            "{}{}",
            &good[..good.len() - signature.len()],
            flipped.to_owned() + &signature[1..]
        ),
    ));
    cases.push((
        "alg none",
        join(&json!({"alg": "none", "typ": "at+jwt"}), &claims, ""),
    ));
    let mut forged_kid = header.clone();
    forged_kid["kid"] = json!("forged");
    cases.push(("unknown kid", join(&forged_kid, &claims, &signature)));
    let mut typ = header.clone();
    typ["typ"] = json!("JWT");
    cases.push(("typ JWT", join(&typ, &claims, &signature)));
    // HS256 "signed" with the issuer's public key as the HMAC secret: the
    // classic key-confusion forgery.
    let jwks = auth
        .http
        .get(format!("{}/jwks", auth.issuer))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            typ: Some("at+jwt".into()),
            kid: header["kid"].as_str().map(str::to_owned),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(jwks.as_bytes()),
    )
    .unwrap();
    cases.push(("HS256 with the public key", hs256));

    for (what, token) in &cases {
        assert_invalid_token(&server.get(CONTACTS, token).await, what);
    }
    assert_eq!(server.get(CONTACTS, &good).await.status, 200);

    // Expired: a 2-second token is accepted within the example's 5 s leeway
    // past its exp (the leeway holds end to end, through the cache), and
    // refused once the leeway has passed too, although it was cached.
    let short = auth
        .client_credentials("short-lived", "contacts:read", API)
        .await;
    assert_eq!(server.get(CONTACTS, &short).await.status, 200);
    let (_, short_claims, _) = split(&short);
    let exp = UNIX_EPOCH + Duration::from_secs(short_claims["exp"].as_u64().unwrap());
    let sleep_until = |at: SystemTime| {
        tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default())
    };
    sleep_until(exp + Duration::from_millis(1500)).await;
    assert_eq!(
        server.get(CONTACTS, &short).await.status,
        200,
        "1.5 s past exp, within the leeway"
    );
    sleep_until(exp + EXAMPLE_LEEWAY + Duration::from_millis(100)).await;
    assert_invalid_token(&server.get(CONTACTS, &short).await, "expired");
}

#[tokio::test]
async fn forged_kids_cannot_cause_a_jwks_refresh_storm() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let mut oauth = auth.settings();
    oauth.refresh_interval = Duration::from_secs(30);
    let server = Arc::new(auth.example(&oauth).await);
    let good = auth
        .client_credentials("crm-sync", "contacts:read", API)
        .await;
    assert_eq!(server.get(CONTACTS, &good).await.status, 200);
    assert_eq!(auth.jwks_fetches().await, 1);
    let (header, claims, signature) = split(&good);
    let forged: Vec<String> = (0..50)
        .map(|i| {
            let mut header = header.clone();
            header["kid"] = json!(format!("forged-{i}"));
            join(&header, &claims, &signature)
        })
        .collect();
    let replies =
        futures_util::future::join_all(forged.iter().map(|t| server.get(CONTACTS, t))).await;
    for reply in &replies {
        assert_invalid_token(reply, "forged kid");
    }
    assert!(
        auth.jwks_fetches().await <= 2,
        "at most one refresh for 50 forged kids"
    );
}

#[tokio::test]
async fn jwks_rotation_keeps_tokens_working_without_a_restart() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let server = auth.example(&auth.settings()).await;
    let old = auth
        .client_credentials("crm-sync", "contacts:read", API)
        .await;
    assert_eq!(server.get(CONTACTS, &old).await.status, 200);

    auth.rotate_keys().await;
    tokio::time::sleep(Duration::from_millis(250)).await; // the refresh interval
    let new = auth
        .client_credentials("crm-sync", "contacts:read", API)
        .await;
    assert_ne!(
        split(&new).0["kid"],
        split(&old).0["kid"],
        "signed with the new key"
    );
    assert_eq!(server.get(CONTACTS, &new).await.status, 200);
    assert_eq!(server.get(CONTACTS, &old).await.status, 200);
    assert_eq!(auth.jwks_fetches().await, 2, "one refresh for the new kid");
}

/// With the example's own refresh interval: a key rotated in right after a
/// refresh is accepted once the next refresh is allowed (the refused token's
/// "not found" is cached only until then), and no later.
#[tokio::test]
async fn a_rotated_key_is_accepted_within_the_examples_refresh_interval() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let mut oauth = auth.settings();
    oauth.refresh_interval = app::OAuth::new(&auth.issuer, None).refresh_interval;
    let interval = oauth.refresh_interval;
    let server = auth.example(&oauth).await;
    let old = auth
        .client_credentials("crm-sync", "contacts:read", API)
        .await;
    assert_eq!(server.get(CONTACTS, &old).await.status, 200, "keys fetched");
    let fetched = Instant::now();

    auth.rotate_keys().await;
    let new = auth
        .client_credentials("crm-sync", "contacts:read", API)
        .await;
    let rotated = Instant::now();
    assert_invalid_token(&server.get(CONTACTS, &new).await, "within the interval");
    let accepted = loop {
        if server.get(CONTACTS, &new).await.status == 200 {
            break rotated.elapsed();
        }
        assert!(
            rotated.elapsed() < interval + Duration::from_secs(3),
            "still refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "rotation to acceptance: {accepted:?} (refresh interval {interval:?}; the keys were fetched {:?} before the rotation)",
        rotated - fetched
    );
    assert!(
        accepted <= interval + Duration::from_millis(500),
        "{accepted:?}"
    );
    assert_eq!(auth.jwks_fetches().await, 2, "one refresh for the new kid");
}

/// The example given only an issuer with a path (`…/realms/acme`): its JWKS
/// and introspection endpoint are discovered from the metadata under that
/// path, and both kinds of token work; the root issuer's tokens do not.
#[tokio::test]
async fn the_example_discovers_an_issuer_with_a_path() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let oauth = app::OAuth::new(&auth.realm_issuer, Some("onboardinghub-api-secret"));
    assert!(oauth.jwks_uri.is_none() && oauth.introspection_endpoint.is_none());
    let server = auth.example(&oauth).await;
    let jwt = auth.realm_token("crm-sync", "contacts:read", API).await;
    assert_eq!(split(&jwt).1["iss"], auth.realm_issuer.as_str());
    assert_eq!(server.get(CONTACTS, &jwt).await.status, 200);
    let reply = server.call(Method::POST, CONTACTS, &jwt, "{}").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, insufficient_scope("contacts:write"));
    let opaque = auth
        .realm_token("crm-sync", "contacts:read", API_OPAQUE)
        .await;
    assert_eq!(server.get(CONTACTS, &opaque).await.status, 200);
    // The root issuer shares nothing with the realm: its token is refused.
    let root = auth
        .client_credentials("crm-sync", "contacts:read", API)
        .await;
    assert_invalid_token(&server.get(CONTACTS, &root).await, "another issuer");
}

#[tokio::test]
async fn opaque_tokens_are_introspected_and_revocation_is_seen_within_the_window() {
    let Some(auth) = AuthServer::start() else {
        return;
    };
    let oauth = auth.settings();
    let server = auth.example(&oauth).await;
    let token = auth
        .client_credentials("crm-sync", "contacts:read", API_OPAQUE)
        .await;
    assert_eq!(
        scopegate::store::TokenShape::of(&token, "ohk_"),
        scopegate::store::TokenShape::Opaque
    );
    assert_eq!(server.get(CONTACTS, &token).await.status, 200);
    let reply = server.call(Method::POST, CONTACTS, &token, "{}").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, insufficient_scope("contacts:write"));
    let free = auth
        .client_credentials("free-app", "contacts:read", API_OPAQUE)
        .await;
    server
        .get(CONTACTS, &free)
        .await
        .assert_rejected(403, FORBIDDEN, None);
    assert_invalid_token(
        &server.get(CONTACTS, "not-a-token-the-server-issued").await,
        "unknown opaque",
    );

    auth.revoke("crm-sync", &token).await;
    let revoked_at = Instant::now();
    let refused_after = loop {
        let reply = server.get(CONTACTS, &token).await;
        if reply.status == 401 {
            assert_invalid_token(&reply, "revoked");
            break revoked_at.elapsed();
        }
        assert_eq!(reply.status, 200, "cached until the window closes");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "never refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let window = oauth.introspection_max_age;
    assert!(
        refused_after <= window + Duration::from_millis(500),
        "refused after {refused_after:?}; the window is {window:?}"
    );
    eprintln!("revoked token refused after {refused_after:?} (window {window:?})");
}

/// A loopback port that accepts connections and never answers.
async fn black_hole() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// A loopback port with nothing listening.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn an_unreachable_or_silent_authorization_server_is_503_never_a_grant() {
    let (silent, _task) = black_hole().await;
    let plans = std::collections::HashMap::<String, Vec<String>>::new();
    for addr in [closed_port(), silent] {
        let base = format!("http://{addr}");
        let jwt = JwtStore::builder(&base, API)
            .jwks_uri(&format!("{base}/jwks"))
            .timeout(Duration::from_millis(300))
            .entitlements(plans.clone())
            .build()
            .unwrap();
        let opaque = IntrospectionStore::builder(&format!("{base}/introspect"), API)
            .client_credentials("api", "secret")
            .timeout(Duration::from_millis(300))
            .entitlements(plans.clone())
            .build()
            .unwrap();
        let gate = Gate::new(CachedStore::new(ChainStore::new().jwt(jwt).opaque(opaque)));
        let router = axum::Router::new()
            .route(CONTACTS, axum::routing::get(|| async { "ok" }))
            .layer(gate.require_scope("contacts:read").unwrap());
        let server = serve(router).await;
        let header = B64.encode(br#"{"alg":"RS256","typ":"at+jwt","kid":"k1"}"#);
        let jwt_token = format!("{header}.{}.c2ln", B64.encode(br#"{"sub":"x"}"#));
        for token in [jwt_token.as_str(), "opaque-token"] {
            let reply = server.get(CONTACTS, token).await;
            reply.assert_rejected(503, UNAVAILABLE, None);
            assert_eq!(reply.header("retry-after"), Some("5"));
        }
    }
}
