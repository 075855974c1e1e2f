"""Webhook delivery latency at a fixed alert rate, to a signed POST at a local receiver.

    .venv/bin/python -m bench.webhook_latency --rate 100 --duration 10 --endpoints 10
    .venv/bin/python -m bench.webhook_latency --rate 100 --duration 10 --end-to-end

Makes a migrated database next to LEDGER_DATABASE_URL and topics of its own, registers
`--endpoints` endpoints (one tenant each) pointing at an HTTP receiver in this process on
127.0.0.1, and starts `budget-ledger deliver` as a child process
(LEDGER_WEBHOOK_ALLOW_PRIVATE=true). Open loop: alert i is due at start + i/rate.

- Default: alerts are published straight to budget.alerts, each carrying its publication time;
  latency = arrival - publication (fan-out, dispatch, POST).
- `--end-to-end`: `budget-ledger consume --with-relay` runs too, and the alerts are raised by
  the ledger itself: per budget, a reserve of 85% of its funds (soft_cap_exceeded) and later
  its release, round-robin over `--budgets` budgets; latency = arrival - the alert's
  `recorded_at` (the consumer's clock when it decided the reserve, just before its commit), so
  it includes the batch commit, the relay's outbox publication and the deliverer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.kafka_config import admin_config, producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.consumers.webhook_signing import new_secret
from budget_ledger.ledger.migrate import migrate
from budget_ledger.ledger.settings import Settings, load_settings, prefixed_names
from budget_ledger.schemas.codec import make_alert_id
from budget_ledger.schemas.signing import PRIVILEGED

Send = Callable[[int], None]
Flush = Callable[[], object]


class Receiver:
    """The HTTP receiver: latency of each alert from its `data.sent_at` or its `recorded_at`."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                arrived = time.time()
                alert = orjson.loads(body)
                sent = alert["data"].get("sent_at")
                if sent is None:
                    sent = datetime.fromisoformat(alert["recorded_at"]).timestamp()
                with receiver.lock:
                    receiver.latencies.append(arrived - sent)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            # The default listen backlog (5) drops SYNs under 10+ parallel connections: each
            # costs a 1 s retransmission, measured here as delivery latency.
            request_queue_size = 128
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.latencies)

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Commands:
    """Signed command publication for the end-to-end mode (open, fund: privileged)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic_commands
        self.producer = Producer(producer_config(settings))
        self.signer = settings_signer(settings)

    def send(self, kind: str, tenant: str, budget: str, cid: str, **fields: Any) -> None:
        body = {"command_id": cid, "type": kind, "tenant_id": tenant, "budget_id": budget,
                **fields}  # fmt: skip
        key, value = f"{tenant}:{budget}".encode(), orjson.dumps(body)
        headers = self.signer.headers(key, value) if self.signer and kind in PRIVILEGED else None
        self.producer.produce(self.topic, key=key, value=value, headers=headers)
        self.producer.poll(0)


def _topic_driver(settings: Settings, endpoints: int, warm: int) -> tuple[Send, Flush]:
    producer = Producer(producer_config(settings))

    def send(n: int) -> None:
        tenant = f"t{n % endpoints}"
        alert = {
            "alert_id": make_alert_id(tenant, "b", "hard_cap_reached", n + warm),
            "type": "hard_cap_reached", "severity": "critical", "tenant_id": tenant,
            "budget_id": "b", "utilization_pct": "100.00", "threshold": "100.00",
            "sequence": n + warm, "recorded_at": "2026-11-27T00:00:00.000000Z",
            "data": {"sent_at": time.time()},
        }  # fmt: skip
        producer.produce(settings.topic_alerts, key=f"{tenant}:b".encode(),
                         value=orjson.dumps(alert))  # fmt: skip
        producer.poll(0)

    return send, lambda: producer.flush(30)


def _command_driver(
    settings: Settings, endpoints: int, budgets: int, warm: int
) -> tuple[Send, Flush]:
    cmd = Commands(settings)
    for b in range(budgets):
        tenant = f"t{b % endpoints}"
        cmd.send("open_budget", tenant, f"b{b}", f"open-{b}", currency="USD", period="rolling")
        cmd.send("fund", tenant, f"b{b}", f"fund-{b}", amount="100.00", currency="USD")

    def send(n: int) -> None:
        # Cycle k of budget b: release the reservation of cycle k-1 (back under the soft cap),
        # then reserve 85.00 of 100.00 (soft_cap_exceeded again).
        i = n + warm
        b, k = i % budgets, i // budgets
        tenant = f"t{b % endpoints}"
        if k > 0:
            cmd.send("release", tenant, f"b{b}", f"rel-{b}-{k}", ref_id=f"r{k - 1}")
        cmd.send("reserve", tenant, f"b{b}", f"res-{b}-{k}", amount="85.00", currency="USD",
                 ref_id=f"r{k}")  # fmt: skip

    return send, lambda: cmd.producer.flush(30)


def _run(
    driver: tuple[Send, Flush], rec: Receiver, rate: float, total: int, warm: int
) -> list[float]:
    """Warm up (`warm` alerts, waited for), then send `total` at `rate`; the measured ones."""
    send, flush = driver
    for n in range(-warm, 0):
        send(n)
    flush()
    rec.wait(warm, 120)
    with rec.lock:
        rec.latencies.clear()
    start = time.monotonic()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(n)
    flush()
    rec.wait(total, 60)
    with rec.lock:
        return list(rec.latencies)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print p50/p99/max in milliseconds."""
    p = argparse.ArgumentParser(prog="python -m bench.webhook_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rate", type=float, default=100.0, help="alerts per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    p.add_argument("--endpoints", type=int, default=10, help="endpoints (one tenant each)")
    p.add_argument("--end-to-end", action="store_true", help="alerts raised by the ledger")
    p.add_argument("--budgets", type=int, default=200, help="budgets (--end-to-end)")
    args = p.parse_args(argv)

    base = load_settings()
    name = f"bench_wh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(base.database_url)._replace(path=f"/{name}"))
    prefix = f"bwh{uuid.uuid4().hex[:8]}"
    settings = load_settings(database_url=url, **prefixed_names(prefix), topic_partitions=4)
    rec = Receiver()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        migrate(url)
        create_topics(settings)
        port = rec.server.server_address[1]
        with psycopg.connect(url) as conn:
            for i in range(args.endpoints):
                conn.execute(
                    "INSERT INTO webhook_endpoints (id, tenant_id, url, secret)"
                    " VALUES (%s, %s, %s, %s)",
                    (f"whe_{i:024x}", f"t{i}", f"http://127.0.0.1:{port}/hook", new_secret()),
                )
        env = dict(os.environ, LEDGER_DATABASE_URL=url, LEDGER_APP_DATABASE_URL="",
                   LEDGER_LOG_LEVEL="warning", LEDGER_WEBHOOK_GROUP=f"{prefix}.webhooks",
                   LEDGER_WEBHOOK_ALLOW_PRIVATE="true", LEDGER_TOPIC_PARTITIONS="4")  # fmt: skip
        env.update({f"LEDGER_{k.upper()}": v for k, v in prefixed_names(prefix).items()})
        cli = [sys.executable, "-m", "budget_ledger.entrypoints.cli"]
        procs.append(subprocess.Popen([*cli, "deliver"], env=env))
        total = int(args.rate * args.duration)
        if args.end_to_end:
            procs.append(subprocess.Popen([*cli, "consume", "--with-relay"], env=env))
            warm = args.budgets
            driver = _command_driver(settings, args.endpoints, args.budgets, warm)
        else:
            warm = args.endpoints
            driver = _topic_driver(settings, args.endpoints, warm)
        got = _run(driver, rec, args.rate, total, warm)
        if not got:
            print("no alert arrived", file=sys.stderr)
            return 1
        ms = [x * 1000 for x in got]
        what = "committed" if args.end_to_end else "published"
        print(f"alerts {total} at {args.rate:g}/s over {args.endpoints} endpoints;"
              f" received {len(got)}")  # fmt: skip
        print(f"latency ms ({what} -> received): p50 {statistics.median(ms):.1f}"
              f"  p99 {_pct(ms, 0.99):.1f}  max {max(ms):.1f}")  # fmt: skip
        _breakdown(url, warm)
        return 0 if len(got) >= total else 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        rec.server.shutdown()
        admin = AdminClient(admin_config(settings))
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{prefix}.")]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=10).values():
                future.result()
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip


def _breakdown(url: str, warm: int) -> None:
    """Where the time goes after the alert is on the topic: row committed → attempt started
    (dispatch), and the POST itself (measured deliveries only)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY w),"
            " percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY p)"
            " FROM (SELECT 1000 * extract(epoch FROM min(a.attempted_at) - d.created_at) AS w,"
            "              min(a.latency_ms) AS p"
            "       FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id"
            "       WHERE d.id > (SELECT coalesce(min(id), 0) + %s FROM webhook_deliveries)"
            "       GROUP BY d.id) x",
            (warm - 1,),
        ).fetchone()
    if row is not None and row[0] is not None:
        for label, (p50, p99) in zip(("dispatch", "POST"), row, strict=True):
            print(f"  {label:9s} p50 {p50:.1f}  p99 {p99:.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
