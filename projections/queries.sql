-- Named queries of the balance and reservation projections. Bound parameters only.

-- name: create_staging
CREATE TEMP TABLE IF NOT EXISTS staging_balances
    (LIKE budget_balances INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_reservations
    (LIKE reservations INCLUDING DEFAULTS) ON COMMIT DELETE ROWS

-- name: copy_staging_balances
COPY staging_balances (tenant_id, budget_id, currency, opened, funded, reserved, charged,
                       available, budget_limit, utilization_pct, sequence, last_hash,
                       period_start, config, updated_at)
FROM STDIN

-- name: merge_balances
INSERT INTO budget_balances SELECT * FROM staging_balances
ON CONFLICT (tenant_id, budget_id) DO UPDATE SET
    currency = EXCLUDED.currency, opened = EXCLUDED.opened, funded = EXCLUDED.funded,
    reserved = EXCLUDED.reserved, charged = EXCLUDED.charged, available = EXCLUDED.available,
    budget_limit = EXCLUDED.budget_limit, utilization_pct = EXCLUDED.utilization_pct,
    sequence = EXCLUDED.sequence, last_hash = EXCLUDED.last_hash,
    period_start = EXCLUDED.period_start, config = EXCLUDED.config,
    updated_at = EXCLUDED.updated_at

-- name: copy_staging_reservations
COPY staging_reservations (tenant_id, budget_id, ref_id, status, amount, charged, expires_at,
                           command_id, created_seq, updated_seq)
FROM STDIN

-- name: merge_reservations
INSERT INTO reservations SELECT * FROM staging_reservations
ON CONFLICT (tenant_id, budget_id, ref_id) DO UPDATE SET
    status = EXCLUDED.status, amount = EXCLUDED.amount, charged = EXCLUDED.charged,
    expires_at = EXCLUDED.expires_at, command_id = EXCLUDED.command_id,
    created_seq = EXCLUDED.created_seq, updated_seq = EXCLUDED.updated_seq

