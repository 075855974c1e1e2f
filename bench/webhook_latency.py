"""Webhook delivery latency: alert on budget.alerts → signed POST at a local receiver.

    .venv/bin/python -m bench.webhook_latency --rate 100 --duration 10 --endpoints 10

Makes a migrated database next to LEDGER_DATABASE_URL and topics of its own, registers
`--endpoints` endpoints (one tenant each) pointing at an HTTP receiver in this process on
127.0.0.1, starts `budget-ledger deliver` as a child process (LEDGER_WEBHOOK_ALLOW_PRIVATE=true),
and publishes alerts round-robin over the tenants at `--rate` alerts/s (open loop). Each alert
carries its publication time; the receiver records arrival minus that time. What this leaves
out: the relay's publication of an alert the consumer committed (outbox → topic), which comes
before this path in production.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.consumers.webhook_signing import new_secret
from budget_ledger.ledger.migrate import migrate
from budget_ledger.ledger.settings import load_settings, prefixed_names
from budget_ledger.schemas.codec import make_alert_id


def _receiver(latencies: list[float], lock: threading.Lock) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            arrived = time.time()
            sent = orjson.loads(body)["data"]["sent_at"]
            with lock:
                latencies.append(arrived - sent)
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

    class Server(ThreadingHTTPServer):
        # The default listen backlog (5) drops SYNs under 10+ parallel connections: each
        # costs a 1 s retransmission, measured here as delivery latency.
        request_queue_size = 128
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print p50/p99/max in milliseconds."""
    p = argparse.ArgumentParser(prog="python -m bench.webhook_latency", description=__doc__)
    p.add_argument("--rate", type=float, default=100.0, help="alerts per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    p.add_argument("--endpoints", type=int, default=10, help="endpoints (one tenant each)")
    args = p.parse_args(argv)

    base = load_settings()
    name = f"bench_wh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(base.database_url)._replace(path=f"/{name}"))
    prefix = f"bwh{uuid.uuid4().hex[:8]}"
    settings = load_settings(database_url=url, **prefixed_names(prefix), topic_partitions=4)
    latencies: list[float] = []
    lock = threading.Lock()
    server = _receiver(latencies, lock)
    proc: subprocess.Popen[bytes] | None = None
    try:
        migrate(url)
        create_topics(settings)
        port = server.server_address[1]
        with psycopg.connect(url) as conn:
            for i in range(args.endpoints):
                conn.execute(
                    "INSERT INTO webhook_endpoints (id, tenant_id, url, secret)"
                    " VALUES (%s, %s, %s, %s)",
                    (f"whe_{i:024x}", f"t{i}", f"http://127.0.0.1:{port}/hook", new_secret()),
                )
        env = dict(os.environ, LEDGER_DATABASE_URL=url, LEDGER_APP_DATABASE_URL="",
                   LEDGER_TOPIC_ALERTS=settings.topic_alerts, LEDGER_LOG_LEVEL="warning",
                   LEDGER_WEBHOOK_GROUP=f"{prefix}.webhooks",
                   LEDGER_WEBHOOK_ALLOW_PRIVATE="true")  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "budget_ledger.entrypoints.cli", "deliver"], env=env
        )
        producer = Producer(producer_config(settings))
        # Warm-up: one alert per tenant, so the group has its partitions and threads exist.
        total = int(args.rate * args.duration)
        warm = args.endpoints
        for n in range(-warm, total):
            tenant = f"t{n % args.endpoints}"
            if n == 0:
                deadline = time.monotonic() + 60
                while len(latencies) < warm and time.monotonic() < deadline:
                    time.sleep(0.05)
                with lock:
                    latencies.clear()
                start = time.monotonic()
            if n >= 0:
                delay = start + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
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
        producer.flush(30)
        deadline = time.monotonic() + 30
        while len(latencies) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        with lock:
            got = list(latencies)
        if not got:
            print("no alert arrived", file=sys.stderr)
            return 1
        ms = [x * 1000 for x in got]
        print(f"alerts {total} at {args.rate:g}/s over {args.endpoints} endpoints;"
              f" received {len(got)}")  # fmt: skip
        print(f"latency ms: p50 {statistics.median(ms):.1f}  p99 {_pct(ms, 0.99):.1f}"
              f"  max {max(ms):.1f}")  # fmt: skip
        # Where the time goes: publication → delivery row (fetch and fan-out commit), row →
        # attempt start (dispatch), the POST itself.
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY f),"
                " percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY w),"
                " percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY a.latency_ms)"
                " FROM (SELECT d.id, 1000 * (extract(epoch FROM d.created_at)"
                "        - (d.payload -> 'data' ->> 'sent_at')::float8) AS f,"
                "       1000 * extract(epoch FROM min(a.attempted_at) - d.created_at) AS w"
                "       FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id"
                "       WHERE d.alert_id NOT IN (SELECT alert_id FROM webhook_deliveries"
                "                                ORDER BY id LIMIT %s)"
                "       GROUP BY d.id) x JOIN webhook_attempts a ON a.delivery_id = x.id",
                (warm,),
            ).fetchone()
        if row is not None and row[0] is not None:
            for label, (p50, p99) in zip(("fan-out", "dispatch", "POST"), row, strict=True):
                print(f"  {label:9s} p50 {p50:.1f}  p99 {p99:.1f} ms")
        return 0 if len(got) >= total else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        server.shutdown()
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{prefix}.")]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=10).values():
                future.result()
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
