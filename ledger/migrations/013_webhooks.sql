-- Webhooks (docs/webhooks.md): tenant endpoints that receive the alerts of budget.alerts, signed
-- per Standard Webhooks, and the delivery log. The API (reader role, read-only sessions) lists
-- its tenant's endpoints and deliveries under row-level security and changes endpoints only
-- through the SECURITY DEFINER functions below, which act for the tenant bound to the session
-- (`ledger.tenant_id`, set after the API key was verified). The delivery worker
-- (`budget-ledger deliver`, role ledger_app) writes the deliveries and attempts.

CREATE TABLE webhook_endpoints (
    id              text        PRIMARY KEY CHECK (id ~ '^whe_[0-9a-f]{24}$'),
    tenant_id       text        NOT NULL,
    url             text        NOT NULL CHECK (length(url) <= 2048),
    alert_kinds     text[],                 -- NULL: every kind
    budget_id       text,                   -- NULL: every budget
    -- The Standard Webhooks secret `whsec_<base64 of 32 random bytes>`. The deliverer must sign
    -- with it, so it is stored as such (a hash would not do); only the owner and ledger_app may
    -- read the column: the readers' column grants below leave it out.
    secret          text        NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/=]{40,90}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz,
    disabled_reason text,
    failing_since   timestamptz             -- first failed attempt since the last success
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, created_at);

-- One row per (endpoint, alert): the alert's wire JSON and where its delivery stands. The
-- deliverer inserts these in the same transaction as its Kafka positions (exactly once per
-- alert and endpoint); a redelivery resets the row to pending.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     text        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id       text        NOT NULL,
    alert_id        text        NOT NULL,   -- the webhook-id header: alrt_<alert's stable id>
    alert_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Bumped by each redelivery: a result of an attempt started before it is not written over
    -- the reset row.
    generation      integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    latency_ms      integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, alert_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id DESC);

-- The delivery log: one row per HTTP attempt.
CREATE TABLE webhook_attempts (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   bigint      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id   text        NOT NULL,
    tenant_id     text        NOT NULL,
    alert_id      text        NOT NULL,
    attempt       integer     NOT NULL,
    attempted_at  timestamptz NOT NULL,
    status_code   integer,                -- NULL: no HTTP answer (timeout, refused, SSRF guard)
    latency_ms    integer     NOT NULL,
    error         text
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, id DESC);

GRANT SELECT, UPDATE ON webhook_endpoints TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries, webhook_attempts TO ledger_app;
-- The readers: every column but the secret.
GRANT SELECT (id, tenant_id, url, alert_kinds, budget_id, created_at, disabled_at,
              disabled_reason, failing_since) ON webhook_endpoints
    TO ledger_reader, ledger_tenant_reader;
GRANT SELECT ON webhook_deliveries, webhook_attempts TO ledger_reader, ledger_tenant_reader;

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON webhook_endpoints FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_read ON webhook_deliveries FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_read ON webhook_attempts FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_reader_read ON webhook_endpoints FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
CREATE POLICY tenant_reader_read ON webhook_deliveries FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
CREATE POLICY tenant_reader_read ON webhook_attempts FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));

-- The bound tenant of the API session, or an error: the functions below never act without one.
CREATE FUNCTION ledger_webhook_tenant() RETURNS text
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public
AS $$
DECLARE
    tid text := current_setting('ledger.tenant_id', true);
BEGIN
    IF tid IS NULL OR tid = '' THEN
        RAISE EXCEPTION 'no tenant bound to this session' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN tid;
END
$$;

CREATE FUNCTION ledger_webhook_create(new_id text, new_url text, kinds text[], budget text,
                                      new_secret text)
    RETURNS timestamptz
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    INSERT INTO public.webhook_endpoints (id, tenant_id, url, alert_kinds, budget_id, secret)
    VALUES (new_id, public.ledger_webhook_tenant(), new_url, kinds, budget, new_secret)
    RETURNING created_at
$$;

-- Deleting an endpoint deletes its deliveries and their attempts (ON DELETE CASCADE).
CREATE FUNCTION ledger_webhook_delete(wanted text) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    WITH gone AS (
        DELETE FROM public.webhook_endpoints
        WHERE id = wanted AND tenant_id = public.ledger_webhook_tenant() RETURNING 1
    )
    SELECT count(*) > 0 FROM gone
$$;

-- Re-send the endpoint's matching alerts recorded since `since` (from the alerts table, 012): a
-- delivery already there goes back to pending with its attempts reset; the webhook-id stays.
CREATE FUNCTION ledger_webhook_redeliver(wanted text, since timestamptz) RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    WITH e AS (
        SELECT id, tenant_id, alert_kinds, budget_id FROM public.webhook_endpoints
        WHERE id = wanted AND tenant_id = public.ledger_webhook_tenant()
    ), queued AS (
        INSERT INTO public.webhook_deliveries AS d
            (endpoint_id, tenant_id, alert_id, alert_type, payload)
        SELECT e.id, a.tenant_id, 'alrt_' || (a.payload ->> 'alert_id'), a.type, a.payload
        FROM e JOIN public.alerts a ON a.tenant_id = e.tenant_id
        WHERE a.recorded_at >= since
          AND (e.alert_kinds IS NULL OR a.type = ANY (e.alert_kinds))
          AND (e.budget_id IS NULL OR a.budget_id = e.budget_id)
        ON CONFLICT (endpoint_id, alert_id) DO UPDATE
            SET status = 'pending', attempts = 0, generation = d.generation + 1,
                next_attempt_at = now(), updated_at = now()
        RETURNING 1
    )
    SELECT count(*) FROM queued
$$;

REVOKE ALL ON FUNCTION ledger_webhook_tenant() FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger_webhook_create(text, text, text[], text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger_webhook_delete(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger_webhook_redeliver(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_webhook_create(text, text, text[], text, text) TO ledger_reader;
GRANT EXECUTE ON FUNCTION ledger_webhook_delete(text) TO ledger_reader;
GRANT EXECUTE ON FUNCTION ledger_webhook_redeliver(text, timestamptz) TO ledger_reader;
