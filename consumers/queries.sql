-- Named queries of the ledger's own schedulers. Bound parameters only.

-- name: budgets_with_expired_reservations
SELECT DISTINCT tenant_id, budget_id FROM reservations
WHERE status = 'reserved' AND expires_at <= %(as_of)s

-- name: periodic_budgets
SELECT tenant_id, budget_id, period_start, config ->> 'period', config ->> 'timezone'
FROM budget_balances
WHERE opened AND config ->> 'period' <> 'rolling'
