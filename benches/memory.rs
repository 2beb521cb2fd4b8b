//! Resident memory per cache entry (issue #15, targets 2 and 5): bytes per
//! cached credential at 100,000 and 1,000,000, next to moka's own cost per
//! entry for a unit value, and bytes per distinct unknown token under a
//! flood, whose total the negative cache's cap (10,000 entries by default)
//! bounds.
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Each figure is measured in a fresh process (this binary runs itself), as
//! the growth of its resident set (`/proc/self/statm`) over filling one
//! cache, divided by the entries: what the allocator really holds, not what
//! `size_of` says.

#[path = "../examples/demo/mod.rs"]
mod demo;

use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use demo::SCOPES;
use scopegate::credential::{PresentedToken, TokenHash};
use scopegate::scope::ScopeSet;
use scopegate::store::{CredentialStore, StoreError};
use scopegate::{CachedStore, Credential, CredentialKind};

/// A plan of four entitlements, as real plans carry several.
const PLAN: [&str; 4] = ["api-access", "audit-log", "sso", "webhooks"];

/// Makes a credential for any `ohk_mem_…` token and holds none itself, so
/// what the process grows by is the cache's.
struct Generated;

#[async_trait]
impl CredentialStore for Generated {
    async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        let Some(i) = token.secret().strip_prefix("ohk_mem_") else {
            return Ok(None);
        };
        let i: u64 = i.trim_start_matches('0').parse().unwrap_or(0);
        let credential = Credential::new(
            format!("key_{i:08}"),
            format!("ws_{:06}", i % 1000),
            CredentialKind::ApiKey,
        )
        .with_scopes(ScopeSet::parse(SCOPES).expect("scopes"))
        .with_entitlements(PLAN);
        Ok(Some(credential))
    }
}

fn token(prefix: &str, i: u64) -> PresentedToken {
    PresentedToken::new(&format!("{prefix}{i:032}"))
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// One measurement, in this process: the bytes per entry it grew by.
fn measure(what: &str, n: u64) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match what {
            "moka_unit" => {
                let cache = moka::future::Cache::<TokenHash, ()>::new(n + 1);
                let before = resident_bytes();
                for i in 0..n {
                    cache.insert(*token("ohk_mem_", i).hash(), ()).await;
                }
                cache.run_pending_tasks().await;
                assert_eq!(cache.entry_count(), n);
                (resident_bytes() - before) as f64 / n as f64
            }
            "credentials" => {
                let cache = CachedStore::builder(Generated).max_capacity(n + 1).build();
                let before = resident_bytes();
                for i in 0..n {
                    let found = cache.resolve(&token("ohk_mem_", i)).await.expect("store");
                    assert!(found.is_some());
                }
                cache.run_pending_tasks().await;
                assert_eq!(cache.entry_count(), n);
                (resident_bytes() - before) as f64 / n as f64
            }
            "credential_alone" => {
                // The credentials themselves, as the cache holds them.
                let mut held = Vec::with_capacity(n as usize);
                let before = resident_bytes();
                for i in 0..n {
                    let c = Generated.resolve(&token("ohk_mem_", i)).await;
                    held.push(Arc::new(c.expect("store").expect("credential")));
                }
                let grown = resident_bytes() - before;
                std::hint::black_box(&held);
                grown as f64 / n as f64
            }
            "unknown" | "unknown_twice" => {
                // Each sent once (a flood of made-up tokens), or twice (the
                // second "not found" is cached).
                let times = if what == "unknown" { 1 } else { 2 };
                let cache = CachedStore::new(Generated);
                let before = resident_bytes();
                for i in 0..n {
                    for _ in 0..times {
                        let found = cache.resolve(&token("ohk_nope_", i)).await.expect("store");
                        assert!(found.is_none());
                    }
                }
                cache.run_pending_tasks().await;
                (resident_bytes() - before) as f64 / n as f64
            }
            other => panic!("no measurement {other}"),
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, what, n] = &args[..] {
        if flag == "--measure" {
            println!("{}", measure(what, n.parse().expect("n")));
            return;
        }
    }
    let run = |what: &str, n: u64| -> f64 {
        let out = Command::new(std::env::current_exe().expect("exe"))
            .args(["--measure", what, &n.to_string()])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("bytes")
    };
    println!("| entries | moka, unit value | CachedStore, per credential | the credential alone (`Arc`) |");
    println!("|---:|---:|---:|---:|");
    for n in [100_000u64, 1_000_000] {
        println!(
            "| {n} | {:.0} B | {:.0} B | {:.0} B |",
            run("moka_unit", n),
            run("credentials", n),
            run("credential_alone", n)
        );
    }
    println!();
    println!("| distinct unknown tokens | each sent once: per token | total | each sent twice: per token | total |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [10_000u64, 100_000, 1_000_000] {
        let (once, twice) = (run("unknown", n), run("unknown_twice", n));
        println!(
            "| {n} | {once:.0} B | {:.1} MB | {twice:.0} B | {:.1} MB |",
            once * n as f64 / 1e6,
            twice * n as f64 / 1e6
        );
    }
}
