"""/readyz follows Postgres' reachability; /healthz fails on a stuck loop with work waiting."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from budget_ledger.consumers.command_consumer import CommandConsumer
from budget_ledger.entrypoints.runner import serve_health
from budget_ledger.ledger.settings import Settings
from tests.integration.support import (
    fund,
    ledger_count,
    open_budget,
    produce,
    running_consumer,
    topics_ready,
    wait_for,
)

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_readiness_drops_while_postgres_refuses_connections_and_comes_back(
    settings: Settings, pg_admin_dsn: str
) -> None:
    port = _free_port()
    settings = settings.model_copy(update={"http_port": port})
    name = urlsplit(settings.database_url).path.lstrip("/")
    database = sql.Identifier(name)
    topics_ready(settings)
    with (
        running_consumer(settings, relay=False) as consumer,
        psycopg.connect(pg_admin_dsn, autocommit=True) as admin,  # another database
    ):
        server = serve_health(settings, consumer.ready, threading.Event())
        assert server is not None
        try:
            produce(settings, [open_budget("acme", "b1", "open-1")])
            wait_for(lambda: ledger_count(settings.database_url) == 1, what="the first event")
            assert (_status(port, "/readyz"), _status(port, "/healthz")) == (200, 200)

            # Postgres "goes away" for this consumer only: its connection is cut and new ones
            # are refused (the shared server keeps running for everybody else).
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            wait_for(lambda: _status(port, "/readyz") == 503, timeout=30, what="not ready")
            produce(settings, [fund("acme", "b1", "fund-1", "1.00")])  # waits for Postgres
            wait_for(lambda: consumer.ready.holding_batch, what="the consumer to hold a batch")
            assert _status(port, "/healthz") == 200  # waiting on Postgres is not a hang

            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
            wait_for(lambda: ledger_count(settings.database_url) == 2, what="the held command")
            wait_for(lambda: _status(port, "/readyz") == 200, what="ready again")
            assert _status(port, "/healthz") == 200
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
            server.shutdown()


def test_liveness_fails_while_the_loop_is_stuck_with_work_waiting(settings: Settings) -> None:
    port = _free_port()
    settings = settings.model_copy(update={"http_port": port, "liveness_stall_seconds": 1.5})
    topics_ready(settings)
    with (
        running_consumer(settings, relay=False) as consumer,
        psycopg.connect(settings.database_url) as admin,
    ):
        server = serve_health(settings, consumer.ready, threading.Event())
        assert server is not None
        try:
            produce(settings, [open_budget("acme", "b1", "open-1")])
            wait_for(lambda: ledger_count(settings.database_url) == 1, what="the first event")
            wait_for(lambda: _status(port, "/healthz") == 200, what="live while idle")
            # A lock nobody releases: the consumer's commit hangs with a batch in hand.
            admin.execute("LOCK TABLE consumer_positions IN ACCESS EXCLUSIVE MODE")
            produce(settings, [fund("acme", "b1", "fund-1", "1.00")])
            wait_for(lambda: _status(port, "/healthz") == 503, timeout=30, what="not live")
            assert _status(port, "/readyz") == 200  # Postgres answers; the loop is what hangs
            admin.rollback()
            wait_for(lambda: ledger_count(settings.database_url) == 2, what="the held command")
            wait_for(lambda: _status(port, "/healthz") == 200, what="live again")
        finally:
            admin.rollback()
            server.shutdown()


def test_readiness_reports_kafka_unreachable(settings: Settings) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{_free_port()}"})
    stop = threading.Event()
    consumer = CommandConsumer(settings, stop=stop)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: not consumer.ready.kafka_ok, timeout=30, what="all brokers down")
        assert not consumer.ready.ready()
        assert consumer.ready.live()  # nothing to do is not a hang
    finally:
        stop.set()
        thread.join(30)
