-- Alert history and dead-lettered commands, written by the consumer in the same transaction as
-- the ledger rows and its Kafka positions (docs/consumer.md), so a batch retried after a crash
-- writes them exactly once. The topics (budget.alerts, budget.commands.dlq) still get every
-- alert and dead letter through the outbox; these tables are what the HTTP API reads
-- (`GET .../alerts`, a command's `dead_lettered` outcome; docs/api.md). Append-only like the
-- ledger: INSERT and SELECT for the consumer, SELECT for the readers under the tenant policies.

CREATE FUNCTION append_only_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- One row per alert the rules raised (threshold crossings and hard-cap refusals); the
-- reconciler's drift alerts go to the alerts topic only. `payload` is the alert's wire JSON.
CREATE TABLE alerts (
    tenant_id      text        NOT NULL,
    budget_id      text        NOT NULL,
    sequence       bigint      NOT NULL,
    type           text        NOT NULL,
    severity       text        NOT NULL,
    -- numeric: utilization has no upper bound (a limit lowered below what is committed, 002).
    utilization_bp numeric     NOT NULL,
    threshold_bp   numeric     NOT NULL,
    recorded_at    timestamptz NOT NULL,
    payload        jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, budget_id, sequence, type)
);

-- The history, newest first: a tenant's alerts, or one budget's, as keyset pages over
-- (recorded_at, budget_id, sequence, type).
CREATE INDEX alerts_history ON alerts
    (tenant_id, recorded_at DESC, budget_id DESC, sequence DESC, type DESC);
CREATE INDEX alerts_budget_history ON alerts
    (tenant_id, budget_id, recorded_at DESC, sequence DESC, type DESC);

-- One row per dead-lettered command whose tenant and command id could be read. A message whose
-- ids cannot be read (not JSON, no string ids) is kept on the DLQ topic only: no tenant could
-- ask for it. The first dead letter of a command id is kept; a later message with the same id
-- (a client retry) is dead-lettered on the topic again but adds no row.
CREATE TABLE dead_letters (
    tenant_id       text        NOT NULL,
    command_id      text        NOT NULL,
    command_type    text,                   -- NULL when the message did not parse
    error_class     text        NOT NULL,
    reason          text        NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, command_id)
);

CREATE TRIGGER alerts_append_only
    BEFORE UPDATE OR DELETE ON alerts
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse_change();
CREATE TRIGGER alerts_no_truncate
    BEFORE TRUNCATE ON alerts
    FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse_change();
CREATE TRIGGER dead_letters_append_only
    BEFORE UPDATE OR DELETE ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse_change();
CREATE TRIGGER dead_letters_no_truncate
    BEFORE TRUNCATE ON dead_letters
    FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse_change();

GRANT SELECT, INSERT ON alerts, dead_letters TO ledger_app;
GRANT SELECT ON alerts, dead_letters TO ledger_reader, ledger_tenant_reader;

-- The same tenant policies as the ledger (001, 005); ledger_app is BYPASSRLS.
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON alerts FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_read ON dead_letters FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_reader_read ON alerts FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
CREATE POLICY tenant_reader_read ON dead_letters FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
