"""`ledger partitions ensure` and `ledger partitions list`: the ledger table's monthly partitions
(migration 008, docs/scaling.md "Partitioned ledger")."""

from __future__ import annotations

import argparse

from budget_ledger.entrypoints.errors import EXIT_OK, CliError, database_unreachable
from budget_ledger.ledger.settings import Settings

DEFAULT_AHEAD = 3  # ledger/table_partitions.py DEFAULT_MONTHS_AHEAD (not imported: fast --help)


def cmd_partitions_ensure(args: argparse.Namespace, settings: Settings) -> int:
    """Create the missing monthly partitions of the ledger from the current UTC month to AHEAD
    months later (idempotent; what the daily CronJob and the consumer at start-up run)."""
    import psycopg

    from budget_ledger.ledger.db import DatabaseUnavailable, connect
    from budget_ledger.ledger.table_partitions import ensure_partitions

    if not 0 <= args.ahead <= 120:
        raise CliError("--ahead must be between 0 and 120")
    try:
        # The processes' role suffices: EXECUTE on ledger_ensure_partitions (SECURITY DEFINER).
        with connect(settings.app_dsn(), role=settings.database_role) as conn:
            months = ensure_partitions(conn, args.ahead)
            conn.commit()
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    except psycopg.Error as exc:
        raise CliError(f"ensuring partitions failed: {exc.diag.message_primary}") from None
    for m in months:
        print(f"{m.name}  [{m.range_from.isoformat()}, {m.range_to.isoformat()})  {m.outcome}")
    return EXIT_OK


def cmd_partitions_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the ledger's partitions with their bounds, estimated rows and size, and the exact
    number of rows in the DEFAULT partition (rows whose month had no partition)."""
    import psycopg

    from budget_ledger.ledger.db import DatabaseUnavailable, connect
    from budget_ledger.ledger.table_partitions import default_partition_rows, list_partitions

    try:
        with connect(settings.database_url) as conn:  # the owner: partitions are granted to nobody
            parts = list_partitions(conn)
            in_default = default_partition_rows(conn)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    except psycopg.Error as exc:
        raise CliError(f"listing partitions failed: {exc.diag.message_primary}") from None
    for p in parts:
        rows = "?" if p.estimated_rows is None else f"~{p.estimated_rows}"
        guard = "" if p.has_sequence_key else "  (no sequence key: run `partitions ensure`)"
        print(f"{p.name}  {p.bounds}  rows {rows}  {p.total_bytes} bytes{guard}")
    print(f"rows in ledger_default: {in_default}")
    return EXIT_OK


def add_partitions(area: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ledger partitions ensure|list` under the `ledger` command."""
    p = area.add_parser(
        "partitions",
        help="the ledger table's monthly partitions",
        description="The ledger table's monthly partitions (docs/scaling.md).",
    )
    actions = p.add_subparsers(dest="partitions_command", required=True, metavar="ACTION")
    e = actions.add_parser(
        "ensure",
        help="create the missing monthly partitions ahead",
        description=cmd_partitions_ensure.__doc__,
        epilog="A month whose rows already sit in ledger_default is skipped and reported.",
    )
    e.add_argument(
        "--ahead",
        type=int,
        default=DEFAULT_AHEAD,
        help=f"months after the current one (default {DEFAULT_AHEAD})",
    )
    e.set_defaults(handler=cmd_partitions_ensure)
    lst = actions.add_parser(
        "list",
        help="bounds, estimated rows and size of every partition (owner credentials)",
        description=cmd_partitions_list.__doc__,
    )
    lst.set_defaults(handler=cmd_partitions_list)
