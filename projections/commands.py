"""CLI sub-commands of the projections: `reconcile`, `rebuild` and `adjust`."""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from typing import Any

import orjson
import psycopg
import structlog

from ledger.cli import EXIT_DRIFT, EXIT_OK, CliError
from ledger.db import DatabaseUnavailable, connect
from ledger.settings import Settings

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
    from projections import reconcile as rec
    from projections.progress import Progress

    opts = rec.ReconcileOptions(
        tenant=args.tenant,
        budget=args.budget,
        workers=args.workers,
        currencies=settings.currencies,
        role=settings.database_role,
        unpublished_grace_seconds=args.grace,
    )
    kafka_check = None
    if args.source == "kafka":
        from projections.kafka_check import compare

        def kafka_check() -> Any:
            with connect(settings.database_url, role=settings.database_role) as conn:
                return compare(conn, settings, args.tenant, args.budget)

    progress = None
    if not args.json:
        with connect(settings.database_url, role=settings.database_role, autocommit=True) as conn:
            progress = Progress(rec.estimate_events(conn, opts))
    report = rec.reconcile(
        settings.database_url,
        opts,
        on_progress=progress,
        alerts_topic=None if args.no_alerts else settings.topic_alerts,
        kafka_check=kafka_check,
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
    try:
        if args.every is None:
            return _reconcile_once(args, settings)
        while True:  # scheduled mode: run, sleep, repeat; the exit code is the last run's
            started = time.monotonic()
            code = _reconcile_once(args, settings)
            log.info("reconcile_scheduled", exit_code=code, next_in_s=args.every)
            time.sleep(max(0.0, args.every - (time.monotonic() - started)))
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise CliError(f"cannot reach the database (LEDGER_DATABASE_URL): {_line(exc)}") from None


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the balance and reservation projections from the ledger, atomically; safe while
    the consumer runs (it waits for the swap, then applies its batch on top)."""
    from projections.rebuild import rebuild

    try:
        # The owner role: rebuilding deletes projection rows, which the application role cannot.
        with connect(settings.database_url) as conn:
            budgets, reservations = rebuild(conn, settings.currencies, args.tenant, args.budget)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise CliError(f"cannot reach the database (LEDGER_DATABASE_URL): {_line(exc)}") from None
    print(f"rebuilt {budgets} budget(s) and {reservations} reservation(s)")
    return EXIT_OK


def cmd_adjust(args: argparse.Namespace, settings: Settings) -> int:
    """Publish an audited `adjust` command (signed amount, reason, operator) for one budget and
    wait for the ledger's answer: exit 0 when applied (the new balances are printed), 1 when
    refused or dead-lettered (the reason is printed), 2 when no answer came in time."""
    from consumers.client import LedgerClient, OutcomeTimeout
    from consumers.outcome_cli import send_and_wait
    from schemas.commands import CommandInvalid

    command = {
        "type": "adjust",
        "command_id": args.command_id or f"adjust-{uuid.uuid4()}",
        "tenant_id": args.tenant,
        "budget_id": args.budget,
        "amount": args.amount,
        "reason": args.reason,
        "operator": args.operator,
    }
    try:
        if args.wait:
            return send_and_wait(settings, command, args.timeout)
        with LedgerClient(settings) as client:
            client.send(command, track=False)
            client.flush()
    except CommandInvalid as exc:
        raise CliError(f"invalid adjust ({exc.error_class}): {exc.reason}") from None
    except (OutcomeTimeout, TimeoutError) as exc:
        raise CliError(
            f"{exc}; the adjustment {command['command_id']} may still be applied later - "
            "check that `budget-ledger consume` and `relay` run, then look at the ledger"
        ) from None
    print(
        f"sent adjust {command['command_id']} to {settings.topic_commands} "
        f"key={args.tenant}:{args.budget}"
    )
    return EXIT_OK


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `reconcile`, `rebuild` and `adjust` to the CLI."""
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
    p.set_defaults(handler=cmd_reconcile)

    p = sub.add_parser(
        "rebuild", help="rebuild the projections from the ledger", description=cmd_rebuild.__doc__
    )
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument("--budget", help="only this budget id")
    p.set_defaults(handler=cmd_rebuild)

    p = sub.add_parser(
        "adjust", help="publish an audited correction", description=cmd_adjust.__doc__
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--budget", required=True)
    p.add_argument("--amount", required=True, help="signed decimal, e.g. 12.50 or -3.00")
    p.add_argument("--reason", required=True)
    p.add_argument("--operator", required=True)
    p.add_argument("--command-id", default=None, help="idempotency key (default: a new UUID)")
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit once Kafka has the command (exit code 0)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the ledger's answer (default 30)",
    )
    p.set_defaults(handler=cmd_adjust)
