-- Rows the relay could not publish for a reason of their own (too large, invalid record...),
-- set aside so that publication of everything else continues. See docs/operations.md.

-- A budget whose ledger event was set aside: its later events are not published (they wait in
-- relay_set_aside, state 'waiting') until an operator asks to retry or skip. Other budgets of the
-- partition keep flowing. `action` is the operator's request, carried out by the relay.
CREATE TABLE relay_holds (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    tenant_id    text    NOT NULL,
    budget_id    text    NOT NULL,
    held_at      timestamptz NOT NULL DEFAULT now(),
    error        text    NOT NULL,
    action       text    CHECK (action IN ('retry', 'skip')),
    requested_by text,
    requested_at timestamptz,
    PRIMARY KEY (tenant_id, budget_id, topic, partition)
);

-- One row per ledger event or outbox row set aside or waiting behind a hold.
-- kind 'event': a ledger row, named by (topic, partition, kafka_offset); its payload stays in
-- the ledger. kind 'outbox': an outbox row (deleted from the outbox), its message kept here.
-- state: 'held' (could not be published), 'waiting' (a later event of a held budget),
-- 'published' (sent after a release), 'skipped' (an operator chose not to publish it).
CREATE TABLE relay_set_aside (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text    NOT NULL CHECK (kind IN ('event', 'outbox')),
    state        text    NOT NULL CHECK (state IN ('held', 'waiting', 'published', 'skipped')),
    topic        text,
    partition    integer,
    kafka_offset bigint,
    tenant_id    text,
    budget_id    text,
    destination  text    NOT NULL,
    key          bytea,
    payload      bytea,
    headers      jsonb,
    size_bytes   integer NOT NULL,
    error        text,
    set_aside_at timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    resolved_by  text
);
CREATE INDEX relay_set_aside_pending ON relay_set_aside (tenant_id, budget_id, id)
    WHERE state IN ('held', 'waiting');

GRANT SELECT, INSERT, UPDATE, DELETE ON relay_holds TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON relay_set_aside TO ledger_app;
