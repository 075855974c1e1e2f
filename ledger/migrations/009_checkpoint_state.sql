-- Incremental reconcile whose cost follows the new events (docs/reconciler.md, "Incremental
-- reconcile"; projections/checkpoints.py, projections/shard.py):
--
-- 1. The verified state of a budget at its checkpoint (projections/checkpoint_state.py: every
--    BudgetState field, open reservations only), so a run replays a touched budget from the
--    checkpoint instead of from its first event. NULL in checkpoints written before this
--    migration: such a budget is replayed whole once, which writes its state.
ALTER TABLE reconcile_checkpoints ADD COLUMN state jsonb;

-- 2. The runs that wrote checkpoints (unfiltered runs only), so the next incremental run looks
--    for touched budgets only among the ledger rows recorded since the last run started (minus
--    a margin), plus the budgets that run found drifting (they are reported again until fixed).
--    Written, like the checkpoints, only as ledger_reconciler; ledger_app (the reconciler's
--    reading role) may read it.
CREATE TABLE reconcile_runs (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mode              text        NOT NULL CHECK (mode IN ('incremental', 'full')),
    -- The database's clock when the run's replay began (before any shard's snapshot).
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT now(),
    clean             boolean     NOT NULL,
    events            bigint      NOT NULL,
    budgets           bigint      NOT NULL,
    drifting_tenants  text[]      NOT NULL DEFAULT '{}',
    drifting_budgets  text[]      NOT NULL DEFAULT '{}',
    run_by            name        NOT NULL DEFAULT current_user
);

GRANT SELECT ON reconcile_runs TO ledger_app;
GRANT SELECT, INSERT ON reconcile_runs TO ledger_reconciler;

-- 3. "Budgets with ledger rows recorded since T" (reconcile_candidates): a BRIN index on
--    recorded_at. Rows are appended in roughly recorded_at order, so block ranges summarise
--    tightly and the index is tiny (a few pages per million rows). Created on the parent, it
--    also exists on every partition of a partitioned ledger, current and future (with the same
--    options). A block range is summarised by (auto)vacuum; until then a query reads all of it,
--    so autosummarize asks autovacuum to summarise each range as soon as it is full.
CREATE INDEX ledger_recorded_at_brin ON ledger USING brin (recorded_at)
    WITH (autosummarize = on);
