"""Stored positions against the partition's log: refuse to start on a mismatch, realign on request.

The consumer's positions live in Postgres. A topic re-created under the same name, an offset
reset, a fail-over to another cluster or a truncated log make a stored position meaningless;
seeking to it would silently skip commands. On assignment the consumer compares each stored
position with the partition's log start/end offsets and Kafka's topic id (recorded the first
time) and stops with one clear error. `budget-ledger positions realign` moves a position
deliberately and records what was skipped or replayed in `position_realignments`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from budget_ledger.consumers.kafka_config import admin_config, reader_config
from budget_ledger.ledger import store
from budget_ledger.ledger.settings import Settings

log = structlog.get_logger("positions")

WATERMARK_TIMEOUT_S = 10.0
WATERMARK_RETRY_S = 30.0


class PositionRefused(Exception):
    """A stored position does not fit the partition's log: stop rather than skip commands."""


@dataclass(frozen=True, slots=True)
class LogState:
    """What Kafka says about one partition: its topic id and its first and next offsets."""

    topic_id: str | None
    log_start: int
    log_end: int


def mismatch(stored: store.StoredPosition, actual: LogState) -> str | None:
    """Why `stored` cannot be resumed on `actual`, or None when it can (pure)."""
    if stored.topic_id and actual.topic_id and stored.topic_id != actual.topic_id:
        return "the topic was re-created (its topic id changed)"
    if stored.next_offset > actual.log_end:
        return (
            "the stored position is beyond the log end"
            " (offsets reset, or another cluster after a fail-over)"
        )
    if actual.log_start > stored.next_offset:
        return (
            "the log start is beyond the stored position"
            " (commands not yet applied were truncated or deleted by retention)"
        )
    return None


def realign_hint(topic: str, partition: int) -> str:
    """The operator command that re-aligns a refused partition deliberately."""
    return (
        f"budget-ledger positions show --topic {topic}; then budget-ledger positions realign"
        f" --topic {topic} --partition {partition} --to-start|--to-end|--to-offset N"
        " [--accept-topic-id] --yes"
    )


def topic_id(settings: Settings, topic: str, admin: AdminClient | None = None) -> str | None:
    """Kafka's id of `topic` (None when the broker does not tell)."""
    admin = admin or AdminClient(admin_config(settings))
    try:
        futures = admin.describe_topics(TopicCollection([topic]), request_timeout=10)
        description = futures[topic].result(timeout=15)
    except Exception as exc:  # KafkaException, or a timeout of the future: not known now
        log.warning("topic_id_unknown", topic=topic, error=str(exc))
        return None
    tid = getattr(description, "topic_id", None)
    return str(tid) if tid is not None else None


def log_state(consumer: Consumer, topic: str, partition: int, tid: str | None) -> LogState:
    """The partition's log start and end offsets, asked of the broker (not cached).

    Retries for up to WATERMARK_RETRY_S: a partition just created, or moving its leader,
    answers NOT_LEADER_FOR_PARTITION for a moment. Past that, the error is raised.
    """
    deadline = time.monotonic() + WATERMARK_RETRY_S
    delay = 0.1
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S, cached=False
            )
            return LogState(tid, int(low), int(high))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            fatal = isinstance(err, KafkaError) and err.fatal()
            if fatal or time.monotonic() + delay > deadline:
                raise
            log.warning("watermarks_retry", topic=topic, partition=partition, error=str(exc))
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def verify(
    conn: psycopg.Connection,
    consumer: Consumer,
    settings: Settings,
    partitions: Sequence[int],
    tid: str | None,
) -> dict[int, store.StoredPosition]:
    """Stored positions of `partitions`, each checked against the log and the topic's current
    id `tid` (None: the broker did not tell); raise PositionRefused.

    The topic id is recorded for positions that have none yet (trust on first use).
    """
    group, topic = settings.consumer_group, settings.topic_commands
    positions = store.ensure_positions(conn, group, topic, partitions)
    for p in sorted(positions):
        stored = positions[p]
        actual = log_state(consumer, topic, p, tid)
        problem = mismatch(stored, actual)
        if problem is not None:
            hint = realign_hint(topic, p)
            log.error(
                "position_refused",
                topic=topic,
                partition=p,
                problem=problem,
                stored_position=stored.next_offset,
                log_start=actual.log_start,
                log_end=actual.log_end,
                stored_topic_id=stored.topic_id,
                actual_topic_id=actual.topic_id,
                group=group,
                operator_command=hint,
            )
            raise PositionRefused(
                f"{topic}[{p}]: {problem}: stored position {stored.next_offset}, log start"
                f" {actual.log_start}, log end {actual.log_end}, stored topic id"
                f" {stored.topic_id}, actual topic id {actual.topic_id}; run: {hint}"
            )
        if stored.topic_id is None and tid is not None:
            store.record_topic_id(conn, group, topic, p, tid)
    labels = {pos.ledger_topic for pos in positions.values()}
    if len(labels) > 1:
        raise PositionRefused(
            f"{topic}: partitions {sorted(positions)} carry different ledger topics"
            f" {sorted(labels)}; realign every partition of the topic"
        )
    for label in labels:
        store.ensure_relay_cursors(conn, label, list(positions))
    return positions


class TopicWatch:
    """Notices the command topic being re-created under a running consumer (its id changes).

    Assignment checks cannot see a topic deleted and created again between two metadata
    refreshes: the consumer keeps fetching, at its old offsets, from the new topic. Asking for
    the topic id every `interval` seconds bounds that window; an offset reset (the other symptom)
    surfaces at once as an error because the consumer never resets offsets by itself.
    """

    def __init__(
        self, settings: Settings, admin: AdminClient, expected: str | None, interval: float = 10.0
    ) -> None:
        self.settings = settings
        self.interval = interval
        self._admin = admin
        self.expected = expected  # the id the assignment was checked against
        self._at = time.monotonic()
        self._pending: Future[Any] | None = None

    def changed(self) -> bool:
        """True when the topic id differs from the one seen at assignment (checked every
        `interval` seconds; False in between, and when the broker does not answer).

        Never waits on the broker: the consumer loop asks on every poll, so the request is
        sent and its answer read on a later call, once it has arrived.
        """
        if self._pending is not None:
            if not self._pending.done():
                return False
            future, self._pending = self._pending, None
            try:
                tid = getattr(future.result(), "topic_id", None)
            except Exception as exc:  # KafkaException: not known now, ask again later
                log.warning("topic_id_unknown", topic=self.settings.topic_commands, error=str(exc))
                return False
            actual = str(tid) if tid is not None else None
            return bool(actual and self.expected and actual != self.expected)
        if time.monotonic() - self._at >= self.interval:
            self._at = time.monotonic()
            topic = self.settings.topic_commands
            futures = self._admin.describe_topics(TopicCollection([topic]), request_timeout=10)
            self._pending = futures[topic]
        return False


@dataclass(frozen=True, slots=True)
class Realignment:
    """One planned or applied move of a stored position."""

    partition: int
    old_offset: int | None
    new_offset: int
    old_topic_id: str | None
    new_topic_id: str | None
    old_ledger_topic: str | None
    new_ledger_topic: str
    log_start: int
    log_end: int

    def describe(self, topic: str) -> str:
        """One line for the operator: what moves and what is skipped or replayed."""
        old = self.old_offset
        moved = ""
        if old is not None and self.new_offset > old:
            moved = f" (skips {self.new_offset - old} offset(s) never applied)"
        elif old is not None and self.new_offset < old:
            moved = f" (re-reads {old - self.new_offset} offset(s))"
        ids = ""
        if self.old_topic_id != self.new_topic_id:
            ids = f", topic id {self.old_topic_id} -> {self.new_topic_id}"
        label = ""
        if self.old_ledger_topic != self.new_ledger_topic:
            label = f", ledger topic {self.old_ledger_topic} -> {self.new_ledger_topic}"
        return (
            f"{topic}[{self.partition}]: {old} -> {self.new_offset}{moved}"
            f" (log {self.log_start}..{self.log_end}){ids}{label}"
        )


class RealignError(Exception):
    """A realignment that cannot be done as asked (the message says why and what to pass)."""


def probe_consumer(settings: Settings) -> Consumer:
    """A consumer only to read watermarks and metadata: never subscribes, never commits."""
    return Consumer(reader_config(settings, f"{settings.consumer_group}.positions"))


def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of `topic` on the broker."""
    probe = probe_consumer(settings)
    try:
        meta = probe.list_topics(topic, timeout=10).topics.get(topic)
    finally:
        probe.close()
    if meta is None or meta.error is not None or not meta.partitions:
        raise RealignError(f"topic {topic} does not exist on {settings.kafka_bootstrap}")
    return sorted(meta.partitions)


def realign(
    conn: psycopg.Connection,
    settings: Settings,
    topic: str,
    partitions: Sequence[int],
    target: str,
    offset: int | None,
    accept_topic_id: bool,
    apply: bool,
    operator: str,
    reason: str,
) -> list[Realignment]:
    """Plan (and with `apply`, write) new positions; every applied move is audited.

    `target` is "start", "end" or "offset". A changed topic id needs `accept_topic_id`. When the
    topic id changes or a position moves back, every partition of the topic gets a new ledger
    topic name, so the re-read offsets cannot collide with the rows of the old ones.
    """
    group = settings.consumer_group
    tid = topic_id(settings, topic)
    q = store.queries()
    probe = probe_consumer(settings)
    plans: list[Realignment] = []
    try:
        with conn.transaction():
            relabel = False
            current_label: str | None = None
            for p in sorted(partitions):
                actual = log_state(probe, topic, p, tid)
                row = conn.execute(
                    q["lock_position"], {"group": group, "topic": topic, "partition": p}
                ).fetchone()
                old_offset, old_tid, old_label = row if row else (None, None, None)
                current_label = current_label or old_label
                if old_tid and tid and old_tid != tid and not accept_topic_id:
                    raise RealignError(
                        f"{topic}[{p}]: the topic id changed (stored {old_tid}, actual {tid});"
                        " add --accept-topic-id to adopt the new topic"
                    )
                new = {"start": actual.log_start, "end": actual.log_end}.get(target, offset)
                assert new is not None
                if not actual.log_start <= new <= actual.log_end:
                    raise RealignError(
                        f"{topic}[{p}]: offset {new} is outside the log"
                        f" ({actual.log_start}..{actual.log_end})"
                    )
                if (old_tid and tid and old_tid != tid) or (
                    old_offset is not None and new < old_offset
                ):
                    relabel = True
                plans.append(
                    Realignment(p, old_offset, new, old_tid, tid or old_tid, old_label,
                                old_label or topic, actual.log_start, actual.log_end)
                )  # fmt: skip
            if relabel:
                # Kafka topic names cannot contain '#': the new name never meets a real topic.
                label = f"{topic}#{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
                label += f".{int(time.time() * 1000) % 1000:03d}"
                plans = [
                    Realignment(
                        r.partition, r.old_offset, r.new_offset, r.old_topic_id, r.new_topic_id,
                        r.old_ledger_topic, label, r.log_start, r.log_end,
                    )
                    for r in plans
                ]  # fmt: skip
            if not apply:
                return plans
            for r in plans:
                conn.execute(
                    q["realign_position"],
                    {"group": group, "topic": topic, "partition": r.partition,
                     "offset": r.new_offset, "topic_id": r.new_topic_id,
                     "ledger_topic": r.new_ledger_topic},
                )  # fmt: skip
                conn.execute(
                    q["insert_realignment"],
                    {"group": group, "topic": topic, "partition": r.partition,
                     "old_offset": r.old_offset, "new_offset": r.new_offset,
                     "old_topic_id": r.old_topic_id, "new_topic_id": r.new_topic_id,
                     "old_ledger_topic": r.old_ledger_topic,
                     "new_ledger_topic": r.new_ledger_topic, "log_start": r.log_start,
                     "log_end": r.log_end, "reason": reason, "operator": operator},
                )  # fmt: skip
            if relabel:
                conn.execute(
                    q["relabel_positions"],
                    {"group": group, "topic": topic, "ledger_topic": plans[0].new_ledger_topic},
                )
    finally:
        probe.close()
    for r in plans:
        log.warning("position_realigned", group=group, topic=topic, partition=r.partition,
                    old_offset=r.old_offset, new_offset=r.new_offset, old_topic_id=r.old_topic_id,
                    new_topic_id=r.new_topic_id, ledger_topic=r.new_ledger_topic,
                    operator=operator, reason=reason)  # fmt: skip
    return plans
