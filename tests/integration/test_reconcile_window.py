"""Incremental reconcile, the set-based reads (docs/reconciler.md, "Incremental reconcile"): the
candidates with their checkpoint and balance row in one query, the new rows of every
checkpointed candidate (and its checkpointed row, when recorded in the range) in one pass over
the range since the last run, and the per-budget read kept for the last run's drifting budgets.
The straddling rows (one row after the checkpoint recorded before the range) are in
test_reconcile_partitions.py.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import psycopg
import pytest
import structlog

from budget_ledger.projections.store import queries
from tests.integration.test_partitioned_ledger import _month, _name
from tests.integration.test_reconcile_incremental import (
    COLD,
    HOT,
    _append,
    _checkpoint,
    _events_of,
    _run,
    _sql,
    checkpointed,
)

pytestmark = pytest.mark.integration
__all__ = ["checkpointed"]  # the fixture, imported for pytest


# The checkpointed row's event with another hash: re-rendered by JSONB (the layout of rows
# stored before migration 024), and edited in place in the stored layout (the hash's last 4
# digits).
REWRITES = {
    "jsonb": "jsonb_set(event::jsonb, '{hash}', '\"0000\"')::json",
    "in_place": "(left(event::text, -6) || '0000\"}')::json",
}


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
def test_a_checkpointed_row_changed_in_place_is_found_with_new_rows(
    checkpointed: str, rewrite: str
) -> None:
    url = checkpointed
    seq = _checkpoint(url, HOT)
    assert seq is not None
    # The owner rewrites the stored hash of the checkpointed row; new rows follow it.
    _sql(url, f"UPDATE ledger SET event = {REWRITES[rewrite]}"
         " WHERE tenant_id = %s AND budget_id = %s AND sequence = %s", *HOT, seq)  # fmt: skip
    with psycopg.connect(url) as conn:
        text, column = conn.execute(
            "SELECT event::text, hash FROM ledger WHERE tenant_id = %s AND budget_id = %s"
            " AND sequence = %s", (*HOT, seq)
        ).fetchone()  # fmt: skip
    assert orjson.loads(text)["hash"] != column and orjson.loads(text)["hash"].endswith("0000")
    assert text.endswith('0000"}') == (rewrite == "in_place")
    _append(url, HOT, 2, offset=10_000)
    report = _run(url)
    # The fill's rows were recorded before the range, so the checkpointed row is not read; the
    # new rows chain from the changed hash (the consumer replayed the budget from the ledger),
    # so they break, and the budget is re-read whole, which names the changed row; its
    # checkpoint stays.
    assert [(b.budget_id, b.sequence) for b in report.broken] == [(HOT[1], seq)]
    assert report.events == seq + 2 and _checkpoint(url, HOT) == seq


def test_a_rewritten_checkpointed_last_row_in_the_range_is_found(checkpointed: str) -> None:
    url = checkpointed
    seq = _checkpoint(url, COLD)
    assert seq is not None
    # The owner rewrites the budget's last row (its checkpoint), event and hash column alike,
    # and moves it into the range of the next run (recorded now); no new row. The candidates'
    # last row is not the checkpoint, so the budget is replayed: re-read whole, it is named.
    _sql(url, "UPDATE ledger SET event = jsonb_set(event::jsonb, '{hash}', '\"0000\"')::json,"
         " hash = '0000', recorded_at = now()"
         " WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
         *COLD, seq)  # fmt: skip
    report = _run(url)
    assert [(b.budget_id, b.sequence) for b in report.broken] == [(COLD[1], seq)]
    assert _checkpoint(url, COLD) == seq


def test_a_drifting_budget_is_replayed_from_its_older_checkpoint(checkpointed: str) -> None:
    url = checkpointed
    before = _events_of(url, HOT)
    _append(url, HOT, 2, offset=10_000)
    _sql(url, "UPDATE budget_balances SET funded = funded + 1 WHERE tenant_id = %s"
         " AND budget_id = %s", *HOT)  # fmt: skip
    assert [d.field for d in _run(url).drifts] == ["funded"]
    assert _checkpoint(url, HOT) == before  # held, older than the run that found the drift
    _sql(url, "UPDATE budget_balances SET funded = funded - 1 WHERE tenant_id = %s"
         " AND budget_id = %s", *HOT)  # fmt: skip
    _append(url, HOT, 2, offset=10_002)
    with structlog.testing.capture_logs() as logs:
        report = _run(url)
    # Its rows since that checkpoint straddle the range of the last run: read from the
    # checkpoint by index (not the one-pass read, which would see a gap and re-read it whole).
    assert report.clean and (report.budgets, report.events) == (1, 4)
    assert not [e for e in logs if e["event"] == "reconcile_rows_outside_bound"]
    assert _checkpoint(url, HOT) == before + 4


def test_a_budget_checkpointed_before_the_last_run_is_read_by_the_one_pass(
    checkpointed: str,
) -> None:
    url = checkpointed
    cold = _checkpoint(url, COLD)
    _append(url, HOT, 2, offset=10_000)
    assert _run(url).events == 2  # the last run: COLD's checkpoint is now older than it
    _append(url, COLD, 3, offset=10_002)
    with psycopg.connect(url) as conn:
        last = conn.execute(queries()["reconcile_last_run"]).fetchone()
        assert last is not None
        params = {"tenant": None, "budget": None, "shard": 0, "shards": 1,
                  "since": last[0] - timedelta(hours=1),
                  "drifting_tenants": last[1], "drifting_budgets": last[2]}  # fmt: skip
        rows = conn.execute(queries()["reconcile_touched_since"], params).fetchall()
    # Its new rows are all in the range (docs/reconciler.md): the one-pass read, not a read per
    # budget from the checkpoint.
    [(tenant, budget, seq, from_window)] = [r[:3] + r[6:7] for r in rows]
    assert (tenant, budget, seq, from_window) == (*COLD, cold, True)
    with structlog.testing.capture_logs() as logs:
        report = _run(url)
    assert report.clean and (report.budgets, report.events) == (1, 3)
    assert not [e for e in logs if e["event"] == "reconcile_rows_outside_bound"]
    assert _checkpoint(url, COLD) == (cold or 0) + 3


def test_the_one_pass_read_plans_only_the_partitions_since_the_range(checkpointed: str) -> None:
    with psycopg.connect(checkpointed) as conn:
        plan = [
            r[0]
            for r in conn.execute(
                "EXPLAIN " + queries()["reconcile_rows_since"],
                {"keys": f'[["{HOT[0]}", "{HOT[1]}", 0]]', "since": _month(1)},
            )
        ]
    text = "\n".join(plan)
    assert _name(_month(1)) in text, text
    assert _name(_month(0)) not in text, text  # pruned when planned: the bound is a constant


def test_a_checkpointed_row_recorded_before_the_range_is_left_to_full(checkpointed: str) -> None:
    """The one pass reads from the range's start: a checkpointed row recorded before it (the
    fill's rows are) is not read again, so a change to it that the new rows do not reveal is
    found by --full, as a change to any row before a checkpoint is (docs/reconciler.md)."""
    url = checkpointed
    seq = _checkpoint(url, HOT)
    assert seq is not None
    _append(url, HOT, 2, offset=10_000)  # chained from the genuine hash
    _sql(url, f"UPDATE ledger SET event = {REWRITES['in_place']}"
         " WHERE tenant_id = %s AND budget_id = %s AND sequence = %s", *HOT, seq)  # fmt: skip
    report = _run(url)
    assert report.clean and report.events == 2 and _checkpoint(url, HOT) == seq + 2
    full = _run(url, full=True)
    assert [(b.budget_id, b.sequence) for b in full.broken] == [(HOT[1], seq)]


def test_a_checkpointed_row_recorded_in_the_range_is_read_and_checked(checkpointed: str) -> None:
    """Recorded in the range, the checkpointed row comes with the one pass and its hash is
    checked, even when the rows after it chain from the genuine hash."""
    url = checkpointed
    _append(url, HOT, 1, offset=9_000)  # recorded now, then checkpointed
    assert _run(url).checkpoints_advanced == 1
    seq = _checkpoint(url, HOT)
    assert seq is not None
    _append(url, HOT, 2, offset=10_000)
    _sql(url, f"UPDATE ledger SET event = {REWRITES['in_place']}"
         " WHERE tenant_id = %s AND budget_id = %s AND sequence = %s", *HOT, seq)  # fmt: skip
    report = _run(url)
    assert [(b.budget_id, b.sequence) for b in report.broken] == [(HOT[1], seq)]
    assert _checkpoint(url, HOT) == seq
