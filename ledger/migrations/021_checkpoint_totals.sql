-- How many budgets carry a reconcile checkpoint and how many events those cover, kept as one
-- row beside the checkpoints: an incremental run reports them (its "skipped" figures), and
-- counting them meant a scan of every checkpoint with its stored state (1.5 GB and ~0.5 s for
-- 1M checkpoints, the one read of a run that grew with the number of budgets).
--
-- Kept exact by statement triggers on reconcile_checkpoints (transition tables: one update of
-- the row per statement, however many checkpoints it wrote), in the writing transaction; a
-- TRUNCATE zeroes it. The functions run as the owner: the totals move only with the
-- checkpoints, never written by a role directly.
CREATE TABLE reconcile_checkpoint_totals (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    budgets  bigint  NOT NULL,
    events   bigint  NOT NULL
);

INSERT INTO reconcile_checkpoint_totals (budgets, events)
SELECT count(*), coalesce(sum(sequence), 0) FROM reconcile_checkpoints;

GRANT SELECT ON reconcile_checkpoint_totals TO ledger_app, ledger_reconciler;

CREATE FUNCTION reconcile_checkpoints_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE reconcile_checkpoint_totals
    SET budgets = budgets + (SELECT count(*) FROM new_rows),
        events = events + (SELECT coalesce(sum(sequence), 0) FROM new_rows);
    RETURN NULL;
END
$$;

CREATE FUNCTION reconcile_checkpoints_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE reconcile_checkpoint_totals
    SET events = events + (SELECT coalesce(sum(sequence), 0) FROM new_rows)
                        - (SELECT coalesce(sum(sequence), 0) FROM old_rows);
    RETURN NULL;
END
$$;

CREATE FUNCTION reconcile_checkpoints_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE reconcile_checkpoint_totals
    SET budgets = budgets - (SELECT count(*) FROM old_rows),
        events = events - (SELECT coalesce(sum(sequence), 0) FROM old_rows);
    RETURN NULL;
END
$$;

CREATE FUNCTION reconcile_checkpoints_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE reconcile_checkpoint_totals SET budgets = 0, events = 0;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION reconcile_checkpoints_inserted(), reconcile_checkpoints_updated(),
    reconcile_checkpoints_deleted(), reconcile_checkpoints_truncated() FROM PUBLIC;

CREATE TRIGGER totals_inserted AFTER INSERT ON reconcile_checkpoints
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoints_inserted();
CREATE TRIGGER totals_updated AFTER UPDATE ON reconcile_checkpoints
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoints_updated();
CREATE TRIGGER totals_deleted AFTER DELETE ON reconcile_checkpoints
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoints_deleted();
CREATE TRIGGER totals_truncated AFTER TRUNCATE ON reconcile_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoints_truncated();
