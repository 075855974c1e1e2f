"""Owner-only SQL sub-commands: `readers create` (a login that reads one tenant only) and
`ledger seal-legacy` (the keyed chain's cut-over for rows written before the key)."""

from __future__ import annotations

import argparse
import getpass
import os

from budget_ledger.entrypoints import partition_commands
from budget_ledger.entrypoints.errors import EXIT_OK, CliError, database_unreachable
from budget_ledger.ledger.settings import Settings

PASSWORD_ENV = "LEDGER_READER_PASSWORD"


def _password() -> str:
    """From LEDGER_READER_PASSWORD, else asked twice on the terminal (never echoed or printed)."""
    if value := os.environ.get(PASSWORD_ENV):
        return value
    try:
        first = getpass.getpass("password for the new reader: ")
        second = getpass.getpass("again: ")
    except (EOFError, KeyboardInterrupt):
        raise CliError(f"no password: set {PASSWORD_ENV} or run on a terminal") from None
    if first != second:
        raise CliError("the two passwords differ")
    return first


def cmd_readers_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a login role that sees only TENANT's ledger, balances and reservations (row-level
    security tied to the login role), or reset the password of that same reader."""
    import psycopg
    from pydantic import SecretStr

    from budget_ledger.ledger.db import DatabaseUnavailable, connect
    from budget_ledger.projections.readers import ReaderRefused, create_reader

    password = SecretStr(_password())
    try:
        with connect(settings.database_url) as conn:  # the owner: it creates roles
            done = create_reader(conn, args.tenant, args.role, password)
    except ReaderRefused as exc:
        raise CliError(str(exc)) from None
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CliError(
            f"the owner role may not create roles (CREATEROLE needed): {exc.diag.message_primary}"
        ) from None
    print(f"reader {args.role} of tenant {args.tenant}: {done.replace('_', ' ')}")
    return EXIT_OK


def add_readers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `readers create`."""
    p = sub.add_parser(
        "readers",
        help="per-tenant SQL reader logins",
        description="Per-tenant SQL reader logins (run with the owner's LEDGER_DATABASE_URL).",
    )
    area = p.add_subparsers(dest="readers_command", required=True, metavar="ACTION")
    c = area.add_parser(
        "create",
        help="create a login role that reads one tenant only",
        description=cmd_readers_create.__doc__,
        epilog=f"The password comes from {PASSWORD_ENV} or a prompt; it is never printed.",
    )
    c.add_argument("--tenant", required=True, help="the tenant this role may read")
    c.add_argument("--role", required=True, help="the login role to create")
    c.set_defaults(handler=cmd_readers_create)


def cmd_seal_legacy(args: argparse.Namespace, settings: Settings) -> int:
    """Seal every budget's rows written without a MAC (before LEDGER_CHAIN_KEY_ID was set) with
    the current chain key, so that `reconcile` accepts them and refuses any unkeyed row after."""
    import psycopg

    from budget_ledger.ledger.db import DatabaseUnavailable, connect
    from budget_ledger.projections.chain_seal import seal_legacy

    key = settings.chain_key()
    if key is None:
        raise CliError("no chain key: set LEDGER_CHAIN_KEYS and LEDGER_CHAIN_KEY_ID")
    try:
        with connect(settings.database_url) as conn:  # the owner: the seals are its table
            sealed = seal_legacy(conn, key)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    print(f"sealed the unkeyed rows of {sealed} budget(s) with chain key {key.key_id}")
    return EXIT_OK


def add_ledger(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ledger seal-legacy` and `ledger partitions ensure|list`."""
    p = sub.add_parser(
        "ledger",
        help="administration of the ledger table (owner credentials)",
        description="Administration of the ledger table (with the owner's LEDGER_DATABASE_URL).",
    )
    area = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    c = area.add_parser(
        "seal-legacy",
        help="vouch for the rows written before the chain key (key cut-over)",
        description=cmd_seal_legacy.__doc__,
        epilog="Run `reconcile` first: a seal vouches for what the ledger holds when it is made.",
    )
    c.set_defaults(handler=cmd_seal_legacy)
    partition_commands.add_partitions(area)
