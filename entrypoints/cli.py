"""The `budget-ledger` command line: one entry point for every operation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from budget_ledger.entrypoints import (
    acl_commands,
    deliver_commands,
    demo,
    key_commands,
    positions_commands,
    projection_commands,
    publish_commands,
    reader_commands,
    report_commands,
    rollup_commands,
    setup_commands,
    worker_commands,
)
from budget_ledger.entrypoints.api import serve
from budget_ledger.entrypoints.errors import (
    EXIT_DRIFT,
    EXIT_OK,
    EXIT_POSITION_REFUSED,
    EXIT_RELAY_DIED,
    EXIT_USAGE,
    CliError,
)
from budget_ledger.ledger.settings import Settings, SettingsError, load_settings

__all__ = [
    "EXIT_DRIFT",
    "EXIT_OK",
    "EXIT_POSITION_REFUSED",
    "EXIT_RELAY_DIED",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
]

Handler = Callable[[argparse.Namespace, Settings], int]

# Every top-level sub-command, in the order `--help` lists them. A new command: write its
# `cmd_*` handler and `add_*` registration in the module of its area, then add it here.
COMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    setup_commands.add_migrate,
    setup_commands.add_topics,
    acl_commands.add_acls,
    publish_commands.add_send,
    setup_commands.add_schemas,
    worker_commands.add_consume,
    worker_commands.add_relay,
    positions_commands.add_positions,
    worker_commands.add_sweep,
    deliver_commands.add_deliver,
    demo.add_demo,
    projection_commands.add_reconcile,
    projection_commands.add_rebuild,
    publish_commands.add_adjust,
    reader_commands.add_readers,
    reader_commands.add_ledger,
    key_commands.add_keys,
    serve.add_serve,
    report_commands.add_report,
    rollup_commands.add_reports,
)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"budget-ledger: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="budget-ledger",
        description="Event-sourced budget ledger fed by Kafka, stored in PostgreSQL. "
        "Configuration comes from LEDGER_* environment variables (and .env).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(str(exc))
    from budget_ledger.ledger.db import DatabaseUnavailable
    from budget_ledger.ledger.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except CliError as exc:
        _fail(str(exc))
    except DatabaseUnavailable as exc:
        # Processes and reconcile log in with the app URL when it is set; migrate, rebuild and
        # the other owner commands with LEDGER_DATABASE_URL.
        _fail(f"cannot reach the database (LEDGER_APP_DATABASE_URL or LEDGER_DATABASE_URL): {exc}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
