"""`budget-ledger sweep`: the ledger's own schedulers, publishing commands like any producer.

Expired reservations and period boundaries are found in the projections, and the resulting
`expire_reservations` / `close_period` commands go onto each budget's own partition, so the
ledger's own changes go through the single writer too. Command ids are derived from the budget
and the instant, so a sweep that runs twice (two replicas, a restart) publishes duplicates that
the consumer recognises, not second commands.

An `expire_reservations` command carries as `as_of` the latest `expires_at` the sweeper found for
that budget, at full precision: the consumer then expires exactly what the sweeper found (a
reservation expiring 0.3 s ago included), and two sweeps that find the same set derive the same
command id.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
import psycopg
import structlog
from confluent_kafka import Producer

from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.periods import period_end
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.sql import load_queries
from budget_ledger.schemas.events import rfc3339_utc

log = structlog.get_logger("sweeper")

#: The principal the ledger's own schedulers sign as (their commands are privileged).
SWEEPER_PRINCIPAL = "ledger-sweeper"


@cache
def queries() -> dict[str, str]:
    """The schedulers' named queries (`consumers/queries.sql`)."""
    return load_queries("budget_ledger.consumers")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _command_id(kind: str, budget_id: str, instant: str) -> str:
    readable = f"{kind}:{budget_id}:{instant}"
    if len(readable) <= 128:
        return readable
    return f"{kind}:" + hashlib.sha256(readable.encode()).hexdigest()


def due_commands(conn: psycopg.Connection, now: datetime) -> Iterator[dict[str, Any]]:
    """The scheduler commands due at `now` (UTC), as wire dicts."""
    for tenant_id, budget_id, cutoff in conn.execute(
        queries()["budgets_with_expired_reservations"], {"as_of": now}
    ):
        as_of = rfc3339_utc(cutoff)
        yield {"command_id": _command_id("expire", budget_id, as_of),
               "type": "expire_reservations", "tenant_id": tenant_id, "budget_id": budget_id,
               "as_of": as_of}  # fmt: skip
    for tenant_id, budget_id, start, period, timezone in conn.execute(
        queries()["periodic_budgets"]
    ):
        if start is None:
            continue
        end = period_end(datetime.fromisoformat(start.replace("Z", "+00:00")), period, timezone)
        if end is not None and end <= now:
            yield {"command_id": _command_id("close", budget_id, _iso(end)),
                   "type": "close_period", "tenant_id": tenant_id, "budget_id": budget_id,
                   "period_end": _iso(end)}  # fmt: skip


def sweep_once(settings: Settings, producer: Producer, now: datetime | None = None) -> int:
    """Publish every command due now, signed as `ledger-sweeper`; return how many were sent."""
    now = now or datetime.now(UTC)
    signer = settings_signer(settings, SWEEPER_PRINCIPAL)
    with connect(settings.app_dsn(), role=settings.database_role, autocommit=True) as conn:
        commands = list(due_commands(conn, now))
    if commands and signer is None:
        # Sent anyway: the consumer dead-letters them (`unauthorized`), where they are visible.
        log.warning("sweep_unsigned", commands=len(commands),
                    hint="set LEDGER_SIGNING_KEYS and LEDGER_SIGNING_KEY_ID")  # fmt: skip
    for command in commands:
        key = f"{command['tenant_id']}:{command['budget_id']}".encode()
        value = orjson.dumps(command)
        headers = signer.headers(key, value) if signer is not None else None
        producer.produce(settings.topic_commands, key=key, value=value, headers=headers)
    if producer.flush(30):
        raise TimeoutError("Kafka did not acknowledge the scheduler's commands within 30 s")
    if commands:
        log.info("sweep_published", commands=len(commands))
    return len(commands)


def run(settings: Settings, every_seconds: float, stop: threading.Event) -> None:
    """Sweep every `every_seconds` until `stop` is set."""
    producer = Producer(producer_config(settings))
    while not stop.is_set():
        try:
            sweep_once(settings, producer)
        except (psycopg.OperationalError, TimeoutError) as exc:
            log.warning("sweep_failed", error=" ".join(str(exc).split()))
        stop.wait(every_seconds)
