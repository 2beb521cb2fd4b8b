//! The OnboardingHub API example server.
//!
//! ```text
//! cargo run --example onboardinghub
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example onboardinghub --features postgres
//! ADDR=127.0.0.1:3107 ADMIN_TOKEN=s3cret cargo run --example onboardinghub
//! curl -H "Authorization: Bearer ohk_demo_all_scopes" http://127.0.0.1:3000/api/v1/contacts
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

    let app = match std::env::var("DATABASE_URL") {
        #[cfg(feature = "postgres")]
        Ok(url) => {
            let pool = sqlx::PgPool::connect(&url)
                .await
                .map_err(|e| format!("cannot connect to DATABASE_URL: {e}"))?;
            println!("keys in PostgreSQL (migrated and seeded)");
            app::App::with_postgres(&admin_token, pool).await?
        }
        #[cfg(not(feature = "postgres"))]
        Ok(_) => {
            eprintln!("DATABASE_URL is set, but this build lacks the postgres feature: keys stay in memory (cargo run --example onboardinghub --features postgres)");
            app::App::new(&admin_token)
        }
        Err(_) => app::App::new(&admin_token),
    };
    // BENCH_UNPROTECTED=1 adds an unprotected twin of GET /api/v1/contacts
    // for benches/e2e.sh's baseline. Off unless asked for.
    let router = if std::env::var_os("BENCH_UNPROTECTED").is_some_and(|v| v == "1") {
        eprintln!(
            "BENCH_UNPROTECTED=1: serving /unprotected/api/v1/contacts without authentication"
        );
        app.router_with_unprotected_twin()?
    } else {
        app.router()?
    };
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
