-- The append-only ledger, its projections, the consumer's positions and the outbox.
-- Runs as the owner role; the application role `ledger_app` gets only what it needs.

-- `ledger_app` is the single trusted writer across tenants: it bypasses row-level security
-- (COPY is refused on tables with RLS otherwise) but holds only INSERT/SELECT on the ledger.
-- BYPASSRLS needs a superuser: deploy/local/postgres.sh (or your DBA) creates the role with it
-- before the first migration; a migration run by a superuser creates it here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN
        CREATE ROLE ledger_app NOLOGIN BYPASSRLS;
    END IF;
    -- Without it the consumer could not COPY, and readers running as ledger_app would silently
    -- see no rows: refuse to migrate rather than leave a ledger that looks empty.
    IF NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'ledger_app') THEN
        RAISE EXCEPTION 'role ledger_app lacks BYPASSRLS; as a superuser run: '
            'ALTER ROLE ledger_app BYPASSRLS (deploy/local/postgres.sh does this)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_reader') THEN
        CREATE ROLE ledger_reader NOLOGIN;
    END IF;
END
$$;

-- The owner must be able to `SET ROLE ledger_app` (the processes drop to it after connecting).
DO $$
BEGIN
    EXECUTE format('GRANT ledger_app, ledger_reader TO %I', current_user);
EXCEPTION WHEN duplicate_object OR invalid_grant_operation THEN NULL;
END
$$;

-- One row per event. (kafka_partition, kafka_offset) names the command that produced it and is
-- also the relay's cursor: within a partition rows commit in offset order (one fenced writer).
CREATE TABLE ledger (
    position            bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    tenant_id           text        NOT NULL,
    budget_id           text        NOT NULL,
    sequence            bigint      NOT NULL CHECK (sequence > 0),
    type                text        NOT NULL,
    command_id          text        NOT NULL,
    command_fingerprint text        NOT NULL,
    ref_id              text,
    currency            text,
    amount              bigint,
    funded              bigint      NOT NULL,
    reserved            bigint      NOT NULL,
    charged             bigint      NOT NULL,
    available           bigint      NOT NULL CHECK (available >= 0),
    kafka_topic         text        NOT NULL,
    kafka_partition     integer     NOT NULL,
    kafka_offset        bigint      NOT NULL,
    event               jsonb       NOT NULL,
    recorded_at         timestamptz NOT NULL,
    prev_hash           text        NOT NULL,
    hash                text        NOT NULL,
    PRIMARY KEY (kafka_partition, kafka_offset),
    UNIQUE (tenant_id, budget_id, sequence),
    UNIQUE (tenant_id, command_id)
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER ledger_append_only
    BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Balance projection: one row per budget, the state after its last event.
CREATE TABLE budget_balances (
    tenant_id       text        NOT NULL,
    budget_id       text        NOT NULL,
    currency        text,
    opened          boolean     NOT NULL,
    funded          bigint      NOT NULL,
    reserved        bigint      NOT NULL,
    charged         bigint      NOT NULL,
    available       bigint      NOT NULL,
    budget_limit    bigint      NOT NULL,
    utilization_pct numeric(9, 2) NOT NULL,
    sequence        bigint      NOT NULL,
    last_hash       text        NOT NULL,
    period_start    text,
    config          jsonb,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, budget_id)
);

-- Reservation projection: one row per (budget, ref_id).
CREATE TABLE reservations (
    tenant_id   text    NOT NULL,
    budget_id   text    NOT NULL,
    ref_id      text    NOT NULL,
    status      text    NOT NULL,
    amount      bigint  NOT NULL,
    charged     bigint  NOT NULL,
    expires_at  timestamptz,
    command_id  text    NOT NULL,
    created_seq bigint  NOT NULL,
    updated_seq bigint  NOT NULL,
    PRIMARY KEY (tenant_id, budget_id, ref_id)
);

-- The sweeper looks for reservations still held past their expiry.
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'reserved';

-- Kafka position of the command consumer, written in the same transaction as its output.
CREATE TABLE consumer_positions (
    consumer_group text    NOT NULL,
    topic          text    NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint  NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Relay cursors over the ledger: the last command offset whose event was published, per partition.
CREATE TABLE relay_cursors (
    partition   integer PRIMARY KEY,
    last_offset bigint  NOT NULL DEFAULT -1,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The small outbox: alerts, re-published outcomes of duplicate commands, and dead letters.
-- Rows are deleted once Kafka acknowledged them, so a row not yet visible is never skipped.
CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text  NOT NULL,
    key        bytea,
    payload    bytea NOT NULL,
    headers    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT ON ledger TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON budget_balances, reservations, consumer_positions, relay_cursors
    TO ledger_app;
-- UPDATE only because the relay claims rows with SELECT ... FOR UPDATE SKIP LOCKED.
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO ledger_app;
GRANT SELECT ON ledger, budget_balances, reservations TO ledger_reader;

-- Tenant isolation on read paths: the reader role sees only the tenant named in the session
-- setting `ledger.tenant_id` (set by the reporting code), enforced by Postgres itself.
ALTER TABLE ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE budget_balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE reservations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON ledger FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_read ON budget_balances FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_read ON reservations FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
