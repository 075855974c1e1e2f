"""Create the ledger's four topics, idempotently, with the configured max.message.bytes."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from budget_ledger.consumers.kafka_config import admin_config
from budget_ledger.ledger.settings import Settings


def create_topics(
    settings: Settings, partitions: int | None = None, replication: int | None = None
) -> dict[str, str]:
    """Create commands, events, alerts and DLQ topics; return {topic: "created"|"exists"}."""
    partitions = partitions or settings.topic_partitions
    replication = replication or settings.topic_replication
    names = [
        settings.topic_commands,
        settings.topic_events,
        settings.topic_alerts,
        settings.topic_dlq,
    ]
    admin = AdminClient(admin_config(settings))
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication,
                # The relay sets aside what a topic refuses; the limit is explicit, not the
                # broker's default, so that events up to the configured size always fit.
                config={"max.message.bytes": str(settings.topic_max_message_bytes)},
            )
            for name in names
        ],
        operation_timeout=30,
    )
    result: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=60)
            result[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            result[name] = "exists"
    return result
