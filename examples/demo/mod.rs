//! The demo credentials every example accepts (listed in README.md).
//!
//! Shared by the examples and their tests: `mod demo;` with a `#[path]`.

#![allow(dead_code)]

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
    /// Whether the workspace's plan includes `api-access`.
    pub api_access: bool,
}

/// The three demo credentials.
pub const DEMO_KEYS: [DemoKey; 3] = [
    DemoKey {
        token: "ohk_demo_all_scopes",
        id: "key_demo_all",
        name: "Demo: all scopes",
        workspace: WORKSPACE,
        scopes: &SCOPES,
        api_access: true,
    },
    DemoKey {
        token: "ohk_demo_contacts_read",
        id: "key_demo_contacts_read",
        name: "Demo: contacts:read",
        workspace: WORKSPACE,
        scopes: &["contacts:read"],
        api_access: true,
    },
    DemoKey {
        token: "ohk_demo_no_api_access",
        id: "key_demo_free",
        name: "Demo: free plan",
        workspace: "ws_free",
        scopes: &SCOPES,
        api_access: false,
    },
];

/// A credential of `workspace` with `scopes`, and `api-access` if `api_access`.
pub fn credential(
    id: &str,
    workspace: &str,
    scopes: &[impl AsRef<str>],
    api_access: bool,
) -> Credential {
    let entitlements: &[&str] = if api_access { &["api-access"] } else { &[] };
    Credential::new(id, workspace, CredentialKind::ApiKey)
        // The scopes are from SCOPES, so they parse.
        .with_scopes(ScopeSet::parse(scopes).unwrap_or_default())
        .with_entitlements(entitlements.iter().copied())
}

/// A store holding the three demo keys.
pub fn store() -> MemoryStore {
    let keys = MemoryStore::new();
    for demo in DEMO_KEYS {
        keys.insert_token(
            demo.token,
            credential(demo.id, demo.workspace, demo.scopes, demo.api_access),
        );
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
