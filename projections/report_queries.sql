-- Named queries of the reports (projections/reports.py): a range report of a chunk of one
-- tenant's budgets, each budget with its own [since, until) (a `period=` shortcut resolves in
-- each budget's time zone). The chunk comes as three parallel arrays (budget ids, range starts,
-- range ends). The plain bounds %(lo)s / %(hi)s (the earliest start, the latest end) let the
-- planner prune the ledger's monthly partitions; the per-budget bounds then select the rows.
-- They run as the caller: ledger_reader bound to the tenant (the API), or the owner / a tenant
-- reader login (the CLI).

-- name: report_balances
-- The balances after each budget's last event recorded before its range starts (opening) and
-- before it ends (closing): one backward probe of ledger_budget_pages each, LIMIT 1. No row
-- of a side (NULLs): the budget had no event by then.
SELECT r.budget_id,
       o.sequence, o.funded, o.reserved, o.charged, o.available, o.pct, o.recorded_at,
       c.sequence, c.funded, c.reserved, c.charged, c.available, c.pct, c.recorded_at
FROM unnest(%(budgets)s::text[], %(since)s::timestamptz[], %(until)s::timestamptz[])
     AS r(budget_id, since, until)
LEFT JOIN LATERAL (
    SELECT l.sequence, l.funded, l.reserved, l.charged, l.available,
           l.event ->> 'utilization_pct' AS pct, l.recorded_at
    FROM ledger l
    WHERE l.tenant_id = %(tenant)s AND l.budget_id = r.budget_id AND l.recorded_at < r.since
    ORDER BY l.recorded_at DESC, l.sequence DESC
    LIMIT 1
) o ON true
LEFT JOIN LATERAL (
    SELECT l.sequence, l.funded, l.reserved, l.charged, l.available,
           l.event ->> 'utilization_pct' AS pct, l.recorded_at
    FROM ledger l
    WHERE l.tenant_id = %(tenant)s AND l.budget_id = r.budget_id AND l.recorded_at < r.until
    ORDER BY l.recorded_at DESC, l.sequence DESC
    LIMIT 1
) c ON true

-- name: report_events
-- One pass over the events recorded in each budget's range: count and summed `amount` per
-- (budget, type, refusal reason), and the highest utilization after any of them (the
-- `utilization_pct` every event carries: what the read endpoints show). `reason` is NULL but
-- on refusals (reservation_rejected, command_rejected).
SELECT l.budget_id, l.type, l.event ->> 'reason', count(*), coalesce(sum(l.amount), 0),
       max((l.event ->> 'utilization_pct')::numeric)::text
FROM unnest(%(budgets)s::text[], %(since)s::timestamptz[], %(until)s::timestamptz[])
     AS r(budget_id, since, until)
JOIN ledger l
  ON l.tenant_id = %(tenant)s AND l.budget_id = r.budget_id
 AND l.recorded_at >= r.since AND l.recorded_at < r.until
WHERE l.recorded_at >= %(lo)s AND l.recorded_at < %(hi)s
GROUP BY 1, 2, 3

-- name: report_budget_events
-- report_events for one budget (the planner sees the budget itself, not an array of unknown
-- size): one range scan of ledger_budget_pages or of the range's partitions.
SELECT l.budget_id, l.type, l.event ->> 'reason', count(*), coalesce(sum(l.amount), 0),
       max((l.event ->> 'utilization_pct')::numeric)::text
FROM ledger l
WHERE l.tenant_id = %(tenant)s AND l.budget_id = %(budget)s
  AND l.recorded_at >= %(lo)s AND l.recorded_at < %(hi)s
GROUP BY 1, 2, 3

-- name: report_alerts
-- Alerts the consumer recorded in each budget's range (table alerts, migration 012), per type.
SELECT a.budget_id, a.type, count(*)
FROM unnest(%(budgets)s::text[], %(since)s::timestamptz[], %(until)s::timestamptz[])
     AS r(budget_id, since, until)
JOIN alerts a
  ON a.tenant_id = %(tenant)s AND a.budget_id = r.budget_id
 AND a.recorded_at >= r.since AND a.recorded_at < r.until
GROUP BY 1, 2
