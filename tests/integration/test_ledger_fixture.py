"""A ledger written by old code (tests/fixtures/ledger_v1.jsonl, commit b6dd0c7) reconciles clean.

Its rows go into a fresh database as they were stored; `rebuild` and `reconcile` (what
`budget-ledger rebuild` / `reconcile` run) must find no drift and no broken link, and the rebuilt
balances must be those of each budget's last event. The fixture is never regenerated to make this
pass (tests/fixtures/README.md).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from budget_ledger.ledger.db import connect
from budget_ledger.projections.rebuild import rebuild
from budget_ledger.projections.reconcile import ReconcileOptions, iter_lines, reconcile
from budget_ledger.schemas.events import EVENT_TYPES

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger_v1.jsonl"
# What the fixture holds; a smaller number means rows were lost, not that the test is stale.
FIXTURE_ROWS = 92
FIXTURE_BUDGETS = 7
_INSERTED = (
    "tenant_id", "budget_id", "sequence", "type", "command_id", "command_fingerprint", "ref_id",
    "currency", "amount", "funded", "reserved", "charged", "available", "kafka_topic",
    "kafka_partition", "kafka_offset", "event", "recorded_at", "prev_hash", "hash",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO ledger ({', '.join(_INSERTED)}) VALUES ("
    + ", ".join(
        "%(event)s::jsonb" if c == "event" else "%(recorded_at)s::timestamptz"
        if c == "recorded_at" else f"%({c})s"
        for c in _INSERTED
    )
    + ")"
)  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    """The fixture's rows in their original commit order."""
    rows = [orjson.loads(line) for line in FIXTURE.read_bytes().splitlines() if line]
    return sorted(rows, key=lambda r: r["position"])


def _load(database_url: str, rows: list[dict[str, Any]]) -> None:
    """Insert the rows as the owner, and mark them published (as a live ledger's relay would)."""
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cur:
            cur.executemany(_INSERT, rows)
        conn.execute(
            "INSERT INTO relay_cursors (topic, partition, last_offset)"
            " SELECT kafka_topic, kafka_partition, max(kafka_offset) FROM ledger GROUP BY 1, 2"
            " ON CONFLICT (topic, partition) DO UPDATE SET last_offset = EXCLUDED.last_offset"
        )


def test_the_old_ledger_rebuilds_and_reconciles_clean(database_url: str) -> None:
    rows = _rows()
    assert len(rows) == FIXTURE_ROWS
    _load(database_url, rows)
    with psycopg.connect(database_url) as conn:
        types = {t for (t,) in conn.execute("SELECT DISTINCT type FROM ledger")}
    # Every type the fixture was written with: all but those added after it (the monitors').
    newer = {"monitor_set", "monitor_removed"}
    assert types == set(EVENT_TYPES) - newer, f"missing: {set(EVENT_TYPES) - newer - types}"

    with connect(database_url) as conn:  # the owner role, as `budget-ledger rebuild`
        budgets, _ = rebuild(conn)
    assert budgets == FIXTURE_BUDGETS

    report = reconcile(database_url, ReconcileOptions(progress=False))
    lines = "\n".join(iter_lines(report))
    assert not report.broken, lines
    assert not report.drifts, lines
    assert report.clean, lines
    assert report.events == FIXTURE_ROWS and report.budgets == FIXTURE_BUDGETS, lines

    last: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["tenant_id"], row["budget_id"])
        if key not in last or row["sequence"] > last[key]["sequence"]:
            last[key] = row
    with psycopg.connect(database_url) as conn:
        balances = conn.execute(
            "SELECT tenant_id, budget_id, funded, reserved, charged, available, utilization_pct,"
            " sequence, last_hash FROM budget_balances"
        ).fetchall()
    got = {(t, b): tuple(rest) for t, b, *rest in balances}
    expected = {
        key: (
            row["funded"],
            row["reserved"],
            row["charged"],
            row["available"],
            Decimal(orjson.loads(row["event"])["utilization_pct"]),
            row["sequence"],
            row["hash"],
        )
        for key, row in last.items()
    }
    assert got == expected
