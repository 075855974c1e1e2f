"""The API's one producer of commands: made when the app starts (never at import), flushed and
closed when it stops; the writes (entrypoints/api/writes.py) publish through it and await
Kafka's acknowledgement without holding a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.signing import KafkaHeaders

# Kafka must acknowledge a command within this time, else the request is a 503 (retryable with
# the same Idempotency-Key): librdkafka's default (5 minutes) would hold the request that long.
DELIVERY_TIMEOUT_MS: Final = 10_000


class NotDelivered(Exception):
    """Kafka did not acknowledge a command."""


class CommandPublisher:
    """The app's one producer of commands (made when the app starts, closed when it stops); a
    thread serves its delivery reports, which settle the requests awaiting them."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic_commands
        config = producer_config(settings, **{"message.timeout.ms": DELIVERY_TIMEOUT_MS})
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="api-publisher", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def publish(self, key: bytes, value: bytes, headers: KafkaHeaders | None) -> None:
        """Send one message and wait for Kafka's acknowledgement (NotDelivered otherwise)."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[str | None] = loop.create_future()

        def settle(error: str | None) -> None:
            if not acked.done():
                acked.set_result(error)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            # RuntimeError: the request's loop is gone (shutdown), nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, None if err is None else str(err))

        try:
            self._producer.produce(
                self.topic, key=key, value=value, headers=headers, on_delivery=delivered
            )
        except (BufferError, KafkaException) as exc:
            raise NotDelivered(str(exc)) from None
        try:
            error = await asyncio.wait_for(acked, DELIVERY_TIMEOUT_MS / 1000 + 5)
        except TimeoutError:
            raise NotDelivered("no acknowledgement") from None
        if error is not None:
            raise NotDelivered(error)

    def close(self) -> None:
        """Deliver what is queued (up to 10 s) and stop."""
        self._stop.set()
        self._thread.join(5)
        self._producer.flush(10)
