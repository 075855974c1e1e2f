-- `POST .../budgets/{bid}/reconcile` (entrypoints/api/reconcile.py) replays one budget as the
-- API's own role, ledger_reader, bound to the key's tenant — not as ledger_app, whose login may
-- write the ledger and which an API process exposed to tenants must not hold. The replay also
-- reads the budget's checkpoint and legacy seal: the reader may read them, for its tenant only
-- (row-level security, like the ledger). The roles that read or write them so far keep every
-- row through a policy of their own; the owner bypasses row-level security as before.
GRANT SELECT ON reconcile_checkpoints, chain_legacy_seals TO ledger_reader;

ALTER TABLE reconcile_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE chain_legacy_seals ENABLE ROW LEVEL SECURITY;

CREATE POLICY every_row ON reconcile_checkpoints TO ledger_app, ledger_reconciler
    USING (true) WITH CHECK (true);
CREATE POLICY every_row ON chain_legacy_seals TO ledger_app
    USING (true) WITH CHECK (true);
CREATE POLICY tenant_read ON reconcile_checkpoints FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
CREATE POLICY tenant_read ON chain_legacy_seals FOR SELECT TO ledger_reader
    USING (tenant_id = current_setting('ledger.tenant_id', true));
