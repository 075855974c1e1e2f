"""Scaling benchmark: costs measured on ledgers of 1M and 20M events (docs/scaling.md).

    .venv/bin/python -m bench.scaling fill --database bench_scale_1m --events 1000000 \\
        --budgets 50000 --hot-events 500000
    .venv/bin/python -m bench.scaling measure --database bench_scale_1m

`fill` creates (or replaces) a database next to LEDGER_DATABASE_URL, migrates it and COPYs a
history into it: one hot budget with `--hot-events` events and `--budgets` background budgets
sharing the rest, spread over `--months` months of `recorded_at` ending now. Every event is made
by the domain itself (decide, seal onto the budget's hash chain, evolve), so the chains, balances
and projections are the real ones; only the wire parsing is skipped (commands are built as
domain values) and the stored command fingerprints are digests of the command ids. Background
workers run in parallel processes, one per `--workers`, plus one for the hot budget.

`measure` times, on such a database, what issue 12 asks to be independent of history: the
state load of the hot budget (cold, fresh connection), a ledger page of 50 entries of a budget
by date range, and an incremental reconcile after new events; the end-to-end throughput and the
first-command-after-restart figures use `python -m bench --template-database` and
`bench.restart` against the same database.
"""

from __future__ import annotations

import argparse
import sys

# The sub-commands live in sibling modules, one job each; the names other benchmarks import
# from bench.scaling stay importable from here.
from bench.scaling_fill import fill, project
from bench.scaling_history import (
    CHUNK,
    HOT,
    PARTITIONS,
    TOPIC,
    _prepare_partitions,
    _run_worker,
    _with_db,
    budget_commands,
)
from bench.scaling_measure import measure
from bench.scaling_reconcile import append, incremental, seed_checkpoints
from bench.scaling_restart import restart

__all__ = [
    "CHUNK",
    "HOT",
    "PARTITIONS",
    "TOPIC",
    "_prepare_partitions",
    "_run_worker",
    "_with_db",
    "append",
    "budget_commands",
    "fill",
    "incremental",
    "main",
    "measure",
    "project",
    "restart",
    "seed_checkpoints",
]


def main(argv: list[str] | None = None) -> int:
    """`fill`, `measure` or `restart`."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fill", help="create and fill a scaling database")
    f.add_argument("--database", required=True)
    f.add_argument("--events", type=int, default=1_000_000)
    f.add_argument("--budgets", type=int, default=50_000)
    f.add_argument("--hot-events", type=int, default=500_000)
    f.add_argument("--months", type=int, default=24)
    f.add_argument("--workers", type=int, default=2, help="background writer processes")
    m = sub.add_parser("measure", help="time the per-budget costs on a filled database")
    m.add_argument("--database", required=True)
    m.add_argument("--runs", type=int, default=5)
    m.add_argument("--replay", action="store_true", help="also time the old load by replay")
    r = sub.add_parser("restart", help="time the first command after a consumer restart")
    r.add_argument("--database", required=True)
    r.add_argument("--runs", type=int, default=3)
    c = sub.add_parser("seed-checkpoints", help="checkpoints as a clean full run leaves them")
    c.add_argument("--database", required=True)
    a = sub.add_parser("append", help="write new events now to random budgets")
    a.add_argument("--database", required=True)
    a.add_argument("--events", type=int, default=100_000)
    a.add_argument("--budgets", type=int, default=0, help="over this many (default events/2)")
    a.add_argument("--seed", type=int, default=12)
    j = sub.add_parser("project", help="write the projections from the ledger")
    j.add_argument("--database", required=True)
    j.add_argument("--workers", type=int, default=2)
    i = sub.add_parser("incremental", help="time an incremental reconcile (no checkpoint moves)")
    i.add_argument("--database", required=True)
    i.add_argument("--runs", type=int, default=3)
    i.add_argument("--workers", type=int, default=2)
    i.add_argument("--write", action="store_true", help="the last run writes its checkpoints")
    i.add_argument(
        "--day",
        type=int,
        default=0,
        metavar="EVENTS",
        help="first make a day: wait out the margin after the newest row, reconcile (writing), "
        "append EVENTS events; the range then holds them only",
    )
    i.add_argument("--budgets", type=int, default=0, help="--day: over this many (events/2)")
    i.add_argument("--seed", type=int, default=12, help="--day: the append's seed")
    args = p.parse_args(argv)
    commands = {"fill": fill, "measure": measure, "restart": restart, "append": append,
                "seed-checkpoints": seed_checkpoints, "incremental": incremental,
                "project": project}  # fmt: skip
    return commands[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
