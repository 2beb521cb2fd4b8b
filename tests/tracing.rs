//! The `tracing` events: one per rejection, with the reason, credential,
//! requirement and route, plus one per store call; never a token and never a
//! token hash in full.
#![cfg(feature = "tracing")]

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use scopegate::credential::{PresentedToken, TokenHash};
use scopegate::store::{CredentialStore, StoreError};
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
use tower::{service_fn, ServiceBuilder, ServiceExt};

const READER: &str = "ohk_tracing_secret_reader_0123456789";
const FREE: &str = "ohk_tracing_secret_free_0123456789ab";
const UNKNOWN: &str = "ohk_tracing_secret_unknown_01234567";
const BROKEN: &str = "ohk_tracing_secret_broken_012345678";

/// Everything the subscriber writes, kept for inspection.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// A subscriber for this thread that writes every event, TRACE and up,
    /// into a new capture.
    fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    fn output(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Fails for one token, answers from `keys` for the others.
struct Flaky(MemoryStore);

#[async_trait]
impl CredentialStore for Flaky {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        if token.secret() == BROKEN {
            return Err(StoreError::new("connection reset"));
        }
        self.0.resolve(token).await
    }
}

async fn status(gate: &Gate, path: &str, authorization: Option<&str>) -> StatusCode {
    let app = ServiceBuilder::new()
        .layer(gate.api_access())
        .layer(gate.require_scope("contacts:write").unwrap())
        .service(service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
    let mut request = Request::post(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    app.oneshot(request.body(Full::default()).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn rejections_are_traced_without_secrets() {
    let (capture, _guard) = Capture::install();

    let keys = MemoryStore::new();
    keys.insert_token(
        READER,
        Credential::new("key_reader", "ws_acme", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap())
            .with_entitlements(["api-access"]),
    );
    keys.insert_token(
        FREE,
        Credential::new("key_free", "ws_free", CredentialKind::ApiKey)
            .with_scopes(ScopeSet::parse(["contacts:write"]).unwrap()),
    );
    let gate = Gate::new(CachedStore::new(Flaky(keys)));

    let cases = [
        (Some(format!("Bearer {READER}")), StatusCode::FORBIDDEN),
        (Some(format!("Bearer {READER}")), StatusCode::FORBIDDEN), // a cache hit this time
        (Some(format!("Bearer {FREE}")), StatusCode::FORBIDDEN),
        (Some(format!("Bearer {UNKNOWN}")), StatusCode::UNAUTHORIZED),
        (
            Some(format!("Bearer {BROKEN}")),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        // Another scheme is no credential (RFC 6750 §3.1); a broken Bearer
        // header is malformed. Neither's token may be traced.
        (Some(format!("Token {READER}")), StatusCode::UNAUTHORIZED),
        (Some(format!("Bearer, {READER}")), StatusCode::BAD_REQUEST),
        (None, StatusCode::UNAUTHORIZED),
    ];
    for (authorization, want) in &cases {
        assert_eq!(
            status(&gate, "/api/v1/contacts", authorization.as_deref()).await,
            *want
        );
    }

    let output = capture.output();
    let lines: Vec<&str> = output.lines().collect();
    let refused: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert_eq!(
        refused.len(),
        cases.len(),
        "one event per rejection:\n{output}"
    );

    let scope = r#"rejection="insufficient_scope" reason=missing scope contacts:write credential_id="key_reader" account_id="ws_acme" required="contacts:write" method=POST path="/api/v1/contacts""#;
    assert_eq!(
        refused.iter().filter(|l| l.contains(scope)).count(),
        2,
        "{output}"
    );
    assert!(refused[0].contains(" INFO "), "{}", refused[0]);
    assert!(refused.iter().any(|l| l.contains(r#"rejection="forbidden" reason=missing entitlement api-access credential_id="key_free" account_id="ws_free" required="api-access""#)));
    assert!(refused
        .iter()
        .any(|l| l.contains(" DEBUG ") && l.contains(r#"rejection="invalid_token""#)));
    assert!(refused
        .iter()
        .any(|l| l.contains(" WARN ") && l.contains(r#"rejection="service_unavailable""#)));
    assert!(refused
        .iter()
        .any(|l| l.contains(r#"rejection="invalid_request""#)));
    assert!(refused
        .iter()
        .any(|l| l.contains(r#"rejection="unauthorized""#)));

    // Store calls: latency and outcome, keyed by a hash prefix only.
    let store: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("scopegate::store"))
        .collect();
    assert_eq!(store.len(), 4, "reader, free, unknown, broken: {output}");
    assert!(store
        .iter()
        .all(|l| l.contains("latency_us=") && l.contains("hash=TokenHash(")));
    assert!(store
        .iter()
        .any(|l| l.contains(r#"outcome="error""#) && l.contains("connection reset")));

    for secret in [READER, FREE, UNKNOWN, BROKEN] {
        assert!(!output.contains(secret), "token leaked: {secret}");
        let hex = TokenHash::of(secret).to_hex();
        assert!(!output.contains(&hex), "full hash leaked for {secret}");
        assert!(
            !output.contains(&hex[..16]),
            "long hash prefix leaked for {secret}"
        );
    }
}

/// JWTs: refusals say why at DEBUG, and no part of any token is written.
#[cfg(feature = "jwt")]
#[tokio::test]
async fn jwt_refusals_are_traced_without_any_part_of_the_token() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use scopegate::store::oauth::jwt::JwtStore;
    use scopegate::store::ChainStore;

    let (capture, _guard) = Capture::install();

    let key =
        EncodingKey::from_rsa_pem(include_bytes!("../benches/fixtures/rs256-private.pem")).unwrap();
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap(),
    )
    .unwrap();
    jwk["kid"] = "k1".into();
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    let plans =
        std::collections::HashMap::from([("ws_acme".to_owned(), vec!["api-access".to_owned()])]);
    let jwt = JwtStore::builder("https://auth.test", "https://api.test")
        .jwks_json(&jwks)
        .account_claim("workspace_id")
        .entitlements(plans)
        .build()
        .unwrap();
    let gate = Gate::new(CachedStore::new(ChainStore::new().jwt(jwt)));
    ScopeSet::parse(["contacts:write"]).unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign_for = |kid: &str, aud: &str, workspace: serde_json::Value| {
        let header = Header {
            typ: Some("at+jwt".into()),
            kid: Some(kid.into()),
            ..Header::new(Algorithm::RS256)
        };
        let claims = serde_json::json!({
            "iss": "https://auth.test", "aud": aud, "sub": "u", "client_id": "app",
            "jti": "j", "iat": now, "exp": now + 600, "scope": "contacts:write",
            "workspace_id": workspace,
        });
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let sign = |kid: &str, aud: &str| sign_for(kid, aud, "ws_acme".into());
    let good = sign("k1", "https://api.test");
    let numeric_workspace = sign_for("k1", "https://api.test", 7.into());
    let wrong_audience = sign("k1", "https://other.test");
    let unknown_kid = sign("k2", "https://api.test");
    for (token, want) in [
        (&good, StatusCode::OK),
        (&wrong_audience, StatusCode::UNAUTHORIZED),
        (&unknown_kid, StatusCode::UNAUTHORIZED),
        (&numeric_workspace, StatusCode::UNAUTHORIZED),
    ] {
        let authorization = format!("Bearer {token}");
        assert_eq!(
            status(&gate, "/api/v1/contacts", Some(&authorization)).await,
            want
        );
    }

    let output = capture.output();
    assert!(
        output.contains("JWT refused") && output.contains("InvalidAudience"),
        "{output}"
    );
    assert!(output.contains(r#"reason="no key for kid""#), "{output}");
    // A claim that cannot be read is named.
    assert!(
        output.contains(r#"claim="workspace_id""#) && output.contains("not a non-empty string"),
        "{output}"
    );
    for token in [&good, &wrong_audience, &unknown_kid, &numeric_workspace] {
        for part in token.split('.') {
            assert!(!output.contains(part), "a part of a token leaked: {part}");
        }
    }
}
