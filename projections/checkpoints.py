"""Reconcile checkpoints: per budget, the last (sequence, hash) a run verified clean, the
budget's verified state there and that row's recorded_at (the lower bound, minus a margin, of
the next run's reads: migration 011); and the record of the run that wrote them.

Written as `ledger_reconciler` (migrations 006, 009), never as the processes' `ledger_app`:
whoever can move a checkpoint past a forged row hides that row from incremental runs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
import psycopg

from budget_ledger.ledger.db import connect
from budget_ledger.projections.store import queries

CHECKPOINT_ROLE = "ledger_reconciler"

#: (tenant, budget, sequence, hash, state JSON, recorded_at of that row or None): a checkpoint.
Verified = tuple[str, str, int, str, str, datetime | None]


class CheckpointsRefused(Exception):
    """The checkpoint writer's login may not act as `ledger_reconciler`."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """An unfiltered run, recorded with its checkpoints: the next incremental run looks at the
    rows recorded since `started_at` (minus a margin) and at the `drifting` budgets."""

    mode: str
    started_at: datetime
    clean: bool
    events: int
    budgets: int
    drifting: Collection[tuple[str, str]]


def advance_checkpoints(
    dsn: str,
    verified: Sequence[Verified],
    exclude: Collection[tuple[str, str]] = (),
    role: str | None = CHECKPOINT_ROLE,
    run: RunRecord | None = None,
) -> int:
    """Set the checkpoints (and states) of budgets that verified clean (minus `exclude`), and
    record `run`, in one transaction; returns how many checkpoints were set."""
    rows = [v for v in verified if (v[0], v[1]) not in exclude]
    if not rows and run is None:
        return 0
    try:
        conn = connect(dsn, role=role)
    except psycopg.errors.InsufficientPrivilege:
        raise CheckpointsRefused(
            f"the login of LEDGER_DATABASE_URL cannot SET ROLE {role}: grant it that role "
            "(migration 006), or run reconcile with --no-checkpoints"
        ) from None
    q = queries()
    with conn, conn.transaction():
        if rows:
            conn.execute(q["upsert_checkpoints"], {"rows": orjson.dumps(rows).decode()})
        if run is not None:
            drifting = sorted(run.drifting)
            conn.execute(
                q["insert_reconcile_run"],
                {
                    "mode": run.mode,
                    "started_at": run.started_at,
                    "clean": run.clean,
                    "events": run.events,
                    "budgets": run.budgets,
                    "drifting_tenants": [d[0] for d in drifting],
                    "drifting_budgets": [d[1] for d in drifting],
                },
            )
    return len(rows)
