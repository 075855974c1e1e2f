"""`ledger.db.stream_rows` against a real PostgreSQL: both ways of reading, and a statement
timeout set for the session."""

from __future__ import annotations

import psycopg
import pytest

from budget_ledger.ledger.db import connect, stream_rows

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "fetched"])
def test_every_row_comes_once_in_order_either_way(database_url: str, stream: bool) -> None:
    n = 45_001  # more than two fetches of a cursor, many chunks of a stream
    with connect(database_url) as conn, conn.transaction():
        rows = list(
            stream_rows(conn, "SELECT g, g * 2 FROM generate_series(1, %(n)s) g", {"n": n},
                        "stream_rows_test", stream)
        )  # fmt: skip
    assert rows == [(g, 2 * g) for g in range(1, n + 1)]


def test_a_streamed_read_is_not_cut_by_the_sessions_statement_timeout(database_url: str) -> None:
    # Streamed, a long read is one statement: ~0.45 s here, against a 200 ms timeout.
    slow = "SELECT g, pg_sleep(0.15)::text FROM generate_series(1, 3) g"  # a sleep a row
    with connect(database_url) as conn:
        conn.execute("SET statement_timeout = '200ms'")
        conn.commit()
        with conn.transaction():
            rows = list(stream_rows(conn, slow, {}, "slow", stream=True))
        assert [row[0] for row in rows] == [1, 2, 3]
        # Lifted for that transaction only: the same statement alone is cut.
        assert conn.execute("SHOW statement_timeout").fetchone() == ("200ms",)
        with pytest.raises(psycopg.errors.QueryCanceled), conn.transaction():
            conn.execute(slow).fetchall()
