"""A Python client for upstream services: typed commands, correctly keyed, and their outcomes.

client = LedgerClient(settings)
command_id = client.reserve("acme", "b-1", amount="5.00", currency="USD", ref_id="rw-1")
outcome = client.await_outcome(command_id, timeout=5)   # the ledger event, as a dict
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from consumers.kafka_config import producer_config
from ledger.settings import Settings
from schemas.commands import Command, parse_command


def command_key(command: Command) -> bytes:
    """The message key that sends every command of a budget to one partition."""
    return f"{command.tenant_id}:{command.budget_id}".encode()


def send_raw_command(settings: Settings, raw: bytes, producer: Producer | None = None) -> str:
    """Validate raw JSON as a command and publish it with its key; return the key."""
    command = parse_command(raw, settings.currencies)
    own = producer is None
    producer = producer or Producer(producer_config(settings))
    key = command_key(command)
    producer.produce(settings.topic_commands, key=key, value=raw)
    if own and producer.flush(30):
        raise TimeoutError("Kafka did not acknowledge the command within 30 s")
    return key.decode()


class LedgerClient:
    """Publishes commands and waits for their ledger events on the events topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = Producer(producer_config(settings))
        self._events: Consumer | None = None
        self._seen: dict[str, dict[str, Any]] = {}

    def send(self, command: dict[str, Any]) -> str:
        """Validate and publish one command (a dict of wire fields); return its command_id."""
        command.setdefault("command_id", str(uuid.uuid4()))
        if self._events is None:
            self._start_listening()
        send_raw_command(self.settings, orjson.dumps(command), self._producer)
        if self._producer.flush(30):
            raise TimeoutError("Kafka did not acknowledge the command within 30 s")
        return str(command["command_id"])

    def fund(self, tenant_id: str, budget_id: str, amount: str, currency: str, **extra: Any) -> str:
        """Add funds to a budget."""
        return self.send({"type": "fund", "tenant_id": tenant_id, "budget_id": budget_id,
                          "amount": amount, "currency": currency, **extra})  # fmt: skip

    def reserve(
        self, tenant_id: str, budget_id: str, amount: str, currency: str, ref_id: str, **extra: Any
    ) -> str:
        """Hold funds for a reward about to be issued."""
        fields = {"amount": amount, "currency": currency, "ref_id": ref_id, **extra}
        return self.send(
            {"type": "reserve", "tenant_id": tenant_id, "budget_id": budget_id, **fields}
        )

    def charge(self, tenant_id: str, budget_id: str, ref_id: str, **extra: Any) -> str:
        """The reward was redeemed: charge its reservation (optionally a smaller `amount`)."""
        return self.send({"type": "charge", "tenant_id": tenant_id, "budget_id": budget_id,
                          "ref_id": ref_id, **extra})  # fmt: skip

    def release(self, tenant_id: str, budget_id: str, ref_id: str, **extra: Any) -> str:
        """The reward expired or was cancelled: free its reservation."""
        return self.send({"type": "release", "tenant_id": tenant_id, "budget_id": budget_id,
                          "ref_id": ref_id, **extra})  # fmt: skip

    def _start_listening(self) -> None:
        # Pin every partition at its current end before the first send, so no outcome is missed.
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap,
                             "group.id": f"ledger-client-{uuid.uuid4()}",
                             "enable.auto.commit": False})  # fmt: skip
        topic = self.settings.topic_events
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        assignment = []
        for p in meta.partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assignment.append(TopicPartition(topic, p, high))
        consumer.assign(assignment)
        self._events = consumer

    def await_outcome(self, command_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The ledger event answering `command_id` (accepted or refused); TimeoutError if none."""
        assert self._events is not None, "send a command first"
        deadline = time.monotonic() + timeout
        while command_id not in self._seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no outcome for command {command_id} within {timeout} s")
            for msg in self._events.consume(500, min(left, 0.2)):
                value = msg.value()
                if msg.error() is None and value:
                    event = orjson.loads(value)
                    self._seen[event["command_id"]] = event
        return self._seen[command_id]

    def close(self) -> None:
        """Flush pending commands and stop listening."""
        self._producer.flush(10)
        if self._events is not None:
            self._events.close()
