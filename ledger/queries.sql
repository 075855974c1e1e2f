-- Named queries of the event store. Bound parameters only.

-- name: ensure_position
-- A new partition carries the ledger topic of its siblings (realign relabels them together).
INSERT INTO consumer_positions (consumer_group, topic, partition, next_offset, ledger_topic)
VALUES (%(group)s, %(topic)s, %(partition)s, 0,
        (SELECT max(ledger_topic) FROM consumer_positions
         WHERE consumer_group = %(group)s AND topic = %(topic)s))
ON CONFLICT (consumer_group, topic, partition) DO NOTHING

-- name: ensure_relay_cursor
INSERT INTO relay_cursors (topic, partition) VALUES (%(topic)s, %(partition)s)
ON CONFLICT (topic, partition) DO NOTHING

-- name: select_positions
SELECT partition, next_offset, topic_id, coalesce(ledger_topic, topic) FROM consumer_positions
WHERE consumer_group = %(group)s AND topic = %(topic)s AND partition = ANY(%(partitions)s)

-- name: record_topic_id
-- Trust on first use: the topic id is recorded once; a different one later is refused.
UPDATE consumer_positions SET topic_id = %(topic_id)s
WHERE consumer_group = %(group)s AND topic = %(topic)s AND partition = %(partition)s
  AND topic_id IS NULL

-- name: list_positions
SELECT consumer_group, topic, partition, next_offset, topic_id, coalesce(ledger_topic, topic),
       updated_at
FROM consumer_positions
WHERE (%(group)s::text IS NULL OR consumer_group = %(group)s)
  AND (%(topic)s::text IS NULL OR topic = %(topic)s)
ORDER BY consumer_group, topic, partition

-- name: lock_position
SELECT next_offset, topic_id, coalesce(ledger_topic, topic) FROM consumer_positions
WHERE consumer_group = %(group)s AND topic = %(topic)s AND partition = %(partition)s
FOR UPDATE

-- name: realign_position
INSERT INTO consumer_positions (consumer_group, topic, partition, next_offset, topic_id,
                                ledger_topic)
VALUES (%(group)s, %(topic)s, %(partition)s, %(offset)s, %(topic_id)s, %(ledger_topic)s)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, topic_id = EXCLUDED.topic_id,
    ledger_topic = EXCLUDED.ledger_topic, updated_at = now()

-- name: relabel_positions
-- A new ledger topic applies to every partition of (group, topic) at once: one consumer writes
-- one ledger topic name.
UPDATE consumer_positions SET ledger_topic = %(ledger_topic)s, updated_at = now()
WHERE consumer_group = %(group)s AND topic = %(topic)s

-- name: insert_realignment
INSERT INTO position_realignments (consumer_group, topic, partition, old_offset, new_offset,
    old_topic_id, new_topic_id, old_ledger_topic, new_ledger_topic, log_start, log_end, reason,
    operator)
VALUES (%(group)s, %(topic)s, %(partition)s, %(old_offset)s, %(new_offset)s, %(old_topic_id)s,
    %(new_topic_id)s, %(old_ledger_topic)s, %(new_ledger_topic)s, %(log_start)s, %(log_end)s,
    %(reason)s, %(operator)s)

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
-- The fingerprint from the idempotency guard (ledger_commands, one row per tenant command_id),
-- the event from the ledger through its primary key with recorded_at, so only the partition of
-- that month is probed (run-time pruning of the nested loop's inner side). The keys come as one
-- JSON array of [tenant_id, command_id] pairs: psycopg renders two text arrays of a 2,000-command
-- batch in ~3.8 ms of the consumer's CPU, orjson the same pairs in ~0.1 ms. One primary-key
-- probe of ledger_commands per key, by construction (a LATERAL sub-select on the key, as
-- select_settled_reservations): as a join, the prepared statement's generic plan on a guard
-- table never analysed (a new ledger) is a hash join over a scan of the whole table.
SELECT g.tenant_id, g.command_id, g.command_fingerprint, l.event::text
FROM json_array_elements(%(keys)s::json) AS e
CROSS JOIN LATERAL (
    SELECT * FROM ledger_commands WHERE tenant_id = e->>0 AND command_id = e->>1
    OFFSET 0
) AS g
JOIN ledger l ON l.kafka_topic = g.kafka_topic AND l.kafka_partition = g.kafka_partition
             AND l.kafka_offset = g.kafka_offset AND l.recorded_at = g.recorded_at

-- name: select_budget_events
SELECT l.tenant_id, l.budget_id, l.event::text
FROM ledger l
JOIN unnest(%(tenants)s::text[], %(budgets)s::text[]) AS b(tenant_id, budget_id)
  ON l.tenant_id = b.tenant_id AND l.budget_id = b.budget_id
ORDER BY l.tenant_id, l.budget_id, l.sequence

-- name: copy_ledger
-- reason and utilization_bp (migration 014): the event's, as columns for the report's
-- index-only scan (utilization_bp = the event's utilization_pct × 100). Binary: the columns'
-- types are store.LEDGER_COPY_TYPES (store.append_ledger_rows).
COPY ledger (tenant_id, budget_id, sequence, type, command_id, command_fingerprint, ref_id,
             currency, amount, funded, reserved, charged, available, kafka_topic,
             kafka_partition, kafka_offset, event, recorded_at, prev_hash, hash, reason,
             utilization_bp)
FROM STDIN (FORMAT BINARY)

-- name: copy_ledger_mac
-- copy_ledger with the keyed chain's columns (a consumer that holds LEDGER_CHAIN_KEY_ID).
COPY ledger (tenant_id, budget_id, sequence, type, command_id, command_fingerprint, ref_id,
             currency, amount, funded, reserved, charged, available, kafka_topic,
             kafka_partition, kafka_offset, event, recorded_at, prev_hash, hash, reason,
             utilization_bp, mac, mac_key_id)
FROM STDIN (FORMAT BINARY)

-- name: copy_outbox
COPY outbox (topic, key, payload, headers) FROM STDIN

-- name: claim_relay_cursors
-- Each relay process takes the partitions no other relay is working on right now.
SELECT topic, partition, last_offset FROM relay_cursors ORDER BY topic, partition
FOR UPDATE SKIP LOCKED

-- name: select_unpublished_events
SELECT l.kafka_topic, l.kafka_partition, l.kafka_offset, l.tenant_id, l.budget_id, l.type,
       l.event::text
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(after)s::bigint[])
     AS c(topic, partition, last_offset)
CROSS JOIN LATERAL (
    SELECT kafka_topic, kafka_partition, kafka_offset, tenant_id, budget_id, type, event
    FROM ledger
    WHERE kafka_topic = c.topic AND kafka_partition = c.partition
      AND kafka_offset > c.last_offset
    ORDER BY kafka_offset
    LIMIT %(limit)s
) AS l

-- name: advance_relay_cursor
UPDATE relay_cursors SET last_offset = %(offset)s, updated_at = now()
WHERE topic = %(topic)s AND partition = %(partition)s

-- name: claim_outbox
SELECT id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: delete_outbox
DELETE FROM outbox WHERE id = ANY(%(ids)s)

-- name: select_holds
-- The held budgets of the partitions this relay claimed (and what the operator asked for).
SELECT topic, partition, tenant_id, budget_id, action, requested_by
FROM relay_holds
WHERE (topic, partition) IN (SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[]))

-- name: insert_hold
INSERT INTO relay_holds (topic, partition, tenant_id, budget_id, error)
VALUES (%(topic)s, %(partition)s, %(tenant_id)s, %(budget_id)s, %(error)s)
ON CONFLICT (tenant_id, budget_id, topic, partition) DO NOTHING

-- name: update_hold
UPDATE relay_holds SET error = %(error)s, held_at = now(), action = NULL, requested_by = NULL,
    requested_at = NULL
WHERE topic = %(topic)s AND partition = %(partition)s AND tenant_id = %(tenant_id)s
  AND budget_id = %(budget_id)s

-- name: delete_hold
DELETE FROM relay_holds
WHERE topic = %(topic)s AND partition = %(partition)s AND tenant_id = %(tenant_id)s
  AND budget_id = %(budget_id)s

-- name: insert_set_aside
INSERT INTO relay_set_aside (kind, state, topic, partition, kafka_offset, tenant_id, budget_id,
    destination, key, payload, headers, size_bytes, error)
VALUES (%(kind)s, %(state)s, %(topic)s, %(partition)s, %(offset)s, %(tenant_id)s, %(budget_id)s,
    %(destination)s, %(key)s, %(payload)s, %(headers)s::jsonb, %(size)s, %(error)s)

-- name: select_held_events
-- A held budget's events not yet published, in the order they must go out.
SELECT s.id, s.state, s.kafka_offset, l.type, l.event::text
FROM relay_set_aside s
JOIN ledger l ON l.kafka_topic = s.topic AND l.kafka_partition = s.partition
             AND l.kafka_offset = s.kafka_offset
WHERE s.kind = 'event' AND s.state IN ('held', 'waiting')
  AND s.tenant_id = %(tenant_id)s AND s.budget_id = %(budget_id)s
  AND s.topic = %(topic)s AND s.partition = %(partition)s
ORDER BY s.kafka_offset

-- name: resolve_set_aside
UPDATE relay_set_aside SET state = %(state)s, resolved_at = now(), resolved_by = %(by)s,
    error = coalesce(%(error)s, error)
WHERE id = ANY(%(ids)s)

-- name: request_release
UPDATE relay_holds SET action = %(action)s, requested_by = %(by)s, requested_at = now()
WHERE tenant_id = %(tenant_id)s AND budget_id = %(budget_id)s
RETURNING topic, partition

-- name: list_set_aside
SELECT id, kind, state, topic, partition, kafka_offset, tenant_id, budget_id, destination,
       size_bytes, error, set_aside_at, resolved_at, resolved_by
FROM relay_set_aside
WHERE %(all)s OR state IN ('held', 'waiting')
ORDER BY id

-- name: list_holds
SELECT topic, partition, tenant_id, budget_id, held_at, error, action, requested_by
FROM relay_holds ORDER BY held_at

-- name: requeue_outbox_set_aside
-- Put a set-aside outbox row back into the outbox (after the cause was fixed, e.g. the topic's
-- max.message.bytes raised).
WITH s AS (
    UPDATE relay_set_aside SET state = 'published', resolved_at = now(), resolved_by = %(by)s
    WHERE id = %(id)s AND kind = 'outbox' AND state = 'held'
    RETURNING destination, key, payload, headers
)
INSERT INTO outbox (topic, key, payload, headers)
SELECT destination, key, payload, headers FROM s
RETURNING id

-- name: skip_outbox_set_aside
UPDATE relay_set_aside SET state = 'skipped', resolved_at = now(), resolved_by = %(by)s
WHERE id = %(id)s AND kind = 'outbox' AND state = 'held'
RETURNING id

-- name: relay_offsets_behind
-- Relay lag per cursor: offsets between the cursor and the ledger's last row (index only).
SELECT c.topic, c.partition,
       coalesce((SELECT max(kafka_offset) FROM ledger
                 WHERE kafka_topic = c.topic AND kafka_partition = c.partition), -1)
       - c.last_offset
FROM relay_cursors c

-- name: relay_backlog
SELECT (SELECT count(*) FROM outbox),
       (SELECT count(*) FROM relay_set_aside WHERE state IN ('held', 'waiting')),
       (SELECT count(*) FROM relay_holds)


-- ---------------------------------------------------------------------------------------------
-- The partitioned ledger (migration 008, ledger/table_partitions.py, projections/ledger_pages.py).

-- name: ensure_ledger_partitions
-- Monthly partitions from the current UTC month to `ahead` months later (SECURITY DEFINER
-- function, EXECUTE granted to ledger_app); one row per month with what was done.
SELECT partition_name, range_from, range_to, outcome FROM ledger_ensure_partitions(%(ahead)s)

-- name: list_ledger_partitions
-- The partitions in bound order (legacy first, DEFAULT last): bounds, the planner's row
-- estimate (NULL before the first ANALYZE), size, and whether the partition has its own
-- UNIQUE (tenant_id, budget_id, sequence) (`partitions ensure` adds a missing one).
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid),
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END,
       pg_total_relation_size(c.oid),
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'u'
               AND k.conname = c.relname || '_sequence_key')
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'ledger'::regclass
ORDER BY pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
         pg_get_expr(c.relpartbound, c.oid) NOT LIKE 'FOR VALUES FROM (MINVALUE)%%',
         c.relname

-- name: count_default_partition_rows
-- Rows that found no monthly partition (exact: the DEFAULT partition is normally empty).
SELECT count(*) FROM ledger_default

-- name: ledger_page
-- Entries of one budget recorded in [since, until), newest first, one page of a keyset walk on
-- (recorded_at, sequence): the first page passes (until, 0), the next ones the last row's
-- (recorded_at, sequence). The plain bounds on recorded_at prune the partitions; the index
-- ledger_budget_pages (tenant_id, budget_id, recorded_at DESC, sequence DESC) serves the order.
SELECT tenant_id, budget_id, sequence, type, command_id, ref_id, currency, amount, funded,
       reserved, charged, available, recorded_at, hash, event::text
FROM ledger
WHERE tenant_id = %(tenant)s AND budget_id = %(budget)s
  AND recorded_at >= %(since)s AND recorded_at <= %(before_at)s
  AND (recorded_at, sequence) < (%(before_at)s, %(before_seq)s)
ORDER BY recorded_at DESC, sequence DESC
LIMIT %(limit)s
