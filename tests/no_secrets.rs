//! The example server at `RUST_LOG=trace`, through a conformance pass (every
//! kind of refusal, a key created, used and revoked, OAuth tokens good and
//! forged): it logs its decisions, and not one token, full token hash or
//! 16-hex-digit hash prefix appears in what it writes to stdout or stderr.
#![cfg(all(feature = "jwt", feature = "introspection"))]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::Example;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ADMIN: &str = "admin-token-for-the-no-secrets-test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An RFC 9068 issuer on loopback: metadata and keys.
async fn issuer(key: &EncodingKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(key, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!("k1");
    let jwks = json!({ "keys": [jwk] }).to_string();
    let metadata = json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") }).to_string();
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { metadata }),
        )
        .route("/jwks", axum::routing::get(move || async move { jwks }));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// What must never be written: each secret, its SHA-256 in hex, and the
/// first 16 hex digits of that (logs may show 8).
fn forbidden(secrets: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for secret in secrets {
        let hash: String = Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push((secret.clone(), format!("the token {secret:.12}…")));
        out.push((
            hash[..16].to_owned(),
            format!("a 16-hex hash prefix of {secret:.12}…"),
        ));
        out.push((hash.clone(), format!("the hash of {secret:.12}…")));
        // Each part of a JWT is secret too: the signature above all.
        for part in secret.split('.').filter(|p| p.len() >= 16) {
            out.push((part.to_owned(), format!("a part of {secret:.12}…")));
        }
    }
    out
}

#[tokio::test]
async fn the_example_logs_decisions_and_never_a_secret() {
    let key =
        EncodingKey::from_rsa_pem(include_bytes!("../benches/fixtures/rs256-private.pem")).unwrap();
    let issuer = issuer(&key).await;
    let example = Example::start(
        ADMIN,
        &[
            ("OAUTH_ISSUER", &issuer),
            ("OAUTH_AUDIENCE", "https://api.test"),
        ],
    );
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", example.base);
    let get = |auth: Option<String>| {
        let mut request = http.get(url("/api/v1/contacts"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let header = Header {
        typ: Some("at+jwt".into()),
        kid: Some("k1".into()),
        ..Header::new(Algorithm::RS256)
    };
    let claims = json!({
        "iss": issuer, "aud": "https://api.test", "sub": "u1", "client_id": "partner", "jti": "j1",
        "iat": now(), "exp": now() + 600, "scope": "contacts:read", "workspace_id": "ws_acme",
    });
    let jwt = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let forged = format!("{}AAAA", &jwt[..jwt.len() - 4]);

    let mut secrets: Vec<String> = [
        "ohk_demo_all_scopes",
        "ohk_demo_contacts_read",
        "ohk_demo_no_api_access",
        "ohk_0123456789abcdef0123456789abcdef01234567",
        "not-a-key-at-all-but-secret",
        "dXNlcjpzZWNyZXQtcGFzc3dvcmQ",
        ADMIN,
    ]
    .map(str::to_owned)
    .to_vec();
    secrets.extend([jwt.clone(), forged.clone()]);
    let cases: [(Option<String>, u16); 11] = [
        (Some("Bearer ohk_demo_all_scopes".into()), 200),
        (Some("Bearer ohk_demo_no_api_access".into()), 403),
        (
            Some("Bearer ohk_0123456789abcdef0123456789abcdef01234567".into()),
            401,
        ),
        (Some("Bearer not-a-key-at-all-but-secret".into()), 401),
        (Some("Bearer not-a-key-at-all-but-secret".into()), 401),
        (Some("Bearer not-a-key-at-all-but-secret".into()), 401), // the negative cache
        (
            Some("Bearer ohk_demo_contacts_read ohk_demo_all_scopes".into()),
            400,
        ),
        (Some("Basic dXNlcjpzZWNyZXQtcGFzc3dvcmQ".into()), 401),
        (None, 401),
        (Some(format!("Bearer {jwt}")), 200),
        (Some(format!("Bearer {forged}")), 401),
    ];
    for (auth, want) in cases {
        assert_eq!(get(auth.clone()).await, want, "{auth:?}");
    }
    // A missing scope, on a write.
    let reply = http
        .post(url("/api/v1/contacts"))
        .header("authorization", "Bearer ohk_demo_contacts_read")
        .header("content-type", "application/json")
        .body(r#"{"name":"Ada","email":"ada@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 403);

    // A key created, used, revoked.
    let created = http
        .post(url("/developer/keys"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(r#"{"name":"ci","scopes":["contacts:read"]}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let created: Value = serde_json::from_str(&created).unwrap();
    let token = created["token"].as_str().expect("a token").to_owned();
    let id = created["id"].as_str().expect("an id").to_owned();
    secrets.push(token.clone());
    assert_eq!(get(Some(format!("Bearer {token}"))).await, 200);
    let revoked = http
        .delete(url(&format!("/developer/keys/{id}")))
        .header("authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(get(Some(format!("Bearer {token}"))).await, 401);

    let output = example.stop();
    let refused = output
        .lines()
        .filter(|l| l.contains("request refused"))
        .count();
    assert!(refused >= 9, "the example logs its decisions:\n{output}");
    assert!(
        output.contains("scopegate::store"),
        "and its store calls:\n{output}"
    );
    // What logs may show of a token: its hash's first 4 bytes. Seeing them
    // proves the store calls were logged, and that the checks below look
    // at the right output.
    let prefix = |token: &str| {
        let hash = Sha256::digest(token.as_bytes());
        hash[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(
        output.contains(&prefix("not-a-key-at-all-but-secret")),
        "{output}"
    );
    for (needle, what) in forbidden(&secrets) {
        assert!(
            !output.contains(&needle),
            "{what} appears in the output:\n{output}"
        );
    }
    println!(
        "{} lines of output, {refused} refusals logged, no secret",
        output.lines().count()
    );
}
