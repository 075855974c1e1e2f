-- utilization_pct = committed / limit in percent has no upper bound: lowering a limit below what
-- is already committed (e.g. hard_cap 0.01 with 1,000.00 reserved: 10,000,000.00 %) overflowed
-- numeric(9, 2) and stopped the consumer's batch. Plain numeric holds any utilization the domain
-- can produce (balances are at most 10**18 minor units, so at most 2e20 %), and keeps the scale
-- of what is written ("80.00" stays "80.00"), which the reconciler compares as text.
-- numeric(9, 2) -> numeric only drops the type modifier: no table rewrite, a brief lock.
-- Consumers copy the column type into their session's staging table (LIKE budget_balances):
-- restart them after this migration.
ALTER TABLE budget_balances ALTER COLUMN utilization_pct TYPE numeric;
