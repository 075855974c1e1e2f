-- Named queries of the event store. Bound parameters only.

-- name: ensure_position
INSERT INTO consumer_positions (consumer_group, topic, partition, next_offset)
VALUES (%(group)s, %(topic)s, %(partition)s, 0)
ON CONFLICT (consumer_group, topic, partition) DO NOTHING

-- name: ensure_relay_cursor
INSERT INTO relay_cursors (partition) VALUES (%(partition)s)
ON CONFLICT (partition) DO NOTHING

-- name: select_positions
SELECT partition, next_offset FROM consumer_positions
WHERE consumer_group = %(group)s AND topic = %(topic)s AND partition = ANY(%(partitions)s)

-- name: advance_position
-- Compare-and-set: only the owner that read `expected` can move the position on (zombie fence).
UPDATE consumer_positions SET next_offset = %(next)s, updated_at = now()
WHERE consumer_group = %(group)s AND topic = %(topic)s AND partition = %(partition)s
  AND next_offset = %(expected)s

-- name: select_prior_commands
SELECT l.tenant_id, l.command_id, l.command_fingerprint, l.event::text
FROM ledger l
JOIN unnest(%(tenants)s::text[], %(command_ids)s::text[]) AS c(tenant_id, command_id)
  ON l.tenant_id = c.tenant_id AND l.command_id = c.command_id

-- name: select_budget_events
SELECT l.tenant_id, l.budget_id, l.event::text
FROM ledger l
JOIN unnest(%(tenants)s::text[], %(budgets)s::text[]) AS b(tenant_id, budget_id)
  ON l.tenant_id = b.tenant_id AND l.budget_id = b.budget_id
ORDER BY l.tenant_id, l.budget_id, l.sequence

-- name: copy_ledger
COPY ledger (tenant_id, budget_id, sequence, type, command_id, command_fingerprint, ref_id,
             currency, amount, funded, reserved, charged, available, kafka_topic,
             kafka_partition, kafka_offset, event, recorded_at, prev_hash, hash)
FROM STDIN

-- name: copy_outbox
COPY outbox (topic, key, payload, headers) FROM STDIN
