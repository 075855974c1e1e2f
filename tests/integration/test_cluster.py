"""A broker crash on the three-node cluster: the partition leader SIGKILLed mid-stream.

Real consumer and relay (threads of this process), real three-node KRaft cluster with topics of
replication factor 3 and min.insync.replicas 2, real Postgres. Producers use acks=all and
idempotence, so a message acknowledged before the crash is on two replicas at least.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings, load_settings, prefixed_names
from tests.integration.chaos_support import (
    assert_events_topic_complete,
    assert_exactly_once,
    group_coordinator,
    kill_broker,
    leader_of,
    leaders,
    longest_gap_seconds,
    replication_of,
    start_brokers,
)
from tests.integration.support import (
    TEST_SIGNING,
    cli,
    ledger_count,
    random_stream,
    running_consumer,
    signed_headers,
    wait_for,
)

pytestmark = pytest.mark.integration

RATE = 200  # commands per second, steady
COMMANDS = 4_000  # 20 s of stream
KILL_AFTER_S = 6.0


@pytest.fixture
def cluster_settings(kafka_cluster: str, database_url: str, topic_prefix: str) -> Settings:
    """This test's topics (RF 3) and database, on the three-node cluster."""
    return load_settings(
        kafka_bootstrap=kafka_cluster,
        database_url=database_url,
        **prefixed_names(topic_prefix),
        topic_partitions=4,
        topic_replication=3,
        batch_max_ms=20,
        session_timeout_ms=6_000,
        **TEST_SIGNING,
    )


def _stream(
    settings: Settings,
    commands: list[dict[str, Any]],
    done: threading.Event,
    acked_after: dict[int, float],
) -> None:
    """Produce `commands` at RATE per second (in 50 ms slices) with one idempotent producer;
    `acked_after` gets the longest produce -> acknowledgement time per partition (seconds)."""
    producer = Producer(producer_config(settings))
    failures: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
            return
        waited = time.time() - msg.timestamp()[1] / 1000
        acked_after[msg.partition()] = max(acked_after.get(msg.partition(), 0.0), waited)

    step = max(1, RATE // 20)
    started = time.monotonic()
    for i, c in enumerate(commands):
        key, value = f"{c['tenant_id']}:{c['budget_id']}".encode(), orjson.dumps(c)
        producer.produce(
            settings.topic_commands,
            key=key,
            value=value,
            headers=signed_headers(settings, key, value),
            on_delivery=report,
        )
        producer.poll(0)
        if (i + 1) % step == 0:
            time.sleep(max(0.0, started + (i + 1) / RATE - time.monotonic()))
    assert producer.flush(120) == 0
    assert failures == [], failures[:3]
    done.set()


def test_leader_kill_mid_stream_loses_nothing_and_doubles_nothing(
    cluster_settings: Settings,
) -> None:
    settings = cluster_settings
    create_topics(settings)
    assert replication_of(settings.kafka_bootstrap, settings.topic_commands) == {3}
    commands = random_stream(seed=29, budgets=32, commands=COMMANDS)
    done = threading.Event()
    acked_after: dict[int, float] = {}
    victim = 0
    try:
        with running_consumer(settings):
            producer = threading.Thread(
                target=_stream, args=(settings, commands, done, acked_after)
            )
            producer.start()
            time.sleep(KILL_AFTER_S)
            # The leader of command partition 0 (and whatever else it leads: other command
            # partitions, the group coordinator, events partitions) dies without warning.
            victim = leader_of(settings.kafka_bootstrap, settings.topic_commands, 0)
            roles = leaders(settings.kafka_bootstrap, settings.topic_commands)
            led = sorted(p for p, broker in roles.items() if broker == victim)
            coordinator = group_coordinator(settings.kafka_bootstrap, settings.consumer_group)
            before = ledger_count(settings.database_url)
            killed_at = time.monotonic()
            kill_broker(victim)
            producer.join(120)
            assert done.is_set(), "the producer did not finish"
            wait_for(lambda: ledger_count(settings.database_url) == len(commands), timeout=120,
                     what="every command in the ledger after the broker kill")  # fmt: skip
            drained_after = time.monotonic() - killed_at
            assert_events_topic_complete(settings, settings.database_url)
    finally:
        if victim:
            start_brokers(victim)

    assert_exactly_once(settings.database_url, [(str(c["tenant_id"]), str(c["command_id"]))
                                                 for c in commands])  # fmt: skip
    for source in ("ledger", "kafka"):
        result = cli(settings, "reconcile", "--source", source, "--no-alerts")
        assert result.returncode == 0, result.stdout + result.stderr
    stall = longest_gap_seconds(settings.database_url)
    others = sorted(set(roles) - set(led))
    stall_others = longest_gap_seconds(settings.database_url, others) if others else 0.0
    print(
        f"\nleader kill: broker {victim} (leader of command partitions {led}"
        f"{', and the group coordinator' if coordinator == victim else ''}) "
        f"SIGKILLed after {before} of {len(commands)} commands "
        f"at {RATE}/s; longest gap between committed events {stall:.2f} s "
        f"(on partitions {others} it did not lead: {stall_others:.2f} s); "
        f"all applied {drained_after:.1f} s after the kill; lost 0, doubled 0; longest "
        f"produce->ack per partition { ({p: round(t, 2) for p, t in sorted(acked_after.items())}) }"
    )
