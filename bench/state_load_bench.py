"""State load of one budget with a long history: full replay vs the projections (docs/scaling.md).

    .venv/bin/python -m bench.state_load_bench --events 200000 --fresh

Fills ONE budget with ~`--events` events (the seeded stream of `bench/replay_bench.py`, through
the consumer's `process_batch`, COPYed in), then times, each on a fresh connection (cold for
the client, warm for Postgres' buffers), the old loader (`ledger.store.load_budgets`: replay of
the whole ledger) and the new one (`projections.state_loading.load_states`: the balance row and
the open reservations), checks they give the same compacted state, and reports the memory the
loaded state keeps (full reservation history vs open reservations only), measured with
tracemalloc. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay_bench import _drop, _scratch, build_rows, command_stream, write_batches
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.settings import load_settings
from budget_ledger.ledger.state import compact
from budget_ledger.ledger.store import load_budgets
from budget_ledger.projections.state_loading import load_states

# A rolling budget without a hard cap (budget-0 of the stream is capped: most reserves refused).
KEY = ("tenant-0", "budget-1")


def _timed(dsn: str, load: Callable[[Any, list[tuple[str, str]]], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with connect(dsn) as conn:
            conn.execute("SELECT 1")  # the connection is made before the clock starts
            t0 = time.perf_counter()
            load(conn, [KEY])
            samples.append(time.perf_counter() - t0)
    return samples


def _retained(dsn: str, load: Callable[[Any, list[tuple[str, str]]], Any]) -> tuple[int, Any]:
    """Bytes still allocated after loading (and holding) the budget's state."""
    with connect(dsn) as conn:
        gc.collect()
        tracemalloc.start()
        state = load(conn, [KEY])[KEY]
        gc.collect()
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return size, state


def main(argv: list[str] | None = None) -> int:
    """Fill one budget (unless --no-fill), then time and size both loaders; print JSON."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=200_000, help="events of the one budget")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--runs", type=int, default=5, help="timed loads of each kind")
    p.add_argument("--fresh", action="store_true", help="use a scratch database, dropped after")
    p.add_argument("--no-fill", action="store_true", help="reuse the ledger in the database")
    args = p.parse_args(argv)

    settings = load_settings()
    dsn = _scratch(settings.database_url) if args.fresh else settings.database_url
    try:
        doc: dict[str, Any] = {"events": args.events}
        if not args.no_fill:
            t0 = time.perf_counter()
            stream = command_stream(2 * args.events + 2, 2, args.seed, tenants=1)
            mine = (c for c in stream if c["budget_id"] == KEY[1])  # refs are per budget
            batches = build_rows(mine)
            doc["filled_events"] = write_batches(dsn, batches)
            doc["fill_seconds"] = round(time.perf_counter() - t0, 1)
        old_bytes, full = _retained(dsn, load_budgets)
        new_bytes, loaded = _retained(dsn, load_states)
        assert isinstance(full, BudgetState) and loaded == compact(full), "loaders disagree"
        for name, loader in (("replay", load_budgets), ("projections", load_states)):
            samples = _timed(dsn, loader, args.runs if name == "projections" else 2)
            doc[f"{name}_ms"] = {
                "median": round(statistics.median(samples) * 1000, 2),
                "min": round(min(samples) * 1000, 2),
            }
        doc |= {
            "sequence": full.sequence,
            "reservations_ever": len(full.reservations),
            "reservations_open": len(loaded.reservations),
            "state_bytes_full": old_bytes,
            "state_bytes_open_only": new_bytes,
        }
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    finally:
        if args.fresh:
            _drop(settings.database_url, dsn)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
