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

-- name: copy_alerts
-- The consumer's batch transaction (migration 012): one row per alert the rules raised.
COPY alerts (tenant_id, budget_id, sequence, type, severity, utilization_bp, threshold_bp,
             recorded_at, payload)
FROM STDIN

-- name: insert_dead_letters
-- The consumer's batch transaction: one statement for the batch's dead letters. The first dead
-- letter of a command id is kept; a repeat of that id (a client retry) adds nothing.
INSERT INTO dead_letters (tenant_id, command_id, command_type, error_class, reason, kafka_topic,
                          kafka_partition, kafka_offset, recorded_at)
SELECT t, c, k, e, r, tp, p, o, now()
FROM unnest(%(tenants)s::text[], %(command_ids)s::text[], %(types)s::text[],
            %(classes)s::text[], %(reasons)s::text[], %(topics)s::text[],
            %(partitions)s::int[], %(offsets)s::bigint[]) AS d(t, c, k, e, r, tp, p, o)
ON CONFLICT (tenant_id, command_id) DO NOTHING
