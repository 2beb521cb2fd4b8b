//! The OnboardingHub API example server.
//!
//! ```text
//! cargo run --example onboardinghub
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example onboardinghub --features postgres
//! ADDR=127.0.0.1:3107 ADMIN_TOKEN=s3cret cargo run --example onboardinghub
//! cargo run --example onboardinghub --features metrics   # and GET /metrics
//! cargo run --example onboardinghub --features openapi   # and GET /openapi.json
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example onboardinghub --features redis   # limits shared by instances
//! curl -H "Authorization: Bearer ohk_demo_all_scopes" http://127.0.0.1:3000/api/v1/contacts
//! ```
//!
//! OAuth 2.0 access tokens next to API keys (features `jwt` and
//! `introspection`): set `OAUTH_ISSUER` to the issuer's URL; its keys and
//! introspection endpoint are discovered from its metadata. Optional:
//! `OAUTH_PROVIDER` (`keycloak`, `auth0`, `entra`, `okta`, `cognito`: the
//! preset for its tokens' shape; README has a section on each),
//! `OAUTH_AUDIENCE` (default `https://api.onboardinghub.test`; for Cognito,
//! the app client id), `OAUTH_CLIENT_SECRET` (and `OAUTH_CLIENT_ID`, default
//! `onboardinghub-api`) to introspect opaque tokens, `OAUTH_SCOPE_CLAIMS`
//! (comma-separated sources: `scope`, `scp`, `permissions`, `roles`,
//! `realm_access`, `resource_access:<client>`, or a JSON pointer; default
//! the preset's), `OAUTH_SCOPE_PREFIX` (Cognito's resource server
//! identifier and a `/`), `OAUTH_ACCOUNT_CLAIM` (a claim name or a JSON
//! pointer; default the preset's, or `workspace_id` without one), and
//! `OAUTH_ACCEPT_TYP_JWT=1`. For example, against the test server in
//! `tests/authserver`:
//!
//! ```text
//! OAUTH_ISSUER=http://127.0.0.1:4000 OAUTH_CLIENT_SECRET=onboardinghub-api-secret \
//!   cargo run --example onboardinghub --features jwt,introspection
//! ```

mod app;
#[path = "../demo/mod.rs"]
mod demo;

use std::error::Error;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    demo::init_tracing();
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let admin_token =
        std::env::var("ADMIN_TOKEN").unwrap_or_else(|_| "demo-admin-token".to_owned());

    let oauth = oauth_settings()?;
    let app = match std::env::var("DATABASE_URL") {
        #[cfg(feature = "postgres")]
        Ok(url) => {
            let pool = sqlx::PgPool::connect(&url)
                .await
                .map_err(|e| format!("cannot connect to DATABASE_URL: {e}"))?;
            println!("keys in PostgreSQL (migrated and seeded)");
            app::App::with_postgres(&admin_token, pool, oauth.as_ref()).await?
        }
        #[cfg(not(feature = "postgres"))]
        Ok(_) => {
            eprintln!("DATABASE_URL is set, but this build lacks the postgres feature: keys stay in memory (cargo run --example onboardinghub --features postgres)");
            in_memory(&admin_token, oauth.as_ref())?
        }
        Err(_) => in_memory(&admin_token, oauth.as_ref())?,
    };
    let app = limits_mode(app)?;
    let gate = app.gate()?;
    let mut router = app.router_with(&gate)?;
    // Benchmark tooling: benches/e2e.sh's baseline. Off unless asked for.
    if std::env::var_os("BENCH_UNPROTECTED").is_some_and(|v| v == "1") {
        eprintln!(
            "BENCH_UNPROTECTED=1: serving /unprotected/api/v1/contacts without authentication"
        );
        router = router.merge(app::bench_twins());
    }
    #[cfg(feature = "openapi")]
    println!("OpenAPI 3.1 document at /openapi.json");
    #[cfg(feature = "metrics")]
    {
        router = router.merge(app::metrics_route()?);
        println!("metrics at /metrics (Prometheus text format)");
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    println!("onboardinghub listening on http://{local}");
    println!("developer settings at http://{local}/developer (the admin token signs in)");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Cluster mode: report what was counted since the last round before
    // the process (and the runtime the sync task runs on) goes away.
    #[cfg(feature = "redis")]
    if gate.cluster_status().is_some() && !gate.flush_limits().await {
        eprintln!("Redis did not take the last round of limits: up to one round is lost");
    }
    Ok(())
}

/// Cluster mode with `REDIS_URL` (and the `redis` feature), otherwise local
/// mode; says which.
fn limits_mode(app: app::App) -> Result<app::App, Box<dyn Error>> {
    const TINY: &str = "ohk_demo_tiny_limits gets 5 requests a minute";
    match std::env::var("REDIS_URL") {
        #[cfg(feature = "redis")]
        Ok(url) => {
            let redis = scopegate::cluster::RedisLimits::new(&url)
                .map_err(|e| format!("REDIS_URL: {e}"))?;
            // Not the URL: it may carry a password.
            println!("rate limits: cluster mode (shared over Redis at REDIS_URL by every instance); {TINY} in all");
            Ok(app.with_cluster(redis))
        }
        #[cfg(not(feature = "redis"))]
        Ok(_) => {
            eprintln!("REDIS_URL is set, but this build lacks the redis feature: limits are counted in this process (cargo run --example onboardinghub --features redis)");
            println!("rate limits: local mode (counted in this process); {TINY}");
            Ok(app)
        }
        Err(_) => {
            println!("rate limits: local mode (counted in this process); {TINY}");
            Ok(app)
        }
    }
}

/// The app with its keys in memory.
fn in_memory(admin_token: &str, oauth: Option<&app::OAuth>) -> Result<app::App, app::OAuthError> {
    match oauth {
        Some(_) => app::App::with_oauth(admin_token, oauth),
        None => Ok(app::App::new(admin_token)),
    }
}

/// OAuth settings from the `OAUTH_*` variables, if `OAUTH_ISSUER` is set.
#[cfg(all(feature = "jwt", feature = "introspection"))]
fn oauth_settings() -> Result<Option<app::OAuth>, Box<dyn Error>> {
    use scopegate::store::oauth::{provider::Provider, ScopeClaim};
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(issuer) = var("OAUTH_ISSUER") else {
        return Ok(None);
    };
    let secret = var("OAUTH_CLIENT_SECRET");
    let mut oauth = match var("OAUTH_PROVIDER") {
        Some(name) => app::OAuth::for_provider(
            Provider::named(&name, &issuer).map_err(|e| format!("OAUTH_PROVIDER: {e}"))?,
            secret.as_deref(),
        ),
        None => app::OAuth::new(&issuer, secret.as_deref()),
    };
    if let Some(id) = var("OAUTH_CLIENT_ID") {
        oauth.client_id = id;
    }
    if let Some(audience) = var("OAUTH_AUDIENCE") {
        oauth.audience = audience;
    }
    if let Some(claim) = var("OAUTH_ACCOUNT_CLAIM") {
        oauth.account_claim = claim;
    }
    if let Some(sources) = var("OAUTH_SCOPE_CLAIMS") {
        oauth.scope_claims = sources
            .split(',')
            .map(|source| match source.trim() {
                "scope" => Ok(ScopeClaim::Scope),
                "scp" => Ok(ScopeClaim::Scp),
                "permissions" => Ok(ScopeClaim::Permissions),
                "roles" => Ok(ScopeClaim::Roles),
                "realm_access" => Ok(ScopeClaim::KeycloakRealmRoles),
                pointer if pointer.starts_with('/') => Ok(ScopeClaim::Pointer(pointer.to_owned())),
                other => match other.strip_prefix("resource_access:") {
                    Some(client) if !client.is_empty() => {
                        Ok(ScopeClaim::KeycloakClientRoles(client.to_owned()))
                    }
                    _ => Err(format!("OAUTH_SCOPE_CLAIMS: unknown source {other:?} (scope, scp, permissions, roles, realm_access, resource_access:<client>, or a JSON pointer)")),
                },
            })
            .collect::<Result<_, _>>()?;
    }
    oauth.scope_prefix = var("OAUTH_SCOPE_PREFIX");
    match var("OAUTH_ACCEPT_TYP_JWT").as_deref() {
        None | Some("0") => {}
        Some("1") => oauth.accept_typ_jwt = true,
        Some(other) => return Err(format!("OAUTH_ACCEPT_TYP_JWT is 0 or 1, not {other:?}").into()),
    }
    println!(
        "accepting OAuth tokens from {} ({}, discovered){}",
        oauth.provider.issuer(),
        oauth.provider.name(),
        if oauth.client_secret.is_some() {
            ", opaque ones by introspection"
        } else {
            ""
        }
    );
    Ok(Some(oauth))
}

#[cfg(not(all(feature = "jwt", feature = "introspection")))]
fn oauth_settings() -> Result<Option<app::OAuth>, Box<dyn Error>> {
    if std::env::var_os("OAUTH_ISSUER").is_some() {
        return Err("OAUTH_ISSUER is set, but this build lacks the jwt and introspection features (cargo run --example onboardinghub --features jwt,introspection)".into());
    }
    Ok(None)
}
