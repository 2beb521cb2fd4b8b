//! Key management from the command line, for operators of the PostgreSQL
//! store (`PgCredentialStore`): what the reference document's developer
//! settings do, against the database that `DATABASE_URL` names.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo run --features postgres --example keys -- create --workspace ws_acme --name CRM --scopes contacts:read,contacts:write
//! cargo run --features postgres --example keys -- list --workspace ws_acme
//! cargo run --features postgres --example keys -- set-scopes key_3f6c0a8e5d1b47c2 --scopes contacts:read
//! cargo run --features postgres --example keys -- revoke key_3f6c0a8e5d1b47c2
//! cargo run --features postgres --example keys -- define-plan pro --entitlements api-access
//! cargo run --features postgres --example keys -- set-plan ws_acme pro
//! ```
//!
//! The token is printed once, by `create`, and never again: only its SHA-256
//! is stored. A revocation, a scope change or a plan change reaches running
//! instances through the database's notifications (their invalidation
//! listeners), within their push bound.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use scopegate::store::postgres::{ApiKeyRecord, PgCredentialStore};

#[derive(Parser)]
#[command(about = "Manage scopegate API keys in PostgreSQL (DATABASE_URL)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a key and prints its token, once.
    Create {
        /// The workspace the key acts for.
        #[arg(long)]
        workspace: String,
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// Its scopes, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Days until it expires; never if not given.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Lists a workspace's keys: id, name, scopes, created, last used, revoked.
    List {
        #[arg(long)]
        workspace: String,
    },
    /// Revokes a key.
    Revoke { id: String },
    /// Replaces a key's scopes.
    SetScopes {
        id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// Puts a workspace on a plan (creating the workspace if needed).
    SetPlan { workspace: String, plan: String },
    /// Creates a plan, or replaces its entitlements.
    DefinePlan {
        plan: String,
        /// Comma-separated, e.g. `api-access`; none if empty.
        #[arg(long, value_delimiter = ',', default_value = "")]
        entitlements: Vec<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres")?;
    let pool = sqlx::PgPool::connect(&url)
        .await
        .map_err(|e| format!("cannot connect to DATABASE_URL: {e}"))?;
    let store = PgCredentialStore::new(pool);
    store.migrate().await.map_err(|e| e.to_string())?;
    let strs = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    match command {
        Command::Create {
            workspace,
            name,
            scopes,
            expires_in_days,
        } => {
            let scopes = strs(&scopes);
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let expires = expires_in_days
                .map(|days| SystemTime::now() + std::time::Duration::from_secs(days * 86_400));
            let key = store
                .create_key(&workspace, &name, &scopes, expires)
                .await
                .map_err(|e| format!("cannot create the key: {e}"))?;
            println!("id     {}", key.record.id);
            println!("token  {}", key.token.as_str());
            eprintln!("Copy the token now: it is shown only once and is not stored.");
        }
        Command::List { workspace } => {
            let keys = store
                .list_keys(&workspace)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{:<22} {:<20} {:<40} {:<20} {:<20} revoked",
                "id", "name", "scopes", "created", "last used"
            );
            for key in &keys {
                print_key(key);
            }
        }
        Command::Revoke { id } => {
            if !store.revoke_key(&id).await.map_err(|e| e.to_string())? {
                return Err(format!("no live key {id}"));
            }
            println!("revoked {id}");
        }
        Command::SetScopes { id, scopes } => {
            let scopes = strs(&scopes);
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            if !store
                .set_scopes(&id, &scopes)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no key {id}"));
            }
            println!("{id}: {}", scopes.join(", "));
        }
        Command::SetPlan { workspace, plan } => {
            store
                .upsert_account(&workspace, &plan)
                .await
                .map_err(|e| format!("cannot put {workspace} on {plan}: {e}"))?;
            println!("{workspace}: plan {plan}");
        }
        Command::DefinePlan { plan, entitlements } => {
            let entitlements = strs(&entitlements);
            let entitlements: Vec<&str> = entitlements.iter().map(String::as_str).collect();
            store
                .set_plan(&plan, &entitlements)
                .await
                .map_err(|e| e.to_string())?;
            println!("{plan}: {}", entitlements.join(", "));
        }
    }
    Ok(())
}

fn print_key(key: &ApiKeyRecord) {
    let when = |t: Option<SystemTime>| t.map_or_else(|| "-".to_owned(), utc);
    println!(
        "{:<22} {:<20} {:<40} {:<20} {:<20} {}",
        key.id,
        key.name,
        key.scopes.join(","),
        utc(key.created_at),
        when(key.last_used_at),
        when(key.revoked_at),
    );
}

/// `2026-12-02 18:01:12` (UTC), from days since the epoch by Howard
/// Hinnant's `civil_from_days`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
