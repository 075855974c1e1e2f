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
-- Count and summed `amount` per (budget, type, refusal reason), and the highest utilization
-- (basis points) after any event recorded in the range. Only refusals (reservation_rejected,
-- command_rejected) carry a reason; the others are not looked into. Rows written since
-- migration 014 carry `reason` and `utilization_bp` as columns, which the covering index
-- ledger_budget_pages includes: `fast` reads them by an index-only scan (no heap, once the
-- visibility map is set by (auto)vacuum). Older rows (utilization_bp NULL) have them only in
-- the event JSON: `fast` only flags their groups, and the second branch, which runs only when
-- some flagged group exists (a one-time filter), aggregates those rows from the heap.
WITH fast AS (
    SELECT l.budget_id, l.type,
           CASE WHEN l.type IN ('reservation_rejected', 'command_rejected')
                THEN l.reason END AS reason,
           l.utilization_bp IS NULL AS legacy,
           count(*) AS n, coalesce(sum(l.amount), 0) AS amount, max(l.utilization_bp) AS peak
    FROM ledger l
    WHERE l.tenant_id = %(tenant)s AND l.budget_id = ANY(%(budgets)s::text[])
      AND l.recorded_at >= %(since)s AND l.recorded_at < %(until)s
    GROUP BY 1, 2, 3, 4
)
SELECT budget_id, type, reason, n, amount, peak FROM fast WHERE NOT legacy
UNION ALL
SELECT l.budget_id, l.type,
       CASE WHEN l.type IN ('reservation_rejected', 'command_rejected')
            THEN coalesce(l.reason, l.event ->> 'reason') END,
       count(*), coalesce(sum(l.amount), 0),
       max(coalesce(l.utilization_bp, (l.event ->> 'utilization_pct')::numeric * 100))
FROM ledger l
WHERE (SELECT bool_or(legacy) FROM fast)
  AND l.tenant_id = %(tenant)s AND l.budget_id = ANY(%(budgets)s::text[])
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
