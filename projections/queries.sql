-- Named queries of the balance and reservation projections. Bound parameters only.

-- name: create_staging
CREATE TEMP TABLE IF NOT EXISTS staging_balances
    (LIKE budget_balances INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_reservations
    (LIKE reservations INCLUDING DEFAULTS) ON COMMIT DELETE ROWS

-- name: copy_staging_balances
COPY staging_balances (tenant_id, budget_id, currency, opened, funded, reserved, charged,
                       available, budget_limit, utilization_pct, sequence, last_hash,
                       period_start, config, updated_at, digits, above_soft, above_hard,
                       cap_reached_alerted, snapshot_seq, monitors)
FROM STDIN

-- name: merge_balances
INSERT INTO budget_balances SELECT * FROM staging_balances
ON CONFLICT (tenant_id, budget_id) DO UPDATE SET
    currency = EXCLUDED.currency, opened = EXCLUDED.opened, funded = EXCLUDED.funded,
    reserved = EXCLUDED.reserved, charged = EXCLUDED.charged, available = EXCLUDED.available,
    budget_limit = EXCLUDED.budget_limit, utilization_pct = EXCLUDED.utilization_pct,
    sequence = EXCLUDED.sequence, last_hash = EXCLUDED.last_hash,
    period_start = EXCLUDED.period_start, config = EXCLUDED.config,
    updated_at = EXCLUDED.updated_at, digits = EXCLUDED.digits,
    above_soft = EXCLUDED.above_soft, above_hard = EXCLUDED.above_hard,
    cap_reached_alerted = EXCLUDED.cap_reached_alerted, snapshot_seq = EXCLUDED.snapshot_seq,
    monitors = EXCLUDED.monitors

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


-- ---------------------------------------------------------------------------------------------
-- Reconciler and rebuild (projections/reconcile.py, rebuild.py, kafka_check.py).

-- name: reconcile_ledger_scan
-- One shard's ledger rows in PHYSICAL order (a plain sequential scan: no ORDER BY, no sort, no
-- index walk). The ledger is append-only and each budget has a single writer that COPYs its rows
-- in sequence order, so physical order within a budget is normally sequence order; the reconciler
-- verifies that row by row and buffers (or re-reads in order, `reconcile_budget_events`) any
-- budget whose rows arrive out of order. Run with max_parallel_workers_per_gather = 0: a Gather
-- would interleave the rows of parallel workers. Shards split budgets by hash.
SELECT tenant_id, budget_id, sequence, type, funded, reserved, charged, available, event::text,
       mac, mac_key_id, reason, utilization_bp
FROM ledger
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
  AND (%(shards)s::int = 1 OR abs(hashtext(budget_id) %% %(shards)s::int) = %(shard)s::int)

-- name: reconcile_budget_events
-- The fallback for one budget whose rows were not in sequence order physically (or repeated a
-- sequence): its ledger rows by sequence, same columns as reconcile_ledger_scan.
SELECT tenant_id, budget_id, sequence, type, funded, reserved, charged, available, event::text,
       mac, mac_key_id, reason, utilization_bp
FROM ledger
WHERE tenant_id = %(tenant)s AND budget_id = %(budget)s
ORDER BY sequence

-- name: reconcile_balances
-- One shard's balance projection rows (read in the same snapshot as the ledger scan).
SELECT tenant_id, budget_id, funded, reserved, charged, available,
       json_build_array(currency, opened, budget_limit, utilization_pct::text, sequence,
                        last_hash, period_start, config, digits, above_soft, above_hard,
                        cap_reached_alerted, snapshot_seq, monitors)::text
FROM budget_balances
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
  AND (%(shards)s::int = 1 OR abs(hashtext(budget_id) %% %(shards)s::int) = %(shard)s::int)

-- name: reconcile_reservations
-- One shard's reservation projection rows (same snapshot).
SELECT tenant_id, budget_id,
       json_build_array(ref_id, status, amount, charged,
                        to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                        command_id, created_seq, updated_seq)::text
FROM reservations
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
  AND (%(shards)s::int = 1 OR abs(hashtext(budget_id) %% %(shards)s::int) = %(shard)s::int)

-- name: ledger_size_estimate
-- For the progress bar's ETA only: the planner's row estimate, free to read. The partitioned
-- ledger (migration 008) has no estimate of its own: the sum of its partitions'.
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint
FROM pg_class c
WHERE c.oid = 'ledger'::regclass
   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'ledger'::regclass)

-- name: count_ledger_events
SELECT count(*) FROM ledger
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)

-- name: unpublished_events
-- Per (ledger topic, command partition): the relay cursor, the ledger's last offset, and how many
-- events (and since when) sit after the cursor or wait in the relay's set-aside list (a held
-- budget is not published). A loose index scan finds the partitions without a full scan.
WITH RECURSIVE parts AS (
    (SELECT kafka_topic AS t, kafka_partition AS p FROM ledger
     ORDER BY kafka_topic, kafka_partition LIMIT 1)
    UNION ALL
    SELECT n.t, n.p FROM parts
    CROSS JOIN LATERAL (SELECT kafka_topic AS t, kafka_partition AS p FROM ledger
                        WHERE (kafka_topic, kafka_partition) > (parts.t, parts.p)
                        ORDER BY kafka_topic, kafka_partition LIMIT 1) AS n
)
SELECT parts.p, coalesce(c.last_offset, -1), m.max_offset, u.pending + s.held,
       least(u.oldest, s.oldest)
FROM parts
LEFT JOIN relay_cursors c ON c.topic = parts.t AND c.partition = parts.p
CROSS JOIN LATERAL (SELECT max(kafka_offset) AS max_offset FROM ledger
                    WHERE kafka_topic = parts.t AND kafka_partition = parts.p) AS m
CROSS JOIN LATERAL (SELECT count(*) AS pending, min(recorded_at) AS oldest FROM ledger
                    WHERE kafka_topic = parts.t AND kafka_partition = parts.p
                      AND kafka_offset > coalesce(c.last_offset, -1)) AS u
CROSS JOIN LATERAL (SELECT count(*) AS held, min(set_aside_at) AS oldest FROM relay_set_aside
                    WHERE kind = 'event' AND state IN ('held', 'waiting')
                      AND topic = parts.t AND partition = parts.p) AS s
ORDER BY parts.t, parts.p

-- name: insert_alert
INSERT INTO outbox (topic, key, payload, headers)
VALUES (%(topic)s, %(key)s, %(payload)s, %(headers)s::jsonb)

-- name: record_alert
-- A reconciler alert in the alert history (migration 012) beside its outbox row: once per budget
-- and ledger position, so an hourly run that finds the same drift again publishes it again but
-- records it once (the history is append-only: DO NOTHING, never an update).
INSERT INTO alerts (tenant_id, budget_id, sequence, type, severity, utilization_bp,
                    threshold_bp, recorded_at, payload)
VALUES (%(tenant)s, %(budget)s, %(sequence)s, %(type)s, %(severity)s, %(utilization_bp)s,
        %(threshold_bp)s, %(recorded_at)s, %(payload)s::jsonb)
ON CONFLICT (tenant_id, budget_id, sequence, type, monitor_id) DO NOTHING

-- name: ledger_hashes
-- The --source kafka comparison: what the events topic should hold, budget by budget.
SELECT tenant_id, budget_id, sequence, hash, kafka_topic, kafka_partition, kafka_offset
FROM ledger
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
ORDER BY tenant_id, budget_id, sequence

-- name: relay_cursors
SELECT topic, partition, last_offset FROM relay_cursors

-- name: lock_projections
-- Rebuild: readers keep reading the old rows; writers (the consumer's upsert) wait until commit.
LOCK TABLE budget_balances, reservations IN EXCLUSIVE MODE

-- name: rebuild_in_index_order
-- Rebuild streams its read (planned for all its rows, not for a cursor's first ones): on a large
-- ledger the planner would sort every row before sending the first (a 26M-row ledger measured);
-- the sequence key's index gives the order. For the rebuild's transaction only.
SET LOCAL enable_sort = off

-- name: rebuild_stream
-- Rebuild: the whole ledger (or one tenant/budget) in replay order, only what `evolve` needs.
SELECT tenant_id, budget_id, event::text
FROM ledger
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
ORDER BY tenant_id, budget_id, sequence

-- name: delete_balances
DELETE FROM budget_balances
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)

-- name: delete_reservations
DELETE FROM reservations
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)

-- name: copy_balances
COPY budget_balances (tenant_id, budget_id, currency, opened, funded, reserved, charged,
                      available, budget_limit, utilization_pct, sequence, last_hash,
                      period_start, config, updated_at, digits, above_soft, above_hard,
                      cap_reached_alerted, snapshot_seq, monitors)
FROM STDIN

-- name: copy_reservations
COPY reservations (tenant_id, budget_id, ref_id, status, amount, charged, expires_at,
                   command_id, created_seq, updated_seq)
FROM STDIN

-- name: last_sequence_before
-- reconcile --source kafka, retention: per budget, the last sequence recorded before a cut-off
-- (the first event still retained on the budget's events partition).
SELECT c.tenant_id, c.budget_id, max(l.sequence)
FROM unnest(%(tenants)s::text[], %(budgets)s::text[], %(cutoffs)s::timestamptz[])
     AS c(tenant_id, budget_id, cutoff)
JOIN ledger l ON l.tenant_id = c.tenant_id AND l.budget_id = c.budget_id
             AND l.recorded_at < c.cutoff
GROUP BY c.tenant_id, c.budget_id


-- ---------------------------------------------------------------------------------------------
-- Per-tenant SQL readers (projections/readers.py, `budget-ledger readers create`; run as owner).
-- {role} is an identifier and {verifier} a SCRAM verifier (never the password), composed by
-- psycopg.sql: role DDL takes no bound parameters.

-- name: reader_mapping
SELECT r.tenant_id, m.rolname IS NOT NULL
FROM (SELECT %(role)s::name AS role) AS q
LEFT JOIN tenant_readers r ON r.role = q.role
LEFT JOIN pg_roles m ON m.rolname = q.role

-- name: create_reader_role
CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION
    INHERIT PASSWORD {verifier} IN ROLE ledger_tenant_reader

-- name: reset_reader_password
ALTER ROLE {role} PASSWORD {verifier}

-- name: insert_reader_mapping
INSERT INTO tenant_readers (role, tenant_id) VALUES (%(role)s, %(tenant)s)
ON CONFLICT (role) DO NOTHING


-- ---------------------------------------------------------------------------------------------
-- The keyed chain's legacy cut-over (projections/chain_seal.py, projections/shard.py).

-- name: reconcile_legacy_seals
SELECT tenant_id, budget_id, sequence, hash, mac, mac_key_id
FROM chain_legacy_seals
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
  AND (%(shards)s::int = 1 OR abs(hashtext(budget_id) %% %(shards)s::int) = %(shard)s::int)

-- name: reconcile_legacy_seals_of
-- The legacy seals of the given budgets (an incremental run's touched budgets).
SELECT s.tenant_id, s.budget_id, s.sequence, s.hash, s.mac, s.mac_key_id
FROM (SELECT e->>0 AS tenant_id, e->>1 AS budget_id
      FROM json_array_elements(%(keys)s::json) AS e) AS t
JOIN chain_legacy_seals s ON s.tenant_id = t.tenant_id AND s.budget_id = t.budget_id

-- name: unkeyed_chain_heads
-- Per budget, its last row without a MAC: what `ledger seal-legacy` vouches for.
SELECT DISTINCT ON (tenant_id, budget_id) tenant_id, budget_id, sequence, hash
FROM ledger
WHERE mac IS NULL
ORDER BY tenant_id, budget_id, sequence DESC

-- name: upsert_legacy_seal
INSERT INTO chain_legacy_seals (tenant_id, budget_id, sequence, hash, mac, mac_key_id)
VALUES (%(tenant)s, %(budget)s, %(sequence)s, %(hash)s, %(mac)s, %(key_id)s)
ON CONFLICT (tenant_id, budget_id) DO UPDATE SET
    sequence = EXCLUDED.sequence, hash = EXCLUDED.hash, mac = EXCLUDED.mac,
    mac_key_id = EXCLUDED.mac_key_id, sealed_by = current_user, sealed_at = now()


-- ---------------------------------------------------------------------------------------------
-- Incremental reconcile (projections/checkpoints.py, projections/shard.py; migration 006).

-- name: reconcile_checkpoints
-- One shard's checkpoints (full runs): the last (sequence, hash) a run verified clean, per
-- budget, and the state stored there, which the replay checks when it reaches that sequence.
SELECT tenant_id, budget_id, sequence, hash, state
FROM reconcile_checkpoints
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
  AND (%(shards)s::int = 1 OR abs(hashtext(budget_id) %% %(shards)s::int) = %(shard)s::int)

-- name: reconcile_touched_budgets
-- The first incremental run (no run recorded in reconcile_runs yet): one shard's budgets whose
-- ledger moved since their checkpoint: no checkpoint yet, or the budget's last row (sequence,
-- hash) is not the checkpointed one (rows after it, or rows lost), with the checkpoint and its
-- stored state. The budgets come from the ledger itself (a loose index scan over
-- UNIQUE (tenant_id, budget_id, sequence): one index probe per budget, never a table scan) and
-- from the checkpoints (a budget whose rows all vanished); the last row is one backward index
-- probe. Nothing here trusts the projections, which ledger_app can edit (the balance row comes
-- along, same columns as reconcile_touched_since, for the drift check; not the open
-- reservations: reconcile_reservations_of reads them). Cost ∝ budgets: later runs use
-- reconcile_touched_since.
WITH RECURSIVE in_ledger AS (
    (SELECT tenant_id, budget_id FROM ledger
     WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
       AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
     ORDER BY tenant_id, budget_id LIMIT 1)
    UNION ALL
    SELECT n.tenant_id, n.budget_id FROM in_ledger p
    CROSS JOIN LATERAL (SELECT tenant_id, budget_id FROM ledger
                        WHERE (tenant_id, budget_id) > (p.tenant_id, p.budget_id)
                          AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
                          AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
                        ORDER BY tenant_id, budget_id LIMIT 1) AS n
), budgets AS (
    SELECT tenant_id, budget_id FROM in_ledger
    UNION
    SELECT tenant_id, budget_id FROM reconcile_checkpoints
    WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
      AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
)
SELECT b.tenant_id, b.budget_id, c.sequence, c.hash, c.state, c.recorded_at,
       false AS from_window,
       p.tenant_id, p.funded, p.reserved, p.charged, p.available,
       json_build_array(p.currency, p.opened, p.budget_limit, p.utilization_pct::text,
                        p.sequence, p.last_hash, p.period_start, p.config, p.digits,
                        p.above_soft, p.above_hard, p.cap_reached_alerted, p.snapshot_seq,
                        p.monitors)::text,
       NULL::text AS open_reservations
FROM budgets b
LEFT JOIN reconcile_checkpoints c ON c.tenant_id = b.tenant_id AND c.budget_id = b.budget_id
LEFT JOIN LATERAL (SELECT l.sequence, l.hash FROM ledger l
                   WHERE l.tenant_id = b.tenant_id AND l.budget_id = b.budget_id
                     AND c.sequence IS NOT NULL AND l.sequence >= c.sequence
                     AND l.recorded_at >= coalesce(c.recorded_at - %(margin)s::interval,
                                                   '-infinity')
                   ORDER BY l.sequence DESC LIMIT 1) AS head ON true
LEFT JOIN budget_balances p ON p.tenant_id = b.tenant_id AND p.budget_id = b.budget_id
WHERE (%(shards)s::int = 1 OR abs(hashtext(b.budget_id) %% %(shards)s::int) = %(shard)s::int)
  AND (c.sequence IS NULL OR head.sequence IS NULL
       OR (head.sequence, head.hash) <> (c.sequence, c.hash)
       OR p.sequence IS DISTINCT FROM c.sequence)

-- name: reconcile_last_run
-- The last run that recorded itself (an unfiltered run that wrote checkpoints): when it began
-- and the budgets it found drifting.
SELECT started_at, drifting_tenants, drifting_budgets
FROM reconcile_runs
ORDER BY id DESC
LIMIT 1

-- name: reconcile_touched_since
-- Later incremental runs, set-based (no per-budget probe but one, below): the candidates are
-- the budgets of ledger rows recorded at or after %(since)s (the last run's start minus the
-- margin; the BRIN index ledger_recorded_at_brin reads only the block ranges written since, so
-- the cost follows the new rows, not the history), each with its last row among those rows
-- (sequence and hash), joined to its checkpoint and balance row; a candidate is kept when that
-- row is not its checkpoint (new rows, rows lost, or the checkpointed row rewritten) or its
-- balance row's sequence is not the checkpoint's (a cheap extra trigger: it can only add
-- budgets to replay). The budgets the last run found drifting are
-- always kept (reported until fixed). A kept budget whose new rows are all in the range
-- (from_window) has them read by reconcile_rows_since, with its checkpointed row when that
-- lies in the range too; no row before the range is read (its checkpointed row then neither:
-- checked by --full, like every row before it; docs/reconciler.md). The balance row comes
-- as the seven columns of reconcile_balances (NULLs without one), then the budget's OPEN
-- reservations as one JSON array of reconcile_reservations arrays (NULL: none; through the
-- partial index reservations_open_by_budget). A row written with an old
-- recorded_at is not a candidate: the periodic --full finds it (docs/reconciler.md).
WITH candidates AS (
    -- The last row as one text, zero-padded sequence then hash, so that a hash aggregate's max
    -- finds it: no sort of the range (DISTINCT ON sorted it, spilling to disk at 300,000 rows).
    SELECT tenant_id, budget_id, max(lpad(sequence::text, 19, '0') || hash) AS top
    FROM ledger
    WHERE recorded_at >= %(since)s
      AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
      AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
      AND (%(shards)s::int = 1 OR abs(hashtext(budget_id) %% %(shards)s::int) = %(shard)s::int)
    GROUP BY tenant_id, budget_id
), drifting AS (
    SELECT DISTINCT tenant_id, budget_id
    FROM unnest(%(drifting_tenants)s::text[], %(drifting_budgets)s::text[])
         AS d(tenant_id, budget_id)
    WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
      AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)
      AND (%(shards)s::int = 1 OR abs(hashtext(budget_id) %% %(shards)s::int) = %(shard)s::int)
), kept AS (
    -- from_window: the budget's new rows are all in the range, so reconcile_rows_since reads
    -- them; else (the drifting budgets) reconcile_events_of reads them from the checkpoint.
    -- Every checkpointed candidate's are: the last recorded run checkpointed each budget with
    -- rows recorded since ITS range began, or reported it drifting, so a row after a checkpoint
    -- older than that run was recorded after it began, minus the margin - which is where this
    -- range begins (a clock behind by more than the margin breaks this: the replay then sees a
    -- gap and re-reads the budget whole, BudgetReplay.unseen_rows).
    SELECT b.tenant_id, b.budget_id, c.sequence, c.hash, c.state, c.recorded_at,
           c.sequence IS NOT NULL AS from_window,
           p.tenant_id AS p_tenant, p.funded, p.reserved, p.charged, p.available,
           json_build_array(p.currency, p.opened, p.budget_limit, p.utilization_pct::text,
                            p.sequence, p.last_hash, p.period_start, p.config, p.digits,
                            p.above_soft, p.above_hard, p.cap_reached_alerted, p.snapshot_seq,
                            p.monitors)::text AS balance
    FROM candidates b
    LEFT JOIN reconcile_checkpoints c ON c.tenant_id = b.tenant_id AND c.budget_id = b.budget_id
    LEFT JOIN budget_balances p ON p.tenant_id = b.tenant_id AND p.budget_id = b.budget_id
    WHERE (c.sequence IS NULL OR b.top <> lpad(c.sequence::text, 19, '0') || c.hash
           OR p.sequence IS DISTINCT FROM c.sequence)
      AND NOT EXISTS (SELECT 1 FROM drifting d
                      WHERE d.tenant_id = b.tenant_id AND d.budget_id = b.budget_id)
    UNION ALL
    SELECT d.tenant_id, d.budget_id, c.sequence, c.hash, c.state, c.recorded_at, false,
           p.tenant_id, p.funded, p.reserved, p.charged, p.available,
           json_build_array(p.currency, p.opened, p.budget_limit, p.utilization_pct::text,
                            p.sequence, p.last_hash, p.period_start, p.config, p.digits,
                            p.above_soft, p.above_hard, p.cap_reached_alerted, p.snapshot_seq,
                            p.monitors)::text
    FROM drifting d
    LEFT JOIN reconcile_checkpoints c ON c.tenant_id = d.tenant_id AND c.budget_id = d.budget_id
    LEFT JOIN budget_balances p ON p.tenant_id = d.tenant_id AND p.budget_id = d.budget_id
)
SELECT k.tenant_id, k.budget_id, k.sequence, k.hash, k.state, k.recorded_at, k.from_window,
       k.p_tenant, k.funded, k.reserved, k.charged, k.available, k.balance,
       (SELECT json_agg(json_build_array(
                   r.ref_id, r.status, r.amount, r.charged,
                   to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   r.command_id, r.created_seq, r.updated_seq))::text
        FROM reservations r
        WHERE r.tenant_id = k.tenant_id AND r.budget_id = k.budget_id
          AND r.status = 'reserved') AS open_reservations
FROM kept k

-- name: reconcile_rows_since
-- The new rows of the budgets replayed from their checkpoint, in ONE pass over the range the
-- candidates came from (recorded_at >= %(since)s: the partitions written since), each
-- budget's rows from its checkpointed sequence on (the checkpointed row itself when it lies in
-- the range: the replay checks its hash); same columns as reconcile_ledger_scan. No ORDER
-- BY (no sort): the replay applies each budget's rows in sequence order whatever order they
-- come in (an early row is held until its predecessor came), as in a full run's physical scan.
-- The bound is a constant, so the plan holds only the partitions written since (the
-- planner then joins the keys to them, typically by index, rows in cache). A row after the
-- checkpoint recorded before the range (a clock behind by more than the margin) is not read: the replay sees a gap, or a
-- balance row ahead of it, and re-reads that budget whole (BudgetReplay.unseen_rows).
SELECT l.tenant_id, l.budget_id, l.sequence, l.type, l.funded, l.reserved, l.charged,
       l.available, l.event::text, l.mac, l.mac_key_id, l.reason, l.utilization_bp
FROM ledger l
JOIN (SELECT e->>0 AS tenant_id, e->>1 AS budget_id, (e->>2)::bigint AS after
      FROM json_array_elements(%(keys)s::json) AS e) AS t
  ON l.tenant_id = t.tenant_id AND l.budget_id = t.budget_id AND l.sequence >= t.after
WHERE l.recorded_at >= %(since)s

-- name: summarize_new_ranges
-- Before an incremental run: summarise the BRIN ranges of ledger (recorded_at) that autovacuum
-- has not (migration 019), returns how many.
SELECT ledger_summarize_new_ranges()

-- name: reconcile_checkpoint_totals
-- For the report: how many budgets carry a checkpoint and the events those cover, kept by the
-- checkpoints' triggers (migration 021): one row, whatever the number of budgets.
SELECT budgets, events FROM reconcile_checkpoint_totals

-- name: reconcile_checkpoint_totals_of
-- The same for a run filtered by tenant or budget (a range of the checkpoints' primary key).
SELECT count(*), coalesce(sum(sequence), 0)
FROM reconcile_checkpoints
WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND (%(budget)s::text IS NULL OR budget_id = %(budget)s)

-- name: reconcile_events_of
-- The ledger rows of the given budgets from the given sequence on (1: the whole history; a
-- checkpoint's sequence: the checkpointed row, checked against its hash, and the rows after
-- it), each budget's in sequence order (an index range scan per budget), same columns as
-- reconcile_ledger_scan.
SELECT l.tenant_id, l.budget_id, l.sequence, l.type, l.funded, l.reserved, l.charged,
       l.available, l.event::text, l.mac, l.mac_key_id, l.reason, l.utilization_bp
FROM (SELECT e->>0 AS tenant_id, e->>1 AS budget_id, (e->>2)::bigint AS from_seq,
             (e->>3)::timestamptz AS bound
      FROM json_array_elements(%(keys)s::json) AS e) AS t
CROSS JOIN LATERAL (SELECT * FROM ledger
                    WHERE ledger.tenant_id = t.tenant_id AND ledger.budget_id = t.budget_id
                      AND ledger.sequence >= t.from_seq
                      AND ledger.recorded_at >= coalesce(t.bound, '-infinity')
                    ORDER BY ledger.sequence) AS l

-- name: reconcile_balances_of
-- The balance projection rows of the given budgets, same columns as reconcile_balances.
SELECT b.tenant_id, b.budget_id, b.funded, b.reserved, b.charged, b.available,
       json_build_array(b.currency, b.opened, b.budget_limit, b.utilization_pct::text,
                        b.sequence, b.last_hash, b.period_start, b.config, b.digits,
                        b.above_soft, b.above_hard, b.cap_reached_alerted, b.snapshot_seq,
                        b.monitors)::text
FROM (SELECT e->>0 AS tenant_id, e->>1 AS budget_id
      FROM json_array_elements(%(keys)s::json) AS e) AS t
JOIN budget_balances b ON b.tenant_id = t.tenant_id AND b.budget_id = t.budget_id

-- name: reconcile_reservations_of
-- The reservation projection rows of the given budgets, same columns as reconcile_reservations:
-- all of them for the budgets replayed whole (the fifth element of their key true), only the
-- open ones (the partial index reservations_open_by_budget) for those replayed from their
-- checkpoint's state, whose settled rows were verified by the run that wrote it (the ones
-- settled since come from reconcile_reservations_by_ref).
SELECT r.tenant_id, r.budget_id,
       json_build_array(r.ref_id, r.status, r.amount, r.charged,
                        to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                        r.command_id, r.created_seq, r.updated_seq)::text
FROM (SELECT e->>0 AS tenant_id, e->>1 AS budget_id, (e->>4)::boolean AS whole
      FROM json_array_elements(%(keys)s::json) AS e) AS t
JOIN reservations r ON r.tenant_id = t.tenant_id AND r.budget_id = t.budget_id
WHERE t.whole
UNION ALL
SELECT r.tenant_id, r.budget_id,
       json_build_array(r.ref_id, r.status, r.amount, r.charged,
                        to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                        r.command_id, r.created_seq, r.updated_seq)::text
FROM (SELECT e->>0 AS tenant_id, e->>1 AS budget_id, (e->>4)::boolean AS whole
      FROM json_array_elements(%(keys)s::json) AS e) AS t
JOIN reservations r ON r.tenant_id = t.tenant_id AND r.budget_id = t.budget_id
                   AND r.status = 'reserved'
WHERE NOT t.whole

-- name: reconcile_reservations_by_ref
-- The settled reservation rows of the given (tenant, budget, ref_id), by primary key: for a
-- budget replayed from its checkpoint, the reservations its new events settled.
SELECT r.tenant_id, r.budget_id,
       json_build_array(r.ref_id, r.status, r.amount, r.charged,
                        to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                        r.command_id, r.created_seq, r.updated_seq)::text
FROM (SELECT e->>0 AS tenant_id, e->>1 AS budget_id, e->>2 AS ref_id
      FROM json_array_elements(%(keys)s::json) AS e) AS k
JOIN reservations r
  ON r.tenant_id = k.tenant_id AND r.budget_id = k.budget_id AND r.ref_id = k.ref_id
WHERE r.status <> 'reserved'

-- name: create_staging_checkpoints
-- The checkpoints of one shard arrive by COPY (one round trip), then one merge: 50,000
-- checkpoints with their ~700-byte states took 0.8 s this way against 1.2 s as one JSON
-- document through jsonb_array_elements (the 20M-event ledger, 2026-11-27).
CREATE TEMP TABLE staging_checkpoints (
    tenant_id text, budget_id text, sequence bigint, hash text, state text,
    recorded_at timestamptz
) ON COMMIT DROP

-- name: copy_staging_checkpoints
-- Binary: the recorded_at values are not formatted here nor parsed there (0.15 -> 0.07 s of
-- the backend's CPU for 25,000 checkpoints).
COPY staging_checkpoints (tenant_id, budget_id, sequence, hash, state, recorded_at)
FROM STDIN (FORMAT BINARY)

-- name: merge_checkpoints_memory
-- For the merge's transaction: the totals' statement triggers (migration 021) keep every old and
-- new row of the merge in transition tables, ~22 MB for one shard's 25,000 checkpoints with
-- their states, which spilled to temporary files at the default 4 MB: 25,000 upserts took
-- 296-343 ms so, 231-233 ms at 64 MB, the same as with the triggers off.
SET LOCAL work_mem = '64MB'

-- name: merge_checkpoints
-- Advance the checkpoints of budgets that verified clean, with their verified state (run as
-- ledger_reconciler).
INSERT INTO reconcile_checkpoints (tenant_id, budget_id, sequence, hash, state, recorded_at)
SELECT tenant_id, budget_id, sequence, hash, state, recorded_at FROM staging_checkpoints
ON CONFLICT (tenant_id, budget_id) DO UPDATE SET
    sequence = EXCLUDED.sequence, hash = EXCLUDED.hash, state = EXCLUDED.state,
    recorded_at = EXCLUDED.recorded_at, verified_at = now(), verified_by = current_user

-- name: insert_reconcile_run
-- Record an unfiltered run that wrote checkpoints (as ledger_reconciler, with them).
INSERT INTO reconcile_runs (mode, started_at, clean, events, budgets, drifting_tenants,
                            drifting_budgets)
VALUES (%(mode)s, %(started_at)s, %(clean)s, %(events)s, %(budgets)s,
        %(drifting_tenants)s::text[], %(drifting_budgets)s::text[])


-- ---------------------------------------------------------------------------------------------
-- State loaded from the projections (projections/state_loading.py; migration 007).

-- name: load_budget_snapshots
-- The balance rows of the given budgets, in `copy_staging_balances` column order, each with its
-- OPEN reservations as one JSON array of `copy_staging_reservations` rows from ref_id on (times
-- as the RFC 3339 text the consumer writes). One statement: one snapshot, one round trip. The
-- reservations are read (through reservations_open_by_budget) only for a usable snapshot.
SELECT b.tenant_id, b.budget_id, b.currency, b.opened, b.funded, b.reserved, b.charged,
       b.available, b.budget_limit, b.utilization_pct::text, b.sequence, b.last_hash,
       b.period_start, b.config::text, b.updated_at, b.digits, b.above_soft, b.above_hard,
       b.cap_reached_alerted, b.snapshot_seq, b.monitors::text,
       (SELECT json_agg(json_build_array(
                   r.ref_id, r.status, r.amount, r.charged,
                   to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   r.command_id, r.created_seq, r.updated_seq))::text
        FROM reservations r
        WHERE r.tenant_id = b.tenant_id AND r.budget_id = b.budget_id
          AND r.status = 'reserved' AND b.snapshot_seq = b.sequence)
FROM unnest(%(tenants)s::text[], %(budgets)s::text[]) AS k(tenant_id, budget_id)
JOIN budget_balances b ON b.tenant_id = k.tenant_id AND b.budget_id = k.budget_id

-- name: select_settled_reservations
-- The settled (charged, released, expired) reservations among the given (tenant, budget,
-- ref_id), by primary key: the consumer's once-per-batch look-up of refs not open in memory.
-- The keys come as one JSON array of [tenant, budget, ref_id] (cheaper to send than three
-- text arrays, see select_prior_commands). One primary-key probe per key, by construction (a
-- LATERAL sub-select on the key): as a join, the planner costed the keys at json_array_elements'
-- default 100 rows, and the prepared statement's plan, made while the table was small, went on
-- scanning it whole: 1.6 ms a call for ~7 keys at 2,000 commands/s (pg_stat_statements).
SELECT r.tenant_id, r.budget_id, r.ref_id, r.status, r.amount, r.charged,
       to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       r.command_id, r.created_seq, r.updated_seq
FROM json_array_elements(%(keys)s::json) AS e
CROSS JOIN LATERAL (
    SELECT * FROM reservations
    WHERE tenant_id = e->>0 AND budget_id = e->>1 AND ref_id = e->>2
    OFFSET 0
) AS r
WHERE r.status <> 'reserved'
