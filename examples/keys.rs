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
//! cargo run --features postgres --example keys -- set-limits pro --limit requests=100/1m,burst=20 --limit monthly=100000/month,per=account
//! cargo run --features postgres --example keys -- limits pro
//! ```
//!
//! A limit is `NAME=COUNT/PERIOD`, the period `500ms`, `10s`, `1m`, `1h`,
//! `1d` or `month` (a quota per calendar month), then `,burst=N` (a rate's
//! burst, COUNT if not given) and `,per=account` (one budget for the
//! workspace; each key has its own otherwise).
//!
//! The token is printed once, by `create`, and never again: only its SHA-256
//! is stored. A revocation, a scope change or a plan change (its
//! entitlements, its limits) reaches running
//! instances through the database's notifications (their invalidation
//! listeners), within their push bound.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use scopegate::limit::{Limit, LimitKind, Per};
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
    /// Replaces a plan's limits (none if no `--limit`).
    SetLimits {
        plan: String,
        /// `NAME=COUNT/PERIOD[,burst=N][,per=account]`; repeat for more.
        #[arg(long = "limit", value_parser = parse_limit)]
        limits: Vec<Limit>,
    },
    /// Prints a plan's limits, as `RateLimit-Policy` names them.
    Limits { plan: String },
}

/// `NAME=COUNT/PERIOD[,burst=N][,per=account]`.
fn parse_limit(spec: &str) -> Result<Limit, String> {
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let (name, rate) = head
        .split_once('=')
        .ok_or_else(|| format!("{head:?}: want NAME=COUNT/PERIOD"))?;
    let (count, period) = rate
        .split_once('/')
        .ok_or_else(|| format!("{rate:?}: want COUNT/PERIOD"))?;
    let count: u64 = count
        .parse()
        .map_err(|_| format!("{count:?} is not a count"))?;
    let mut limit = if period == "month" {
        Limit::monthly(name, count)
    } else {
        let count = u32::try_from(count).map_err(|_| format!("{count} is too large for a rate"))?;
        Limit::rate(name, count, parse_period(period)?)
    }
    .map_err(|e| e.to_string())?;
    for option in parts {
        limit = match option.split_once('=') {
            Some(("burst", n)) => {
                let n = n.parse().map_err(|_| format!("{n:?} is not a burst"))?;
                limit.with_burst(n).map_err(|e| e.to_string())?
            }
            Some(("per", "account")) => limit.per_account(),
            Some(("per", "key")) => limit.counted_per(Per::Key),
            _ => return Err(format!("{option:?}: want burst=N or per=account|key")),
        };
    }
    Ok(limit)
}

/// `500ms`, `10s`, `1m`, `1h`, `1d`.
fn parse_period(period: &str) -> Result<Duration, String> {
    let split = period
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(period.len());
    let (n, unit) = period.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{period:?}: want a number and ms, s, m, h or d"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{period:?}: the unit is ms, s, m, h, d, or month")),
    };
    Ok(Duration::from_millis(n.saturating_mul(unit_ms)))
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
        Command::SetLimits { plan, limits } => {
            store
                .set_plan_limits(&plan, &limits)
                .await
                .map_err(|e| e.to_string())?;
            // What is stored now, as `limits` prints it (by name).
            let stored = store.plan_limits(&plan).await.map_err(|e| e.to_string())?;
            print_limits(&plan, &stored);
        }
        Command::Limits { plan } => {
            let limits = store.plan_limits(&plan).await.map_err(|e| e.to_string())?;
            print_limits(&plan, &limits);
        }
    }
    Ok(())
}

fn print_limits(plan: &str, limits: &[Limit]) {
    let items: Vec<String> = limits
        .iter()
        .map(|l| {
            let per = match l.per() {
                Per::Key => "per key",
                Per::Account => "per account",
            };
            let burst = match l.kind() {
                LimitKind::Rate { count, burst, .. } if burst != count => format!(" burst {burst}"),
                _ => String::new(),
            };
            format!("{}{burst} {per}", l.policy_item())
        })
        .collect();
    if items.is_empty() {
        println!("{plan}: no limits");
    } else {
        println!("{plan}: {}", items.join("; "));
    }
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
