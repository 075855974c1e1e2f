"""Page load of the web console on a tenant with many budgets (docs/console.md, Figures).

    .venv/bin/python -m bench.console_load --budgets 10000 --runs 10

Fills a database next to LEDGER_DATABASE_URL with `--budgets` budgets of ONE tenant (the
COPY writers of bench.scaling: real hash chains and projections), makes a read key, starts
`budget-ledger serve` on a free loopback port and loads `/console/` in Debian's headless Chromium
(Playwright). Two figures, each over `--runs` fresh page loads:

- sign-in: the key submitted in the login form → the first page of budgets rendered;
- reload: navigation start of a signed-in tab (the key in its sessionStorage) → the first page
  of budgets rendered (the `budgets-rendered` performance mark the console sets).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from bench.api_load import _free_port, start_server, wait_ready
from bench.scaling import _prepare_partitions, _run_worker, _with_db

TENANT = "console-bench"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def build(admin: str, name: str, budgets: int, workers: int = 2) -> str:
    """(Re-)create `name` with `budgets` budgets of TENANT, a few events each; its URL."""
    from budget_ledger.ledger.migrate import migrate

    url = _with_db(admin, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(url)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=7)
    _prepare_partitions(url, start, end)
    keys = [(TENANT, f"b-{i:05d}") for i in range(budgets)]
    jobs = [(url, keys[w::workers], 4, start, end - start, f"console.w{w}") for w in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_run_worker, jobs)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return url


def measure(base: str, key: str, runs: int) -> dict[str, list[float]]:
    """Milliseconds per run: sign-in → list rendered, and reload → list rendered."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"sign_in": [], "reload": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(f"{base}/console/")
                page.get_by_label("API key").fill(key)
                t0 = time.perf_counter()
                page.get_by_role("button", name="Sign in").click()
                page.locator("#budgets tbody tr").first.wait_for()
                out["sign_in"].append((time.perf_counter() - t0) * 1000)
                page.reload()
                page.locator("#budgets tbody tr").first.wait_for()
                mark = page.evaluate(
                    "() => performance.getEntriesByName('budgets-rendered')[0].startTime"
                )
                out["reload"].append(float(mark))
                context.close()
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Build, serve, load the console, print."""
    from budget_ledger.entrypoints.api.keys import create_key
    from budget_ledger.ledger.settings import load_settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budgets", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--database", default="ledger_console_bench")
    p.add_argument("--reuse", action="store_true", help="keep an already filled database")
    args = p.parse_args(argv)
    admin = load_settings().database_url
    t0 = time.perf_counter()
    url = (
        _with_db(admin, args.database) if args.reuse else build(admin, args.database, args.budgets)
    )
    took = time.perf_counter() - t0
    print(f"database {args.database}: {args.budgets:,} budgets of {TENANT} ({took:.0f} s)")
    with psycopg.connect(url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM budget_balances WHERE tenant_id = %s", (TENANT,)
        ).fetchone()
        key = create_key(conn, TENANT, ("read",), "console bench")[1]
    port = _free_port()
    server = start_server(url, port, 1)
    try:
        wait_ready(port, server)
        figures = measure(f"http://127.0.0.1:{port}", key, args.runs)
    finally:
        server.terminate()
        server.wait(30)
    load = os.getloadavg()[0]
    found = count[0] if count else 0
    print(f"{found:,} budgets of the tenant; first page 50; serve --workers 1; load {load:.1f}")
    for name, values in figures.items():
        print(
            f"{name:8s} median {statistics.median(values):6.0f} ms  "
            f"min {min(values):6.0f} ms  max {max(values):6.0f} ms  ({len(values)} runs)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
