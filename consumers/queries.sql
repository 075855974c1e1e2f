-- Named queries of the ledger's own schedulers. Bound parameters only.

-- name: budgets_with_expired_reservations
-- The sweeper's cut-off per budget is the latest expiry it found (exact, microseconds), so the
-- command expires exactly what was found and replicas that find the same derive the same id.
SELECT tenant_id, budget_id, max(expires_at) FROM reservations
WHERE status = 'reserved' AND expires_at <= %(as_of)s
GROUP BY tenant_id, budget_id

-- name: periodic_budgets
SELECT tenant_id, budget_id, period_start, config ->> 'period', config ->> 'timezone'
FROM budget_balances
WHERE opened AND config ->> 'period' <> 'rolling'
