//! The OnboardingHub API example server.
//!
//! ```text
//! cargo run --example onboardinghub
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example onboardinghub --features postgres
//! ADDR=127.0.0.1:3107 ADMIN_TOKEN=s3cret cargo run --example onboardinghub
//! curl -H "Authorization: Bearer ohk_demo_all_scopes" http://127.0.0.1:3000/api/v1/contacts
//! ```
//!
//! OAuth 2.0 access tokens next to API keys (features `jwt` and
//! `introspection`): set `OAUTH_ISSUER` to an oidc-provider-style issuer, and
//! `OAUTH_CLIENT_SECRET` to the secret of its client `onboardinghub-api`
//! (`OAUTH_CLIENT_ID` overrides the id), e.g. the test server in
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
    let mut router = app.router()?;
    // Benchmark tooling: benches/e2e.sh's baseline. Off unless asked for.
    if std::env::var_os("BENCH_UNPROTECTED").is_some_and(|v| v == "1") {
        eprintln!(
            "BENCH_UNPROTECTED=1: serving /unprotected/api/v1/contacts without authentication"
        );
        router = router.merge(app::bench_twins());
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!(
        "onboardinghub listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The app with its keys in memory.
fn in_memory(admin_token: &str, oauth: Option<&app::OAuth>) -> Result<app::App, app::OAuthError> {
    match oauth {
        Some(_) => app::App::with_oauth(admin_token, oauth),
        None => Ok(app::App::new(admin_token)),
    }
}

/// OAuth settings from `OAUTH_ISSUER`, `OAUTH_CLIENT_SECRET` and
/// `OAUTH_CLIENT_ID`, if `OAUTH_ISSUER` is set.
#[cfg(all(feature = "jwt", feature = "introspection"))]
fn oauth_settings() -> Result<Option<app::OAuth>, Box<dyn Error>> {
    let Ok(issuer) = std::env::var("OAUTH_ISSUER") else {
        return Ok(None);
    };
    let secret = std::env::var("OAUTH_CLIENT_SECRET")
        .map_err(|_| "OAUTH_ISSUER is set: OAUTH_CLIENT_SECRET must be too")?;
    let mut oauth = app::OAuth::new(&issuer, &secret);
    if let Ok(id) = std::env::var("OAUTH_CLIENT_ID") {
        oauth.client_id = id;
    }
    println!("accepting OAuth tokens from {}", oauth.issuer);
    Ok(Some(oauth))
}

#[cfg(not(all(feature = "jwt", feature = "introspection")))]
fn oauth_settings() -> Result<Option<app::OAuth>, Box<dyn Error>> {
    if std::env::var_os("OAUTH_ISSUER").is_some() {
        return Err("OAUTH_ISSUER is set, but this build lacks the jwt and introspection features (cargo run --example onboardinghub --features jwt,introspection)".into());
    }
    Ok(None)
}
