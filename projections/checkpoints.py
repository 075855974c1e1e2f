"""Reconcile checkpoints: per budget, the last (sequence, hash) a run verified clean.

Written as `ledger_reconciler` (migration 006), never as the processes' `ledger_app`: whoever can
move a checkpoint past a forged row hides that row from incremental runs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from budget_ledger.ledger.db import connect
from budget_ledger.projections.store import queries

CHECKPOINT_ROLE = "ledger_reconciler"


def advance_checkpoints(
    dsn: str,
    verified: Sequence[tuple[str, str, int, str]],
    exclude: Collection[tuple[str, str]] = (),
    role: str | None = CHECKPOINT_ROLE,
) -> int:
    """Set the checkpoints of budgets that verified clean (minus `exclude`); returns how many."""
    rows = [v for v in verified if (v[0], v[1]) not in exclude]
    if not rows:
        return 0
    with connect(dsn, role=role) as conn, conn.transaction():
        conn.execute(
            queries()["upsert_checkpoints"],
            {
                "tenants": [r[0] for r in rows],
                "budgets": [r[1] for r in rows],
                "sequences": [r[2] for r in rows],
                "hashes": [r[3] for r in rows],
            },
        )
    return len(rows)
