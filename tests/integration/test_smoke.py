"""Smoke test of the foundation: the real broker and the real Postgres answer."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from budget_ledger.consumers.kafka_config import command_consumer_config, producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings

pytestmark = pytest.mark.integration


def test_kafka_round_trip_in_a_consumer_group(settings: Settings) -> None:
    assert create_topics(settings)[settings.topic_commands] == "created"
    assert create_topics(settings)[settings.topic_commands] == "exists"
    producer = Producer(producer_config(settings))
    payload = uuid.uuid4().hex.encode()
    producer.produce(settings.topic_commands, key=b"tenant-a:budget-1", value=payload)
    assert producer.flush(30) == 0

    consumer = Consumer(
        command_consumer_config(
            settings,
            # The ledger's consumer refuses to guess a position (positions live in Postgres);
            # this bare group member has none, so it starts at the beginning.
            **{"enable.auto.offset.store": True, "auto.offset.reset": "earliest"},
        )
    )
    consumer.subscribe([settings.topic_commands])
    try:
        got = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got = msg
                break
        assert got is not None, "no message consumed within 60 s"
        assert got.key() == b"tenant-a:budget-1"
        assert got.value() == payload
        committed = consumer.commit(message=got, asynchronous=False)
        assert committed is not None and committed[0].offset == got.offset() + 1
    finally:
        consumer.close()


def test_postgres_round_trip_on_migrated_schema(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions and versions[0] == "001_ledger"
        value = conn.execute("SELECT %s::bigint + 1", (41,)).fetchone()
        assert value == (42,)
