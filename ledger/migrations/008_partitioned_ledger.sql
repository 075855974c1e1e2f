-- The partitioned ledger (docs/scaling.md, "Partitioned ledger"): `ledger` becomes a declarative
-- table PARTITION BY RANGE (recorded_at), one partition per calendar month (UTC), a DEFAULT
-- partition as the safety net, and a small non-partitioned `ledger_commands` as the global
-- idempotency guard. Every row and hash is kept: the old table is renamed and ATTACHED as the
-- first partition (zero copy of the rows; its indexes on the new keys are built once).

-- ---------------------------------------------------------------------------------------------
-- 1. The old single table steps aside as `ledger_legacy`: keys that cannot hold on a partition
--    (no recorded_at) go, its row trigger is re-created by the parent's clone, its grants and
--    policies go (reading goes through the parent, where RLS applies).
ALTER TABLE ledger RENAME TO ledger_legacy;
ALTER SEQUENCE ledger_position_seq RENAME TO ledger_legacy_position_seq;
ALTER TABLE ledger_legacy DROP CONSTRAINT ledger_pkey;
ALTER TABLE ledger_legacy DROP CONSTRAINT ledger_tenant_id_command_id_key;
-- Kept as the partition's own UNIQUE (tenant_id, budget_id, sequence): no index rebuild.
ALTER TABLE ledger_legacy
    RENAME CONSTRAINT ledger_tenant_id_budget_id_sequence_key TO ledger_legacy_sequence_key;
DROP TRIGGER ledger_append_only ON ledger_legacy;
DROP POLICY tenant_read ON ledger_legacy;
DROP POLICY tenant_reader_read ON ledger_legacy;
REVOKE ALL ON ledger_legacy FROM PUBLIC, ledger_app, ledger_reader, ledger_tenant_reader;

-- ---------------------------------------------------------------------------------------------
-- 2. The global idempotency guard: one row per (tenant, command_id) ever recorded, written by
--    the database itself (the trigger in 3) whatever code inserts into the ledger. Its key keeps
--    the name of the old UNIQUE (tenant_id, command_id), which the consumer reads as "another
--    partition's consumer took this command_id: rewind and retry" (consumers/poison.py).
CREATE TABLE ledger_commands (
    tenant_id           text        NOT NULL,
    command_id          text        NOT NULL,
    command_fingerprint text        NOT NULL,
    kafka_topic         text        NOT NULL,
    kafka_partition     integer     NOT NULL,
    kafka_offset        bigint      NOT NULL,
    recorded_at         timestamptz NOT NULL,
    CONSTRAINT ledger_tenant_id_command_id_key PRIMARY KEY (tenant_id, command_id)
);
INSERT INTO ledger_commands (tenant_id, command_id, command_fingerprint, kafka_topic,
                             kafka_partition, kafka_offset, recorded_at)
SELECT tenant_id, command_id, command_fingerprint, kafka_topic, kafka_partition, kafka_offset,
       recorded_at
FROM ledger_legacy;
CREATE TRIGGER ledger_commands_append_only
    BEFORE UPDATE OR DELETE ON ledger_commands
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_commands_no_truncate
    BEFORE TRUNCATE ON ledger_commands
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
-- The consumer reads it (select_prior_commands); only the trigger's definer writes it, so
-- ledger_app cannot reserve command ids it never recorded.
GRANT SELECT ON ledger_commands TO ledger_app;

-- ---------------------------------------------------------------------------------------------
-- 3. The partitioned parent: same columns in the same order as the old table.
CREATE TABLE ledger (
    position            bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    tenant_id           text        NOT NULL,
    budget_id           text        NOT NULL,
    sequence            bigint      NOT NULL,
    type                text        NOT NULL,
    command_id          text        NOT NULL,
    command_fingerprint text        NOT NULL,
    ref_id              text,
    currency            text,
    amount              bigint,
    funded              bigint      NOT NULL,
    reserved            bigint      NOT NULL,
    charged             bigint      NOT NULL,
    available           bigint      NOT NULL,
    kafka_topic         text        NOT NULL,
    kafka_partition     integer     NOT NULL,
    kafka_offset        bigint      NOT NULL,
    event               jsonb       NOT NULL,
    recorded_at         timestamptz NOT NULL,
    prev_hash           text        NOT NULL,
    hash                text        NOT NULL,
    mac                 text,
    mac_key_id          text,
    -- The old table's names: ATTACH matches CHECK constraints by name.
    CONSTRAINT ledger_sequence_check CHECK (sequence > 0),
    CONSTRAINT ledger_available_check CHECK (available >= 0),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset, recorded_at)
) PARTITION BY RANGE (recorded_at);

-- "Entries of budget B between T1 and T2, newest first" (ledger_page in ledger/queries.sql).
CREATE INDEX ledger_budget_pages ON ledger (tenant_id, budget_id, recorded_at DESC, sequence DESC);

-- Row triggers on a partitioned table are cloned onto every partition, attached or future.
CREATE TRIGGER ledger_append_only
    BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Fills ledger_commands from the rows of each INSERT/COPY statement on the parent: a duplicate
-- (tenant_id, command_id) fails the statement exactly as the old UNIQUE did. SECURITY DEFINER:
-- the writer needs no right on ledger_commands.
CREATE FUNCTION ledger_record_commands() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
BEGIN
    INSERT INTO public.ledger_commands (tenant_id, command_id, command_fingerprint, kafka_topic,
                                        kafka_partition, kafka_offset, recorded_at)
    SELECT tenant_id, command_id, command_fingerprint, kafka_topic, kafka_partition,
           kafka_offset, recorded_at
    FROM new_rows;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION ledger_record_commands() FROM PUBLIC;
CREATE TRIGGER ledger_commands_guard
    AFTER INSERT ON ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_record_commands();

GRANT SELECT, INSERT ON ledger TO ledger_app;
GRANT SELECT ON ledger TO ledger_reader, ledger_tenant_reader;
ALTER TABLE ledger ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON ledger FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_reader_read ON ledger FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));

-- ---------------------------------------------------------------------------------------------
-- 4. What every partition gets besides the parent's indexes and cloned row trigger: its own
--    UNIQUE (tenant_id, budget_id, sequence) (within the partition; see docs/scaling.md for the
--    cross-partition argument), a TRUNCATE trigger (the parent's fires only for TRUNCATE ledger),
--    RLS on with no policy and no grant (a direct read is refused; read through the parent).
--    Idempotent: `ledger_ensure_partitions` re-applies it to partitions that already exist, and
--    each step runs only when missing: a partition already secured takes no lock (ALTER TABLE
--    would take an ACCESS EXCLUSIVE lock on the month being written).
CREATE FUNCTION ledger_secure_partition(part regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
AS $$
DECLARE
    rel text := (SELECT relname FROM pg_class WHERE oid = part);
    holder oid;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = part AND contype = 'u'
                   AND conname = rel || '_sequence_key') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE (tenant_id, budget_id, sequence)',
                       part, rel || '_sequence_key');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = part
                   AND tgname = 'ledger_no_truncate') THEN
        EXECUTE format('CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON %s'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION public.ledger_refuse_change()', part);
    END IF;
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = part) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    END IF;
    -- No right for anyone but the owner (a new table has none; the legacy one had grants).
    FOR holder IN SELECT DISTINCT a.grantee FROM pg_class c
                   CROSS JOIN LATERAL aclexplode(c.relacl) a
                   WHERE c.oid = part AND a.grantee <> c.relowner LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', part,
                       CASE WHEN holder = 0 THEN 'PUBLIC' ELSE holder::regrole::text END);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION ledger_secure_partition(regclass) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- 5. The old rows become the first partition, FROM (MINVALUE) TO the first month boundary after
--    their last recorded_at. An empty old table is simply dropped. The parent's identity carries
--    on after the old one (positions keep the original commit order).
DO $$
DECLARE
    last_at timestamptz;
    next_position bigint;
    boundary timestamptz;
BEGIN
    SELECT max(recorded_at) INTO last_at FROM ledger_legacy;
    IF last_at IS NULL THEN
        DROP TABLE ledger_legacy;
        RETURN;
    END IF;
    SELECT greatest((SELECT coalesce(max(position), 0) FROM ledger_legacy),
                    (SELECT last_value FROM ledger_legacy_position_seq)) + 1
    INTO next_position;
    EXECUTE format('ALTER TABLE ledger ALTER COLUMN position RESTART WITH %s', next_position);
    ALTER TABLE ledger_legacy ALTER COLUMN position DROP IDENTITY;
    boundary := (date_trunc('month', last_at AT TIME ZONE 'UTC') + interval '1 month')
                AT TIME ZONE 'UTC';
    EXECUTE format('ALTER TABLE ledger ATTACH PARTITION ledger_legacy'
                   ' FOR VALUES FROM (MINVALUE) TO (%L)', boundary);
    PERFORM ledger_secure_partition('ledger_legacy'::regclass);
END
$$;

-- A row whose month has no partition (a clock far off, a month never ensured) lands here
-- instead of failing the consumer's batch. `budget-ledger ledger partitions list` shows its rows.
CREATE TABLE ledger_default PARTITION OF ledger DEFAULT;
SELECT ledger_secure_partition('ledger_default'::regclass);

-- ---------------------------------------------------------------------------------------------
-- 6. Monthly partitions ahead: the current UTC month and `months_ahead` more. A month already
--    covered by another partition (the legacy one) is reported, not created; a month whose rows
--    already sit in the DEFAULT partition is skipped and reported (creating it would fail: see
--    docs/scaling.md for moving them). Serialised by an advisory lock; a short lock_timeout so
--    that a caller waiting behind a long reader never queues the writers behind itself.
CREATE FUNCTION ledger_ensure_partitions(months_ahead integer DEFAULT 3)
    RETURNS TABLE (partition_name text, range_from timestamptz, range_to timestamptz,
                   outcome text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    SET lock_timeout = '5s'
AS $$
DECLARE
    first_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    month timestamp;
    in_default bigint;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ledger_ensure_partitions'));
    FOR i IN 0..months_ahead LOOP
        month := first_month + make_interval(months => i);
        partition_name := 'ledger_y' || to_char(month, 'YYYY') || 'm' || to_char(month, 'MM');
        range_from := month AT TIME ZONE 'UTC';
        range_to := (month + interval '1 month') AT TIME ZONE 'UTC';
        IF to_regclass('public.' || partition_name) IS NOT NULL THEN
            PERFORM public.ledger_secure_partition(('public.' || partition_name)::regclass);
            outcome := 'exists';
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT count(*) INTO in_default FROM public.ledger_default
        WHERE recorded_at >= range_from AND recorded_at < range_to;
        IF in_default > 0 THEN
            outcome := format('skipped: %s row(s) of this month are in ledger_default',
                              in_default);
            RETURN NEXT;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('CREATE TABLE public.%I PARTITION OF public.ledger'
                           ' FOR VALUES FROM (%L) TO (%L)', partition_name, range_from, range_to);
            PERFORM public.ledger_secure_partition(('public.' || partition_name)::regclass);
            outcome := 'created';
        EXCEPTION WHEN invalid_object_definition THEN
            -- "would overlap partition ...": e.g. the legacy partition reaches into this month.
            outcome := 'covered: ' || SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION ledger_ensure_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_ensure_partitions(integer) TO ledger_app;

SELECT count(*) FROM ledger_ensure_partitions(3);
