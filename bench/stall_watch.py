"""What the machine did, every quarter second, while a latency benchmark ran beside it.

    .venv/bin/python -m bench.stall_watch --seconds 130 --out /tmp/watch.txt &
    .venv/bin/python -m bench.api_load --duration 120 --reuse --keep --timeline /tmp/t.csv

Writes one line per 0.25 s: the wall-clock time, the processes that used more than 4 % of a
core in that quarter (name:pid=%), PostgreSQL's active backends other than plain client
sessions (autovacuum, checkpointer, walwriter...) and the sessions of other databases than
`--database`; and, from a process at real-time priority when it may take it (root), the
longest oversleep of a 1 ms sleep in that quarter — which nothing inside the machine can cause,
only the host (a paused VM). Lined up by time with `bench.api_load --timeline`, a stall shows
what ran when it happened. Naming other sessions needs a login with `pg_read_all_stats`
(locally, once: `GRANT pg_read_all_stats TO ledger_owner` as the postgres superuser); without
it they show as `<insufficient privilege>`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import psycopg

from bench.procstat import TICK, process_ticks

QUARTER = 0.25


def canary(longest: Synchronized[float]) -> None:
    """Sleep 1 ms in a loop at real-time priority (if allowed: else in-machine contention can
    delay it too, and it says so); keep the longest oversleep. Its own process: no GIL."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    except PermissionError:
        print("stall_watch: not real-time (needs root); the canary is a plain process")
    while True:
        began = time.perf_counter()
        time.sleep(0.001)
        late = time.perf_counter() - began - 0.001
        if late > longest.value:
            longest.value = late


def main(argv: list[str] | None = None) -> int:
    """Watch for `--seconds`, write the lines to `--out`."""
    from budget_ledger.ledger.settings import load_settings

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=130)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--database", default="bench_api_load", help="the benchmark's own database")
    args = p.parse_args(argv)

    ctx = mp.get_context("fork")
    longest = ctx.Value("d", 0.0)
    watcher = ctx.Process(target=canary, args=(longest,), daemon=True)
    watcher.start()
    # Busy sessions of other databases, autovacuum workers, and the background writers when
    # they are not waiting for their next round (a checkpoint writing or syncing, say).
    activity = (
        "SELECT backend_type, datname, wait_event, left(coalesce(query, ''), 50)"
        " FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ("
        " (backend_type = 'client backend' AND state <> 'idle' AND datname <> %s)"
        " OR backend_type = 'autovacuum worker'"
        " OR (backend_type IN ('checkpointer', 'background writer', 'walwriter')"
        "     AND wait_event IS DISTINCT FROM 'CheckpointerMain'"
        "     AND wait_event IS DISTINCT FROM 'BgWriterMain'"
        "     AND wait_event IS DISTINCT FROM 'BgWriterHibernate'"
        "     AND wait_event IS DISTINCT FROM 'WalWriterMain'))"
    )
    with (
        psycopg.connect(load_settings().database_url, autocommit=True) as conn,
        args.out.open("w") as out,
    ):
        before, then = process_ticks(), time.time()
        end = then + args.seconds
        while time.time() < end:
            time.sleep(QUARTER)
            now, at = process_ticks(), time.time()
            span = at - then
            busy = sorted(
                ((ticks - before[pid][1]) / TICK / span * 100, name, pid)
                for pid, (name, ticks) in now.items()
                if pid in before
            )
            top = " ".join(f"{n}:{pid}={pct:.0f}%" for pct, n, pid in reversed(busy) if pct > 4)
            others = conn.execute(activity, (args.database,)).fetchall()
            oversleep, longest.value = longest.value, 0.0
            out.write(f"{at:.3f} canary={oversleep * 1000:.1f}ms {top} | {others}\n")
            before, then = now, at
    watcher.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
