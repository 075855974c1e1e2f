"""Writes of the balance and reservation projections: COPY into staging, then one merge each."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import psycopg

from ledger.sql import load_queries


@cache
def queries() -> dict[str, str]:
    """The projections' named queries (`projections/queries.sql`)."""
    return load_queries("projections")


def upsert_projections(
    conn: psycopg.Connection,
    balance_rows: Sequence[Sequence[object]],
    reservation_rows: Sequence[Sequence[object]],
) -> None:
    """Upsert balance and reservation rows inside the caller's transaction."""
    q = queries()
    conn.execute(q["create_staging"])
    with conn.cursor() as cur:
        for copy_name, merge_name, rows in (
            ("copy_staging_balances", "merge_balances", balance_rows),
            ("copy_staging_reservations", "merge_reservations", reservation_rows),
        ):
            if not rows:
                continue
            with cur.copy(q[copy_name]) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(q[merge_name])
