-- The verified state of a checkpoint (migration 009) is the reconciler's own encoding
-- (projections/checkpoint_state.py), written and read back whole, never queried inside: stored
-- as that text instead of jsonb, a run writing 50,000 checkpoints no longer has Postgres parse
-- them into jsonb (sent as strings in one JSON document: 0.97 s to send and parse, against
-- 2.4-2.8 s as JSON objects for a jsonb column), and reading them back no longer renders jsonb
-- as text (~6 us a checkpoint). Rewrites the table once.
ALTER TABLE reconcile_checkpoints ALTER COLUMN state TYPE text USING state::text;
