"""The consumer under bad input, redelivery, crashes and scale-out: real Kafka, real Postgres."""

from __future__ import annotations

import random
import time

import psycopg
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings
from tests.integration.support import (
    assert_ledger_consistent,
    consumer_process,
    fund,
    kill,
    ledger_count,
    open_budget,
    produce,
    random_stream,
    read_topic,
    reserve,
    running_consumer,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration

BALANCES = (
    "SELECT string_agg(concat_ws(',', budget_id, funded, reserved, charged, sequence), ';'"
    " ORDER BY budget_id) FROM budget_balances"
)


def test_poison_messages_go_to_the_dlq_and_good_ones_are_applied(settings: Settings) -> None:
    good = [
        open_budget("acme", "b1", "open-1"),
        fund("acme", "b1", "fund-1", "100.00"),
        reserve("acme", "b1", "res-1", "10.00", "r1"),
    ]
    poison: list[tuple[bytes | None, bytes]] = [
        (b"acme:b1", b"{not json"),
        (b"acme:b1", b'{"command_id": "x1", "type": "fund", "tenant_id": "acme",'
                     b' "budget_id": "b1", "amount": "1.00", "currency": "USD", "colour": "red"}'),
        (b"acme:b1", b'{"command_id": "x2", "type": "fund", "tenant_id": "acme",'
                     b' "budget_id": "b1", "amount": 1.5, "currency": "USD"}'),
        (b"acme:other", b'{"command_id": "x3", "type": "fund", "tenant_id": "acme",'
                        b' "budget_id": "b1", "amount": "1.00", "currency": "USD"}'),
        (b"acme:b1", b'{"command_id": "x4", "type": "teleport", "tenant_id": "acme",'
                     b' "budget_id": "b1"}'),
        (b"acme:b1", b'{"command_id": "x5", "type": "fund", "tenant_id": "acme",'
                     b' "budget_id": "b1", "amount": "1.001", "currency": "USD"}'),
    ]  # fmt: skip
    conflict = fund("acme", "b1", "fund-1", "999.00")  # same command_id, other payload
    mixed = [good[0], poison[0], poison[1], good[1], poison[2], poison[3], good[2], poison[4],
             poison[5], conflict]  # fmt: skip
    with running_consumer(settings):
        produce(settings, mixed)
        wait_for(lambda: ledger_count(settings.database_url) == 3, what="3 good commands")
        dlq = read_topic(settings, settings.topic_dlq, expect=7)
        # Still running: a later good command is applied.
        produce(settings, [fund("acme", "b1", "fund-2", "5.00")])
        wait_for(lambda: ledger_count(settings.database_url) == 4, what="the command after poison")

    assert len(dlq) == 7
    by_value = {m.value(): dict((k, v.decode()) for k, v in m.headers()) for m in dlq}
    assert by_value[b"{not json"]["error_class"] == "json"
    for _key, value in poison[1:3] + poison[4:]:
        assert by_value[value]["error_class"] == "schema", by_value[value]
    assert "colour" in by_value[poison[1][1]]["reason"]
    assert by_value[poison[3][1]]["error_class"] == "key_mismatch"
    conflict_headers = next(h for v, h in by_value.items() if b"999.00" in v)
    assert conflict_headers["error_class"] == "idempotency_conflict"
    assert all(h["original_topic"] == settings.topic_commands for h in by_value.values())
    assert scalar(settings.database_url, "SELECT funded FROM budget_balances") == 10_500


def _reset_kafka_group_offsets(settings: Settings) -> None:
    """What an operator would do with kafka-consumer-groups --reset-offsets --to-earliest."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topic = settings.topic_commands
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    request = ConsumerGroupTopicPartitions(
        settings.consumer_group, [TopicPartition(topic, p, 0) for p in meta.partitions]
    )
    admin.alter_consumer_group_offsets([request])[settings.consumer_group].result(timeout=30)


def test_redelivery_applies_nothing_twice(settings: Settings) -> None:
    commands = random_stream(seed=7, budgets=5, commands=300)
    with running_consumer(settings):
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) == 300, what="300 events")
    before = scalar(settings.database_url, BALANCES)

    # 1. The group's Kafka offsets reset to the beginning: the consumer seeks to the positions
    #    stored in Postgres, so nothing is read again. A marker command proves it ran.
    _reset_kafka_group_offsets(settings)
    with running_consumer(settings):
        produce(settings, [open_budget("acme", "marker", "marker-1")])
        wait_for(lambda: ledger_count(settings.database_url) == 301, what="the marker event")
    assert scalar(settings.database_url, "SELECT sum(next_offset) FROM consumer_positions") == 301

    # 2. Client retries: every command published again, and the stored positions lost too (the
    #    owner rewinds them), so the consumer re-reads the whole topic: 300 + 1 + 300 messages.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE consumer_positions SET next_offset = 0")
    with running_consumer(settings):
        produce(settings, commands)
        wait_for(
            lambda: scalar(settings.database_url,
                           "SELECT sum(next_offset) FROM consumer_positions") == 601,
            what="all 601 messages consumed",
        )  # fmt: skip
    assert ledger_count(settings.database_url) == 301
    assert scalar(settings.database_url, BALANCES.replace("FROM", "FROM (SELECT * FROM")
                  + " WHERE budget_id <> 'marker') b") == before  # fmt: skip
    assert_ledger_consistent(
        settings.database_url, [*commands, open_budget("acme", "marker", "marker-1")]
    )


def test_database_connections_killed_mid_stream_lose_nothing(settings: Settings) -> None:
    """Postgres dropping the consumer's connection (restart, failover) at random moments."""
    commands = random_stream(seed=13, budgets=40, commands=12000)
    kills = 0
    with (
        running_consumer(settings, relay=False),
        psycopg.connect(settings.database_url, autocommit=True) as admin,
    ):
        produce(settings, commands)
        rng = random.Random(5)
        while ledger_count(settings.database_url) < len(commands) and kills < 8:
            time.sleep(rng.uniform(0.02, 0.15))
            kills += len(admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            ).fetchall())  # fmt: skip
        wait_for(lambda: ledger_count(settings.database_url) == len(commands), timeout=120,
                 what="every command applied after the disconnections")  # fmt: skip
    assert kills > 0
    assert_ledger_consistent(settings.database_url, commands)


def test_sigkill_at_random_points_loses_and_doubles_nothing(settings: Settings) -> None:
    create_topics(settings)
    commands = random_stream(seed=11, budgets=20, commands=4000)
    produce(settings, commands)
    rng = random.Random(3)
    for _ in range(3):
        proc = consumer_process(settings, "--batch-max-messages", "200")
        time.sleep(rng.uniform(2.5, 5.0))
        kill(proc)
    proc = consumer_process(settings)
    try:
        wait_for(lambda: ledger_count(settings.database_url) == len(commands), timeout=120,
                 what="every command applied after the crashes")  # fmt: skip
    finally:
        kill(proc)
    assert_ledger_consistent(settings.database_url, commands)


def test_three_consumers_share_partitions_and_survive_a_kill(settings: Settings) -> None:
    settings = settings.model_copy(update={"topic_partitions": 12})
    create_topics(settings)
    commands = random_stream(seed=5, budgets=60, commands=6000)
    procs = [consumer_process(settings, "--batch-max-messages", "100") for _ in range(3)]
    try:
        time.sleep(3)
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) > 500, what="some progress")
        kill(procs.pop(0))
        wait_for(lambda: ledger_count(settings.database_url) == len(commands), timeout=120,
                 what="the survivors to finish")  # fmt: skip
        owners = scalar(settings.database_url,
                        "SELECT count(DISTINCT kafka_partition) FROM ledger")  # fmt: skip
        assert owners == 12
    finally:
        for p in procs:
            kill(p)
    assert_ledger_consistent(settings.database_url, commands)


def test_application_role_cannot_update_or_delete_the_ledger(settings: Settings) -> None:
    with running_consumer(settings, relay=False):
        produce(settings, [open_budget("acme", "b1", "open-1")])
        wait_for(lambda: ledger_count(settings.database_url) == 1, what="one event")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET ROLE ledger_app")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ledger SET amount = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM ledger")
        conn.execute("RESET ROLE")
        # Even the owner is stopped by the append-only trigger.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE ledger SET amount = 1")
    assert ledger_count(settings.database_url) == 1


def test_reader_role_sees_only_its_tenant(settings: Settings) -> None:
    with running_consumer(settings, relay=False):
        produce(settings, [open_budget("acme", "b1", "o-1"), open_budget("globex", "b1", "o-1")])
        wait_for(lambda: ledger_count(settings.database_url) == 2, what="two tenants' events")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET ROLE ledger_reader")
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)  # no tenant set
        conn.execute("SELECT set_config('ledger.tenant_id', 'acme', false)")
        for query in (
            "SELECT DISTINCT tenant_id FROM ledger",
            "SELECT DISTINCT tenant_id FROM budget_balances",
        ):
            assert conn.execute(query).fetchall() == [("acme",)], query
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO outbox (topic, payload) VALUES ('x', 'y')")
