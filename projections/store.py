"""Writes of the balance and reservation projections: COPY into staging, then one merge each."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from functools import cache

import psycopg

from budget_ledger.ledger.db import copy_rows
from budget_ledger.ledger.sql import load_queries


@cache
def queries() -> dict[str, str]:
    """The projections' named queries (`projections/queries.sql`)."""
    return load_queries("budget_ledger.projections")


# Sessions whose staging tables were created outside any transaction (see prepare_session).
_PREPARED: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def prepare_session(conn: psycopg.Connection) -> None:
    """Create the session's staging tables once, in autocommit (so no rollback can undo it);
    `upsert_projections` then skips the per-batch `CREATE TEMP TABLE IF NOT EXISTS`."""
    if not conn.autocommit:
        return
    conn.execute(queries()["create_staging"])
    _PREPARED.add(conn)


def upsert_projections(
    conn: psycopg.Connection,
    balance_rows: Sequence[Sequence[object]],
    reservation_rows: Sequence[Sequence[object]],
) -> None:
    """Upsert balance and reservation rows inside the caller's transaction."""
    q = queries()
    if conn not in _PREPARED:
        conn.execute(q["create_staging"])
    merges = []
    for copy_name, merge_name, rows in (
        ("copy_staging_balances", "merge_balances", balance_rows),
        ("copy_staging_reservations", "merge_reservations", reservation_rows),
    ):
        if rows:
            copy_rows(conn, q[copy_name], rows)
            merges.append(q[merge_name])
    if merges:
        # No parameters: both merges go in one round trip (simple query protocol).
        conn.execute(";\n".join(merges))
