-- Reads of balance monitors for the HTTP API (projections/monitor_reads.py), under the tenant
-- policy of the reader role like every API read.

-- name: budget_monitors
-- The monitors column (migration 016) of one opened budget, with the sequence it is of; no row: unknown or not opened.
SELECT sequence, monitors::text
FROM budget_balances
WHERE tenant_id = %(tenant)s AND budget_id = %(budget)s AND opened
