"""The ledger's own schedulers: expiry and period close go through Kafka like any command."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.sweeper import due_commands, sweep_once
from budget_ledger.ledger.settings import Settings
from tests.integration.support import (
    fund,
    ledger_count,
    open_budget,
    produce,
    reserve,
    running_consumer,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_sweeper_expires_reservations_through_the_budgets_partition(settings: Settings) -> None:
    # 3 s ahead: a consumer slow to join its group must still take the reservation before it
    # expires (with 1 s, one CI run's sweep found nothing to expire).
    soon = datetime.now(UTC) + timedelta(seconds=3)
    commands = [
        open_budget("acme", "b1", "open-1", period="monthly", timezone="Africa/Harare"),
        fund("acme", "b1", "fund-1", "50.00"),
        reserve("acme", "b1", "res-1", "20.00", "r1", expires_at=soon.isoformat()),
        reserve("acme", "b1", "res-2", "5.00", "r2"),
    ]
    producer = Producer(producer_config(settings))
    with running_consumer(settings, relay=False):
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) == 4, what="4 events")
        assert scalar(settings.database_url, "SELECT type FROM ledger WHERE sequence = 3") == (
            "funds_reserved"
        )
        time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
        assert sweep_once(settings, producer) == 1
        wait_for(lambda: ledger_count(settings.database_url) == 5, what="the expiry event")
        # A second sweep finds nothing more to expire.
        assert sweep_once(settings, producer) == 0

    with psycopg.connect(settings.database_url) as conn:
        statuses = dict(conn.execute("SELECT ref_id, status FROM reservations").fetchall())
    assert statuses == {"r1": "expired", "r2": "reserved"}
    assert scalar(settings.database_url, "SELECT reserved FROM budget_balances") == 500
    last = scalar(settings.database_url, "SELECT type FROM ledger WHERE sequence = 5")
    assert last == "reservations_expired"

    # At the next local month boundary the sweeper would close the period (Harare = UTC+2).
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        later = datetime.now(UTC) + timedelta(days=93)
        due = [c for c in due_commands(conn, later) if c["type"] == "close_period"]
    assert len(due) == 1
    assert due[0]["period_end"].endswith("T22:00:00Z")
    assert due[0]["command_id"] == f"close:b1:{due[0]['period_end']}"


def test_a_reservation_expiring_within_the_same_second_is_expired_by_one_sweep(
    settings: Settings,
) -> None:
    producer = Producer(producer_config(settings))
    with running_consumer(settings, relay=False):
        produce(settings, [open_budget("acme", "b1", "open-1"), fund("acme", "b1", "f-1", "50.00")])
        wait_for(lambda: ledger_count(settings.database_url) == 2, what="2 events")
        # Expiry half-way through a second (2.5-3.5 s ahead, so a loaded consumer still takes
        # the reservation); the sweep runs 0.1 s after it, within that same second.
        expires = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=500_000)
        produce(settings, [reserve("acme", "b1", "res-1", "20.00", "r1",
                                   expires_at=expires.isoformat())])  # fmt: skip
        wait_for(lambda: ledger_count(settings.database_url) == 3, what="the reservation")
        assert scalar(settings.database_url, "SELECT type FROM ledger WHERE sequence = 3") == (
            "funds_reserved"
        )
        sweep_at = expires + timedelta(milliseconds=100)
        time.sleep(max(0.0, (sweep_at - datetime.now(UTC)).total_seconds()) + 0.05)
        assert sweep_once(settings, producer, now=sweep_at) == 1
        wait_for(lambda: ledger_count(settings.database_url) == 4, what="the expiry event")
        assert sweep_once(settings, producer) == 0

    event = orjson.loads(
        scalar(settings.database_url, "SELECT event::text FROM ledger WHERE sequence = 4")
    )
    assert event["type"] == "reservations_expired"
    assert event["data"]["as_of"] == expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert event["data"]["expired"] == [["r1", "20.00"]]
    assert event["reserved"] == "0.00"
    assert scalar(settings.database_url, "SELECT status FROM reservations") == "expired"
