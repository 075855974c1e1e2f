"""`budget-ledger relay`: publishes ledger events and outbox rows to Kafka, in per-budget order.

The ledger itself is the outbox for events: one cursor per (ledger topic, command partition)
walks the ledger by command offset. Within a partition rows commit in offset order (one fenced
writer), so the cursor can never skip a row that becomes visible late — the trap of
`id > last_seen` over a sequence shared by concurrent transactions. Alerts, re-published
outcomes and dead letters go through the small `outbox` table, whose rows are deleted once
Kafka acknowledged them. A crash between publish and cursor update re-publishes: consumers may
see a duplicate (events carry their ids), never a gap.

One row can never stop publication. A row Kafka refuses for a reason of its own (too large for
the topic, an invalid record) is set aside in `relay_set_aside`; for a ledger event its budget is
held (`relay_holds`): that budget's later events wait in the same table, in order, until an
operator asks to retry or skip (`budget-ledger relay set-aside ...`), while every other budget of
the partition keeps flowing. Broker outages are not the row's fault: they retry, as before.
See docs/operations.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from budget_ledger.consumers import metrics
from budget_ledger.consumers.kafka_config import admin_config, producer_config
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.store import queries

log = structlog.get_logger("relay")

# Errors that belong to one message: retrying cannot help, so the row is set aside.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_TIMESTAMP,
    }
)
# Record and batch framing, plus what compression may add to incompressible bytes.
RECORD_OVERHEAD = 256
METRICS_INTERVAL_S = 5.0
TRUNCATION_NOTE = 256


class PublishFailed(Exception):
    """Kafka did not acknowledge every message of a round: nothing is marked as published."""


def record_size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None) -> int:
    """An upper bound of the bytes one record takes in a batch on the broker."""
    size = len(key or b"") + len(value) + sum(len(k.encode()) + len(v) for k, v in headers or [])
    return size + RECORD_OVERHEAD + size // 128


def truncate_for(
    value: bytes, key: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value cut to fit `limit`, with headers `truncated=true` and `original_size` added."""
    marked = [*headers, ("truncated", b"true"), ("original_size", str(len(value)).encode())]
    room = limit - record_size(key, b"", marked) - TRUNCATION_NOTE
    return value[: max(0, room)], marked


@dataclass
class _Deliveries:
    """Acknowledgements of one round, by the index of the row that was produced."""

    failed: dict[int, KafkaError] = field(default_factory=dict)

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.failed[index] = err

        return on_delivery

    def transient(self) -> list[str]:
        return [str(e) for e in self.failed.values() if not _permanent(e)]


def _permanent(err: KafkaError) -> bool:
    return err.code() in PERMANENT_ERRORS and not err.fatal()


@dataclass(frozen=True, slots=True)
class _Hold:
    topic: str
    partition: int
    action: str | None
    requested_by: str | None


BudgetKey = tuple[str, str]


class Relay:
    """Publishes what the consumer committed."""

    def __init__(self, settings: Settings, batch: int = 5000, stop: threading.Event | None = None):
        self.settings = settings
        self.batch = batch
        self.stop = stop or threading.Event()
        self._producer: Producer | None = None
        self._conn: psycopg.Connection | None = None
        self._limits: dict[str, int] = {}
        self._metrics_at = 0.0

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.settings.app_dsn(), role=self.settings.database_role, autocommit=True
            )
        return self._conn

    def _kafka(self) -> Producer:
        if self._producer is None:
            self._limits = self._topic_limits()
            # Batches never exceed the smallest topic limit, so one record's size is its own.
            smallest = min(self._limits.values())
            self._producer = Producer(
                producer_config(
                    self.settings,
                    **{
                        "batch.size": max(1, smallest - RECORD_OVERHEAD),
                        "message.max.bytes": max(1_000, max(self._limits.values())),
                    },
                )
            )
        return self._producer

    def _reset_producer(self) -> None:
        """Drop the producer so the next round re-reads the topics' limits (after a fix)."""
        if self._producer is not None:
            self._producer.flush(30)
        self._producer = None

    def _topic_limits(self) -> dict[str, int]:
        """max.message.bytes of every topic the relay writes (the setting where unknown)."""
        s = self.settings
        topics = [s.topic_events, s.topic_alerts, s.topic_dlq]
        limits = dict.fromkeys(topics, s.topic_max_message_bytes)
        admin = AdminClient(admin_config(s))
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
        for resource, future in admin.describe_configs(resources, request_timeout=10).items():
            try:
                entry = future.result(timeout=15).get("max.message.bytes")
            except Exception as exc:  # KafkaException, or a timeout when the broker is silent
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.warning("topic_limit_unknown", topic=resource.name, error=str(exc))
                    continue
                # Guessing a limit could make the broker refuse whole batches of good rows.
                raise PublishFailed(
                    f"cannot read max.message.bytes of {resource.name}: {exc}"
                ) from None
            if entry is not None and entry.value:
                limits[resource.name] = int(entry.value)
        return limits

    def _limit(self, topic: str) -> int:
        return self._limits.get(topic, self.settings.topic_max_message_bytes)

    def _flush(self, deliveries: _Deliveries) -> None:
        remaining = self._kafka().flush(30)
        transient = deliveries.transient()
        if remaining or transient:
            if any(e.fatal() for e in deliveries.failed.values()):
                self._producer = None  # a fatal producer error: start a new one
            raise PublishFailed(f"{remaining} unacknowledged, errors: {transient[:3]}")

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> str | None:
        """Produce one record; return why it can never be published, or None once queued."""
        producer = self._kafka()  # first: a new producer re-reads the topics' limits
        size = record_size(key, value, headers)
        if size > self._limit(topic):
            return (
                f"record of ~{size} bytes exceeds max.message.bytes {self._limit(topic)} of {topic}"
            )
        for _attempt in range(2):
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    headers=list(headers) if headers else None,
                    on_delivery=on_delivery,
                )
                producer.poll(0)
                return None
            except BufferError:
                producer.flush(30)  # the local queue is full: let it drain, then once more
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and _permanent(err):
                    return str(err)
                raise PublishFailed(str(exc)) from None
        raise PublishFailed("the producer queue stayed full")

    # -- ledger events -----------------------------------------------------------------------

    def publish_events(self) -> int:
        """One round over the ledger cursors; returns the number of events published.

        Step 1: lock the cursors no other relay holds (SKIP LOCKED), and their held budgets.
        Step 2: carry out the operator's retry/skip requests of those held budgets.
        Step 3: read the events after each cursor, in command-offset order.
        Step 4: produce them keyed by budget; a held budget's events wait, a refused one holds
                its budget; flush and check every acknowledgement.
        Step 5: move the cursors on and commit.
        """
        conn, q = self._db(), queries()
        with conn.transaction():
            # Step 1
            cursors = conn.execute(q["claim_relay_cursors"]).fetchall()
            if not cursors:
                return 0
            topics = [c[0] for c in cursors]
            partitions = [c[1] for c in cursors]
            holds = {
                (t, b): _Hold(topic, p, action, by)
                for topic, p, t, b, action, by in conn.execute(
                    q["select_holds"], {"topics": topics, "partitions": partitions}
                )
            }
            # Step 2
            sent = self._release(conn, holds)
            # Step 3
            rows = conn.execute(
                q["select_unpublished_events"],
                {"topics": topics, "partitions": partitions,
                 "after": [c[2] for c in cursors], "limit": self.batch},
            ).fetchall()  # fmt: skip
            if not rows:
                return sent
            # Step 4
            deliveries = _Deliveries()
            last: dict[tuple[str, int], int] = {}
            produced: list[int] = []
            for i, (topic, partition, offset, tenant_id, budget_id, kind, event) in enumerate(rows):
                last[(topic, partition)] = offset
                budget: BudgetKey = (tenant_id, budget_id)
                if budget in holds:
                    self._set_aside_event(conn, rows[i], "waiting", None)
                    continue
                problem = self._produce(
                    self.settings.topic_events,
                    f"{tenant_id}:{budget_id}".encode(),
                    event.encode(),
                    [("type", kind.encode())],
                    deliveries.callback(i),
                )
                if problem is not None:
                    holds[budget] = self._hold(conn, rows[i], problem)
                    continue
                produced.append(i)
            self._flush(deliveries)
            self._late_refusals(conn, rows, produced, deliveries)
            # Step 5
            with conn.cursor() as cur:
                cur.executemany(
                    q["advance_relay_cursor"],
                    [{"topic": t, "partition": p, "offset": o} for (t, p), o in last.items()],
                )
        published = len(produced) - len(deliveries.failed)
        metrics.RELAYED.labels(self.settings.topic_events).inc(published)
        return sent + published

    def _late_refusals(
        self,
        conn: psycopg.Connection,
        rows: list[tuple[Any, ...]],
        produced: list[int],
        deliveries: _Deliveries,
    ) -> None:
        """Rows the broker refused after they were queued: hold their budgets.

        The budget's later events of this round may already be out; they wait too and are sent
        again after the release, so every event of the budget is (re-)published after it.
        """
        held: set[BudgetKey] = set()
        for i in produced:
            budget = (rows[i][3], rows[i][4])
            if i in deliveries.failed:
                if budget not in held:
                    self._hold(conn, rows[i], str(deliveries.failed[i]))
                    held.add(budget)
                else:
                    self._set_aside_event(conn, rows[i], "waiting", None)
            elif budget in held:
                self._set_aside_event(conn, rows[i], "waiting", None)

    def _set_aside_event(
        self, conn: psycopg.Connection, row: tuple[Any, ...], state: str, error: str | None
    ) -> None:
        topic, partition, offset, tenant_id, budget_id, _kind, event = row
        conn.execute(
            queries()["insert_set_aside"],
            {"kind": "event", "state": state, "topic": topic, "partition": partition,
             "offset": offset, "tenant_id": tenant_id, "budget_id": budget_id,
             "destination": self.settings.topic_events, "key": None, "payload": None,
             "headers": None, "size": len(event.encode()), "error": error},
        )  # fmt: skip

    def _hold(self, conn: psycopg.Connection, row: tuple[Any, ...], error: str) -> _Hold:
        """Set one ledger event aside and hold its budget."""
        topic, partition, offset, tenant_id, budget_id, kind, event = row
        self._set_aside_event(conn, row, "held", error)
        conn.execute(
            queries()["insert_hold"],
            {"topic": topic, "partition": partition, "tenant_id": tenant_id,
             "budget_id": budget_id, "error": error},
        )  # fmt: skip
        metrics.SET_ASIDE.labels("event").inc()
        log.error("relay_set_aside", tenant_id=tenant_id, budget_id=budget_id, topic=topic,
                  partition=partition, offset=offset, type=kind, size=len(event.encode()),
                  error=error, destination=self.settings.topic_events,
                  operator_command=f"budget-ledger relay set-aside retry|skip --tenant"
                  f" {tenant_id} --budget {budget_id}")  # fmt: skip
        return _Hold(topic, partition, None, None)

    def _release(self, conn: psycopg.Connection, holds: dict[BudgetKey, _Hold]) -> int:
        """Carry out retry/skip requests: publish the held budget's events in order."""
        requested = {k: h for k, h in holds.items() if h.action is not None}
        if not requested:
            return 0
        self._reset_producer()  # the operator may have raised a topic's limit
        q, sent = queries(), 0
        for (tenant_id, budget_id), hold in requested.items():
            params = {"tenant_id": tenant_id, "budget_id": budget_id, "topic": hold.topic,
                      "partition": hold.partition}  # fmt: skip
            pending = conn.execute(q["select_held_events"], params).fetchall()
            deliveries = _Deliveries()
            skipped: list[int] = []
            queued: list[tuple[int, int]] = []  # (index, set-aside id)
            problem: tuple[int, str] | None = None
            for i, (sid, state, _offset, kind, event) in enumerate(pending):
                if hold.action == "skip" and state == "held":
                    skipped.append(sid)
                    continue
                why = self._produce(
                    self.settings.topic_events,
                    f"{tenant_id}:{budget_id}".encode(),
                    event.encode(),
                    [("type", kind.encode())],
                    deliveries.callback(i),
                )
                if why is not None:
                    problem = (sid, why)
                    break
                queued.append((i, sid))
            self._flush(deliveries)
            ok: list[int] = []
            for i, sid in queued:
                if i in deliveries.failed:
                    problem = problem or (sid, str(deliveries.failed[i]))
                    break
                ok.append(sid)
            by = hold.requested_by or "unknown"
            for state, ids in (("skipped", skipped), ("published", ok)):
                if ids:
                    conn.execute(
                        q["resolve_set_aside"],
                        {"state": state, "by": by, "error": None, "ids": ids},
                    )
            sent += len(ok)
            if problem is None:
                conn.execute(q["delete_hold"], params)
                del holds[(tenant_id, budget_id)]
                log.warning("relay_hold_released", tenant_id=tenant_id, budget_id=budget_id,
                            action=hold.action, by=by, published=len(ok),
                            skipped=len(skipped))  # fmt: skip
            else:
                sid, why = problem
                conn.execute(q["resolve_set_aside"],
                             {"state": "held", "by": None, "error": why, "ids": [sid]})  # fmt: skip
                conn.execute(q["update_hold"], {**params, "error": why})
                holds[(tenant_id, budget_id)] = _Hold(hold.topic, hold.partition, None, None)
                log.error("relay_hold_kept", tenant_id=tenant_id, budget_id=budget_id,
                          action=hold.action, by=by, published=len(ok), error=why)  # fmt: skip
        metrics.RELAYED.labels(self.settings.topic_events).inc(sent)
        return sent

    # -- outbox ------------------------------------------------------------------------------

    def publish_outbox(self) -> int:
        """One round over the small outbox: claim, produce, flush, delete; returns rows sent.

        A dead letter too large for the DLQ topic goes out truncated (headers `truncated`,
        `original_size`); any other row Kafka refuses is set aside and the rest flows on.
        """
        conn, q = self._db(), queries()
        deliveries = _Deliveries()
        with conn.transaction():
            rows = conn.execute(q["claim_outbox"], {"limit": self.batch}).fetchall()
            if not rows:
                return 0
            refused: dict[int, str] = {}
            for i, (_id, topic, key, payload, headers) in enumerate(rows):
                key_bytes = bytes(key) if key is not None else None
                value = bytes(payload)
                pairs = [(k, v.encode()) for k, v in headers] if headers else []
                limit = self._limit(topic)
                if (
                    topic == self.settings.topic_dlq
                    and record_size(key_bytes, value, pairs) > limit
                ):
                    value, pairs = truncate_for(value, key_bytes, pairs, limit)
                    log.warning("dead_letter_truncated", key=key_bytes, original_size=len(payload),
                                sent_size=len(value))  # fmt: skip
                why = self._produce(topic, key_bytes, value, pairs or None, deliveries.callback(i))
                if why is not None:
                    refused[i] = why
            self._flush(deliveries)
            refused.update({i: str(e) for i, e in deliveries.failed.items()})
            for i, why in refused.items():
                self._set_aside_outbox(conn, rows[i], why)
            conn.execute(q["delete_outbox"], {"ids": [r[0] for r in rows]})
        for i, (_id, topic, *_) in enumerate(rows):
            if i not in refused:
                metrics.RELAYED.labels(topic).inc()
        return len(rows) - len(refused)

    def _set_aside_outbox(self, conn: psycopg.Connection, row: tuple[Any, ...], error: str) -> None:
        _id, topic, key, payload, headers = row
        tenant_id, _, budget_id = (
            (bytes(key) if key else b"").decode("utf-8", "replace").partition(":")
        )
        conn.execute(
            queries()["insert_set_aside"],
            {"kind": "outbox", "state": "held", "topic": None, "partition": None, "offset": None,
             "tenant_id": tenant_id or None, "budget_id": budget_id or None,
             "destination": topic, "key": key, "payload": payload,
             "headers": orjson.dumps(headers).decode() if headers is not None else None,
             "size": len(bytes(payload)), "error": error},
        )  # fmt: skip
        metrics.SET_ASIDE.labels("outbox").inc()
        log.error("relay_set_aside", kind="outbox", outbox_id=_id, destination=topic,
                  tenant_id=tenant_id, budget_id=budget_id, size=len(bytes(payload)), error=error,
                  operator_command="budget-ledger relay set-aside list")  # fmt: skip

    # -- loop --------------------------------------------------------------------------------

    def observe(self) -> None:
        """Refresh the relay gauges: lag per cursor, outbox depth, set-aside rows, held budgets."""
        conn, q = self._db(), queries()
        for topic, partition, behind in conn.execute(q["relay_offsets_behind"]):
            metrics.RELAY_LAG.labels(topic, str(partition)).set(max(0, int(behind)))
        row = conn.execute(q["relay_backlog"]).fetchone()
        if row is not None:
            metrics.OUTBOX_DEPTH.set(row[0])
            metrics.SET_ASIDE_PENDING.set(row[1])
            metrics.HELD_BUDGETS.set(row[2])
        self._metrics_at = time.monotonic()

    def run_once(self) -> int:
        """Publish everything currently committed (both sources); returns rows sent."""
        sent = self.publish_events() + self.publish_outbox()
        if time.monotonic() - self._metrics_at >= METRICS_INTERVAL_S:
            self.observe()
        return sent

    def run(self, idle_sleep: float = 0.01) -> None:
        """Relay until `stop` is set, backing off while Kafka or Postgres are unavailable."""
        log.info("relay_started", events=self.settings.topic_events)
        delay = 0.1
        try:
            while not self.stop.is_set():
                try:
                    sent = self.run_once()
                    delay = 0.1
                except (psycopg.OperationalError, PublishFailed, KafkaException) as exc:
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
