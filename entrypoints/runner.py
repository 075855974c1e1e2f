"""Process wiring shared by the long-running commands: signals, the health and metrics endpoint."""

from __future__ import annotations

import signal
import threading
from http.server import ThreadingHTTPServer

import structlog

from budget_ledger.consumers import metrics
from budget_ledger.consumers.health import ConsumerHealth
from budget_ledger.ledger.settings import Settings

log = structlog.get_logger("runner")


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so loops finish their batch and leave cleanly."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def serve_health(
    settings: Settings, ready: threading.Event, stop: threading.Event
) -> ThreadingHTTPServer | None:
    """Start /metrics, /healthz, /readyz when LEDGER_HTTP_PORT is set.

    A `ConsumerHealth` (the command consumer's `ready`) also answers for progress and for the
    reachability of Postgres and Kafka; a plain Event only for "started".
    """
    if not settings.http_port:
        return None
    if isinstance(ready, ConsumerHealth):
        health = ready
        return metrics.serve(
            settings.http_port, live=lambda: not stop.is_set() and health.live(), ready=health.ready
        )
    return metrics.serve(settings.http_port, live=lambda: not stop.is_set(), ready=ready.is_set)
