-- Named queries of the benchmark's peer (bench/peer.py): the calls its clients send, one per
-- command and each its own transaction, and the checks run after a run. Bound parameters only.

-- name: open_budget
SELECT open_budget(%s, %s, %s, %s, %s)

-- name: fund
SELECT fund_budget(%s, %s, %s, %s, %s)

-- name: reserve
SELECT reserve_budget(%s, %s, %s, %s, %s, %s)

-- name: charge
SELECT charge_budget(%s, %s, %s, %s, %s)

-- name: release
SELECT release_budget(%s, %s, %s, %s)

-- name: synchronous_commit
SHOW synchronous_commit

-- name: check_rows
SELECT count(*) FROM ledger

-- name: check_sequence_gaps
SELECT count(*) FROM budgets b
  LEFT JOIN (SELECT tenant_id, budget_id, min(sequence) AS lo, max(sequence) AS hi, count(*) AS n
               FROM ledger GROUP BY tenant_id, budget_id) s USING (tenant_id, budget_id)
 WHERE s.lo IS DISTINCT FROM 1 OR s.hi <> s.n OR s.hi <> b.sequence

-- name: check_running_sums
-- Every row's balances = the running sums of the rows up to it (a settled reservation's whole
-- amount leaves `reserved` when it is charged, partly or not, or released).
WITH d AS (
    SELECT l.tenant_id, l.budget_id, l.sequence, l.funded, l.reserved, l.charged,
           CASE WHEN l.outcome = 'budget_funded' THEN l.amount ELSE 0 END AS df,
           CASE WHEN l.outcome = 'reservation_charged' THEN l.amount ELSE 0 END AS dc,
           CASE WHEN l.outcome = 'funds_reserved' THEN l.amount
                WHEN l.outcome IN ('reservation_charged', 'reservation_released') THEN -r.amount
                ELSE 0 END AS dr
      FROM ledger l
      LEFT JOIN reservations r
        ON (r.tenant_id, r.budget_id, r.ref_id) = (l.tenant_id, l.budget_id, l.ref_id)
       AND l.outcome IN ('reservation_charged', 'reservation_released'))
SELECT count(*) FROM (
    SELECT funded, reserved, charged,
           sum(df) OVER w AS sf, sum(dr) OVER w AS sr, sum(dc) OVER w AS sc
      FROM d WINDOW w AS (PARTITION BY tenant_id, budget_id ORDER BY sequence)) x
 WHERE (funded, reserved, charged) IS DISTINCT FROM (sf, sr, sc)

-- name: check_last_row
SELECT count(*) FROM budgets b
  LEFT JOIN ledger l
    ON (l.tenant_id, l.budget_id, l.sequence) = (b.tenant_id, b.budget_id, b.sequence)
 WHERE (l.funded, l.reserved, l.charged) IS DISTINCT FROM (b.funded, b.reserved, b.charged)

-- name: check_open_reservations
SELECT count(*) FROM budgets b
  LEFT JOIN (SELECT tenant_id, budget_id, sum(amount) AS open FROM reservations
              WHERE status = 'reserved' GROUP BY tenant_id, budget_id) r
         USING (tenant_id, budget_id)
 WHERE coalesce(r.open, 0) <> b.reserved

-- name: check_over_cap
SELECT count(*) FROM ledger l JOIN budgets b USING (tenant_id, budget_id)
 WHERE l.reserved < 0 OR l.charged < 0 OR l.available < 0
    OR l.reserved + l.charged > least(l.funded, coalesce(b.hard_cap, l.funded))

-- name: outcomes
SELECT coalesce('refused:' || reason, outcome), count(*) FROM ledger
 GROUP BY 1 ORDER BY 2 DESC, 1
