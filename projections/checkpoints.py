"""Reconcile checkpoints: per budget, the last (sequence, hash) a run verified clean.

Written as `ledger_reconciler` (migration 006), never as the processes' `ledger_app`: whoever can
move a checkpoint past a forged row hides that row from incremental runs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import psycopg

from budget_ledger.ledger.db import connect
from budget_ledger.projections.store import queries

CHECKPOINT_ROLE = "ledger_reconciler"


class CheckpointsRefused(Exception):
    """The checkpoint writer's login may not act as `ledger_reconciler`."""


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
    try:
        conn = connect(dsn, role=role)
    except psycopg.errors.InsufficientPrivilege:
        raise CheckpointsRefused(
            f"the login of LEDGER_DATABASE_URL cannot SET ROLE {role}: grant it that role "
            "(migration 006), or run reconcile with --no-checkpoints"
        ) from None
    with conn, conn.transaction():
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
