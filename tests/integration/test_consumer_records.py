"""The consumer writes the alert history and the dead-lettered commands (migration 012) in its
batch transaction, through the real broker: once per alert and per dead-lettered command id,
across a restart and a client's repeats."""

from __future__ import annotations

import orjson
import psycopg
import pytest

from budget_ledger.ledger.settings import Settings
from tests.integration.support import (
    dead_letters,
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

T, B = "acme", "b1"


def _rows(settings: Settings, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_alerts_and_dead_letters_are_recorded_once(settings: Settings) -> None:
    unsigned = fund(T, B, "unsigned-fund", "1000.00")
    stream = [
        open_budget(T, B, "c1"),
        fund(T, B, "c2", "100.00"),
        reserve(T, B, "c3", "80.00", "r1"),  # 80 %: soft_cap_exceeded
        reserve(T, B, "c4", "15.00", "r2"),  # 95 %: hard_cap_approaching
    ]
    with running_consumer(settings, relay=False):
        produce(settings, stream)
        produce(settings, [unsigned], sign=False)
        wait_for(lambda: ledger_count(settings.database_url) == 4, what="4 events")
        wait_for(lambda: len(dead_letters(settings)) == 1, what="the dead letter")
    alerts = _rows(settings, "SELECT sequence, type, severity, payload FROM alerts ORDER BY 1")
    assert [(s, t, v) for s, t, v, _ in alerts] == [
        (3, "soft_cap_exceeded", "warning"),
        (4, "hard_cap_approaching", "critical"),
    ]
    on_topic = scalar(
        settings.database_url,
        "SELECT array_agg(payload ORDER BY id) FROM outbox WHERE topic = %(t)s",
        {"t": settings.topic_alerts},
    )
    assert [orjson.loads(bytes(p)) for p in on_topic] == [a[3] for a in alerts]

    # After a restart, the same commands again (a client's retries) and the unsigned one twice:
    # re-published outcomes and two more dead letters on the topic, no new row anywhere.
    with running_consumer(settings, relay=False):
        produce(settings, stream)
        produce(settings, [unsigned, unsigned], sign=False)
        wait_for(lambda: _outbox(settings) == 2 + 4 + 3, what="the repeats' outbox rows")
    assert ledger_count(settings.database_url) == 4
    assert scalar(settings.database_url, "SELECT count(*) FROM alerts") == 2
    (dead,) = _rows(
        settings,
        "SELECT tenant_id, command_id, command_type, error_class, kafka_topic FROM dead_letters",
    )
    assert dead == (T, "unsigned-fund", "fund", "unauthorized", settings.topic_commands)


def _outbox(settings: Settings) -> int:
    return int(scalar(settings.database_url, "SELECT count(*) FROM outbox"))
