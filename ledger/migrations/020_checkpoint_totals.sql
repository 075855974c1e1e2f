-- An incremental reconcile reports how many budgets and events it skipped: the checkpoints'
-- count and sum(sequence). Counting them was the run's one read that grew with the number of
-- budgets: a scan of reconcile_checkpoints, whose rows carry the budget's state inline (1.35 GB
-- for 1M checkpoints, ~0.7-1.3 s on the 20M-event ledger). The totals are now kept in one row,
-- updated in the same statement as the checkpoints by statement-level triggers over the
-- transition tables (so an upsert of 50,000 checkpoints updates the row once, and every writer,
-- whatever its role, keeps it exact: the function runs as the owner). Concurrent writers of
-- checkpoints (reconcile runs) queue on that row until they commit; they are rare.
CREATE TABLE reconcile_checkpoint_totals (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    budgets bigint NOT NULL,
    events bigint NOT NULL
);
INSERT INTO reconcile_checkpoint_totals (budgets, events)
SELECT count(*), coalesce(sum(sequence), 0) FROM reconcile_checkpoints;

CREATE FUNCTION reconcile_checkpoint_totals_follow()
    RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
BEGIN
    -- Each branch reads only the transition tables its trigger declares.
    IF TG_OP = 'INSERT' THEN
        UPDATE reconcile_checkpoint_totals t
        SET budgets = t.budgets + n.budgets, events = t.events + n.events
        FROM (SELECT count(*) AS budgets, coalesce(sum(sequence), 0) AS events
              FROM new_rows) n;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE reconcile_checkpoint_totals t
        SET events = t.events + (SELECT coalesce(sum(sequence), 0) FROM new_rows)
                              - (SELECT coalesce(sum(sequence), 0) FROM old_rows);
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE reconcile_checkpoint_totals t
        SET budgets = t.budgets - o.budgets, events = t.events - o.events
        FROM (SELECT count(*) AS budgets, coalesce(sum(sequence), 0) AS events
              FROM old_rows) o;
    ELSE  -- TRUNCATE
        UPDATE reconcile_checkpoint_totals SET budgets = 0, events = 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER checkpoint_totals_insert AFTER INSERT ON reconcile_checkpoints
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoint_totals_follow();
CREATE TRIGGER checkpoint_totals_update AFTER UPDATE ON reconcile_checkpoints
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoint_totals_follow();
CREATE TRIGGER checkpoint_totals_delete AFTER DELETE ON reconcile_checkpoints
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoint_totals_follow();
CREATE TRIGGER checkpoint_totals_truncate AFTER TRUNCATE ON reconcile_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile_checkpoint_totals_follow();

REVOKE ALL ON FUNCTION reconcile_checkpoint_totals_follow() FROM PUBLIC;
GRANT SELECT ON reconcile_checkpoint_totals TO ledger_app, ledger_reconciler, ledger_reader;
