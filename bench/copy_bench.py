"""What the consumer's binary COPY of ledger rows saves against the text COPY it replaced.

    .venv/bin/python -m bench.copy_bench --database bench_scale_20m    # 50,000 rows, 4 rounds

Reads `--rows` recent ledger rows of `--database` (next to LEDGER_DATABASE_URL) in the
consumer's COPY layout, then alternately COPYs them into a temporary table as text (psycopg
formats every value, PostgreSQL parses it) and as `store.append_ledger_rows` does (binary,
`ledger.db.copy_rows` with the column types), each in a transaction rolled back. Prints, per
format and round: wall seconds, this process's CPU, and the server backend's CPU
(`/proc/<pid>/stat`), so both sides of the saving show. Nothing is written.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg

from bench import procstat
from bench.scaling import _with_db
from budget_ledger.ledger.db import copy_rows
from budget_ledger.ledger.settings import load_settings
from budget_ledger.ledger.store import LEDGER_COPY_TYPES

# The ledger's columns in the consumer's COPY layout (`ledger.store.append_ledger_rows`).
_COLUMNS = (
    "tenant_id, budget_id, sequence, type, command_id, command_fingerprint, ref_id, currency,"
    " amount, funded, reserved, charged, available, kafka_topic, kafka_partition, kafka_offset,"
    " event, recorded_at, prev_hash, hash, reason, utilization_bp"
)


def recent_ledger_rows(conn: psycopg.Connection[Any], n: int) -> list[tuple[Any, ...]]:
    """The `n` most recent ledger rows, as the consumer COPYs them (the event as its text)."""
    return [
        (*r[:21], None if r[21] is None else int(r[21]))  # utilization_bp: an int, as written
        for r in conn.execute(
            f"SELECT {_COLUMNS.replace('event,', 'event::text,')} FROM ledger"
            " ORDER BY recorded_at DESC LIMIT %s",
            (n,),
        )
    ]


def _cpu(pid: int) -> float:
    return (procstat.cpu_ticks(pid) or 0) / procstat.TICK


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", required=True)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    with psycopg.connect(_with_db(load_settings().database_url, args.database)) as conn:
        rows = recent_ledger_rows(conn, args.rows)
        backend = conn.info.backend_pid
        conn.execute(f"CREATE TEMP TABLE copy_bench AS SELECT {_COLUMNS} FROM ledger LIMIT 0")
        conn.commit()
        statements = {
            "text": (f"COPY copy_bench ({_COLUMNS}) FROM STDIN", None),
            "binary": (
                f"COPY copy_bench ({_COLUMNS}) FROM STDIN (FORMAT BINARY)",
                LEDGER_COPY_TYPES,
            ),
        }
        print(f"{len(rows):,} ledger rows; seconds: wall / this process's CPU / backend's CPU")
        for n in range(1, args.rounds + 1):
            for name, (statement, types) in statements.items():
                with conn.transaction(force_rollback=True):
                    wall, cpu, server = time.perf_counter(), time.process_time(), _cpu(backend)
                    copy_rows(conn, statement, rows, types)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    server = _cpu(backend) - server
                print(f"round {n} {name:6s} {wall:6.3f} / {cpu:6.3f} / {server:5.2f}")


if __name__ == "__main__":
    main()
