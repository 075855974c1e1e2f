-- Per-tenant SQL readers: a login role (a BI tool, a support engineer) mapped to ONE tenant sees
-- that tenant's rows only, whatever it sets in its session. The tenant comes from the login
-- role (current_user) through `tenant_readers`, a table only the owner writes; the setting
-- `ledger.tenant_id` plays no part for these roles. `budget-ledger readers create` makes them.
-- The `ledger_reader` role and its `SET LOCAL ledger.tenant_id` policy (001) stay for the HTTP
-- API, which sets the tenant from a verified identity inside its own transaction.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_tenant_reader') THEN
        CREATE ROLE ledger_tenant_reader NOLOGIN;
    END IF;
END
$$;

-- The owner grants membership of ledger_tenant_reader to every reader login it creates.
DO $$
BEGIN
    EXECUTE format('GRANT ledger_tenant_reader TO %I WITH ADMIN OPTION', current_user);
EXCEPTION WHEN duplicate_object OR invalid_grant_operation OR insufficient_privilege THEN NULL;
END
$$;

CREATE TABLE tenant_readers (
    role       name        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    created_by name        NOT NULL DEFAULT current_user,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The tenant of a reader login. SECURITY DEFINER so that readers need no right on the mapping
-- (they would learn which roles read which tenants); the caller passes its own current_user.
CREATE FUNCTION ledger_reader_tenant(reader name) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$ SELECT tenant_id FROM public.tenant_readers WHERE role = reader $$;
REVOKE ALL ON FUNCTION ledger_reader_tenant(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_reader_tenant(name) TO ledger_tenant_reader;

GRANT SELECT ON ledger, budget_balances, reservations TO ledger_tenant_reader;

-- current_user is the login role (a reader may only SET ROLE to ledger_tenant_reader itself,
-- which maps to no tenant and so sees nothing). An unmapped role sees zero rows (NULL = x).
-- The sub-select is evaluated once per query, not once per row.
CREATE POLICY tenant_reader_read ON ledger FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
CREATE POLICY tenant_reader_read ON budget_balances FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
CREATE POLICY tenant_reader_read ON reservations FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
