"""The benchmarks' databases: a fresh one next to the admin URL (migrated, empty, or a copy of
a filled template), dropped afterwards."""

from __future__ import annotations

import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def create_database(admin_dsn: str, template: str | None = None, migrated: bool = True) -> str:
    """A new migrated database (`migrated=False`: empty); with `template`, a copy of that
    (filled) database."""
    from budget_ledger.ledger.migrate import migrate

    name = f"bench_{uuid.uuid4().hex[:10]}"
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)
    url = _with_db(admin_dsn, name)
    if migrated:
        migrate(url)
    return url


def drop_database(admin_dsn: str, url: str) -> None:
    """Drop a benchmark database; waits for sessions (e.g. autovacuum) to go, retries a while."""
    name = urlsplit(url).path.lstrip("/")
    stmt = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    for _ in range(30):
        try:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(stmt)
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(1.0)
    print(f"note: database {name} is still in use and was not dropped", file=sys.stderr)
