-- State loaded from the projections (projections/state_loading.py, docs/scaling.md): the balance
-- row holds every field of a budget's state that the other columns do not, so the consumer can
-- load a budget from its balance row and its open reservations instead of replaying its ledger.
--
-- Appended at the END of the table: the consumer's staging table is `LIKE budget_balances` and
-- its merge is `INSERT ... SELECT *`. Nullable, no default: adding them rewrites nothing, and a
-- row written before this migration keeps NULLs, so its budget is loaded by full replay.
--
-- `snapshot_seq` is the sequence the other four were written at. The loader trusts them only
-- when it equals `sequence`: a consumer still running the code from before this migration (a
-- rolling upgrade) updates the balance columns but not these, and its rows must not be read as
-- a snapshot with stale alert flags. Consumers copy the table's columns into their session's
-- staging table once: restart them after this migration.
ALTER TABLE budget_balances
    ADD COLUMN digits              integer,
    ADD COLUMN above_soft          boolean,
    ADD COLUMN above_hard          boolean,
    ADD COLUMN cap_reached_alerted boolean,
    ADD COLUMN snapshot_seq        bigint;

-- Loading a budget reads only its open reservations; without this a budget with millions of
-- settled ones would walk them all. Settled refs are read by primary key (one batched look-up
-- per micro-batch, `select_settled_reservations`).
CREATE INDEX reservations_open_by_budget ON reservations (tenant_id, budget_id)
    WHERE status = 'reserved';
