"""The ledger check after every phase: one event per command, gap-free sequences, no dead
letters, reconcile clean."""

from __future__ import annotations

import psycopg

from bench import workload
from bench.phase import Phase


def verify(phase: Phase, expected: int) -> tuple[list[str], dict[str, int]]:
    """Every command one event, gap-free sequences, no dead letters, reconcile clean (on a
    history database: of the workload's tenants only, the history is not re-read)."""
    problems: list[str] = []
    space = phase.args.tenant_space
    tenants = [workload.budget_key(t, space)[0] for t in range(workload.TENANTS)]
    with psycopg.connect(phase.database_url, autocommit=True) as conn:
        events = conn.execute(
            "SELECT count(*) FROM ledger WHERE tenant_id = ANY(%s)", (tenants,)
        ).fetchone()[0]  # type: ignore[index]
        if events != expected:
            problems.append(f"ledger holds {events} events for {expected} commands")
        gaps = conn.execute(
            "SELECT count(*) FROM (SELECT min(sequence) AS lo, max(sequence) AS hi, count(*) AS n"
            " FROM ledger WHERE tenant_id = ANY(%s) GROUP BY tenant_id, budget_id) s"
            " WHERE lo <> 1 OR hi <> n",
            (tenants,),
        ).fetchone()[0]  # type: ignore[index]
        if gaps:
            problems.append(f"{gaps} budget(s) with sequence gaps")
        dlq = conn.execute(
            "SELECT count(*) FROM outbox WHERE topic = %s", (phase.settings.topic_dlq,)
        ).fetchone()[0]  # type: ignore[index]
        if dlq:
            problems.append(f"{dlq} dead letter(s)")
        outcomes = {
            str(t): int(n)
            for t, n in conn.execute(
                "SELECT type, count(*) FROM ledger WHERE tenant_id = ANY(%s)"
                " GROUP BY type ORDER BY 2 DESC",
                (tenants,),
            )
        }
    try:
        from budget_ledger.projections import reconcile as rec
    except ImportError:
        rec = None  # type: ignore[assignment]
    if rec is not None:
        # On a history (a bench.scaling database, reconciled up to date before the run): an
        # incremental run, which replays exactly the budgets written since: the workload's. It
        # advances their checkpoints, so the next run on the same database (--use-database with
        # another --tenant-space) again replays only its own.
        history = bool(phase.args.template_database or phase.args.use_database)
        opts = rec.ReconcileOptions(
            workers=1,
            progress=False,
            role=phase.settings.database_role,
            unpublished_grace_seconds=1e9,
            incremental=history,
        )
        report = rec.reconcile(
            phase.database_url, opts, checkpoint_dsn=phase.database_url if history else None
        )
        replayed = report.events
        if not report.clean:
            lines = list(rec.iter_lines(report))
            problems.append("reconcile not clean: " + "; ".join(lines[1:6]))
        if replayed != expected:
            problems.append(f"reconcile replayed {replayed} events, expected {expected}")
    else:
        problems.append("note: projections.reconcile not available, reconcile skipped")
    return [p for p in problems if not p.startswith("note:")], outcomes
