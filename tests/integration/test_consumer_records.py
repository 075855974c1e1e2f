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


def test_a_batch_committed_once_is_fenced_when_written_again(settings: Settings) -> None:
    # The same messages decided twice (a zombie consumer that lost its partition, or a commit
    # retried after it went through): the second write's positions no longer match, so the
    # batch's alerts and dead letters are not written twice.
    from budget_ledger.consumers.command_consumer import CommandConsumer
    from budget_ledger.consumers.processor import Incoming, PartitionState, process_batch
    from budget_ledger.ledger import store

    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO consumer_positions (consumer_group, topic, partition, next_offset) "
            "VALUES (%s, %s, 0, 0)",
            (settings.consumer_group, settings.topic_commands),
        )
    consumer = CommandConsumer(settings)
    commands = [
        open_budget(T, B, "c1"),
        fund(T, B, "c2", "100.00"),
        reserve(T, B, "c3", "90.00", "r1"),
        fund(T, B, "c4", "1.00"),  # unsigned: dead-lettered
    ]
    messages = [
        Incoming(0, i, f"{T}:{B}".encode(), orjson.dumps(c), headers=_signed(settings, c))
        for i, c in enumerate(commands)
    ]
    conn = consumer._db()
    try:
        # Both decided before either commits: the second is the zombie's (or the retry's) copy.
        first, second = (
            process_batch(
                messages,
                {0: PartitionState(next_offset=0)},
                consumer.ctx,
                lookup_prior=lambda keys: store.lookup_prior(conn, keys),
                load_budgets=lambda keys: store.load_budgets(conn, keys),
            )
            for _ in range(2)
        )
        assert len(first.alert_rows) == 1 and len(first.dead_letter_rows) == 1
        assert [r[:7] for r in second.alert_rows] == [r[:7] for r in first.alert_rows]
        consumer._commit_batch(first, conn)
        with pytest.raises(store.Fenced):
            consumer._commit_batch(second, conn)
    finally:
        conn.close()
    counts = _rows(
        settings,
        "SELECT (SELECT count(*) FROM ledger), (SELECT count(*) FROM alerts),"
        " (SELECT count(*) FROM dead_letters)",
    )
    assert counts == [(3, 1, 1)]


def _signed(settings: Settings, command: dict[str, object]) -> tuple[tuple[str, bytes | None], ...]:
    from tests.integration.support import signed_headers

    if command["command_id"] == "c4":
        return ()
    key = f"{command['tenant_id']}:{command['budget_id']}".encode()
    return tuple(signed_headers(settings, key, orjson.dumps(command)) or ())
