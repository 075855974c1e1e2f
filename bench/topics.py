"""The benchmarks' Kafka topics: each run makes its own, deleted when it ends (kept, they pile up
on the broker, whose CPU and heap grow with its partitions)."""

from __future__ import annotations

import sys

from budget_ledger.ledger.settings import Settings


def delete_topics(settings: Settings) -> None:
    """Delete the run's four topics; a failure is noted on stderr, never raised (clean-up)."""
    try:
        from confluent_kafka.admin import AdminClient

        from budget_ledger.consumers.kafka_config import admin_config

        admin = AdminClient(admin_config(settings))
        names = [
            settings.topic_commands,
            settings.topic_events,
            settings.topic_alerts,
            settings.topic_dlq,
        ]
        for f in admin.delete_topics(names).values():
            f.result(30)
    except Exception as exc:
        print(f"note: topics not deleted: {exc}", file=sys.stderr)
