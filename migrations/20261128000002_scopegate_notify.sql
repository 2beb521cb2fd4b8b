-- Push invalidation: every change that affects what a token resolves to
-- sends a NOTIFY on 'scopegate_invalidate' (delivered at commit), which each
-- instance's listener applies to its cache.
--   credential:<key id>   a key was revoked, deleted, re-scoped or re-dated
--   account:<account id>  an account's plan, or its plan's entitlements, changed
--   hash:<hex sha256>     a key was created (clears "not found" answers)

CREATE FUNCTION scopegate_notify_key() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('scopegate_invalidate', 'hash:' || encode(NEW.token_sha256, 'hex'));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('scopegate_invalidate', 'credential:' || OLD.id);
    ELSIF NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
       OR NEW.scopes IS DISTINCT FROM OLD.scopes
       OR NEW.expires_at IS DISTINCT FROM OLD.expires_at
       OR NEW.account_id IS DISTINCT FROM OLD.account_id
       OR NEW.token_sha256 IS DISTINCT FROM OLD.token_sha256 THEN
        PERFORM pg_notify('scopegate_invalidate', 'credential:' || OLD.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER scopegate_api_keys_notify
    AFTER INSERT OR UPDATE OR DELETE ON scopegate_api_keys
    FOR EACH ROW EXECUTE FUNCTION scopegate_notify_key();

CREATE FUNCTION scopegate_notify_account() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.plan_id IS DISTINCT FROM OLD.plan_id THEN
        PERFORM pg_notify('scopegate_invalidate', 'account:' || OLD.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER scopegate_accounts_notify
    AFTER UPDATE OR DELETE ON scopegate_accounts
    FOR EACH ROW EXECUTE FUNCTION scopegate_notify_account();

CREATE FUNCTION scopegate_notify_plan() RETURNS trigger AS $$
DECLARE
    plan TEXT := COALESCE(NEW.plan_id, OLD.plan_id);
BEGIN
    PERFORM pg_notify('scopegate_invalidate', 'account:' || a.id)
    FROM scopegate_accounts a WHERE a.plan_id = plan;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER scopegate_plan_entitlements_notify
    AFTER INSERT OR UPDATE OR DELETE ON scopegate_plan_entitlements
    FOR EACH ROW EXECUTE FUNCTION scopegate_notify_plan();
