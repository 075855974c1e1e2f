"""librdkafka configurations of the ledger's Kafka clients, in one place.

Every client the project makes starts from `client_config`, so the transport security settings
(`LEDGER_KAFKA_SECURITY_PROTOCOL`, SASL, TLS, `LEDGER_KAFKA_EXTRA`) reach all of them; the
mapping itself is `ledger.settings.kafka_security_properties`, on the floor below, so that the
reconciler's topic reader (projections/) uses it too. The dicts returned hold secrets in clear
text (librdkafka needs them): never log or print them.
"""

from __future__ import annotations

from typing import Any

from budget_ledger.ledger.settings import Settings, kafka_security_properties

# Java clients (the rules engine, most upstream services) hash keys with murmur2; using the same
# partitioner here keeps every command of one budget on one partition whoever produced it.
PARTITIONER = "murmur2_random"


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The base of every Kafka client: bootstrap servers and transport security."""
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap}
    config.update(kafka_security_properties(settings))
    config.update(overrides)
    return config


def reader_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that only assigns partitions and reads (never commits): probes, listeners."""
    reader = {"group.id": group_id, "enable.auto.commit": False, "enable.partition.eof": False}
    return client_config(settings, **{**reader, **overrides})


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, ordered producer (acks=all, no reordering on retry)."""
    config: dict[str, Any] = {
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": PARTITIONER,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    config.update(overrides)
    return config


def command_consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The command consumer: positions live in Postgres, so Kafka commits are informational."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Positions come from Postgres; a position the log no longer has must surface as an
        # error (the consumer then stops with PositionRefused), never as a silent jump.
        "auto.offset.reset": "error",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 60_000,
        # The broker answers a fetch when 64 KB are ready or after the wait: at moderate rates
        # fetches come at a steady pace, each bringing a batch, instead of one per arriving
        # producer batch (docs/performance.md, "Fetch wait": 5 -> 15 ms took the machine from
        # ~192 to ~166 % busy at 5,000 commands/s).
        "fetch.wait.max.ms": settings.kafka_fetch_wait_ms,
        "fetch.min.bytes": 65_536,
        # The pre-fetch queue is full whenever the consumer has a backlog, so its bound is a
        # floor of the consumer's memory. librdkafka's defaults (100,000 messages or 64 MB, per
        # partition as measured) held ~470,000 commands, ~100 MB, on 4 partitions where a
        # batch takes 2,000 (docs/scaling.md, "Consumer memory").
        "queued.max.messages.kbytes": settings.kafka_fetch_queue_kb,
        "queued.min.messages": settings.kafka_fetch_queue_messages,
    }
    if settings.group_instance_id:
        # Static membership: a restart within session.timeout.ms resumes without a rebalance.
        config["group.instance.id"] = settings.group_instance_id
    config.update(overrides)
    return config


def admin_config(settings: Settings) -> dict[str, Any]:
    """Admin client configuration."""
    return client_config(settings)
