-- The BRIN index on ledger (recorded_at) was created with autosummarize = on (migration 009),
-- so that autovacuum would summarise each block range as it filled. At thousands of events a
-- second its small request queue overflows and PostgreSQL drops the requests, logging each:
-- 76,721 "request for BRIN range summarization for index ... was not recorded" lines in one
-- day of this project's test and benchmark runs. Since migration 019 the incremental reconcile,
-- the one reader of that index, summarises the new ranges itself before its candidate query
-- (and every VACUUM of a partition summarises it too), so the requests buy nothing.
--
-- Off on every partition's index, present and future. A partitioned index's options cannot be
-- changed (PostgreSQL refuses ALTER INDEX ... SET on it) and a new partition copies them, so
-- ledger_secure_partition, which ledger_ensure_partitions applies to every partition it
-- creates or finds, now also turns it off on the partition's own index: migration 008's
-- function, renamed, does the rest as before. Like its steps, the new one runs only when
-- needed: a partition already done takes no lock.
ALTER FUNCTION ledger_secure_partition(regclass) RENAME TO ledger_secure_partition_008;

CREATE FUNCTION ledger_secure_partition(part regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
AS $$
DECLARE
    brin regclass;
BEGIN
    PERFORM public.ledger_secure_partition_008(part);
    -- The partition's own index of ledger_recorded_at_brin: no autosummarize requests.
    SELECT i.inhrelid::regclass INTO brin
    FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid
    WHERE i.inhparent = 'public.ledger_recorded_at_brin'::regclass AND x.indrelid = part;
    IF brin IS NOT NULL AND NOT coalesce(
            (SELECT 'autosummarize=off' = ANY (reloptions) FROM pg_class WHERE oid = brin),
            false) THEN
        EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', brin);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION ledger_secure_partition(regclass) FROM PUBLIC;

SELECT count(public.ledger_secure_partition(inhrelid::regclass))
FROM pg_inherits WHERE inhparent = 'public.ledger'::regclass;
