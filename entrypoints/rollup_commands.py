"""`reports rollup`: the daily report rollups (projections/report_rollups.py, migration 017),
run by the daily CronJob (deploy/k8s/report-rollup-cronjob.yaml) as ledger_app."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta

from budget_ledger.entrypoints.errors import EXIT_DRIFT, EXIT_OK, CliError, database_unreachable
from budget_ledger.ledger.db import DatabaseUnavailable, connect
from budget_ledger.ledger.settings import Settings


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        msg = f"expected a UTC day like 2026-11-01, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def cmd_rollup(args: argparse.Namespace, settings: Settings) -> int:
    """Roll up every whole UTC day that ended LEDGER_RECONCILE_MARGIN_SECONDS ago and is not
    rolled yet; or replace one rolled day (--recompute), or compare rolled days with the
    ledger (--verify: exit 1 when one differs)."""
    from budget_ledger.projections import report_rollups as ru

    try:
        with connect(settings.app_dsn(), role=settings.database_role) as conn:
            if args.verify:
                checked, diffs = ru.verify(conn, args.since)
                for d in diffs:
                    print(f"{d.day}: differs from the ledger ({d.missing} groups missing or "
                          f"changed, {d.extra} stored rows extra); fix: reports rollup "
                          f"--recompute {d.day}")  # fmt: skip
                print(f"verified {checked} rolled day(s): {len(diffs)} differ")
                return EXIT_DRIFT if diffs else EXIT_OK
            if args.recompute is not None:
                try:
                    rows = ru.recompute(conn, args.recompute)
                except ValueError as exc:
                    raise CliError(str(exc)) from None
                print(f"recomputed {args.recompute}: {rows} rollup rows")
                return EXIT_OK
            margin = timedelta(seconds=settings.reconcile_margin_seconds)
            run = ru.roll_up(conn, datetime.now(UTC), margin, args.until)
            if run.first is None:
                print("nothing to roll up")
            else:
                print(f"rolled up {run.days} day(s), {run.first} to {run.last}: {run.rows} rows")
    except (DatabaseUnavailable, OSError) as exc:
        raise database_unreachable(exc) from None
    return EXIT_OK


def add_reports(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `reports rollup`."""
    p = sub.add_parser("reports", help="report maintenance: the daily rollups")
    actions = p.add_subparsers(dest="reports_command", required=True, metavar="ACTION")
    r = actions.add_parser(
        "rollup",
        help="roll up the whole UTC days not rolled yet (the daily job)",
        description=f"{cmd_rollup.__doc__} Runs with LEDGER_APP_DATABASE_URL (ledger_app).",
    )
    r.add_argument("--until", type=_day, metavar="DAY", help="roll up no day after DAY")
    how = r.add_mutually_exclusive_group()
    how.add_argument("--recompute", type=_day, metavar="DAY", help="replace one rolled day")
    how.add_argument("--verify", action="store_true", help="compare rolled days with the ledger")
    r.add_argument("--from", dest="since", type=_day, metavar="DAY", help="--verify from DAY")
    r.set_defaults(handler=cmd_rollup)
