-- Plan limits: named rate limits (GCRA: `count` per `period_ms`, up to
-- `burst` at once, `count` when NULL) and monthly quotas (`count` per
-- calendar month, UTC), each counted per key or per account. Resolved with
-- the key, cached with it; a change notifies 'account:<id>' for every
-- account on the plan, as entitlements do.

CREATE TABLE scopegate_plan_limits (
    plan_id TEXT NOT NULL REFERENCES scopegate_plans (id) ON DELETE CASCADE,
    name TEXT NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    kind TEXT NOT NULL CHECK (kind IN ('rate', 'monthly')),
    count BIGINT NOT NULL CHECK (count > 0),
    period_ms BIGINT CHECK (period_ms BETWEEN 1 AND 31622400000),
    burst BIGINT CHECK (burst BETWEEN 1 AND 4294967295),
    per TEXT NOT NULL DEFAULT 'key' CHECK (per IN ('key', 'account')),
    PRIMARY KEY (plan_id, name),
    CHECK ((kind = 'rate') = (period_ms IS NOT NULL)),
    CHECK (kind = 'rate' OR burst IS NULL),
    CHECK (kind = 'monthly' OR count <= 4294967295)
);

CREATE TRIGGER scopegate_plan_limits_notify
    AFTER INSERT OR UPDATE OR DELETE ON scopegate_plan_limits
    FOR EACH ROW EXECUTE FUNCTION scopegate_notify_plan();
