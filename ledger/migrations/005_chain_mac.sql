-- The keyed chain (ledger/chain_mac.py, docs/security.md): each row written by a consumer that
-- holds the chain key carries an HMAC-SHA256 over its hash and the id of the key. The database
-- never holds the key, so a row appended with database credentials alone cannot carry a valid
-- MAC, and `reconcile` (given the keys) reports it as a broken link.
-- Nullable, no default: adding them rewrites nothing; rows written before stay as they are.
ALTER TABLE ledger ADD COLUMN mac text, ADD COLUMN mac_key_id text;

-- The legacy cut-over: rows written before the key existed (mac NULL) are vouched for by one
-- seal per budget, made by `budget-ledger ledger seal-legacy` (owner credentials and the key):
-- a MAC over the budget's last unkeyed (sequence, hash), which the plain chain links to every
-- earlier row. A NULL-mac row after the sealed sequence is a broken link. Only the owner writes
-- here; a new seal for a budget replaces the old one (re-sealing after a key-less period).
CREATE TABLE chain_legacy_seals (
    tenant_id  text        NOT NULL,
    budget_id  text        NOT NULL,
    sequence   bigint      NOT NULL,
    hash       text        NOT NULL,
    mac        text        NOT NULL,
    mac_key_id text        NOT NULL,
    sealed_by  name        NOT NULL DEFAULT current_user,
    sealed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, budget_id)
);
GRANT SELECT ON chain_legacy_seals TO ledger_app;
