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

-- name: advance_positions
-- The same compare-and-set for every partition of a batch in one statement (one round trip);
-- the caller checks that every partition came back.
UPDATE consumer_positions p SET next_offset = c.next_offset, updated_at = now()
FROM unnest(%(partitions)s::int[], %(expected)s::bigint[], %(next)s::bigint[])
     AS c(partition, expected, next_offset)
WHERE p.consumer_group = %(group)s AND p.topic = %(topic)s AND p.partition = c.partition
  AND p.next_offset = c.expected
RETURNING p.partition

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

-- name: claim_relay_cursors
-- Each relay process takes the partitions no other relay is working on right now.
SELECT partition, last_offset FROM relay_cursors ORDER BY partition FOR UPDATE SKIP LOCKED

-- name: select_unpublished_events
SELECT l.kafka_partition, l.kafka_offset, l.tenant_id, l.budget_id, l.type, l.event::text
FROM unnest(%(partitions)s::int[], %(after)s::bigint[]) AS c(partition, last_offset)
CROSS JOIN LATERAL (
    SELECT kafka_partition, kafka_offset, tenant_id, budget_id, type, event
    FROM ledger
    WHERE kafka_partition = c.partition AND kafka_offset > c.last_offset
    ORDER BY kafka_offset
    LIMIT %(limit)s
) AS l

-- name: advance_relay_cursor
UPDATE relay_cursors SET last_offset = %(offset)s, updated_at = now() WHERE partition = %(partition)s

-- name: claim_outbox
SELECT id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: delete_outbox
DELETE FROM outbox WHERE id = ANY(%(ids)s)
