"""What one round trip to PostgreSQL costs the client's CPU, over TCP and over the Unix socket.

    .venv/bin/python -m bench.round_trip_bench            # 3,000 `SELECT 1` each way, 2 rounds

A consumer's batch makes about a dozen round trips whatever its size (up to three look-ups;
BEGIN, the positions, three COPYs of two each, the merges, COMMIT), so this is the floor of its
per-batch cost on the client's side.
Prints this process's user and system CPU a `SELECT 1` through psycopg, and through libpq
alone (`pgconn.exec_`: psycopg's Python layer left out), for LEDGER_DATABASE_URL as given and
for the same database over `--socket-dir` (skipped when that directory has no socket).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from budget_ledger.ledger.settings import load_settings


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _over_socket(dsn: str, socket_dir: str) -> str:
    """The same user, password, port and database, through the Unix socket in `socket_dir`."""
    parts = urlsplit(dsn)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = f"host={socket_dir}&port={parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=auth, query=query))


def _measure(dsn: str, label: str, n: int, rounds: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in range(1, rounds + 1):
            (u0, s0), w0 = _cpu(), time.perf_counter()
            for _ in range(n):
                conn.execute("SELECT 1")
            (u1, s1), w1 = _cpu(), time.perf_counter()
            for _ in range(n):
                conn.pgconn.exec_(b"SELECT 1")
            u2, s2 = _cpu()
            us = [(b - a) / n * 1e6 for a, b in ((u0, u1), (s0, s1), (w0, w1), (u1, u2), (s1, s2))]
            print(f"round {r} {label:6s} psycopg: user {us[0]:4.0f} µs, system {us[1]:4.0f} µs, "
                  f"wall {us[2]:4.0f} µs | libpq alone: user {us[3]:4.0f} µs, system "
                  f"{us[4]:4.0f} µs")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=3_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--socket-dir", default="/var/run/postgresql")
    args = p.parse_args()
    dsn = load_settings().database_url
    _measure(dsn, "as set", args.queries, args.rounds)
    port = urlsplit(dsn).port or 5432
    if Path(args.socket_dir, f".s.PGSQL.{port}").exists():
        _measure(_over_socket(dsn, args.socket_dir), "socket", args.queries, args.rounds)


if __name__ == "__main__":
    main()
