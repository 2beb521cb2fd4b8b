-- scopegate's schema: plans and their entitlements, accounts (workspaces) on
-- a plan, and API keys stored by the SHA-256 of their token (never the token).

CREATE TABLE scopegate_plans (
    id TEXT PRIMARY KEY
);

CREATE TABLE scopegate_plan_entitlements (
    plan_id TEXT NOT NULL REFERENCES scopegate_plans (id) ON DELETE CASCADE,
    entitlement TEXT NOT NULL,
    PRIMARY KEY (plan_id, entitlement)
);

CREATE TABLE scopegate_accounts (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES scopegate_plans (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE scopegate_api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES scopegate_accounts (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_sha256 BYTEA NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    scopes TEXT[] NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

CREATE INDEX scopegate_api_keys_account ON scopegate_api_keys (account_id);
