"""Sub-commands that prepare the services and contracts: `migrate`, `topics create` and
`schemas export`."""

from __future__ import annotations

import argparse

from budget_ledger.entrypoints.errors import EXIT_OK, database_unreachable
from budget_ledger.ledger.settings import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending SQL migrations."""
    import psycopg

    from budget_ledger.ledger.migrate import migrate

    try:
        applied = migrate(settings.database_url)
    except psycopg.OperationalError as exc:
        raise database_unreachable(exc) from None
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return EXIT_OK


def cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create the command, events, alerts and DLQ topics (idempotent)."""
    from budget_ledger.consumers.topics import create_topics

    created = create_topics(
        settings, partitions=args.partitions, replication=args.replication_factor
    )
    for name, status in created.items():
        print(f"{name}: {status}")
    return EXIT_OK


def cmd_schemas_export(args: argparse.Namespace, settings: Settings) -> int:
    """Write one JSON Schema file per command, event and alert type into DIR."""
    import json
    from pathlib import Path

    from budget_ledger.schemas.events import json_schemas

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    schemas = json_schemas()
    for name, schema in sorted(schemas.items()):
        (out / f"{name}.schema.json").write_text(
            json.dumps(schema, indent=2, sort_keys=True) + "\n"
        )
    print(f"wrote {len(schemas)} schemas to {out}")
    return EXIT_OK


def add_migrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `migrate`."""
    p = sub.add_parser(
        "migrate", help="apply pending SQL migrations", description=cmd_migrate.__doc__
    )
    p.set_defaults(handler=cmd_migrate)


def add_topics(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `topics create`."""
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


def add_schemas(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `schemas export`."""
    schemas = sub.add_parser(
        "schemas", help="wire-contract schemas", description="Wire-contract schemas."
    )
    ssub = schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    p = ssub.add_parser("export", help="write JSON Schemas", description=cmd_schemas_export.__doc__)
    p.add_argument("dir", help="output directory")
    p.set_defaults(handler=cmd_schemas_export)
