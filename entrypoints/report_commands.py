"""`report`: a budget's or a tenant's range report as JSON or CSV, by the same code as the HTTP
API's report endpoints (projections/reports.py, entrypoints/report_render.py; docs/api.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

from budget_ledger.entrypoints.errors import EXIT_OK, CliError, database_unreachable
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.reports import PERIODS, RangeSpec


def _time(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{name}: not an RFC 3339 time: {text!r}") from None
    if value.tzinfo is None:
        raise CliError(f"{name}: give the time with its offset (e.g. Z or +02:00): {text!r}")
    return value.astimezone(UTC)


def range_spec(args: argparse.Namespace) -> RangeSpec:
    """The range the arguments ask for (CliError, exit 2, when they do not make one)."""
    try:
        return RangeSpec.of(_time("--from", args.since), _time("--to", args.until), args.period)
    except ValueError as exc:
        raise CliError(f"report range: {exc}") from None


def _chunks(args: argparse.Namespace, settings: Settings) -> Iterator[bytes]:
    from budget_ledger.entrypoints.report_render import csv_chunks, report_json, tenant_json_chunks
    from budget_ledger.ledger.db import connect
    from budget_ledger.projections.api_reads import bind_tenant, get_budget
    from budget_ledger.projections.reports import budget_report, tenant_reports

    spec = range_spec(args)
    now = datetime.now(UTC)
    # The owner's URL, or a tenant reader login's (it sees only its own tenant's rows).
    with connect(settings.database_url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        bind_tenant(conn, args.tenant)  # what the API's reader role filters on
        if args.budget is not None:
            budget = get_budget(conn, args.tenant, args.budget)
            if budget is None:
                raise CliError(f"no budget {args.budget!r} of tenant {args.tenant!r}")
            report = budget_report(conn, budget, *spec.for_budget(budget, now))
            if args.format == "csv":
                yield from csv_chunks([report])
            else:
                import orjson

                yield orjson.dumps(report_json(report), option=orjson.OPT_APPEND_NEWLINE)
            return
        reports = tenant_reports(conn, args.tenant, lambda b: spec.for_budget(b, now))
        if args.format == "csv":
            yield from csv_chunks(reports)
        else:
            yield from tenant_json_chunks(args.tenant, spec, reports)
            yield b"\n"


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Write a range report of one budget (--budget) or of every budget of the tenant."""
    import psycopg

    range_spec(args)  # bad arguments fail before anything is opened
    target = None if args.output in (None, "-") else args.output
    partial = None if target is None else f"{target}.partial"
    try:
        out = sys.stdout.buffer if partial is None else open(partial, "wb")  # noqa: SIM115
        try:
            for chunk in _chunks(args, settings):
                out.write(chunk)
            out.flush()
        finally:
            if partial is not None:
                out.close()
    except BaseException as exc:
        if partial is not None and os.path.exists(partial):
            os.unlink(partial)  # never leave half a report under the name asked for
        if isinstance(exc, psycopg.OperationalError):  # DatabaseUnavailable too
            raise database_unreachable(exc) from None
        if isinstance(exc, OSError):
            raise CliError(f"cannot write the report to {target or 'stdout'}: {exc}") from None
        raise
    if target is not None and partial is not None:
        os.replace(partial, target)
    return EXIT_OK


def add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `report`."""
    p = sub.add_parser(
        "report",
        help="a budget's or a tenant's range report (JSON or CSV)",
        description=f"{cmd_report.__doc__} Ranges are [--from, --to) on recorded_at, RFC 3339 "
        "with an offset, or --period: the current period in each budget's time zone. Runs with "
        "LEDGER_DATABASE_URL (the owner, or a tenant reader login from `readers create`).",
    )
    p.add_argument("--tenant", required=True, help="the tenant")
    p.add_argument("--budget", help="one budget (default: every budget of the tenant)")
    p.add_argument("--from", dest="since", metavar="TIME", help="inclusive, e.g. 2026-11-01T00:00Z")
    p.add_argument("--to", dest="until", metavar="TIME", help="exclusive")
    p.add_argument("--period", choices=PERIODS, help="instead of --from/--to")
    p.add_argument("--format", choices=("json", "csv"), default="json", help="default json")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(handler=cmd_report)
