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

import psycopg

from budget_ledger.ledger.db import connect, copy_rows
from budget_ledger.projections.store import queries

CHECKPOINT_ROLE = "ledger_reconciler"

#: (tenant, budget, sequence, hash, state JSON, recorded_at of that row or None): a checkpoint.
Verified = tuple[str, str, int, str, str, datetime | None]
#: Their PostgreSQL types, for the binary COPY into the staging table.
_VERIFIED_TYPES = ("text", "text", "int8", "text", "text", "timestamptz")


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
) -> int:
    """Set the checkpoints (and states) of budgets that verified clean (minus `exclude`) in one
    transaction; returns how many were set."""
    rows = [v for v in verified if (v[0], v[1]) not in exclude]
    if not rows:
        return 0
    q = queries()
    with _connect(dsn, role) as conn, conn.transaction():
        conn.execute(q["create_staging_checkpoints"])
        copy_rows(conn, q["copy_staging_checkpoints"], rows, _VERIFIED_TYPES)
        conn.execute(q["merge_checkpoints_memory"])
        conn.execute(q["merge_checkpoints"])
    return len(rows)


def record_run(dsn: str, run: RunRecord, role: str | None = CHECKPOINT_ROLE) -> None:
    """Record an unfiltered run whose checkpoints are all committed: the next incremental run
    starts looking at the rows recorded since `run.started_at` (minus the margin)."""
    drifting = sorted(run.drifting)
    with _connect(dsn, role) as conn, conn.transaction():
        conn.execute(
            queries()["insert_reconcile_run"],
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


def _connect(dsn: str, role: str | None) -> psycopg.Connection:
    try:
        return connect(dsn, role=role)
    except psycopg.errors.InsufficientPrivilege:
        raise CheckpointsRefused(
            f"the login of LEDGER_DATABASE_URL cannot SET ROLE {role}: grant it that role "
            "(migration 006), or run reconcile with --no-checkpoints"
        ) from None
