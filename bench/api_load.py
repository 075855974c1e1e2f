"""Load benchmark of the HTTP API: `GET .../utilization` at a fixed rate (docs/performance.md).

    .venv/bin/python -m bench.api_load --budgets 10000 --rate 500 --duration 30

Builds a database next to LEDGER_DATABASE_URL with `--budgets` budgets (bench.scaling's COPY
fill: real hash chains and projections), makes one read key per tenant, starts
`budget-ledger serve --workers N` on a free loopback port as a subprocess and, from this process,
sends `GET /v1/tenants/{tid}/budgets/{bid}/utilization` for random budgets at `--rate`
requests/s over `--connections` keep-alive connections.

Open loop: request i is due at start + i/rate whatever the earlier ones did, and its latency is
measured from that due time, so a stall shows in the figures (queued requests wait for a free
connection and that wait counts) instead of slowing the sender (coordinated omission). The
client is a minimal HTTP/1.1 client on asyncio streams: a general client (httpx) costs about a
millisecond of CPU per request, which on 2 cores would be taken from the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
from psycopg import sql

from bench.procstat import CpuSampler, descendants
from bench.scaling import _with_db
from bench.scaling import fill as scaling_fill

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Results:
    """What the load run saw: (due time, latency from it) of each 200 answer in seconds, and
    errors."""

    answered: list[tuple[float, float]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    elapsed: float = 0.0
    max_send_lag: float = 0.0
    # The longest pause of this (client) process's garbage collector while measuring.
    max_gc_pause: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def error(self, what: str) -> None:
        """Count one failed request by its kind (an HTTP status or an exception name)."""
        self.errors[what] = self.errors.get(what, 0) + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def build_database(admin: str, name: str, budgets: int, events_per_budget: int) -> str:
    """Fill `name` (re-created) with `budgets` budgets; return its URL."""
    scaling_fill(
        argparse.Namespace(
            database=name,
            events=budgets * events_per_budget,
            budgets=budgets,
            hot_events=0,
            months=1,
            workers=2,
        )
    )
    return _with_db(admin, name)


def make_keys(url: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """A read key per tenant of the database, and every (tenant, budget)."""
    from budget_ledger.entrypoints.api.keys import create_key

    with psycopg.connect(url) as conn:
        targets = [
            (str(t), str(b))
            for t, b in conn.execute(
                "SELECT tenant_id, budget_id FROM budget_balances ORDER BY tenant_id, budget_id"
            )
        ]
        tenants = sorted({t for t, _ in targets})
        keys = {t: create_key(conn, t, ("read",), "api-load bench")[1] for t in tenants}
    return keys, targets


def start_server(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    """`budget-ledger serve` on 127.0.0.1:`port` against `url`, its output in a temporary log."""
    env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_API_DATABASE_URL": ""}
    cmd = [sys.executable, "-m", "budget_ledger.entrypoints", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]  # fmt: skip
    log = open(f"/tmp/bench-api-load-{port}.log", "wb")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until `GET /healthz` answers 200 (or the server died)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode}; see its log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("serve did not answer /healthz in time")


async def _connection_worker(
    port: int, queue: asyncio.Queue[tuple[float, bytes] | None], results: Results, record: bool
) -> None:
    """One keep-alive connection: send each due request, read its answer, record the latency
    from the due time (a reconnect after an error is part of the next request's latency)."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while (item := await queue.get()) is not None:
        due, request = item
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            done = time.perf_counter()
            if record:
                if status == 200:
                    results.answered.append((due, done - due))
                else:
                    results.error(f"HTTP {status}")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            if record:
                results.error(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def drive(
    port: int,
    requests: list[bytes],
    rate: float,
    duration: float,
    connections: int,
    record: bool = True,
) -> Results:
    """Send `rate` x `duration` requests on their schedule (open loop); wait for the answers."""
    results = Results()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    workers = [
        asyncio.create_task(_connection_worker(port, queue, results, record))
        for _ in range(connections)
    ]
    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            results.max_send_lag = max(results.max_send_lag, -delay)
        queue.put_nowait((due, requests[i % len(requests)]))
        results.sent += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    results.elapsed = time.perf_counter() - start
    return results


def request_bytes(
    keys: dict[str, str], targets: list[tuple[str, str]], n: int, seed: int, healthz: bool = False
) -> list[bytes]:
    """`n` requests for random budgets, each with its tenant's key (made before the clock runs);
    with `healthz`, `GET /healthz` instead (no key, no query: the HTTP stack's own cost)."""
    if healthz:
        return [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"] * n
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tenant, budget = targets[rng.randrange(len(targets))]
        out.append(
            f"GET /v1/tenants/{tenant}/budgets/{budget}/utilization HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {keys[tenant]}\r\n\r\n".encode()
        )
    return out


def report(args: argparse.Namespace, results: Results) -> dict[str, Any]:
    """The figures, in milliseconds."""
    lat = [latency for _, latency in results.answered]
    ms = {q: round(_quantile(lat, p) * 1000, 2) for q, p in (("p50", 0.5), ("p90", 0.9),
                                                                ("p99", 0.99))}  # fmt: skip
    return {
        "budgets": args.budgets,
        "rate": args.rate,
        "duration_s": args.duration,
        "workers": args.workers,
        "connections": args.connections,
        "cpus": os.cpu_count(),
        "load_avg_before": args.load_before,
        "requests": results.sent,
        "ok": len(lat),
        "errors": results.errors,
        "achieved_rate": round(len(lat) / results.elapsed, 1) if results.elapsed else 0.0,
        **{f"{k}_ms": v for k, v in ms.items()},
        "max_ms": round(max(lat) * 1000, 2) if lat else None,
        "max_send_lag_ms": round(results.max_send_lag * 1000, 2),
        "client_max_gc_pause_ms": round(results.max_gc_pause * 1000, 2),
        # % of one core over the measured run: the API's processes, this client, PostgreSQL (all
        # of its backends, other work's too), the whole machine, and what was neither.
        "cpu_pct": results.cpu,
        "api_cpu_ms_per_request": round(
            10 * results.cpu.get("api", 0) * results.elapsed / max(1, len(lat)), 2
        ),
    }


@contextlib.contextmanager
def _gc_pauses() -> Iterator[list[float]]:
    """Track the longest collection of this process meanwhile (a client pause would delay
    answers it reads and count against the server)."""
    longest = [0.0]
    began = [0.0]

    def track(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            longest[0] = max(longest[0], time.perf_counter() - began[0])

    gc.callbacks.append(track)
    try:
        yield longest
    finally:
        gc.callbacks.remove(track)


def write_timeline(path: Path, results: Results) -> None:
    """Each answer's due time on the wall clock and its latency, to line stalls up with other
    logs (PostgreSQL's, vmstat's) by time."""
    # perf_counter has no epoch: anchor it to the wall clock once.
    offset = time.time() - time.perf_counter()
    with path.open("w") as out:
        out.write("due_epoch_s,latency_ms\n")
        for due, latency in results.answered:
            out.write(f"{due + offset:.4f},{latency * 1000:.3f}\n")


def main(argv: list[str] | None = None) -> int:
    """Build, serve, load, print."""
    from budget_ledger.ledger.settings import load_settings

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--budgets", type=int, default=10_000)
    p.add_argument("--events-per-budget", type=int, default=4)
    p.add_argument("--rate", type=float, default=500, help="requests per second")
    p.add_argument("--duration", type=float, default=30, help="seconds of measured load")
    p.add_argument("--warmup", type=float, default=3, help="seconds of load before measuring")
    p.add_argument("--workers", type=int, default=2, help="serve --workers")
    p.add_argument("--connections", type=int, default=32, help="client keep-alive connections")
    p.add_argument("--database", default="bench_api_load")
    p.add_argument("--reuse", action="store_true", help="use the database as it is (no fill)")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    p.add_argument(
        "--healthz", action="store_true", help="load GET /healthz instead (the HTTP stack alone)"
    )
    p.add_argument(
        "--timeline",
        type=Path,
        help="write one CSV row per answer: wall-clock due time (UTC epoch s), latency ms",
    )
    args = p.parse_args(argv)
    args.load_before = round(os.getloadavg()[0], 2)

    admin = load_settings().database_url
    url = _with_db(admin, args.database)
    if not args.reuse:
        build_database(admin, args.database, args.budgets, args.events_per_budget)
    keys, targets = make_keys(url)
    port = _free_port()
    server = start_server(url, port, args.workers)
    try:
        wait_ready(port, server)
        if args.warmup > 0:
            warm = request_bytes(
                keys, targets, int(args.rate * args.warmup), args.seed + 1, args.healthz
            )
            asyncio.run(drive(port, warm, args.rate, args.warmup, args.connections, False))
        load = request_bytes(keys, targets, int(args.rate * args.duration), args.seed, args.healthz)
        settings = load_settings()
        sampler = CpuSampler([], 0, urlsplit(settings.database_url).port or 5432)
        sampler.add("api", descendants(server.pid))
        sampler.add("client", [os.getpid()])
        sampler.start()
        with _gc_pauses() as longest:
            results = asyncio.run(drive(port, load, args.rate, args.duration, args.connections))
        results.max_gc_pause = longest[0]
        results.cpu = sampler.stop()
    finally:
        server.terminate()
        server.wait(30)
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(args.database)
                    )
                )
    figures = report(args, results)
    if args.timeline is not None:
        write_timeline(args.timeline, results)
    if args.json:
        print(orjson.dumps(figures).decode())
    else:
        what = "/healthz" if args.healthz else ".../utilization"
        f = figures
        print(
            f"GET {what} at {args.rate:g}/s for {args.duration:g} s, {args.budgets:,} budgets, "
            f"serve --workers {args.workers}, {os.cpu_count()} cpus (load {args.load_before} "
            f"before): p50 {f['p50_ms']} ms, p90 {f['p90_ms']} ms, p99 {f['p99_ms']} ms, max "
            f"{f['max_ms']} ms; achieved {f['achieved_rate']}/s, {f['ok']:,} ok of "
            f"{f['requests']:,}, errors {f['errors'] or 'none'}; CPU % of a core {f['cpu_pct']}, "
            f"API {f['api_cpu_ms_per_request']} ms per request"
        )
    return 0 if not results.errors else 1


if __name__ == "__main__":
    sys.exit(main())
