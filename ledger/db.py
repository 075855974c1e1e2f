"""PostgreSQL connections: created on demand (never at import), dropped to the application role."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps
from psycopg_pool import AsyncConnectionPool, ConnectionPool

# libpq 17 brought chunked rows: a long read then streams (PostgreSQL sends the next rows while
# the caller works on the last ones), without a server-side cursor's bookkeeping; older libpq
# FETCHes from a cursor (docs/performance.md, "The replay's scan streamed").
CHUNKED = psycopg.pq.version() >= 170000
STREAM_CHUNK = 1_000
FETCH = 20_000


class DatabaseUnavailable(psycopg.OperationalError):
    """The database could not be reached or refused the credentials (retryable, like its base)."""


def connect(dsn: str, role: str | None = None, autocommit: bool = False) -> psycopg.Connection:
    """Open one connection; with `role`, `SET ROLE` so the session holds only that role's rights."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(_one_line(exc)) from None
    _configure(conn, role)
    if not autocommit:
        conn.commit()
    return conn


def _configure(conn: psycopg.Connection, role: str | None) -> None:
    # JIT compiles a plan per partition of the ledger (hundreds of functions, seconds for one
    # query over two years of monthly partitions) for queries that run in milliseconds without.
    conn.execute("SET jit = off")
    if role:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


def pool(dsn: str, role: str | None = None, size: int = 4) -> ConnectionPool:
    """A small connection pool whose connections run as `role`."""

    def configure(conn: psycopg.Connection) -> None:
        _configure(conn, role)
        conn.commit()

    return ConnectionPool(dsn, min_size=1, max_size=size, configure=configure, open=True)


def read_only_pool(dsn: str, role: str, size: int) -> AsyncConnectionPool:
    """An asyncio pool, not opened yet, whose connections run as `role` and begin every
    transaction READ ONLY (the API's hot reads: no thread, and no statement for either)."""

    async def configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute("SET jit = off")  # as `_configure`
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        await conn.commit()
        await conn.set_read_only(True)

    return AsyncConnectionPool(dsn, min_size=1, max_size=size, configure=configure, open=False)


def copy_rows(
    conn: psycopg.Connection,
    statement: str,
    rows: Iterable[Sequence[object]],
    types: Sequence[str] | None = None,
) -> None:
    """Stream rows into a table with a `COPY ... FROM STDIN` statement (one round trip). With
    `types` (the columns' PostgreSQL types) the statement is `FORMAT BINARY`: nothing is
    formatted as text here nor parsed from text there, and a json column's value is its JSON
    text, sent as it is."""
    with conn.cursor() as cur:
        if types is not None:
            set_json_dumps(_json_text, context=cur)
        with cur.copy(statement) as copy:
            if types is not None:
                copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)


def stream_rows(
    conn: psycopg.Connection,
    query: str,
    params: Mapping[str, object],
    cursor_name: str,
    stream: bool = True,
) -> Iterator[tuple[Any, ...]]:
    """A long read's rows in the order PostgreSQL sends them: streamed in chunks (``stream``,
    where libpq has chunked mode), else fetched from the server-side cursor ``cursor_name``.
    Inside the caller's transaction; streamed, it lifts `statement_timeout` for the rest of it."""
    if stream and CHUNKED:
        # Streamed, the whole read is one statement (a cursor's is one per FETCH): a timeout
        # set for the role would cut a long scan short, not a runaway query.
        conn.execute("SET LOCAL statement_timeout = 0")
        with conn.cursor() as cur:
            yield from cur.stream(query, params, size=STREAM_CHUNK)
    else:
        with conn.cursor(name=cursor_name) as cur:
            cur.itersize = FETCH
            yield from cur.execute(query, params)


def _json_text(value: object) -> str:
    # The rows carry JSON already serialised (the ledger's event: the exact text that was hashed).
    if not isinstance(value, str):
        raise TypeError(f"a json column takes JSON text here, not {type(value).__name__}")
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
