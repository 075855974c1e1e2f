-- Balance monitors (docs/domain.md, "Monitors"): the monitors of a budget with their armed flags
-- are part of its state, so the balance row carries them for state loading
-- (projections/state_loading.py), the reconciler compares them and rebuild writes them.
--
-- `monitors` is a JSON object monitor_id -> {metric, operator, threshold, armed} (threshold in
-- minor units, or basis points for utilization_pct), NULL for a budget without monitors (almost
-- all: the consumer writes nothing more for them). Appended at the END of the table like
-- migration 007's columns (the consumer's staging table is `LIKE budget_balances`, its merge
-- `INSERT ... SELECT *`), nullable without a default: adding it rewrites nothing. Consumers copy
-- the table's columns into their session's staging table once: restart them after this migration.
ALTER TABLE budget_balances ADD COLUMN monitors jsonb;

-- Several monitors may fire on the same event: each is its own alert, so the monitor is part of
-- the alert's key. A generated column (empty for the other alert types), so the consumer's COPY
-- of alert rows is unchanged.
ALTER TABLE alerts
    ADD COLUMN monitor_id text NOT NULL
        GENERATED ALWAYS AS (coalesce(payload -> 'data' ->> 'monitor_id', '')) STORED;
ALTER TABLE alerts DROP CONSTRAINT alerts_pkey;
ALTER TABLE alerts ADD PRIMARY KEY (tenant_id, budget_id, sequence, type, monitor_id);

-- The history's keyset pages (projections/api_queries.sql, alert_page) end with the monitor too,
-- so two alerts of one event never straddle a page boundary unseen: the same indexes with it.
DROP INDEX alerts_history;
DROP INDEX alerts_budget_history;
CREATE INDEX alerts_history ON alerts
    (tenant_id, recorded_at DESC, budget_id DESC, sequence DESC, type DESC, monitor_id DESC);
CREATE INDEX alerts_budget_history ON alerts
    (tenant_id, budget_id, recorded_at DESC, sequence DESC, type DESC, monitor_id DESC);
