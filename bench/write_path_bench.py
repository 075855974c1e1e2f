"""What each statement of the consumer's batch write costs PostgreSQL a row, by batch size.

    .venv/bin/python -m bench.write_path_bench --database bench_scale_1m   # 20,000 rows, 2 rounds

Reads `--rows` recent ledger rows and as many balance and reservation rows of `--database`
(next to LEDGER_DATABASE_URL; any ledger the bench filled) and writes them back the way the
consumer does, in statements of each `--batch` size: the ledger rows through
`ledger.store.append_ledger_rows` (binary COPY into the partitioned ledger, its indexes and
`ledger_commands` guard) under a new tenant and topic so that no key collides, all of a size in
one transaction rolled back (nothing is written); the balance and reservation rows through the
projections' staging COPY and merge (`projections/queries.sql`), one transaction a statement as
the consumer commits a batch (the staging tables empty at commit), each row once a size: they
are rewritten with their own values. Prints the backend's CPU a row (`/proc/<pid>/stat`) per
statement and size: a per-statement cost shows as a higher figure at small batches, a per-row
cost as the floor at large ones.

`--ledger-parts` instead times the ledger COPY (statements of 1,000 rows) with each of its
indexes, or its `ledger_commands` guard, dropped inside the transaction that is rolled back
(nothing changes; the partition and `ledger_commands` are vacuumed before each measure, since
the rolled-back rows of the one before would otherwise slow the next): what each costs a row
is the difference from "all".
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import psycopg
from psycopg import sql

from bench import procstat
from bench.copy_bench import recent_ledger_rows
from bench.scaling import _with_db
from budget_ledger.ledger.db import copy_rows
from budget_ledger.ledger.settings import load_settings
from budget_ledger.ledger.store import append_ledger_rows
from budget_ledger.projections.store import queries

# The staging layout (`copy_staging_balances`), as the consumer's text COPY sends it.
_BALANCES = (
    "tenant_id, budget_id, currency, opened, funded, reserved, charged, available, budget_limit,"
    " utilization_pct::text, sequence, last_hash, period_start, config::text, updated_at, digits,"
    " above_soft, above_hard, cap_reached_alerted, snapshot_seq, monitors::text"
)
_RESERVATIONS = (
    "tenant_id, budget_id, ref_id, status, amount, charged, expires_at, command_id, created_seq,"
    " updated_seq"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", required=True)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--batch", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ledger-parts", action="store_true", help="what each ledger index costs")
    args = p.parse_args()
    q = queries()
    url = _with_db(load_settings().database_url, args.database)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET jit = off")
        ledger = [
            # A new tenant, topic and offsets: the same rows again, colliding with nothing.
            (f"zz-{r[0]}", *r[1:13], "zz.write-path-bench", r[14], i, *r[16:])
            for i, r in enumerate(recent_ledger_rows(conn, args.rows))
        ]
        if args.ledger_parts:
            _ledger_parts(conn, ledger, args.rounds)
            return
        balances = conn.execute(
            f"SELECT {_BALANCES} FROM budget_balances LIMIT %s", (args.rows,)
        ).fetchall()
        reservations = conn.execute(
            f"SELECT {_RESERVATIONS} FROM reservations LIMIT %s", (args.rows,)
        ).fetchall()
        conn.execute(q["create_staging"])
        backend = conn.info.backend_pid

        def staged(copy: str, merge: str) -> Callable[[Sequence[Sequence[object]]], None]:
            def write(rows: Sequence[Sequence[object]]) -> None:
                with conn.transaction():  # a batch's: the staging table empties at its commit
                    copy_rows(conn, q[copy], rows)
                    conn.execute(q[merge])

            return write

        # (rows, one statement's write, rolled back as a whole?)
        writes: dict[str, tuple[list[tuple[object, ...]], Callable[..., None], bool]] = {
            "ledger COPY": (ledger, lambda rows: append_ledger_rows(conn, rows), True),
            "balances COPY + merge": (
                balances, staged("copy_staging_balances", "merge_balances"), False),
            "reservations COPY + merge": (
                reservations, staged("copy_staging_reservations", "merge_reservations"), False),
        }  # fmt: skip
        print(f"{len(ledger):,} ledger, {len(balances):,} balance and {len(reservations):,} "
              "reservation rows; the backend's CPU, µs a row")  # fmt: skip
        for n in range(1, args.rounds + 1):
            for name, (rows, write, rolled_back) in writes.items():
                figures = []
                for batch in args.batch:
                    # The ledger's in one transaction rolled back; the others commit a batch each.
                    scope: AbstractContextManager[object] = (
                        conn.transaction(force_rollback=True) if rolled_back else nullcontext()
                    )
                    with scope:
                        per_row = _backend_us_a_row(backend, rows, write, batch)
                    figures.append(f"{batch:>5} a statement {per_row:5.1f}")
                print(f"round {n} {name:26s} " + " | ".join(figures))


def _backend_us_a_row(
    backend: int,
    rows: Sequence[tuple[object, ...]],
    write: Callable[[Sequence[tuple[object, ...]]], None],
    batch: int,
) -> float:
    """Write `rows` in statements of `batch`; the backend's CPU a row, in µs."""
    before = procstat.cpu_ticks(backend) or 0
    for i in range(0, len(rows), batch):
        write(rows[i : i + batch])
    ticks = (procstat.cpu_ticks(backend) or 0) - before
    return ticks / procstat.TICK / max(len(rows), 1) * 1e6


# What the ledger's write maintains besides its heap (migrations 001, 008): each dropped in turn.
_LEDGER_PARTS: dict[str, str | None] = {
    "all": None,
    "without ledger_pkey (Kafka position)": "ALTER TABLE ledger DROP CONSTRAINT ledger_pkey",
    "without the partition's sequence key": "ALTER TABLE {part} DROP CONSTRAINT {key}",
    "without ledger_budget_pages": "DROP INDEX ledger_budget_pages",
    "without ledger_config_events": "DROP INDEX ledger_config_events",
    "without ledger_recorded_at_brin": "DROP INDEX ledger_recorded_at_brin",
    "without the ledger_commands guard": "DROP TRIGGER ledger_commands_guard ON ledger",
}


def _ledger_parts(conn: psycopg.Connection, rows: list[tuple[object, ...]], rounds: int) -> None:
    """The ledger COPY's backend CPU a row with each part dropped (rolled back), by round."""
    found = conn.execute(
        "SELECT tableoid::regclass::text FROM ledger ORDER BY recorded_at DESC LIMIT 1"
    ).fetchone()
    if found is None:
        raise SystemExit("the ledger is empty")
    part = found[0]
    key = sql.Identifier(f"{part}_sequence_key")
    backend = conn.info.backend_pid
    figures: dict[str, list[float]] = {name: [] for name in _LEDGER_PARTS}
    for _ in range(rounds):
        for name, ddl in _LEDGER_PARTS.items():
            conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(part)))
            conn.execute("VACUUM ledger_commands")
            with conn.transaction(force_rollback=True):
                if ddl is not None:
                    conn.execute(sql.SQL(ddl).format(part=sql.Identifier(part), key=key))
                write = functools.partial(append_ledger_rows, conn)
                figures[name].append(_backend_us_a_row(backend, rows, write, 1000))
    print(f"{len(rows):,} ledger rows into {part}, 1,000 a COPY; the backend's CPU, µs a row")
    for name, values in figures.items():
        print(f"{name:40s} " + " ".join(f"{v:5.1f}" for v in values))


if __name__ == "__main__":
    main()
