-- Named queries of the HTTP API's read side (projections/api_reads.py) and of its keys
-- (entrypoints/api/keys.py). The reads run as ledger_reader with `ledger.tenant_id` set from the
-- verified key, so row-level security limits them to that tenant; each also names its tenant,
-- which lets the planner use the primary keys (tenant_id, budget_id, ...).

-- name: list_budgets
-- One page of a tenant's opened budgets in budget_id order, strictly after %(after)s, with the
-- budget's own minor digits: `digits` (migration 007), or for a row written before it, what
-- schemas.codec.opened_digits needs of its budget_opened event (found by ledger_config_events).
SELECT b.tenant_id, b.budget_id, b.currency, b.funded, b.reserved, b.charged, b.available,
       b.budget_limit, b.utilization_pct::text, b.sequence, b.period_start, b.config::text,
       b.updated_at, b.digits,
       CASE WHEN b.digits IS NULL THEN (
           SELECT jsonb_build_object('data', jsonb_build_object('minor_units',
                                                                l.event -> 'data' -> 'minor_units'),
                                     'funded', l.event -> 'funded')::text
           FROM ledger l
           WHERE l.tenant_id = b.tenant_id AND l.budget_id = b.budget_id
             AND l.type = 'budget_opened'
           ORDER BY l.recorded_at DESC, l.sequence DESC
           LIMIT 1
       ) END
FROM budget_balances b
WHERE b.tenant_id = %(tenant)s AND b.opened AND b.budget_id > %(after)s
ORDER BY b.budget_id
LIMIT %(limit)s

-- name: get_budget
-- One opened budget of the tenant (no row: unknown, or not opened); columns as list_budgets.
SELECT b.tenant_id, b.budget_id, b.currency, b.funded, b.reserved, b.charged, b.available,
       b.budget_limit, b.utilization_pct::text, b.sequence, b.period_start, b.config::text,
       b.updated_at, b.digits,
       CASE WHEN b.digits IS NULL THEN (
           SELECT jsonb_build_object('data', jsonb_build_object('minor_units',
                                                                l.event -> 'data' -> 'minor_units'),
                                     'funded', l.event -> 'funded')::text
           FROM ledger l
           WHERE l.tenant_id = b.tenant_id AND l.budget_id = b.budget_id
             AND l.type = 'budget_opened'
           ORDER BY l.recorded_at DESC, l.sequence DESC
           LIMIT 1
       ) END
FROM budget_balances b
WHERE b.tenant_id = %(tenant)s AND b.budget_id = %(budget)s AND b.opened

-- name: event_as_of
-- The budget's last ledger event recorded at or before %(as_of)s, and the last event before it
-- that set its configuration (budget_opened or budget_configured), both as their stored JSON.
SELECT e.sequence, e.funded, e.reserved, e.charged, e.available, e.recorded_at, e.event::text,
       c.event::text
FROM (
    SELECT sequence, funded, reserved, charged, available, recorded_at, event
    FROM ledger
    WHERE tenant_id = %(tenant)s AND budget_id = %(budget)s AND recorded_at <= %(as_of)s
    ORDER BY recorded_at DESC, sequence DESC
    LIMIT 1
) e
LEFT JOIN LATERAL (
    SELECT event
    FROM ledger
    WHERE tenant_id = %(tenant)s AND budget_id = %(budget)s
      AND type IN ('budget_opened', 'budget_configured')
      AND recorded_at <= e.recorded_at AND (recorded_at, sequence) <= (e.recorded_at, e.sequence)
    ORDER BY recorded_at DESC, sequence DESC
    LIMIT 1
) c ON true

-- name: list_reservations
-- One page of a budget's reservations in ref_id order after %(after)s, optionally one status.
SELECT ref_id, status, amount, charged, expires_at, command_id, created_seq, updated_seq
FROM reservations
WHERE tenant_id = %(tenant)s AND budget_id = %(budget)s AND ref_id > %(after)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
ORDER BY ref_id
LIMIT %(limit)s

-- name: command_outcome
-- The ledger event a command produced: found by command_id in the guard table ledger_commands
-- (008), then by the ledger's primary key, whose recorded_at prunes the partitions. The stored
-- fingerprint tells the API's writes a retry (same) from a reused Idempotency-Key (other).
SELECT l.sequence, l.budget_id, l.type, l.event::text, c.command_fingerprint
FROM ledger_commands c
JOIN ledger l
  ON l.kafka_topic = c.kafka_topic AND l.kafka_partition = c.kafka_partition
 AND l.kafka_offset = c.kafka_offset AND l.recorded_at = c.recorded_at
WHERE c.tenant_id = %(tenant)s AND c.command_id = %(command_id)s AND l.tenant_id = %(tenant)s

-- ---------------------------------------------------------------------------------------------
-- API keys (migration 010): written by the owner (`budget-ledger keys`), read by the API only
-- through the SECURITY DEFINER function ledger_api_key.

-- name: insert_api_key
INSERT INTO api_keys (key_id, tenant_id, name, scopes, secret_hash)
VALUES (%(key_id)s, %(tenant)s, %(name)s, %(scopes)s, %(hash)s)
RETURNING created_at

-- name: list_api_keys
SELECT key_id, tenant_id, name, scopes, created_at, revoked_at
FROM api_keys
WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text
ORDER BY created_at, key_id

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now()
WHERE key_id = %(key_id)s AND revoked_at IS NULL
RETURNING key_id

-- name: lookup_api_key
SELECT key_id, tenant_id, name, scopes, secret_hash, revoked_at
FROM ledger_api_key(%(key_id)s)

-- name: open_session
-- A request's key (as lookup_api_key) and, in the same statement, its tenant bound for the rest
-- of the transaction (set_config(..., true) is SET LOCAL) only when the key's hash matches, it
-- is active, may act for the tenant and holds the scope. The API checks the same again to choose
-- its answer (401/403); a request that fails the check reads under row-level security with no
-- tenant, so sees no row at all. The last column is the bound tenant, or NULL.
SELECT key_id, tenant_id, name, scopes, secret_hash, revoked_at,
       CASE WHEN secret_hash = %(digest)s AND revoked_at IS NULL
                 AND (tenant_id IS NULL OR tenant_id = %(tenant)s) AND %(scope)s = ANY (scopes)
            THEN set_config('ledger.tenant_id', %(tenant)s, true) END
FROM ledger_api_key(%(key_id)s)

-- ---------------------------------------------------------------------------------------------
-- Alert history and dead-lettered commands (migration 012; projections/alert_reads.py).

-- name: alert_page
-- A tenant's alerts (optionally one budget's) recorded in [%(since)s, %(until)s), newest first,
-- strictly after the keyset after_at, after_budget, after_seq, after_type, after_monitor (all
-- NULL: the first page); index alerts_history, or alerts_budget_history with a budget. The
-- monitor (migration 016, '' for other types) tells apart two balance_monitor alerts of one event.
SELECT budget_id, sequence, type, recorded_at, payload::text, monitor_id
FROM alerts
WHERE tenant_id = %(tenant)s
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s::text)
  AND recorded_at >= %(since)s AND recorded_at < %(until)s
  AND (%(after_at)s::timestamptz IS NULL
       OR (recorded_at, budget_id, sequence, type, monitor_id)
          < (%(after_at)s::timestamptz, %(after_budget)s::text, %(after_seq)s::bigint,
             %(after_type)s::text, %(after_monitor)s::text))
ORDER BY recorded_at DESC, budget_id DESC, sequence DESC, type DESC, monitor_id DESC
LIMIT %(limit)s

-- name: dead_letter
-- The dead letter of a command id (its first one), by the primary key.
SELECT command_type, error_class, reason, recorded_at
FROM dead_letters
WHERE tenant_id = %(tenant)s AND command_id = %(command_id)s
