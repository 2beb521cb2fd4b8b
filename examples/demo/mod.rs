//! The demo credentials every example accepts (listed in README.md).
//!
//! Shared by the examples and their tests: `mod demo;` with a `#[path]`.

#![allow(dead_code)]

use std::time::Duration;

use scopegate::limit::Limit;
use scopegate::{Credential, CredentialKind, MemoryStore, ScopeSet};

/// The reference's scope table: each scope and what it grants.
pub const SCOPE_TABLE: [(&str, &str); 8] = [
    ("contacts:read", "List and view contacts"),
    ("contacts:write", "Create, update, and delete contacts"),
    ("organisations:read", "List and view organisations"),
    (
        "organisations:write",
        "Create, update, and delete organisations",
    ),
    ("enrollments:read", "List and view enrollments"),
    (
        "enrollments:write",
        "Create, update, and delete enrollments",
    ),
    ("guides:read", "List and view published guides"),
    ("webhooks:manage", "Full CRUD on webhook endpoints"),
];

/// Every scope of the reference's scope table.
pub const SCOPES: [&str; 8] = {
    let mut scopes = [""; 8];
    let mut i = 0;
    while i < scopes.len() {
        scopes[i] = SCOPE_TABLE[i].0;
        i += 1;
    }
    scopes
};

/// The workspace whose developer settings `/developer/keys` manages.
pub const WORKSPACE: &str = "ws_acme";

/// A fixed demo credential, listed in README.
pub struct DemoKey {
    pub token: &'static str,
    pub id: &'static str,
    pub name: &'static str,
    pub workspace: &'static str,
    pub scopes: &'static [&'static str],
}

/// The four demo credentials.
pub const DEMO_KEYS: [DemoKey; 4] = [
    DemoKey {
        token: "ohk_demo_all_scopes",
        id: "key_demo_all",
        name: "Demo: all scopes",
        workspace: WORKSPACE,
        scopes: &SCOPES,
    },
    DemoKey {
        token: "ohk_demo_contacts_read",
        id: "key_demo_contacts_read",
        name: "Demo: contacts:read",
        workspace: WORKSPACE,
        scopes: &["contacts:read"],
    },
    DemoKey {
        token: "ohk_demo_no_api_access",
        id: "key_demo_free",
        name: "Demo: free plan",
        workspace: "ws_free",
        scopes: &SCOPES,
    },
    DemoKey {
        token: "ohk_demo_tiny_limits",
        id: "key_demo_tiny",
        name: "Demo: tiny limits",
        workspace: "ws_tiny",
        scopes: &SCOPES,
    },
];

/// The demo workspaces and their plans: `ws_acme` on `pro` (a generous
/// rate limit), `ws_free` on `free` (no `api-access`), `ws_tiny` on `tiny`
/// (5 requests a minute per key, to see a 429 with curl).
pub const WORKSPACES: [(&str, &str); 3] =
    [(WORKSPACE, "pro"), ("ws_free", "free"), ("ws_tiny", "tiny")];

/// A plan's entitlements and limits.
pub fn plan(plan: &str) -> (&'static [&'static str], Vec<Limit>) {
    let per_minute = |count| Limit::rate("requests", count, Duration::from_secs(60));
    let (entitlements, limits): (&[&str], _) = match plan {
        // 60,000 a minute, 10,000 at once. Benchmark load (benches/e2e.sh)
        // runs the example with BENCH_UNPROTECTED=1, which lifts it out of
        // reach: every request is still counted, none refused.
        "pro" if std::env::var_os("BENCH_UNPROTECTED").is_some_and(|v| v == "1") => {
            (&["api-access"], vec![per_minute(u32::MAX)])
        }
        "pro" => (
            &["api-access"],
            vec![per_minute(60_000).and_then(|l| l.with_burst(10_000))],
        ),
        "tiny" => (&["api-access"], vec![per_minute(5)]),
        _ => (&[], vec![]),
    };
    // The demo's limits are valid.
    (
        entitlements,
        limits.into_iter().filter_map(Result::ok).collect(),
    )
}

/// The plan of a demo workspace.
pub fn plan_of(workspace: &str) -> &'static str {
    WORKSPACES
        .iter()
        .find(|(w, _)| *w == workspace)
        .map_or("free", |(_, plan)| plan)
}

/// A credential of `workspace` with `scopes`, and its plan's entitlements
/// and limits.
pub fn credential(id: &str, workspace: &str, scopes: &[impl AsRef<str>]) -> Credential {
    let (entitlements, limits) = plan(plan_of(workspace));
    Credential::new(id, workspace, CredentialKind::ApiKey)
        // The scopes are from SCOPES, so they parse.
        .with_scopes(ScopeSet::parse(scopes).unwrap_or_default())
        .with_entitlements(entitlements.iter().copied())
        .with_limits(limits)
}

/// A store holding the demo keys.
pub fn store() -> MemoryStore {
    let keys = MemoryStore::new();
    for demo in DEMO_KEYS {
        keys.insert_token(demo.token, credential(demo.id, demo.workspace, demo.scopes));
    }
    keys
}

/// Logs to stderr what `RUST_LOG` asks for (default `info`: scopegate's
/// 403s and 503s; `RUST_LOG=scopegate=debug` adds every 400 and 401, and
/// the store calls). Never a token: scopegate logs hash prefixes only.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (several examples in one test process) changes nothing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
