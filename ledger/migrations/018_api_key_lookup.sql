-- The API's key look-up (migration 010) in PL/pgSQL: the same function, the same rights. A
-- SQL-language function that is not inlined (SECURITY DEFINER ones never are) plans its query
-- again at every call; PL/pgSQL keeps the plan for the session, and the API calls it at every
-- request (docs/performance.md, "HTTP API"). CREATE OR REPLACE keeps the grants of 010.
CREATE OR REPLACE FUNCTION ledger_api_key(wanted text)
    RETURNS TABLE (key_id text, tenant_id text, name text, scopes text[], secret_hash bytea,
                   revoked_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
BEGIN
    RETURN QUERY
        SELECT k.key_id, k.tenant_id, k.name, k.scopes, k.secret_hash, k.revoked_at
        FROM public.api_keys k WHERE k.key_id = wanted;
END
$$;
