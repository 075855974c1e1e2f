"""`bench.scaling measure`: the hot budget's state load and ledger pages on a filled database."""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta
from typing import Any

import psycopg

from bench.scaling_history import HOT, _with_db
from budget_ledger.ledger.budget import BudgetState


def _timed(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _ms(samples: list[float]) -> str:
    low, high = min(samples), max(samples)
    return f"median {statistics.median(samples):.1f} ms (min {low:.1f}, max {high:.1f})"


def measure(args: argparse.Namespace) -> int:
    """Time the per-budget costs on a filled database."""
    from budget_ledger.ledger import store
    from budget_ledger.ledger.db import connect
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.ledger_pages import ledger_page
    from budget_ledger.projections.state_loading import load_states

    url = _with_db(load_settings().database_url, args.database)
    with psycopg.connect(url) as conn:
        events = conn.execute("SELECT count(*) FROM ledger").fetchone()
        hot = conn.execute(
            "SELECT sequence FROM budget_balances WHERE tenant_id = %s AND budget_id = %s", HOT
        ).fetchone()
        span = conn.execute(
            "SELECT min(recorded_at), max(recorded_at) FROM ledger"
            " WHERE tenant_id = %s AND budget_id = %s",
            HOT,
        ).fetchone()
        small = conn.execute(
            "SELECT tenant_id, budget_id FROM budget_balances WHERE tenant_id <> %s LIMIT 1",
            (HOT[0],),
        ).fetchone()
    assert events and hot and span and small, "not a filled database"
    print(f"{args.database}: {events[0]:,} events; {HOT[0]}:{HOT[1]} has {hot[0]:,}")

    loads: list[float] = []
    for _ in range(args.runs):
        with connect(url) as conn:  # a new session each time: nothing of the budget cached in it
            t0 = time.perf_counter()
            state = load_states(conn, [HOT])[HOT]
            loads.append((time.perf_counter() - t0) * 1000)
            assert isinstance(state, BudgetState) and state.sequence == hot[0], state
    print(f"state load of {HOT[0]}:{HOT[1]} from the projections, each on a new connection: "
          f"{_ms(loads)}")  # fmt: skip
    if args.replay:

        def replay_load() -> None:
            with connect(url) as conn:
                state = store.load_budgets(conn, [HOT])[HOT]
                assert isinstance(state, BudgetState) and state.sequence == hot[0], state

        print(f"state load of {HOT[0]}:{HOT[1]} by replaying its ledger: "
              f"{_ms(_timed(replay_load, 1))}")  # fmt: skip

    # A week in the middle of the hot budget's history, and a whole year of a small budget.
    middle = span[0] + (span[1] - span[0]) / 2
    windows = [(HOT, middle, middle + timedelta(days=7)),
               ((small[0], small[1]), span[0], span[0] + timedelta(days=365))]  # fmt: skip
    with connect(url) as conn:
        for key, since, until in windows:
            first: list[float] = []
            second: list[float] = []
            for _ in range(args.runs * 4):
                t0 = time.perf_counter()
                page = ledger_page(conn, key[0], key[1], since, until, limit=50)
                first.append((time.perf_counter() - t0) * 1000)
                if page.next is not None:  # the page after it: keyset, not OFFSET
                    t0 = time.perf_counter()
                    ledger_page(conn, key[0], key[1], since, until, after=page.next, limit=50)
                    second.append((time.perf_counter() - t0) * 1000)
            print(f"ledger page of {key[0]}:{key[1]} in [{since:%Y-%m-%d}, {until:%Y-%m-%d}), "
                  f"{len(page.entries)} entries: first page {_ms(first)}"
                  + (f"; second page {_ms(second)}" if second else ""))  # fmt: skip
    return 0
