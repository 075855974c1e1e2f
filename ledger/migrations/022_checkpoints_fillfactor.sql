-- A run rewrites the checkpoint of every budget it verified: 50,000 rows a day, each ~850 bytes
-- (its state inline). Packed full, every new version went to another page and into the primary
-- key again (10 % of the updates were HOT on the 20M-event ledger; the table grew to 1.5x its
-- rows, the index with it). Pages kept 30 % free take the new version beside the old one (a HOT
-- update: no index entry, one page in the WAL instead of two or three): 50,000 upserts right
-- after a PostgreSQL checkpoint took 1.1 s and 80-117 MB of WAL at fillfactor 75 against 1.8 s
-- and 135 MB packed (1M checkpoints). CLUSTER rewrites the table once so that the existing pages
-- get that room too.
ALTER TABLE reconcile_checkpoints SET (fillfactor = 70);
CLUSTER reconcile_checkpoints USING reconcile_checkpoints_pkey;
