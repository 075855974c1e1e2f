"""`budget-ledger relay`: publishes ledger events and outbox rows to Kafka, in per-budget order.

The ledger itself is the outbox for events: one cursor per command partition walks the ledger
by command offset. Within a partition rows commit in offset order (one fenced writer), so the
cursor can never skip a row that becomes visible late — the trap of `id > last_seen` over a
sequence shared by concurrent transactions. Alerts, re-published outcomes and dead letters go
through the small `outbox` table, whose rows are deleted once Kafka acknowledged them.
A crash between publish and cursor update re-publishes: consumers may see a duplicate (events
carry their ids), never a gap.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psycopg
import structlog
from confluent_kafka import KafkaError, Message, Producer

from consumers import metrics
from consumers.kafka_config import producer_config
from ledger.db import connect
from ledger.settings import Settings
from ledger.store import queries

log = structlog.get_logger("relay")


class PublishFailed(Exception):
    """Kafka did not acknowledge every message of a round: nothing is marked as published."""


@dataclass
class _Deliveries:
    errors: list[str] = field(default_factory=list)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))


class Relay:
    """Publishes what the consumer committed."""

    def __init__(self, settings: Settings, batch: int = 5000, stop: threading.Event | None = None):
        self.settings = settings
        self.batch = batch
        self.stop = stop or threading.Event()
        self._producer: Producer | None = None
        self._conn: psycopg.Connection | None = None

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.settings.database_url, role=self.settings.database_role, autocommit=True
            )
        return self._conn

    def _kafka(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(producer_config(self.settings))
        return self._producer

    def _flush(self, deliveries: _Deliveries) -> None:
        remaining = self._kafka().flush(30)
        if remaining or deliveries.errors:
            raise PublishFailed(f"{remaining} unacknowledged, errors: {deliveries.errors[:3]}")

    def publish_events(self) -> int:
        """One round over the ledger cursors; returns the number of events published.

        Step 1: lock the cursors no other relay holds (SKIP LOCKED).
        Step 2: read the events after each cursor, in command-offset order.
        Step 3: produce them keyed by budget, then flush and check every acknowledgement.
        Step 4: move the cursors on and commit.
        """
        conn, producer, q = self._db(), self._kafka(), queries()
        deliveries = _Deliveries()
        with conn.transaction():
            # Step 1
            cursors = conn.execute(q["claim_relay_cursors"]).fetchall()
            if not cursors:
                return 0
            # Step 2
            rows = conn.execute(
                q["select_unpublished_events"],
                {"partitions": [c[0] for c in cursors], "after": [c[1] for c in cursors],
                 "limit": self.batch},
            ).fetchall()  # fmt: skip
            if not rows:
                return 0
            # Step 3
            last: dict[int, int] = {}
            for partition, offset, tenant_id, budget_id, kind, event in rows:
                producer.produce(
                    self.settings.topic_events,
                    key=f"{tenant_id}:{budget_id}".encode(),
                    value=event.encode(),
                    headers=[("type", kind.encode())],
                    on_delivery=deliveries,
                )
                producer.poll(0)
                last[partition] = offset
            self._flush(deliveries)
            # Step 4
            with conn.cursor() as cur:
                cur.executemany(
                    q["advance_relay_cursor"],
                    [{"partition": p, "offset": o} for p, o in last.items()],
                )
        metrics.RELAYED.labels(self.settings.topic_events).inc(len(rows))
        return len(rows)

    def publish_outbox(self) -> int:
        """One round over the small outbox: claim, produce, flush, delete; returns rows sent."""
        conn, producer, q = self._db(), self._kafka(), queries()
        deliveries = _Deliveries()
        with conn.transaction():
            rows = conn.execute(q["claim_outbox"], {"limit": self.batch}).fetchall()
            if not rows:
                return 0
            for _id, topic, key, payload, headers in rows:
                producer.produce(
                    topic,
                    key=bytes(key) if key is not None else None,
                    value=bytes(payload),
                    headers=[(k, v.encode()) for k, v in headers] if headers else None,
                    on_delivery=deliveries,
                )
                producer.poll(0)
            self._flush(deliveries)
            conn.execute(q["delete_outbox"], {"ids": [r[0] for r in rows]})
        for _id, topic, *_ in rows:
            metrics.RELAYED.labels(topic).inc()
        return len(rows)

    def run_once(self) -> int:
        """Publish everything currently committed (both sources); returns rows sent."""
        return self.publish_events() + self.publish_outbox()

    def run(self, idle_sleep: float = 0.01) -> None:
        """Relay until `stop` is set, backing off while Kafka or Postgres are unavailable."""
        log.info("relay_started", events=self.settings.topic_events)
        delay = 0.1
        try:
            while not self.stop.is_set():
                try:
                    sent = self.run_once()
                    delay = 0.1
                except (psycopg.OperationalError, PublishFailed) as exc:
                    log.warning("relay_retry", error=" ".join(str(exc).split()), retry_in=delay)
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    self.stop.wait(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if sent == 0:
                    self.stop.wait(idle_sleep)
        finally:
            if self._producer is not None:
                self._producer.flush(10)
            if self._conn is not None:
                self._conn.close()
            log.info("relay_stopped")
