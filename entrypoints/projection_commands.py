"""Sub-commands over the projections: `reconcile` and `rebuild` (the replay code stays in
`projections/`)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

import orjson
import psycopg
import structlog

from budget_ledger.entrypoints.errors import EXIT_DRIFT, EXIT_OK, CliError, database_unreachable
from budget_ledger.ledger.db import DatabaseUnavailable, connect
from budget_ledger.ledger.settings import Settings

log = structlog.get_logger("reconcile")
_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `1h`, `1d` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30s, 15m, 1h or 1d, got {text!r}"
        )
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _reconcile_once(args: argparse.Namespace, settings: Settings) -> int:
    from budget_ledger.projections import reconcile as rec
    from budget_ledger.projections.progress import Progress

    opts = rec.ReconcileOptions(
        tenant=args.tenant,
        budget=args.budget,
        workers=args.workers,
        role=settings.database_role,
        unpublished_grace_seconds=args.grace,
        chain_keys=settings.chain_keyring(),
        incremental=not args.full,
        candidate_margin_seconds=settings.reconcile_margin_seconds,
    )
    kafka_check = None
    if args.source == "kafka":
        from budget_ledger.projections.kafka_check import compare

        def kafka_check() -> Any:
            with connect(settings.app_dsn(), role=settings.database_role) as conn:
                return compare(conn, settings, args.tenant, args.budget)

    progress = None
    if not args.json:
        with connect(settings.app_dsn(), role=settings.database_role, autocommit=True) as conn:
            progress = Progress(rec.estimate_events(conn, opts))
    report = rec.reconcile(
        settings.app_dsn(),  # the processes' login: reconcile reads and writes alerts only
        opts,
        on_progress=progress,
        alerts_topic=None if args.no_alerts else settings.topic_alerts,
        kafka_check=kafka_check,
        # Checkpoints are written as ledger_reconciler, which ledger_app cannot become:
        # LEDGER_DATABASE_URL is the owner locally, the reconcile job's own login in Kubernetes.
        checkpoint_dsn=None if args.no_checkpoints else settings.database_url,
    )
    if progress is not None:
        progress.close()
    if args.json:
        sys.stdout.write(orjson.dumps(rec.to_json(report), default=str).decode() + "\n")
    else:
        for line in rec.iter_lines(report):
            print(line)
    return EXIT_OK if report.clean else EXIT_DRIFT


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Replay the ledger, verify hash chains, compare with the projections (and Kafka); exit 0
    when clean, 1 on drift, 2 on usage or connection errors."""
    from budget_ledger.projections.checkpoints import CheckpointsRefused

    try:
        if args.every is None:
            return _reconcile_once(args, settings)
        while True:  # scheduled mode: run, sleep, repeat; the exit code is the last run's
            started = time.monotonic()
            code = _reconcile_once(args, settings)
            log.info("reconcile_scheduled", exit_code=code, next_in_s=args.every)
            time.sleep(max(0.0, args.every - (time.monotonic() - started)))
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    except CheckpointsRefused as exc:
        raise CliError(str(exc)) from None


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the balance and reservation projections from the ledger, atomically; safe while
    the consumer runs (it waits for the swap, then applies its batch on top)."""
    from budget_ledger.projections.rebuild import RebuildFailed, rebuild

    try:
        # The owner role: rebuilding deletes projection rows, which the application role cannot.
        with connect(settings.database_url) as conn:
            budgets, reservations = rebuild(conn, args.tenant, args.budget)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    except RebuildFailed as exc:
        raise CliError(f"{exc}; nothing was rebuilt (run `budget-ledger reconcile`)") from None
    print(f"rebuilt {budgets} budget(s) and {reservations} reservation(s)")
    return EXIT_OK


def add_reconcile(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `reconcile`."""
    p = sub.add_parser(
        "reconcile", help="replay the ledger and report drift", description=cmd_reconcile.__doc__
    )
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument("--budget", help="only this budget id (with or without --tenant)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--source",
        choices=("ledger", "kafka"),
        default="ledger",
        help="also replay the events topic and compare it with the ledger (kafka)",
    )
    p.add_argument("--workers", type=int, default=1, help="replay processes (default 1)")
    p.add_argument(
        "--grace",
        type=parse_duration,
        default=300.0,
        help="unpublished events older than this are drift (default 5m)",
    )
    p.add_argument(
        "--every",
        type=parse_duration,
        default=None,
        help="scheduled mode: reconcile every DURATION (e.g. 1h) until stopped",
    )
    p.add_argument("--no-alerts", action="store_true", help="do not publish drift_detected alerts")
    p.add_argument(
        "--full",
        action="store_true",
        help="replay every budget from its first event (default: only budgets changed since "
        "their checkpoint)",
    )
    p.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="do not advance the checkpoints of budgets that verified clean",
    )
    p.set_defaults(handler=cmd_reconcile)


def add_rebuild(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `rebuild`."""
    p = sub.add_parser(
        "rebuild", help="rebuild the projections from the ledger", description=cmd_rebuild.__doc__
    )
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument("--budget", help="only this budget id")
    p.set_defaults(handler=cmd_rebuild)
