"""Topic identity: a new topic name works, a re-created or truncated topic stops the consumer.

Real Kafka and Postgres. Every topic here is this test's own (prefixed names); only those are
deleted, re-created or truncated.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from budget_ledger.consumers.kafka_config import admin_config
from budget_ledger.consumers.positions import LogState, mismatch
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.store import StoredPosition
from tests.integration.support import (
    cli,
    consumer_process,
    fund,
    ledger_count,
    open_budget,
    produce,
    read_topic,
    running_consumer,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration

T = "acme"


def _commands(budget: str, n: int, prefix: str, open_first: bool = True) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [open_budget(T, budget, f"{prefix}-open")] if open_first else []
    out += [fund(T, budget, f"{prefix}-{i}", "1.00") for i in range(n - len(out))]
    return out


def _refused(settings: Settings) -> str:
    """Run `budget-ledger consume`; it must stop by itself with exit code 3; return stderr."""
    proc = consumer_process(settings)
    try:
        _out, err = proc.communicate(timeout=90)
    except Exception:
        proc.kill()
        proc.wait(30)
        raise
    assert proc.returncode == 3, err.decode()[-2000:]
    return err.decode()


def _recreate(settings: Settings, topic: str) -> None:
    admin = AdminClient(admin_config(settings))
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result(timeout=60)
    deadline = time.monotonic() + 60
    while True:  # the broker may still be deleting it
        try:
            new = NewTopic(topic, num_partitions=settings.topic_partitions, replication_factor=1)
            admin.create_topics([new])[topic].result(timeout=60)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_mismatch_names_each_case() -> None:
    stored = StoredPosition(0, 10, "id-a", "t")
    assert mismatch(stored, LogState("id-a", 0, 10)) is None
    assert mismatch(stored, LogState("id-a", 10, 25)) is None
    assert "re-created" in (mismatch(stored, LogState("id-b", 0, 40)) or "")
    assert "beyond the log end" in (mismatch(stored, LogState("id-a", 0, 9)) or "")
    assert "log start is beyond" in (mismatch(stored, LogState("id-a", 11, 40)) or "")
    # No topic id recorded yet (or the broker does not tell): the offsets still decide.
    assert mismatch(StoredPosition(0, 0, None, "t"), LogState("id-a", 0, 5)) is None


def test_a_new_topic_name_on_an_existing_database_just_works(settings: Settings) -> None:
    first = _commands("b1", 12, "one")
    with running_consumer(settings):
        produce(settings, first)
        wait_for(lambda: ledger_count(settings.database_url) == 12, what="12 events")
    moved = settings.model_copy(update={"topic_commands": settings.topic_commands + ".v2"})
    # The same offsets again, on another topic: under the old key these were a livelock.
    second = _commands("b2", 12, "two")
    with running_consumer(moved):
        produce(moved, second)
        wait_for(lambda: ledger_count(settings.database_url) == 24, what="24 events")
        events = read_topic(settings, settings.topic_events, expect=24)
    assert len(events) == 24
    topics = scalar(
        settings.database_url,
        "SELECT array_agg(DISTINCT kafka_topic ORDER BY kafka_topic) FROM ledger",
    )
    assert topics == [settings.topic_commands, moved.topic_commands]


def test_recreated_topic_is_refused_then_realigned_and_applied(settings: Settings) -> None:
    with running_consumer(settings):
        produce(settings, _commands("b1", 20, "old"))
        wait_for(lambda: ledger_count(settings.database_url) == 20, what="20 events")

    _recreate(settings, settings.topic_commands)
    produce(settings, _commands("b2", 10, "new"))

    err = _refused(settings)
    assert "re-created" in err and "positions realign" in err
    assert ledger_count(settings.database_url) == 20  # nothing of the new topic applied

    shown = cli(settings, "positions", "show", "--topic", settings.topic_commands)
    assert shown.returncode == 0 and "re-created" in shown.stdout
    # Without --accept-topic-id the new topic is not adopted.
    denied = cli(settings, "positions", "realign", "--topic", settings.topic_commands,
                 "--to-start", "--yes")  # fmt: skip
    assert denied.returncode == 2 and "accept-topic-id" in denied.stderr
    done = cli(settings, "positions", "realign", "--topic", settings.topic_commands,
               "--to-start", "--accept-topic-id", "--yes", "--operator", "ops@acme",
               "--reason", "recreated")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("realigned ") == settings.topic_partitions

    with running_consumer(settings):
        wait_for(lambda: ledger_count(settings.database_url) == 30, what="30 events")
        events = read_topic(settings, settings.topic_events, expect=30)
    assert len(events) == 30
    with psycopg.connect(settings.database_url) as conn:
        labels = conn.execute(
            "SELECT DISTINCT kafka_topic FROM ledger WHERE budget_id = 'b2'"
        ).fetchall()
        audit = conn.execute(
            "SELECT count(*), min(operator), min(reason), count(DISTINCT new_topic_id)"
            " FROM position_realignments"
        ).fetchone()
    # The re-created topic's rows carry their own ledger topic name: offsets cannot collide.
    assert len(labels) == 1 and labels[0][0].startswith(settings.topic_commands + "#")
    assert audit == (settings.topic_partitions, "ops@acme", "recreated", 1)


def test_truncated_topic_is_refused_then_realigned_past_the_gap(settings: Settings) -> None:
    with running_consumer(settings):
        produce(settings, _commands("b1", 5, "a"))
        wait_for(lambda: ledger_count(settings.database_url) == 5, what="5 events")
    partition = int(scalar(settings.database_url, "SELECT min(kafka_partition) FROM ledger"))
    produce(settings, _commands("b1", 5, "b", open_first=False))  # offsets 5..9
    admin = AdminClient(admin_config(settings))
    cut = TopicPartition(settings.topic_commands, partition, 8)
    for future in admin.delete_records([cut], operation_timeout=30).values():
        future.result(timeout=60)

    err = _refused(settings)
    assert "log start is beyond the stored position" in err
    assert ledger_count(settings.database_url) == 5

    done = cli(settings, "positions", "realign", "--topic", settings.topic_commands,
               "--partition", str(partition), "--to-start", "--yes")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "skips 3 offset(s)" in done.stdout
    with running_consumer(settings):
        wait_for(lambda: ledger_count(settings.database_url) == 7, what="7 events")
    offsets = scalar(
        settings.database_url,
        "SELECT array_agg(kafka_offset ORDER BY kafka_offset) FROM ledger",
    )
    assert offsets == [0, 1, 2, 3, 4, 8, 9]


def test_position_beyond_the_log_end_is_refused(settings: Settings) -> None:
    # What a fail-over to another cluster or an offset reset looks like: the stored position
    # points past everything the partition holds.
    create_topics(settings)
    produce(settings, _commands("b1", 3, "a"))
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO consumer_positions (consumer_group, topic, partition, next_offset)"
            " SELECT %s, %s, p, 1000 FROM generate_series(0, %s - 1) AS p",
            (settings.consumer_group, settings.topic_commands, settings.topic_partitions),
        )
    err = _refused(settings)
    assert "beyond the log end" in err
    assert ledger_count(settings.database_url) == 0
    done = cli(settings, "positions", "realign", "--topic", settings.topic_commands,
               "--to-start", "--yes")  # fmt: skip
    assert done.returncode == 0, done.stderr
    with running_consumer(settings):
        wait_for(lambda: ledger_count(settings.database_url) == 3, what="3 events")


def test_topic_recreated_under_a_running_consumer_stops_it(settings: Settings) -> None:
    create_topics(settings)
    proc = consumer_process(settings)
    try:
        produce(settings, _commands("b1", 10, "old"))
        wait_for(lambda: ledger_count(settings.database_url) == 10, what="10 events")
        _recreate(settings, settings.topic_commands)
        produce(settings, _commands("b2", 5, "new"))
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    # Stopped by the offset reset at once, or by the topic id check within 10 s; commands of
    # the new topic read before that went to their own offsets, exactly once.
    assert proc.returncode == 3, err.decode()[-2000:]
    assert "re-created" in err.decode()
    done = cli(settings, "positions", "realign", "--topic", settings.topic_commands,
               "--to-start", "--accept-topic-id", "--yes")  # fmt: skip
    assert done.returncode == 0, done.stderr
    with running_consumer(settings):
        produce(settings, [fund(T, "b2", "new-last", "1.00")])
        wait_for(lambda: ledger_count(settings.database_url) == 16, what="16 events")
    ids = scalar(settings.database_url, "SELECT count(DISTINCT command_id) FROM ledger")
    assert ids == 16
