"""The `budget-ledger` command line: one entry point for every operation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ledger.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """A failure to report as one line on stderr with exit code 2."""


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"budget-ledger: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending SQL migrations."""
    import psycopg

    from ledger.migrate import migrate

    try:
        applied = migrate(settings.database_url)
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot reach the database (LEDGER_DATABASE_URL): {_line(exc)}") from None
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return EXIT_OK


def cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create the command, events, alerts and DLQ topics (idempotent)."""
    from consumers.topics import create_topics

    created = create_topics(
        settings, partitions=args.partitions, replication=args.replication_factor
    )
    for name, status in created.items():
        print(f"{name}: {status}")
    return EXIT_OK


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    """Publish one command (JSON from the argument or stdin), keyed `tenant_id:budget_id`;
    with --wait, print the ledger's answer and exit 1 when it refused the command."""
    from consumers.client import send_raw_command
    from schemas.commands import CommandInvalid

    raw = args.json if args.json not in (None, "-") else sys.stdin.read()
    try:
        if args.wait:
            from consumers.client import OutcomeTimeout
            from consumers.outcome_cli import parse_object, send_and_wait

            try:
                return send_and_wait(settings, parse_object(raw.encode("utf-8")), args.timeout)
            except (OutcomeTimeout, TimeoutError) as exc:
                raise CliError(f"{exc}; is the consumer (and relay) running?") from None
        key = send_raw_command(settings, raw.encode("utf-8"))
    except CommandInvalid as exc:
        raise CliError(f"invalid command ({exc.error_class}): {exc.reason}") from None
    print(f"sent to {settings.topic_commands} key={key}")
    return EXIT_OK


def cmd_schemas_export(args: argparse.Namespace, settings: Settings) -> int:
    """Write one JSON Schema file per command, event and alert type into DIR."""
    import json
    from pathlib import Path

    from schemas.events import json_schemas

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    schemas = json_schemas()
    for name, schema in sorted(schemas.items()):
        (out / f"{name}.schema.json").write_text(
            json.dumps(schema, indent=2, sort_keys=True) + "\n"
        )
    print(f"wrote {len(schemas)} schemas to {out}")
    return EXIT_OK


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="budget-ledger",
        description="Event-sourced budget ledger fed by Kafka, stored in PostgreSQL. "
        "Configuration comes from LEDGER_* environment variables (and .env).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "migrate", help="apply pending SQL migrations", description=cmd_migrate.__doc__
    )
    p.set_defaults(handler=cmd_migrate)

    topics = sub.add_parser(
        "topics", help="manage Kafka topics", description="Manage Kafka topics."
    )
    tsub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    p = tsub.add_parser(
        "create", help="create the four topics", description=cmd_topics_create.__doc__
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions (default LEDGER_TOPIC_PARTITIONS=12)",
    )
    p.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="replication (default LEDGER_TOPIC_REPLICATION=1)",
    )
    p.set_defaults(handler=cmd_topics_create)

    p = sub.add_parser("send", help="publish one command", description=cmd_send.__doc__)
    p.add_argument(
        "json", nargs="?", default=None, help="the command as JSON; '-' or omitted reads stdin"
    )
    p.add_argument("--wait", action="store_true", help="wait for the ledger's answer")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p.set_defaults(handler=cmd_send)

    schemas = sub.add_parser(
        "schemas", help="wire-contract schemas", description="Wire-contract schemas."
    )
    ssub = schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    p = ssub.add_parser("export", help="write JSON Schemas", description=cmd_schemas_export.__doc__)
    p.add_argument("dir", help="output directory")
    p.set_defaults(handler=cmd_schemas_export)

    for register in _EXTENSIONS:
        register(sub)
    return parser


# Sub-commands that live next to the code they run register themselves here (see those modules).
_EXTENSIONS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


def _load_extensions() -> None:
    from consumers import commands as consumer_commands

    _EXTENSIONS.append(consumer_commands.register)
    try:
        from projections import commands as projection_commands
    except ImportError:
        return
    _EXTENSIONS.append(projection_commands.register)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    _load_extensions()
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(str(exc))
    from ledger.db import DatabaseUnavailable
    from ledger.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except CliError as exc:
        _fail(str(exc))
    except DatabaseUnavailable as exc:
        _fail(f"cannot reach the database (LEDGER_DATABASE_URL): {exc}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run the importable module's `main`, so that exceptions raised by sub-command modules
    # (which import `ledger.cli`) are the classes `main` catches, not copies in `__main__`.
    from ledger.cli import main as _main

    raise SystemExit(_main())
