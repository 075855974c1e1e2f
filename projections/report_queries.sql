-- Named queries of the reports (projections/reports.py): a range report of a group of one
-- tenant's budgets that share one range [%(since)s, %(until)s) (a `period=` shortcut resolves
-- in each budget's time zone, so a tenant report has a group per zone). The plain bounds on
-- recorded_at let the planner prune the ledger's monthly partitions. They run as the caller:
-- ledger_reader bound to the tenant (the API), or the owner / a tenant reader login (the CLI).

-- name: report_balances
-- The balances after each budget's last event recorded before the range starts (opening) and
-- before it ends (closing): one backward probe of ledger_budget_pages each, LIMIT 1. No row
-- of a side (NULLs): the budget had no event by then.
SELECT r.budget_id,
       o.sequence, o.funded, o.reserved, o.charged, o.available, o.pct, o.recorded_at,
       c.sequence, c.funded, c.reserved, c.charged, c.available, c.pct, c.recorded_at
FROM unnest(%(budgets)s::text[]) AS r(budget_id)
LEFT JOIN LATERAL (
    SELECT l.sequence, l.funded, l.reserved, l.charged, l.available,
           l.event ->> 'utilization_pct' AS pct, l.recorded_at
    FROM ledger l
    WHERE l.tenant_id = %(tenant)s AND l.budget_id = r.budget_id AND l.recorded_at < %(since)s
    ORDER BY l.recorded_at DESC, l.sequence DESC
    LIMIT 1
) o ON true
LEFT JOIN LATERAL (
    SELECT l.sequence, l.funded, l.reserved, l.charged, l.available,
           l.event ->> 'utilization_pct' AS pct, l.recorded_at
    FROM ledger l
    WHERE l.tenant_id = %(tenant)s AND l.budget_id = r.budget_id AND l.recorded_at < %(until)s
    ORDER BY l.recorded_at DESC, l.sequence DESC
    LIMIT 1
) c ON true

-- name: report_events
-- Count and summed `amount` per (budget, type, reason), and the highest utilization (basis
-- points) after any event recorded in the range (reports.py counts the reasons of refusals
-- only). Rows written since migration 014 carry `reason` and `utilization_bp` as columns,
-- which the covering index ledger_budget_pages includes: this query reads no heap page (an
-- index-only scan, once the visibility map is set by (auto)vacuum). Older rows have them only
-- in the event JSON (utilization_bp NULL): they come back as groups with `legacy` true and
-- their budgets are counted again by report_events_legacy.
SELECT l.budget_id, l.type, l.reason, l.utilization_bp IS NULL AS legacy,
       count(*), coalesce(sum(l.amount), 0), max(l.utilization_bp)
FROM ledger l
WHERE l.tenant_id = %(tenant)s AND l.budget_id = ANY(%(budgets)s::text[])
  AND l.recorded_at >= %(since)s AND l.recorded_at < %(until)s
GROUP BY 1, 2, 3, 4

-- name: report_events_legacy
-- report_events over the rows written before migration 014 (utilization_bp NULL), from their
-- event JSON (the heap: ~1 KB a row): only for budgets whose range holds such rows.
SELECT l.budget_id, l.type, coalesce(l.reason, l.event ->> 'reason'),
       count(*), coalesce(sum(l.amount), 0),
       max(coalesce(l.utilization_bp, (l.event ->> 'utilization_pct')::numeric * 100))
FROM ledger l
WHERE l.tenant_id = %(tenant)s AND l.budget_id = ANY(%(budgets)s::text[])
  AND l.recorded_at >= %(since)s AND l.recorded_at < %(until)s
  AND l.utilization_bp IS NULL
GROUP BY 1, 2, 3

-- name: report_alerts
-- Alerts the consumer recorded in the range (table alerts, migration 012), per budget and type.
SELECT a.budget_id, a.type, count(*)
FROM alerts a
WHERE a.tenant_id = %(tenant)s AND a.budget_id = ANY(%(budgets)s::text[])
  AND a.recorded_at >= %(since)s AND a.recorded_at < %(until)s
GROUP BY 1, 2

-- name: report_rolled_through
-- The last UTC day the rollup job has rolled up (migration 017; no row: none yet).
SELECT rolled_through FROM report_rollup_progress

-- name: report_rollup_events
-- report_events over the whole rolled UTC days [%(first_day)s, %(end_day)s) from the daily
-- rollups: the same groups (reason NULL where the events carried none), summed over the days.
SELECT r.budget_id, r.type, nullif(r.reason, ''), sum(r.count), sum(r.amount_sum),
       max(r.max_utilization_bp)
FROM report_rollups r
WHERE r.tenant_id = %(tenant)s AND r.budget_id = ANY(%(budgets)s::text[])
  AND r.day >= %(first_day)s AND r.day < %(end_day)s
GROUP BY 1, 2, 3

-- name: rollup_first_day
-- The UTC day of the oldest ledger row: where the first rollup run starts (reads the whole
-- ledger once; later runs start after report_rollup_progress).
SELECT (min(recorded_at) AT TIME ZONE 'UTC')::date FROM ledger

-- name: rollup_lock
-- One rollup writer at a time (a scheduled run and a --recompute), for this transaction.
SELECT pg_advisory_xact_lock(hashtext('budget_ledger.report_rollups'))

-- name: rollup_day
-- One UTC day's aggregates, as report_events and report_events_legacy group them: rows
-- written before migration 014 (utilization_bp NULL) take reason and utilization from their
-- event JSON. %(start)s/%(end)s are the day's bounds: plain bounds on recorded_at prune the
-- monthly partitions, and ledger_recorded_at_brin finds the day's pages.
SELECT l.tenant_id, l.budget_id, %(day)s::date AS day, l.type,
       coalesce(l.reason, CASE WHEN l.utilization_bp IS NULL THEN l.event ->> 'reason' END, '')
           AS reason,
       count(*) AS count, coalesce(sum(l.amount), 0) AS amount_sum,
       max(coalesce(l.utilization_bp, (l.event ->> 'utilization_pct')::numeric * 100))
           AS max_utilization_bp
FROM ledger l
WHERE l.recorded_at >= %(start)s AND l.recorded_at < %(end)s
GROUP BY 1, 2, 4, 5

-- name: rollup_stored_day
-- The stored rollups of one day, in rollup_day's columns (for --verify).
SELECT tenant_id, budget_id, day, type, reason, count, amount_sum, max_utilization_bp
FROM report_rollups
WHERE day = %(day)s

-- name: rollup_copy
COPY report_rollups (tenant_id, budget_id, day, type, reason, count, amount_sum,
                     max_utilization_bp) FROM STDIN

-- name: rollup_delete_day
DELETE FROM report_rollups WHERE day = %(day)s

-- name: rollup_set_progress
-- Progress only moves forward (a --recompute of an older day leaves it).
INSERT INTO report_rollup_progress (rolled_through) VALUES (%(day)s)
ON CONFLICT (singleton) DO UPDATE
SET rolled_through = greatest(report_rollup_progress.rolled_through, excluded.rolled_through),
    rolled_at = now()

-- name: rollup_first_rolled
-- The oldest day with rollup rows (where --verify starts by default).
SELECT min(day) FROM report_rollups
