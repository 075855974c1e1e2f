"""`bench.scaling fill` (create a database and COPY a history into it) and `project` (write the
projections from the ledger of a fill cut short)."""

from __future__ import annotations

import argparse
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql

from bench.scaling_history import (
    CHUNK,
    HOT,
    TOPIC,
    _prepare_partitions,
    _run_worker,
    _with_db,
    _write_projections,
)
from budget_ledger.ledger.budget import BudgetState, initial_state
from budget_ledger.ledger.state import compact


def _project_shard(args: tuple[str, int, int]) -> int:
    """Fold one shard's ledger rows (physical order) into states; write their projections."""
    from budget_ledger.ledger.db import connect
    from budget_ledger.ledger.history import fold

    url, shard, shards = args
    states: dict[tuple[str, str], BudgetState] = {}
    conn = connect(url)
    with conn.transaction(), conn.cursor(name="project") as cur:
        # Physical order is nearly each budget's sequence order (concurrent writers can leave
        # a row on an earlier page): rows that come early wait in `pending`. A parallel scan
        # would interleave its workers' rows much more.
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cur.itersize = CHUNK
        cur.execute(
            "SELECT tenant_id, budget_id, sequence, event::text FROM ledger"
            " WHERE abs(hashtext(budget_id)) %% %s = %s",
            (shards, shard),
        )
        pending: dict[tuple[str, str], dict[int, str]] = {}
        for tenant, budget, seq, text in cur:
            key = (tenant, budget)
            state = states.get(key) or initial_state(tenant, budget)
            if seq != state.sequence + 1:
                pending.setdefault(key, {})[seq] = text
                continue
            state = fold(state, orjson.loads(text))
            held = pending.get(key)
            while held and state.sequence + 1 in held:
                state = fold(state, orjson.loads(held.pop(state.sequence + 1)))
            states[key] = compact(state)
        assert not any(pending.values()), "rows missing from a budget's sequence"
    _write_projections(conn, states.values(), datetime.now(UTC))
    conn.close()
    return len(states)


def project(args: argparse.Namespace) -> int:
    """Write the balance and open-reservation projections from the ledger (a fill cut short
    before its final writes), in `--workers` processes; settled reservations are there."""
    from budget_ledger.ledger.settings import load_settings

    url = _with_db(load_settings().database_url, args.database)
    t0 = time.perf_counter()
    jobs = [(url, w, args.workers) for w in range(args.workers)]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        budgets = sum(pool.map(_project_shard, jobs))
    print(f"projected {budgets:,} budgets in {time.perf_counter() - t0:.0f} s")
    return 0


def fill(args: argparse.Namespace) -> int:
    """Create the database and write its history; prints what was written."""
    from budget_ledger.ledger.migrate import migrate
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.ledger.store import queries

    admin = load_settings().database_url
    url = _with_db(admin, args.database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.database)))
    migrate(url)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    span = timedelta(days=30 * args.months)
    start = end - span
    _prepare_partitions(url, start, end)

    background = args.events - args.hot_events
    per_budget = max(2, background // max(args.budgets, 1))
    keys = [(f"scale-{i % 7}", f"b-{i}") for i in range(args.budgets)]
    jobs: list[tuple[Any, ...]] = [
        (url, keys[w :: args.workers], per_budget, start, span, f"{TOPIC}.w{w}")
        for w in range(args.workers)
    ]
    if args.hot_events:
        jobs.append((url, [HOT], args.hot_events, start, span, f"{TOPIC}.hot"))
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        results = pool.map(_run_worker, jobs)
    took = time.perf_counter() - t0
    events = sum(r[1] for r in results)
    with psycopg.connect(url, autocommit=True) as conn:
        q = queries()
        for topic, _, offsets in results:
            for partition, next_offset in offsets.items():
                cursor = {"topic": topic, "partition": partition}
                conn.execute(q["ensure_relay_cursor"], cursor)
                conn.execute(q["advance_relay_cursor"], {**cursor, "offset": next_offset - 1})
        conn.execute("ANALYZE")
    print(
        f"filled {args.database}: {events:,} events ({args.hot_events:,} in {HOT[0]}:{HOT[1]}, "
        f"{per_budget} in each of {args.budgets:,} budgets) from {start:%Y-%m-%d} to "
        f"{end:%Y-%m-%d} in {took:.0f} s ({events / took:,.0f} events/s)"
    )
    return 0
