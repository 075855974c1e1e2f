"""`keys create|list|revoke`: API keys of the HTTP API (owner credentials; docs/api.md)."""

from __future__ import annotations

import argparse

from budget_ledger.entrypoints.errors import EXIT_OK, CliError, database_unreachable
from budget_ledger.ledger.settings import Settings


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    import psycopg

    from budget_ledger.entrypoints.api.keys import MAX_NAME_LENGTH, create_key, parse_scopes
    from budget_ledger.ledger.db import DatabaseUnavailable, connect

    try:
        scopes = parse_scopes(args.scopes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.tenant is None and not args.platform:
        raise CliError(
            "name the tenant with --tenant, or pass --platform for a key of every tenant"
        )
    if args.tenant is not None and args.platform:
        raise CliError("--tenant and --platform exclude each other")
    name = args.name or (f"{args.tenant} key" if args.tenant else "platform key")
    if not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        raise CliError(f"--name: 1-{MAX_NAME_LENGTH} printable characters")
    try:
        with connect(settings.database_url) as conn:  # the owner: the key table is its own
            key, text = create_key(conn, args.tenant, scopes, name)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    except psycopg.errors.UndefinedTable:
        raise CliError("no api_keys table: run `budget-ledger migrate` first") from None
    who = f"tenant {key.tenant_id}" if key.tenant_id else "every tenant (platform key)"
    print(f"API key {key.key_id} for {who}, scopes {','.join(scopes)}, name {key.name!r}.")
    print("It is shown once and cannot be recovered; send it as `Authorization: Bearer <key>`:")
    print(text)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """List API keys (never their secrets): id, tenant, scopes, name, created, revoked."""
    import psycopg

    from budget_ledger.entrypoints.api.keys import SCOPES, list_keys
    from budget_ledger.ledger.db import DatabaseUnavailable, connect

    try:
        with connect(settings.database_url) as conn:
            keys = list_keys(conn, args.tenant)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    print("key_id\ttenant\tscopes\tname\tcreated_at\trevoked_at")
    for k in keys:
        scopes = ",".join(s for s in SCOPES if s in k.scopes)
        tenant = k.tenant_id if k.tenant_id is not None else "*"
        created = k.created_at.isoformat() if k.created_at else "-"
        revoked = k.revoked_at.isoformat() if k.revoked_at else "-"
        print(f"{k.key_id}\t{tenant}\t{scopes}\t{k.name}\t{created}\t{revoked}")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke an API key: from the next request on, it is refused with 401."""
    import psycopg

    from budget_ledger.entrypoints.api.keys import revoke_key
    from budget_ledger.ledger.db import DatabaseUnavailable, connect

    try:
        with connect(settings.database_url) as conn:
            done = revoke_key(conn, args.key_id)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise database_unreachable(exc) from None
    if not done:
        raise CliError(f"no active key {args.key_id!r} (unknown, or revoked already)")
    print(f"revoked API key {args.key_id}")
    return EXIT_OK


def add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `keys create|list|revoke`."""
    p = sub.add_parser(
        "keys",
        help="API keys of the HTTP API",
        description="API keys of the HTTP API (run with the owner's LEDGER_DATABASE_URL).",
    )
    area = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = area.add_parser("create", help="create a key", description=cmd_keys_create.__doc__)
    c.add_argument("--tenant", help="the tenant the key may act for")
    c.add_argument(
        "--platform", action="store_true", help="a key without tenant: it may act for EVERY tenant"
    )
    c.add_argument("--scopes", required=True, help="comma-separated: read, write, operator")
    c.add_argument("--name", help="what the key is for (shown by `keys list`)")
    c.set_defaults(handler=cmd_keys_create)
    ls = area.add_parser("list", help="list keys", description=cmd_keys_list.__doc__)
    ls.add_argument("--tenant", help="only this tenant's keys")
    ls.set_defaults(handler=cmd_keys_list)
    r = area.add_parser("revoke", help="revoke a key", description=cmd_keys_revoke.__doc__)
    r.add_argument("key_id", help="the key's id (the 16 hex digits after blk_)")
    r.set_defaults(handler=cmd_keys_revoke)
