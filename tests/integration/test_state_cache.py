"""A consumer whose state cache holds two budgets, over many budgets: real Kafka, real Postgres.

Every budget is evicted and reloaded again and again; each command's outcome must be the one an
unbounded in-process run gives, and the ledger must stay consistent.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY

from budget_ledger.consumers.processor import (
    BatchContext,
    Incoming,
    PartitionState,
    merge_states,
    process_batch,
)
from budget_ledger.ledger.budget import initial_state
from budget_ledger.ledger.settings import Settings
from tests.conftest import ROOT
from tests.integration.support import (
    assert_ledger_consistent,
    ledger_count,
    produce,
    random_stream,
    reserve,
    running_consumer,
    wait_for,
)

pytestmark = pytest.mark.integration

BUDGETS, COMMANDS = 60, 3000


def _expected_outcomes(commands: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """command_id -> (event type, reason) of an unbounded in-process run (one partition keeps
    every budget's order, which is all that decides its outcomes)."""
    ctx = BatchContext("cmd", "events", "alerts", "dlq", {"USD": 2, "ZWG": 2})
    parts = {0: PartitionState(0)}
    messages = [
        Incoming(0, i, f"{c['tenant_id']}:{c['budget_id']}".encode(), orjson.dumps(c))
        for i, c in enumerate(commands)
    ]
    out = process_batch(
        messages, parts, ctx, lambda _k: {}, lambda keys: {k: initial_state(*k) for k in keys}
    )
    merge_states(parts, out)
    assert out.dead_letters == 0
    return {
        str(row[4]): (str(row[3]), orjson.loads(str(row[16])).get("reason"))
        for row in out.ledger_rows
    }


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_two_budget_cache_over_many_budgets_keeps_the_ledger_right(settings: Settings) -> None:
    settings = settings.model_copy(update={"state_cache_budgets": 2, "batch_max_messages": 50})
    commands = random_stream(seed=31, budgets=BUDGETS, commands=COMMANDS)
    # A reservation settled early, reused long after its budget was evicted: still refused.
    settled = next(c for c in commands if c["type"] == "charge")
    reuse = reserve("acme", str(settled["budget_id"]), "reuse-1", "1.00", str(settled["ref_id"]))
    commands.append(reuse)
    loads, evictions = _metric("ledger_state_loads_total"), _metric("ledger_state_evictions_total")

    with running_consumer(settings, relay=False) as consumer:
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) == len(commands), what="all events")
        # A client retry of the first command, whose budget is long evicted: nothing new.
        produce(settings, commands[:1])
        wait_for(
            lambda: sum(p.next_offset for p in consumer.partitions.values()) == len(commands) + 1,
            what="the retry consumed",
        )
        assert len(consumer.cache) <= 2

    assert ledger_count(settings.database_url) == len(commands)
    assert_ledger_consistent(settings.database_url, commands)
    assert _metric("ledger_state_evictions_total") - evictions > BUDGETS
    assert _metric("ledger_state_loads_total") - loads > BUDGETS  # budgets came back

    expected = _expected_outcomes(commands)
    assert expected["reuse-1"] == ("reservation_rejected", "duplicate_ref")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT command_id, type, event->>'reason' FROM ledger").fetchall()
    assert {cid: (kind, reason) for cid, kind, reason in rows} == expected


def test_the_memory_bench_runs_and_bounds_the_cache(
    pg_admin_dsn: str, kafka_bootstrap: str
) -> None:
    """Smoke run of bench/state_cache_rss.py at a tiny size (figures are not asserted)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [
        sys.executable, "-m", "bench.state_cache_rss",
        "--commands", "600", "--budgets", "150", "--cache", "10", "0",
        "--metrics-port", str(port),
        "--database-url", pg_admin_dsn, "--kafka-bootstrap", kafka_bootstrap,
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    doc = orjson.loads(result.stdout)
    bounded, unbounded = doc["runs"]
    assert bounded["ledger_events"] == unbounded["ledger_events"] == 600
    assert bounded["ledger_state_cached_budgets"] == 10
    assert 0 < bounded["ledger_state_cached_bytes"] < unbounded["ledger_state_cached_bytes"]
    assert bounded["ledger_state_evictions_total"] > 0
    assert unbounded["ledger_state_cached_budgets"] == 150
    assert doc["bytes_per_cached_budget"] > 0
