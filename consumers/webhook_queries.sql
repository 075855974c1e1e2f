-- Named queries of the webhook deliverer (consumers/webhook_deliverer.py). Bound parameters only.

-- name: fan_out
-- One delivery per (matching enabled endpoint, alert); a message read again after a crash
-- between Kafka and the commit adds nothing (the positions move in the same transaction).
INSERT INTO webhook_deliveries (endpoint_id, tenant_id, alert_id, alert_type, payload)
SELECT e.id, a.tenant_id, a.alert_id, a.alert_type, a.payload::jsonb
FROM unnest(%(tenants)s::text[], %(budgets)s::text[], %(types)s::text[], %(ids)s::text[],
            %(payloads)s::text[]) AS a(tenant_id, budget_id, alert_type, alert_id, payload)
JOIN webhook_endpoints e ON e.tenant_id = a.tenant_id AND e.disabled_at IS NULL
    AND (e.alert_kinds IS NULL OR a.alert_type = ANY (e.alert_kinds))
    AND (e.budget_id IS NULL OR e.budget_id = a.budget_id)
ON CONFLICT (endpoint_id, alert_id) DO NOTHING
RETURNING endpoint_id

-- name: claim_due
-- Claims pending deliveries whose time has come, at most %(per_endpoint)s per endpoint (so one
-- endpoint's backlog cannot fill the batch) and none of a busy or in-flight one: their next
-- attempt moves %(lease)s seconds ahead, so another deliverer (a second replica, or this one
-- restarted after a crash) takes a row only once that lease has run out. Two claiming at once:
-- the second re-checks next_attempt_at on the updated row and skips it.
WITH due AS (
    SELECT id FROM (
        SELECT d.id, d.next_attempt_at,
               row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id)
                   AS n
        FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
        WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.disabled_at IS NULL
          AND d.id <> ALL (%(inflight)s::bigint[]) AND d.endpoint_id <> ALL (%(busy)s::text[])
    ) ranked
    WHERE n <= %(per_endpoint)s
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
)
UPDATE webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => %(lease)s)
FROM due, webhook_endpoints e
WHERE d.id = due.id AND e.id = d.endpoint_id AND d.status = 'pending'
  AND d.next_attempt_at <= now()
RETURNING d.id, d.endpoint_id, d.tenant_id, d.alert_id, d.payload::text, d.attempts,
          d.generation, e.url, e.secret

-- name: unclaim
UPDATE webhook_deliveries SET next_attempt_at = now()
WHERE id = ANY (%(ids)s::bigint[]) AND status = 'pending'

-- name: insert_attempt
INSERT INTO webhook_attempts (delivery_id, endpoint_id, tenant_id, alert_id, attempt,
                              attempted_at, status_code, latency_ms, error)
VALUES (%(delivery)s, %(endpoint)s, %(tenant)s, %(alert)s, %(attempt)s, %(at)s, %(code)s,
        %(latency)s, %(error)s)

-- name: update_delivery
-- Only while still pending, in the generation and with the attempt count this attempt started
-- from: a redelivery (which resets the row) in the meantime wins.
UPDATE webhook_deliveries SET status = %(status)s, attempts = %(attempt)s,
    next_attempt_at = coalesce(%(next)s, next_attempt_at), last_status = %(code)s,
    last_error = %(error)s, latency_ms = %(latency)s, updated_at = now()
WHERE id = %(delivery)s AND status = 'pending' AND attempts = %(attempt)s - 1
  AND generation = %(generation)s

-- name: endpoint_succeeded
UPDATE webhook_endpoints SET failing_since = NULL
WHERE id = %(endpoint)s AND failing_since IS NOT NULL

-- name: endpoint_failed
UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, %(at)s)
WHERE id = %(endpoint)s AND disabled_at IS NULL
RETURNING failing_since

-- name: disable_endpoint
UPDATE webhook_endpoints SET disabled_at = %(at)s, disabled_reason = %(reason)s
WHERE id = %(endpoint)s AND disabled_at IS NULL
RETURNING tenant_id, url, failing_since

-- name: insert_outbox
INSERT INTO outbox (topic, key, payload) VALUES (%(topic)s, %(key)s, %(payload)s)

-- The HTTP API's queries (entrypoints/api/webhooks.py), on the reader role bound to a tenant:
-- row-level security shows it that tenant's rows and no secret column.

-- name: api_list
SELECT id, url, alert_kinds, budget_id, created_at, disabled_at, disabled_reason, failing_since
FROM webhook_endpoints WHERE tenant_id = %(tenant)s ORDER BY created_at, id

-- name: api_get
SELECT id, url, alert_kinds, budget_id, created_at, disabled_at, disabled_reason, failing_since
FROM webhook_endpoints WHERE tenant_id = %(tenant)s AND id = %(endpoint)s

-- name: api_create
SELECT ledger_webhook_create(%(endpoint)s, %(url)s, %(kinds)s::text[], %(budget)s, %(secret)s)

-- name: api_delete
SELECT ledger_webhook_delete(%(endpoint)s)

-- name: api_redeliver
SELECT ledger_webhook_redeliver(%(endpoint)s, %(since)s)

-- name: api_deliveries
SELECT id, alert_id, alert_type, status, attempts, next_attempt_at, last_status, last_error,
       latency_ms, created_at, updated_at
FROM webhook_deliveries
WHERE tenant_id = %(tenant)s AND endpoint_id = %(endpoint)s AND id < %(before)s
ORDER BY id DESC LIMIT %(limit)s

-- name: api_attempts
SELECT delivery_id, attempt, attempted_at, status_code, latency_ms, error
FROM webhook_attempts WHERE tenant_id = %(tenant)s AND delivery_id = ANY (%(ids)s::bigint[])
ORDER BY delivery_id, id
