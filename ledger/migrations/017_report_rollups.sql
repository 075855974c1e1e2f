-- Daily report rollups (docs/api.md, "Reports"; docs/performance.md, "Reports"): per budget,
-- UTC day, event type and reason, what report_events would aggregate over that day's ledger
-- rows. A report reads the rollups of the whole rolled days inside its range and scans the
-- ledger only for the rest (the partial days at its edges, the days not rolled yet), so a
-- month of a busy budget is ~30 x (types x reasons) rows instead of every event.
--
-- Written off the write path by `budget-ledger reports rollup` (projections/report_rollups.py),
-- as ledger_app, never by the consumer: its batch transaction stays as it was. A day is rolled
-- once it ended at least LEDGER_RECONCILE_MARGIN_SECONDS ago (a consumer's clock may record a
-- row slightly late); afterwards its rows never change (the ledger is append-only), except by
-- `reports rollup --recompute DAY`, which replaces that day in one transaction (a day into
-- which a faulty clock recorded rows after it was rolled). Hence DELETE for ledger_app, no
-- UPDATE: a day is inserted whole or replaced whole.
CREATE TABLE report_rollups (
    tenant_id          text    NOT NULL,
    budget_id          text    NOT NULL,
    day                date    NOT NULL,  -- UTC: recorded_at in [day 00:00Z, day + 1 00:00Z)
    type               text    NOT NULL,
    reason             text    NOT NULL DEFAULT '',  -- '' = the events carried none
    count              bigint  NOT NULL CHECK (count > 0),
    amount_sum         numeric NOT NULL,  -- sum of `amount` (minor units; may exceed bigint)
    max_utilization_bp numeric,           -- highest utilization_bp after any of those events
    PRIMARY KEY (tenant_id, budget_id, day, type, reason)
);

-- The last UTC day rolled up, for the whole ledger (one row; absent: nothing rolled yet).
-- Every day up to it is rolled for every budget: a day with no events has no rows.
CREATE TABLE report_rollup_progress (
    singleton      boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_through date        NOT NULL,
    rolled_at      timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, DELETE ON report_rollups TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON report_rollup_progress TO ledger_app;
GRANT SELECT ON report_rollups, report_rollup_progress TO ledger_reader, ledger_tenant_reader;

-- The same tenant policies as the ledger (001, 005, 008); ledger_app is BYPASSRLS. The progress
-- row holds a date and no tenant's data: every reader may read it.
ALTER TABLE report_rollups ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON report_rollups FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_reader_read ON report_rollups FOR SELECT TO ledger_tenant_reader
    USING (tenant_id = (SELECT ledger_reader_tenant(current_user)));
