"""Prometheus metrics of the consumer and the relay, and the liveness/readiness endpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from budget_ledger.consumers.processor import BatchOutput

COMMANDS = Counter(
    "ledger_commands_total", "Commands applied, by type and outcome", ["type", "outcome"]
)
DEAD_LETTERS = Counter(
    "ledger_dead_letters_total", "Messages sent to the DLQ, by error_class", ["error_class"]
)
POISON_ISOLATED = Counter(
    "ledger_poison_isolated_total",
    "Messages found by bisecting a batch that Postgres refused (dead-lettered storage_refused)",
)
BISECT_PROBES = Counter(
    "ledger_bisect_probes_total", "Trial transactions run while bisecting refused batches"
)
BATCH_RETRIES = Counter(
    "ledger_batch_retries_total", "Batches rewound and read again, by cause", ["cause"]
)
BATCH_SIZE = Histogram(
    "ledger_batch_messages", "Messages per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)  # fmt: skip
BATCH_SECONDS = Histogram(
    "ledger_batch_seconds", "Time to decide and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)  # fmt: skip
RELAYED = Counter("ledger_relayed_total", "Rows published by the relay", ["topic"])
LAG = Gauge("ledger_consumer_lag", "Messages not yet applied, by partition", ["partition"])
STATE_LOADS = Counter(
    "ledger_state_loads_total", "Budget states loaded from Postgres (first use or after eviction)"
)
STATE_EVICTIONS = Counter(
    "ledger_state_evictions_total", "Budget states evicted from the consumer's state cache"
)
STATE_CACHED = Gauge("ledger_state_cached_budgets", "Budget states held in the consumer's cache")
STATE_CACHED_BYTES = Gauge(
    "ledger_state_cached_bytes", "Estimated bytes of the budget states in the consumer's cache"
)


def record_batch(out: BatchOutput, messages: int, seconds: float) -> None:
    """Count one committed batch."""
    for (kind, outcome), n in out.outcomes.items():
        COMMANDS.labels(kind, outcome).inc(n)
    for error_class, n in out.dead_letter_classes.items():
        DEAD_LETTERS.labels(error_class).inc(n)
    BATCH_SIZE.observe(messages)
    BATCH_SECONDS.observe(seconds)


def serve(port: int, live: Callable[[], bool], ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on `port` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
            elif self.path in ("/healthz", "/readyz"):
                ok = live() if self.path == "/healthz" else ready()
                body, status, ctype = (
                    (b"ok\n" if ok else b"not ready\n"),
                    (200 if ok else 503),
                    "text/plain",
                )
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # access logs would drown the structured ones

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="http").start()
    return server


# -- relay: refreshed every few seconds by the relay loop ----------------------------------------
RELAY_LAG = Gauge(
    "ledger_relay_lag_offsets",
    "Command offsets between a relay cursor and the ledger's last row",
    ["topic", "partition"],
)
OUTBOX_DEPTH = Gauge("ledger_outbox_rows", "Rows waiting in the outbox (alerts, DLQ, outcomes)")
SET_ASIDE_PENDING = Gauge(
    "ledger_relay_set_aside_rows", "Rows set aside or waiting behind a held budget"
)
HELD_BUDGETS = Gauge("ledger_relay_held_budgets", "Budgets whose events wait for an operator")
SET_ASIDE = Counter(
    "ledger_relay_set_aside_total", "Rows the relay could not publish, set aside", ["kind"]
)
