"""Process plumbing shared by the long-running commands: signals, metrics endpoint."""

from __future__ import annotations

import signal
import threading

import structlog

from consumers import metrics
from ledger.settings import Settings

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


def serve_health(settings: Settings, ready: threading.Event, stop: threading.Event) -> None:
    """Start /metrics, /healthz, /readyz when LEDGER_HTTP_PORT is set."""
    if settings.http_port:
        metrics.serve(settings.http_port, live=lambda: not stop.is_set(), ready=ready.is_set)
