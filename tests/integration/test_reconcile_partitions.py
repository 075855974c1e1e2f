"""Incremental reconcile on the partitioned ledger (migration 011): a budget's reads start at the
recorded_at of its checkpointed row minus the margin, so Postgres reads only the recent monthly
partitions; a row after the checkpoint recorded before that bound (a consumer clock off by more
than the margin) sends the budget to the unbounded re-read, never to a clean result over rows
the run did not see.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import psycopg
import pytest
import structlog

from bench.replay_bench import fill
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.store import queries
from tests.integration.test_partitioned_ledger import _month, _name
from tests.integration.test_reconcile_incremental import (
    BUDGETS,
    EVENTS,
    HOT,
    _append,
    _checkpoint,
    _events_of,
    _run,
    _sql,
)

pytestmark = pytest.mark.integration

MARGIN = timedelta(hours=1)  # ReconcileOptions' default candidate_margin_seconds
_EXPLAIN = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "


@pytest.fixture
def ledger(settings: Settings) -> str:
    """EVENTS events over BUDGETS budgets, reconciled once: all checkpointed, with the time."""
    url = settings.database_url
    fill(url, EVENTS, BUDGETS, seed=5)
    assert _run(url).checkpoints_advanced == BUDGETS
    return url


def _recorded_at(url: str, key: tuple[str, str], sequence: int) -> tuple[object, object]:
    """(the checkpoint's recorded_at, the ledger row's) of one budget."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT c.recorded_at, l.recorded_at FROM reconcile_checkpoints c"
            " JOIN ledger l ON (l.tenant_id, l.budget_id) = (c.tenant_id, c.budget_id)"
            " AND l.sequence = %s WHERE c.tenant_id = %s AND c.budget_id = %s",
            (sequence, *key),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_checkpoint_keeps_the_recorded_at_of_its_row(ledger: str) -> None:
    seq = _checkpoint(ledger, HOT)
    assert seq is not None
    kept, in_ledger = _recorded_at(ledger, HOT, seq)
    assert kept is not None and kept == in_ledger
    _append(ledger, HOT, 2, offset=10_000)
    report = _run(ledger)
    assert report.clean and report.events == 2
    kept, in_ledger = _recorded_at(ledger, HOT, seq + 2)
    assert kept == in_ledger


@pytest.mark.parametrize("where", ["between", "last"])
def test_a_row_recorded_before_the_bound_is_re_read_not_skipped(ledger: str, where: str) -> None:
    """A consumer whose clock is behind the checkpoint's by more than the margin writes a row
    after the checkpoint: between two ordinary rows (the bounded read shows a gap) or as the
    last row (every row after the checkpoint is outside the bound; the balance projection is
    ahead of the replay)."""
    url = ledger
    if where == "last":  # a recent checkpointed row: the budget is a candidate of the next run
        _append(url, HOT, 1, offset=9_000)
        assert _run(url).checkpoints_advanced == 1
    before = _events_of(url, HOT)
    kept, _ = _recorded_at(url, HOT, before)
    assert isinstance(kept, datetime)
    behind = kept - MARGIN - timedelta(days=2)
    if where == "between":
        _append(url, HOT, 1, offset=10_000)
        _append(url, HOT, 1, offset=10_001, now=behind)
        _append(url, HOT, 1, offset=10_002)
    else:
        _append(url, HOT, 1, offset=10_000, now=behind)
    added = _events_of(url, HOT) - before
    with structlog.testing.capture_logs() as logs:
        report = _run(url)
    # Replayed from its first event (the ordered, unbounded re-read), and verified clean: the
    # rows are genuine, only their time is off; the operator is told. (Not `clean`: the relay
    # has not published rows recorded that long ago.)
    assert (report.broken, report.drifts, report.budgets) == ([], [], 1)
    assert report.events == before + added
    assert [e["budget_id"] for e in logs if e["event"] == "reconcile_rows_outside_bound"] == [
        HOT[1]
    ]
    assert _checkpoint(url, HOT) == before + added
    full = _run(url, full=True)
    assert (full.broken, full.drifts, full.events) == ([], [], EVENTS + added + (where == "last"))


def test_a_row_hidden_outside_the_bound_is_found(ledger: str) -> None:
    """A row after the checkpoint, moved to a time before the bound and altered: the bounded read
    does not see it, the re-read does and names it."""
    url = ledger
    before = _events_of(url, HOT)
    _append(url, HOT, 2, offset=10_000)
    _sql(
        url,
        "UPDATE ledger SET recorded_at = '2025-06-01T00:00:00Z',"
        " event = jsonb_set(event::jsonb, '{command_id}', '\"forged\"')::json"
        " WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
        *HOT,
        before + 1,
    )
    report = _run(url)
    assert [(b.budget_id, b.sequence) for b in report.broken] == [(HOT[1], before + 1)]
    assert "hash mismatch" in report.broken[0].problem
    assert _checkpoint(url, HOT) == before


def _executed(plan: list[str], node: str = "Index Scan") -> dict[str, bool]:
    """Per ledger partition scanned by `node` in an EXPLAIN ANALYZE plan: whether it ever ran."""
    seen: dict[str, bool] = {}
    for line in plan:
        if " on ledger_" not in line or node not in line:
            continue
        name = line.split(" on ")[1].split()[0]
        seen[name] = seen.get(name, False) or "never executed" not in line
    return seen


def test_the_bounded_reads_touch_only_the_partitions_from_the_checkpoint_on(ledger: str) -> None:
    url = ledger
    # The checkpoint says its row was recorded next month: every partition before it (this
    # month's, which holds all the rows) must be left out of the read from the checkpoint.
    cp_at = _month(1) + timedelta(hours=2)
    seq = _checkpoint(url, HOT)
    assert seq is not None
    with psycopg.connect(url) as conn:
        conn.execute("SET jit = off")
        events = [
            r[0]
            for r in conn.execute(
                _EXPLAIN + queries()["reconcile_events_of"],
                {"keys": orjson.dumps([[*HOT, seq, cp_at - MARGIN, False]]).decode()},
            )
        ]
    ran = _executed(events, "Scan")
    assert ran.get(_name(_month(0))) is not True, "\n".join(events)  # removed or never run
    assert ran.get(_name(_month(1))) is True, "\n".join(events)
    # Without a bound (no checkpoint time): this month's partition is read, as before.
    with psycopg.connect(url) as conn:
        plan = [
            r[0]
            for r in conn.execute(
                _EXPLAIN + queries()["reconcile_events_of"],
                {"keys": orjson.dumps([[*HOT, 1, None, True]]).decode()},
            )
        ]
    assert _executed(plan, "Scan").get(_name(_month(0))) is True, "\n".join(plan)
