"""Report benchmark: a month's budget report over a budget with many events, and a tenant CSV
of many budgets, through the HTTP API (`serve --workers 2` as a child process, httpx on
loopback). The issue's goals: < 500 ms for 1,000,000 events, < 3 s for 10,000 budgets.

    .venv/bin/python -m bench.report_bench                       # 1,000,000 events, 10,000 budgets
    .venv/bin/python -m bench.report_bench --events 20000 --budgets 500 --runs 3   # a smoke run

It creates (or replaces) the database `--database` next to LEDGER_DATABASE_URL, migrates it and
COPYs the history with bench.scaling's writers (the domain's own events, chains and
projections): tenant `report-big` with one budget `big` of `--events` events, and tenant
`report-wide` with `--budgets` budgets of `--per-budget` events each, all recorded in the last
whole UTC month. `--reuse` skips the fill when the database holds that history already (and
migrates it). Then, untimed like the fill's VACUUM, it runs the daily rollup job
(`reports rollup`: every day of that month is a whole rolled day), and times `--runs` requests
of each report (after one untimed warm-up) and prints p50 and max; `--explain` also prints the
plans of the budget report's queries (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg import sql

from bench.scaling import _prepare_partitions, _run_worker, _with_db

BIG = ("report-big", "big")
WIDE = "report-wide"


def month_before(now: datetime) -> tuple[datetime, datetime]:
    """The last whole UTC month before `now`."""
    end = datetime(now.year, now.month, 1, tzinfo=UTC)
    before = end - timedelta(days=1)
    return datetime(before.year, before.month, 1, tzinfo=UTC), end


def fill(url: str, admin: str, database: str, args: argparse.Namespace) -> None:
    """Create the database and COPY both tenants' histories into it (parallel writers)."""
    from budget_ledger.ledger.migrate import migrate

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    migrate(url)
    start, end = month_before(datetime.now(UTC))
    _prepare_partitions(url, start, end)
    span = end - start - timedelta(seconds=1)  # every event inside the month
    wide = [(WIDE, f"w-{i:06d}") for i in range(args.budgets)]
    jobs: list[tuple[Any, ...]] = [
        (url, wide[w :: args.workers], args.per_budget, start, span, f"report.w{w}")
        for w in range(args.workers)
    ]
    jobs.append((url, [BIG], args.events, start, span, "report.big"))
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        written = sum(r[1] for r in pool.map(_run_worker, jobs))
    with psycopg.connect(url, autocommit=True) as conn:
        # Sets the visibility map (autovacuum's job in production): without it the report's
        # index-only scan fetches every heap page anyway.
        conn.execute("VACUUM ANALYZE")
    print(f"filled {database}: {written:,} events in {time.perf_counter() - t0:.0f} s")


def _holds(url: str, args: argparse.Namespace) -> bool:
    try:
        with psycopg.connect(url) as conn:
            big = conn.execute(
                "SELECT sequence FROM budget_balances WHERE tenant_id = %s AND budget_id = %s", BIG
            ).fetchone()
            wide = conn.execute(
                "SELECT count(*) FROM budget_balances WHERE tenant_id = %s", (WIDE,)
            ).fetchone()
            # Written with the report columns (migration 014), not by an older writer.
            columns = conn.execute(
                "SELECT utilization_bp IS NOT NULL FROM ledger WHERE tenant_id = %s"
                " AND budget_id = %s ORDER BY recorded_at DESC, sequence DESC LIMIT 1",
                BIG,
            ).fetchone()
    except (psycopg.OperationalError, psycopg.errors.UndefinedColumn):
        return False
    whole = big is not None and big[0] == args.events and wide == (args.budgets,)
    return whole and columns == (True,)


def rollup(url: str) -> None:
    """Run the rollup job over every whole UTC day of the history (untimed: the daily job's
    work, done off the reports' path)."""
    from budget_ledger.projections.report_rollups import roll_up

    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        run = roll_up(conn, datetime.now(UTC), timedelta(hours=1))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE report_rollups")  # as after the fill: autovacuum's job
    took = time.perf_counter() - t0
    print(f"rollup: {run.days} day(s), {run.rows:,} rows in {took:.1f} s")


def _keys(url: str) -> dict[str, str]:
    from budget_ledger.entrypoints.api.keys import create_key

    with psycopg.connect(url) as conn:
        return {t: create_key(conn, t, ("read",), "report bench")[1] for t in (BIG[0], WIDE)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_API_DATABASE_URL": "",
           "LEDGER_LOG_LEVEL": "warning"}  # fmt: skip
    cmd = [sys.executable, "-m", "budget_ledger.entrypoints.cli", "serve"]
    cmd += ["--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
            return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("serve did not answer within 60 s")


def _time_get(client: httpx.Client, path: str, params: dict[str, str], runs: int) -> str:
    sizes = set()
    samples = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        response = client.get(path, params=params)
        took = (time.perf_counter() - t0) * 1000
        assert response.status_code == 200, response.text[:500]
        sizes.add(len(response.content))
        if i:  # the first request warms the worker's pool and caches
            samples.append(took)
    return (
        f"p50 {statistics.median(samples):.0f} ms, max {max(samples):.0f} ms over {runs} runs "
        f"({max(sizes):,} bytes)"
    )


def explain(url: str, since: datetime, until: datetime) -> None:
    """Print the plans of the budget report's queries on the big budget."""
    from budget_ledger.projections.reports import queries

    params = {"tenant": BIG[0], "budgets": [BIG[1]], "since": since, "until": until,
              "first_day": since.date(), "end_day": until.date()}  # fmt: skip
    with psycopg.connect(url) as conn:
        for name in ("report_balances", "report_rollup_events", "report_alerts"):
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {queries()[name]}", params)
            print(f"-- {name}\n" + "\n".join(r[0] for r in rows))


def main(argv: list[str] | None = None) -> int:
    """Fill (unless --reuse finds the history), serve, time both reports."""
    from budget_ledger.ledger.settings import load_settings

    p = argparse.ArgumentParser(prog="python -m bench.report_bench", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000, help="events of the big budget")
    p.add_argument("--budgets", type=int, default=10_000, help="budgets of the wide tenant")
    p.add_argument("--per-budget", type=int, default=4, help="events of each wide budget")
    p.add_argument("--database", default="bench_report")
    p.add_argument("--workers", type=int, default=2, help="fill processes and serve workers")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--reuse", action="store_true", help="keep a database that holds the history")
    p.add_argument("--explain", action="store_true", help="print the budget report's plans")
    args = p.parse_args(argv)

    admin = load_settings().database_url
    url = _with_db(admin, args.database)
    if args.reuse and _holds(url, args):
        from budget_ledger.ledger.migrate import migrate

        migrate(url)  # a database filled before the latest migrations (e.g. 017's rollups)
    else:
        fill(url, admin, args.database, args)
    rollup(url)
    since, until = month_before(datetime.now(UTC))
    if args.explain:
        explain(url, since, until)
    keys = _keys(url)
    port = _free_port()
    proc = _serve(url, port, args.workers)
    month = {"from": since.isoformat(), "to": until.isoformat()}
    try:
        base = f"http://127.0.0.1:{port}/v1/tenants"
        headers = {"Authorization": f"Bearer {keys[BIG[0]]}"}
        with httpx.Client(headers=headers, timeout=120) as client:
            path = f"{base}/{BIG[0]}/budgets/{BIG[1]}/report"
            took = _time_get(client, path, month, args.runs)
            print(f"budget report (JSON), {args.events:,} events in the month: {took}")
        headers = {"Authorization": f"Bearer {keys[WIDE]}"}
        with httpx.Client(headers=headers, timeout=120) as client:
            params = {**month, "format": "csv"}
            took = _time_get(client, f"{base}/{WIDE}/report", params, args.runs)
            print(f"tenant report (CSV), {args.budgets:,} budgets: {took}")
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
