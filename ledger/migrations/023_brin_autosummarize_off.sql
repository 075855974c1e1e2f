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
-- creates or finds, now also turns it off on the partition's own index; its other steps are
-- migration 008's, unchanged. Like them, the new step runs only when needed: a partition
-- already done takes no lock.
CREATE OR REPLACE FUNCTION ledger_secure_partition(part regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
AS $$
DECLARE
    rel text := (SELECT relname FROM pg_class WHERE oid = part);
    holder oid;
    brin regclass;
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
