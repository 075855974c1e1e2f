-- API keys of the HTTP API (entrypoints/api/, docs/api.md). A key is `blk_<key_id>_<secret>`:
-- only the SHA-256 of the whole key is stored, never the key. The owner writes this table
-- (`budget-ledger keys create|list|revoke`); nobody else has any right on it.
CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    tenant_id   text,                   -- NULL: a platform key, may act for any tenant
    name        text        NOT NULL,
    scopes      text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'operator']
                                            AND cardinality(scopes) > 0),
    secret_hash bytea       NOT NULL CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

-- The API authenticates on the reader role before it knows the tenant: it may read ONE key by
-- its id through this function, never list the keys or read another tenant's names. SECURITY
-- DEFINER (runs as the owner) with a fixed search_path so a caller cannot shadow the table.
CREATE FUNCTION ledger_api_key(wanted text)
    RETURNS TABLE (key_id text, tenant_id text, name text, scopes text[], secret_hash bytea,
                   revoked_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    SELECT k.key_id, k.tenant_id, k.name, k.scopes, k.secret_hash, k.revoked_at
    FROM public.api_keys k WHERE k.key_id = wanted
$$;
REVOKE ALL ON FUNCTION ledger_api_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_api_key(text) TO ledger_reader;

-- `GET .../commands/{command_id}`: the partitioned ledger (008) has no index on command_id; the
-- guard table ledger_commands has it (its primary key) and names the row's primary key. The
-- API's reader may read it under the same tenant policy as the ledger. (The owner, whose
-- trigger writes it, and ledger_app, BYPASSRLS, are not affected by the policy.)
ALTER TABLE ledger_commands ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON ledger_commands TO ledger_reader;
CREATE POLICY tenant_read ON ledger_commands FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));

-- A budget's configuration at a point in time (`utilization?as_of`) is its last budget_opened or
-- budget_configured event by then: a few rows per budget, found here without walking the
-- budget's other events, however many there are.
CREATE INDEX ledger_config_events ON ledger (tenant_id, budget_id, recorded_at DESC, sequence DESC)
    WHERE type IN ('budget_opened', 'budget_configured');
