-- The report's columns (docs/api.md, "Reports"; docs/performance.md, "Reports"): a range report
-- of a budget counts its events per (type, refusal reason) and takes the peak utilization. Both
-- were only in the event's JSON, so a month of a busy budget read the whole heap (~1 GB at
-- 1,000,000 events). Two plain columns and a covering page index let it read the index alone.
--
-- `reason`: the event's `reason` (NULL for events without one). `utilization_bp`: the event's
-- `utilization_pct` × 100, exactly (numeric: utilization has no upper bound, migration 002).
-- Nullable, no default: adding them to the partitioned ledger rewrites nothing. Rows written
-- before this migration keep NULL in both (no backfill: the ledger is append-only and its
-- trigger refuses UPDATE); readers fall back to the JSON for a row whose utilization_bp is NULL
-- (report_events), and the reconciler checks the columns of every row that has them.
ALTER TABLE ledger ADD COLUMN reason text, ADD COLUMN utilization_bp numeric;

-- The page index (migration 008) again, same key, now carrying what the report aggregates: one
-- index, not a second one, so each ledger row costs the writer one (wider) index entry as
-- before. Built on every partition (the partitioned index cascades; ledger_ensure_partitions'
-- new partitions inherit it). This rebuild reads the whole ledger under a SHARE lock (writers
-- wait): on a large ledger build it ahead partition by partition, see docs/scaling.md.
DROP INDEX ledger_budget_pages;
CREATE INDEX ledger_budget_pages ON ledger (tenant_id, budget_id, recorded_at DESC, sequence DESC)
    INCLUDE (type, amount, reason, utilization_bp);
