-- Incremental reconciliation (projections/checkpoints.py, docs/reconciler.md): per budget, the
-- last sequence and hash that a reconcile run verified clean. `reconcile` (default) re-verifies
-- only the budgets whose ledger moved past their checkpoint; `reconcile --full` verifies all.
--
-- Who may write it matters: a checkpoint says "everything up to here was verified", so whoever
-- can move it past a forged row hides that row from incremental runs. The processes' role
-- `ledger_app` (the consumer, relay, sweeper) may only read it; the reconciler writes it as
-- `ledger_reconciler`, a role that holds nothing else (no ledger or projection rights), which
-- the owner may SET ROLE to and which a dedicated login of the reconcile job is granted.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_reconciler') THEN
        CREATE ROLE ledger_reconciler NOLOGIN;
    END IF;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT ledger_reconciler TO %I', current_user);
EXCEPTION WHEN duplicate_object OR invalid_grant_operation THEN NULL;
END
$$;

CREATE TABLE reconcile_checkpoints (
    tenant_id   text        NOT NULL,
    budget_id   text        NOT NULL,
    sequence    bigint      NOT NULL CHECK (sequence > 0),
    hash        text        NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now(),
    verified_by name        NOT NULL DEFAULT current_user,
    PRIMARY KEY (tenant_id, budget_id)
);

GRANT SELECT ON reconcile_checkpoints TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON reconcile_checkpoints TO ledger_reconciler;

-- "Rows of budget B after sequence S" needs no new index: the ledger's
-- UNIQUE (tenant_id, budget_id, sequence) index serves it as one index range scan, and the
-- distinct budgets as a loose index scan (reconcile_touched_budgets in projections/queries.sql).
