"""`budget-ledger consume`: the command topic → ledger, projections, outbox and positions.

Every batch is one Postgres transaction holding the events, the projection changes, the outbox
rows and the new partition positions (the eventsourcing library's "tracking record"), so a
crash at any instant neither loses nor doubles a command. Kafka's own committed offsets are
written afterwards for lag monitoring only; on assignment we seek to the positions in Postgres.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import orjson
import psycopg
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from budget_ledger.consumers import metrics, poison
from budget_ledger.consumers.health import ConsumerHealth
from budget_ledger.consumers.kafka_config import admin_config, command_consumer_config
from budget_ledger.consumers.positions import PositionRefused, TopicWatch, topic_id, verify
from budget_ledger.consumers.processor import (
    LEDGER_ROW_OFFSET,
    LEDGER_ROW_PARTITION,
    BatchContext,
    BatchOutput,
    BudgetKey,
    DeadLetterRow,
    Incoming,
    MessageKey,
    PartitionState,
    merge_states,
    process_batch,
)
from budget_ledger.consumers.state_cache import StateCache
from budget_ledger.consumers.timings import CommitTimings
from budget_ledger.ledger import store, table_partitions
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.db import connect, copy_rows
from budget_ledger.ledger.history import ReplayFailed
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.sql import load_queries
from budget_ledger.projections import state_loading
from budget_ledger.projections.store import prepare_session, upsert_projections

log = structlog.get_logger("consumer")
T = TypeVar("T")

# The consumer allocates ~100 short-lived objects per command while holding a large, long-lived
# budget state; CPython's default (700, 10, 10) runs a young collection every few commands and
# re-scans the state often. Fewer, larger collections: -20% consumer CPU per command in the
# benchmark (docs/performance.md). Non-cyclic garbage is still freed at once by refcounting.
GC_THRESHOLDS = (50_000, 20, 100)
# Kafka's committed offsets are informational (lag tools); Postgres holds the real positions.
# Committing them at most this often spares the broker an OffsetCommit per batch.
KAFKA_COMMIT_INTERVAL_S = 1.0
# A unique violation that replaying should resolve, seen this many times in a row without a
# commit in between, is no race: the batch is bisected like any refused batch.
RACE_RETRIES = 3
# While idle, check that Postgres and Kafka still answer this often (for readiness).
IDLE_CHECK_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """Batching knobs of one consumer process."""

    batch_max_messages: int
    batch_max_ms: int


class CommandConsumer:
    """One member of the command consumer group."""

    def __init__(
        self,
        settings: Settings,
        options: ConsumerOptions | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or ConsumerOptions(
            settings.batch_max_messages, settings.batch_max_ms
        )
        self.stop = stop or threading.Event()
        self.partitions: dict[int, PartitionState] = {}
        # One LRU of budget states for all owned partitions: the bound is per process.
        self.cache = StateCache(settings.state_cache_budgets, settings.state_cache_mb * 2**20)
        self.ctx = BatchContext(
            topic=settings.topic_commands,
            events_topic=settings.topic_events,
            alerts_topic=settings.topic_alerts,
            dlq_topic=settings.topic_dlq,
            currencies=settings.currencies,
            chain_key=settings.chain_key(),
            signing_keys={
                k: v.get_secret_value().encode() for k, v in settings.signing_keys.items()
            },
        )
        self._conn: psycopg.Connection | None = None
        self._consumer: Consumer | None = None
        self._topic_watch: TopicWatch | None = None
        self._admin: AdminClient | None = None
        # Set on the first assignment; also the liveness/readiness state served on /healthz.
        self.ready = ConsumerHealth(settings.liveness_stall_seconds)
        self._race_retries = 0
        self._checked_at = 0.0
        self._lag: dict[int, int] = {}  # per partition, as last observed
        # Benchmark hook (LEDGER_BENCH_TIMINGS): commit time and produce timestamps per batch.
        self.timings = CommitTimings.from_env()
        self._kafka_pending: dict[int, int] = {}
        self._kafka_committed_at = 0.0

    # -- rebalance callbacks (run inside consume()) -------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [p.partition for p in partitions]
        # Raises PositionRefused (out of consume(), so the process stops) rather than skip.
        positions = self._verified_positions(consumer, numbers)
        for tp in partitions:
            tp.offset = positions[tp.partition]
            # Another member may have written this partition since we last owned it.
            self.cache.drop_partition(tp.partition)
            self.partitions[tp.partition] = PartitionState(tp.offset, self.cache)
        consumer.incremental_assign(partitions)
        log.info("partitions_assigned", partitions={p: positions[p] for p in numbers})
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flush_kafka_offsets()
        self._forget(consumer, partitions)
        log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: the group moved on, so our pending Kafka offsets must not be sent.
        self._forget(consumer, partitions)
        log.warning("partitions_lost", partitions=[p.partition for p in partitions])

    def _forget(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.partitions.pop(tp.partition, None)
            self.cache.drop_partition(tp.partition)
            self._kafka_pending.pop(tp.partition, None)
        consumer.incremental_unassign(partitions)

    # -- database ----------------------------------------------------------------------------

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.settings.app_dsn(), role=self.settings.database_role, autocommit=True
            )
            prepare_session(self._conn)
        return self._conn

    def _with_db(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work`, reconnecting with back-off while Postgres is unavailable."""
        delay = 0.1
        while True:
            try:
                result = work(self._db())
                self.ready.database_ok = True
                return result
            except psycopg.OperationalError as exc:
                log.warning(
                    "database_unavailable", error=" ".join(str(exc).split()), retry_in=delay
                )
                self.ready.database_ok = False
                self.ready.progressed()  # waiting on Postgres is not a hung loop
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if self.stop.wait(delay):
                    raise
                delay = min(delay * 2, 5.0)

    def _commit_batch(self, out: BatchOutput, conn: psycopg.Connection) -> None:
        """Write one batch in one transaction; the position compare-and-set comes first."""
        with conn.transaction():
            self._write(conn, out)

    def _write(self, conn: psycopg.Connection, out: BatchOutput) -> None:
        """Every statement of one batch, inside the caller's transaction."""
        store.advance_positions(
            conn, self.settings.consumer_group, self.settings.topic_commands, out.positions
        )
        if out.ledger_rows:
            store.append_ledger_rows(conn, out.ledger_rows, keyed=self.ctx.chain_key is not None)
        upsert_projections(conn, out.balance_rows, out.reservation_rows)
        if out.outbox_rows:
            copy_rows(conn, store.queries()["copy_outbox"], out.outbox_rows)
        # The alert history and dead-letter records, exactly once with the positions above.
        if out.alert_rows:
            copy_rows(conn, _queries()["copy_alerts"], out.alert_rows)
        if out.dead_letter_rows:
            _write_dead_letters(conn, out.dead_letter_rows)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until `stop` is set (SIGTERM/SIGINT), then leave the group cleanly."""
        self._ensure_ledger_partitions()
        consumer = Consumer(command_consumer_config(self.settings, error_cb=self._on_kafka_error))
        self._consumer = consumer
        consumer.subscribe(
            [self.settings.topic_commands],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("consumer_started", topic=self.settings.topic_commands,
                 group=self.settings.consumer_group, batch_max=self.options.batch_max_messages,
                 batch_ms=self.options.batch_max_ms)  # fmt: skip
        try:
            while not self.stop.is_set():
                batch = self._incoming(self._poll_batch(consumer))
                if batch:
                    self.ready.kafka_ok = True
                    self._handle(batch)
                else:
                    self._idle()
        finally:
            self._flush_kafka_offsets()
            consumer.close()  # leaves the group: the others take the partitions at once
            if self._conn is not None:
                self._conn.close()
            if self.timings is not None:
                self.timings.write()
            log.info("consumer_stopped")

    def _ensure_ledger_partitions(self) -> None:
        """Create the ledger's coming monthly partitions, best effort: a failure only logs, since
        a row whose month has no partition lands in the DEFAULT partition (migration 008)."""
        try:
            months = table_partitions.ensure_partitions(self._db())
        except psycopg.Error as exc:
            log.warning("ledger_partitions_not_ensured", error=" ".join(str(exc).split()))
            return
        created = [m.name for m in months if m.outcome == "created"]
        skipped = [m.name for m in months if m.outcome.startswith("skipped")]
        log.info("ledger_partitions_ensured", created=created, skipped=skipped)

    def _poll_batch(self, consumer: Consumer) -> list[Message]:
        """Up to N messages: what is already fetched, at once; else wait up to T ms for more.

        Natural batching: under load, messages pile up while a batch commits, so the next batch
        is taken without waiting (large batches, no idle 20 ms per batch); when the queue is
        empty, wait at most `batch_max_ms` for the first message, then take what has arrived.
        """
        n = self.options.batch_max_messages
        messages = consumer.consume(n, 0)
        if messages:
            return messages
        messages = consumer.consume(1, self.options.batch_max_ms / 1000)
        if messages and n > 1:
            messages.extend(consumer.consume(n - 1, 0))
        return messages

    def _incoming(self, messages: list[Message]) -> list[Incoming]:
        if self._topic_watch is not None and self._topic_watch.changed():
            log.error("topic_id_changed", topic=self.settings.topic_commands)
            self._rewind()  # re-checks every position: stops with PositionRefused
            return []
        batch = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._AUTO_OFFSET_RESET:
                    # A stored position the log no longer has: never jump elsewhere silently.
                    log.error("offset_out_of_range", partition=msg.partition(), error=str(err))
                    self._rewind()  # re-checks every position: stops with PositionRefused
                    return []
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka_error", error=str(err))
                    if err.fatal():
                        raise KafkaException(err)
                continue
            batch.append(
                Incoming.bounded(
                    msg.partition(),  # type: ignore[arg-type]
                    msg.offset(),  # type: ignore[arg-type]
                    msg.key(),
                    msg.value(),
                    msg.timestamp()[1],
                    tuple(msg.headers() or ()),  # type: ignore[arg-type]
                )
            )
        return batch

    def _handle(self, batch: list[Incoming]) -> None:
        """Decide and commit one batch; a message Postgres refuses is found and dead-lettered."""
        started = time.perf_counter()
        poisoned: dict[MessageKey, str] = {}
        self.ready.holding_batch = True
        while True:
            attempted: BatchOutput | None = None
            try:
                out = attempted = self._with_db(lambda conn: self._decide(conn, batch, poisoned))
                if out.is_empty:
                    self.ready.holding_batch = False
                    return
                self._with_db(functools.partial(self._commit_batch, out))
                break
            except store.Fenced as exc:
                self._fenced(exc)
                return
            except Exception as exc:
                try:
                    if not self._isolate(batch, poisoned, exc, attempted):
                        return
                except store.Fenced as fenced:  # while bisecting
                    self._fenced(fenced)
                    return
        self._race_retries = 0
        self.ready.holding_batch = False
        self.ready.progressed()
        if self.timings is not None:
            self.timings.record([m.timestamp_ms for m in batch])
        metrics.STATE_EVICTIONS.inc(merge_states(self.partitions, out))
        metrics.STATE_CACHED.set(len(self.cache))
        metrics.STATE_CACHED_BYTES.set(self.cache.estimated_bytes)
        metrics.record_batch(out, len(batch), time.perf_counter() - started)
        self._log_dead_letters(out)
        self._observe_lag(out)
        log.debug("batch_committed", messages=len(batch), events=len(out.ledger_rows),
                  dead_letters=out.dead_letters)  # fmt: skip
        self._commit_kafka_offsets(out)

    def _fenced(self, exc: store.Fenced) -> None:
        log.warning("batch_fenced", reason=str(exc))
        metrics.BATCH_RETRIES.labels("fenced").inc()
        self._rewind()

    def _decide(
        self, conn: psycopg.Connection, batch: list[Incoming], poisoned: dict[MessageKey, str]
    ) -> BatchOutput:
        return process_batch(
            batch,
            self.partitions,
            self.ctx,
            lookup_prior=lambda keys: store.lookup_prior(conn, keys),
            load_budgets=lambda keys: _load_counted(conn, keys),
            poisoned=poisoned,
            lookup_settled=lambda keys: state_loading.lookup_settled(conn, keys),
        )

    def _isolate(
        self,
        batch: list[Incoming],
        poisoned: dict[MessageKey, str],
        exc: Exception,
        attempted: BatchOutput | None,
    ) -> bool:
        """After a failed batch: True to retry it with one more message poisoned, False if the
        partitions were rewound (the batch will be read again); re-raise what no message caused.
        """
        error = " ".join(str(exc).split())
        if poison.is_position_conflict(exc):
            # Positions behind the ledger: no message is to blame and none may be dropped.
            log.error("batch_position_conflict", error=error)
            metrics.BATCH_RETRIES.labels("position_conflict").inc()
            self._rewind()
            self.stop.wait(1.0)
            return False
        if poison.is_race(exc) and self._race_retries < RACE_RETRIES:
            # Another partition's consumer committed the same tenant command_id first: replay
            # the batch so that the idempotency check sees it.
            self._race_retries += 1
            log.warning("batch_conflict_retry", error=error, attempt=self._race_retries)
            metrics.BATCH_RETRIES.labels("conflict").inc()
            self._rewind()
            return False
        if not (poison.is_data_error(exc) or poison.is_race(exc)):
            raise exc
        if poison.is_race(exc):
            log.error("batch_conflict_persists", error=error, attempts=self._race_retries)
        hint = _named_message(batch, exc, attempted)
        found = self._with_db(lambda conn: self._bisect(conn, batch, poisoned, hint))
        if found is None:
            log.warning("batch_failure_not_reproduced", error=error)
            metrics.BATCH_RETRIES.labels("not_reproduced").inc()
            self._rewind()
            return False
        msg, reason = found
        key = (msg.partition, msg.offset)
        if key in poisoned:
            # Even its dead letter is refused: nothing left to isolate, so stop loudly.
            raise RuntimeError(f"partition {key[0]} offset {key[1]} is refused even as a dead "
                               f"letter: {reason}") from exc  # fmt: skip
        poisoned[key] = reason
        metrics.POISON_ISOLATED.inc()
        log.warning("poison_isolated", partition=key[0], offset=key[1], reason=reason)
        return True

    def _bisect(
        self,
        conn: psycopg.Connection,
        batch: list[Incoming],
        poisoned: dict[MessageKey, str],
        hint: int | None = None,
    ) -> tuple[Incoming, str] | None:
        """The message whose addition makes the batch fail, with the error, by trial writes."""
        errors: dict[int, BaseException] = {}

        def fails(k: int) -> bool:
            metrics.BISECT_PROBES.inc()
            try:
                out = self._decide(conn, batch[:k], poisoned)
                if not out.is_empty:
                    with conn.transaction():
                        self._write(conn, out)
                        raise psycopg.Rollback()
            except Exception as exc:
                if poison.is_data_error(exc) or poison.is_race(exc):
                    errors[k] = exc
                    return True
                raise  # infrastructure (OperationalError, Fenced): the caller retries
            return False

        index = poison.first_failing(len(batch), fails, hint)
        if index is None:
            return None
        reason = f"the database refused a row of this command: {poison.describe(errors[index + 1])}"
        return batch[index], reason

    def _idle(self) -> None:
        """Nothing fetched: record progress if nothing waits, and re-check the dependencies."""
        self.ready.holding_batch = False
        self._lag = self._owned_lag()
        self.ready.lag = sum(self._lag.values())
        if self.ready.lag == 0:
            self.ready.progressed()
        now = time.monotonic()
        if now - self._checked_at < IDLE_CHECK_INTERVAL_S:
            return
        self._checked_at = now
        try:
            self._db().execute("SELECT 1")
            self.ready.database_ok = True
        except psycopg.OperationalError:
            self.ready.database_ok = False
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        if not self.ready.kafka_ok and self._consumer is not None:
            try:
                self._consumer.list_topics(self.settings.topic_commands, timeout=1.0)
                self.ready.kafka_ok = True
            except KafkaException:
                pass

    def _on_kafka_error(self, err: KafkaError) -> None:
        # librdkafka reconnects by itself; readiness reports the outage meanwhile.
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.ready.kafka_ok = False
        log.warning("kafka_client_error", error=str(err))

    def _owned_lag(self) -> dict[int, int]:
        """Per owned partition, messages between our position and the cached high watermark."""
        lag: dict[int, int] = {}
        for p, part in self.partitions.items():
            behind = self._cached_lag(p, part.next_offset)
            if behind is not None:
                lag[p] = behind
        return lag

    def _cached_lag(self, partition: int, position: int) -> int | None:
        """Messages past `position` by the cached high watermark (no broker round trip);
        None while the client knows no watermark."""
        if self._consumer is None:
            return None
        tp = TopicPartition(self.settings.topic_commands, partition)
        try:
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return None
        return max(0, high - position) if high >= 0 else None

    def _log_dead_letters(self, out: BatchOutput) -> None:
        # Dead letters are rare; each gets a line with what is known of it.
        if not out.dead_letters:
            return
        for topic, key, _value, headers in out.outbox_rows:
            if topic != self.ctx.dlq_topic or headers is None:
                continue
            fields = dict(orjson.loads(headers))
            tenant, _, budget = (key or b"").decode("utf-8", "replace").partition(":")
            log.warning(
                "dead_lettered",
                tenant_id=tenant,
                budget_id=budget,
                partition=fields.get("original_partition"),
                offset=fields.get("original_offset"),
                command_id=fields.get("command_id"),
                error_class=fields.get("error_class"),
                reason=fields.get("reason"),
            )

    def _observe_lag(self, out: BatchOutput) -> None:
        for p, (_, new) in out.positions.items():
            behind = self._cached_lag(p, new)
            if behind is not None:
                self._lag[p] = behind
                metrics.LAG.labels(str(p)).set(behind)
        self.ready.lag = sum(self._lag.values())

    def _commit_kafka_offsets(self, out: BatchOutput) -> None:
        """Tell Kafka too, so lag tools see progress (Postgres stays the source of truth).

        At most every KAFKA_COMMIT_INTERVAL_S; the latest offsets win.
        """
        for p, (_, new) in out.positions.items():
            self._kafka_pending[p] = new
        if time.monotonic() - self._kafka_committed_at >= KAFKA_COMMIT_INTERVAL_S:
            self._flush_kafka_offsets()

    def _flush_kafka_offsets(self) -> None:
        if not self._kafka_pending or self._consumer is None:
            return
        offsets = [
            TopicPartition(self.settings.topic_commands, p, new)
            for p, new in self._kafka_pending.items()
        ]
        self._kafka_pending = {}
        self._kafka_committed_at = time.monotonic()
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("kafka_commit_skipped", error=str(exc))

    def _verified_positions(self, consumer: Consumer, numbers: list[int]) -> dict[int, int]:
        """Stored positions checked against the log and topic id; adopts their ledger topic."""
        # One admin client for the consumer's life; the id checked here is the one watched.
        if self._admin is None:
            self._admin = AdminClient(admin_config(self.settings))
        tid = topic_id(self.settings, self.settings.topic_commands, self._admin)
        stored = self._with_db(lambda conn: verify(conn, consumer, self.settings, numbers, tid))
        self._topic_watch = TopicWatch(self.settings, self._admin, tid)
        labels = {pos.ledger_topic for pos in stored.values()}
        label = labels.pop() if labels else self.ctx.topic
        if label != self.ctx.topic:
            if any(p not in stored for p in self.partitions):
                raise PositionRefused(
                    f"{self.settings.topic_commands}: assigned partitions write ledger topic"
                    f" {label}, owned ones {self.ctx.topic}; restart after the realignment"
                )
            # The ledger rows of a re-created (realigned) topic carry its ledger topic name.
            self.ctx = replace(self.ctx, topic=label)
            log.warning("ledger_topic", topic=self.settings.topic_commands, ledger_topic=label)
        return {p: pos.next_offset for p, pos in stored.items()}

    def _rewind(self) -> None:
        """Forget in-memory state and seek every owned partition back to its stored position."""
        assert self._consumer is not None
        numbers = list(self.partitions)
        positions = self._verified_positions(self._consumer, numbers)
        self.cache.clear()
        for p in numbers:
            self.partitions[p] = PartitionState(positions[p], self.cache)
            try:
                self._consumer.seek(TopicPartition(self.settings.topic_commands, p, positions[p]))
            except KafkaException as exc:
                log.warning("seek_failed", partition=p, error=str(exc))


@functools.cache
def _queries() -> dict[str, str]:
    return load_queries("budget_ledger.consumers")


def _write_dead_letters(conn: psycopg.Connection, rows: list[DeadLetterRow]) -> None:
    """Insert the batch's dead letters in one statement (they are rare: no COPY, and a repeated
    command id must be skipped, which COPY cannot do)."""
    columns = list(zip(*rows, strict=True))
    names = ("tenants", "command_ids", "types", "classes", "reasons", "topics", "partitions",
             "offsets")  # fmt: skip
    conn.execute(
        _queries()["insert_dead_letters"], dict(zip(names, map(list, columns), strict=True))
    )


def _load_counted(
    conn: psycopg.Connection, keys: list[BudgetKey]
) -> Mapping[BudgetKey, BudgetState | ReplayFailed]:
    """The batch's one load of the budgets not in the state cache (from the projections, a
    replay for rows without a snapshot), counted in the metrics."""
    metrics.STATE_LOADS.inc(len(keys))
    return state_loading.load_states(conn, keys)


def _named_message(
    batch: list[Incoming], exc: BaseException, attempted: BatchOutput | None
) -> int | None:
    """Index in `batch` of the message whose ledger row Postgres named (a hint to confirm)."""
    where = poison.copy_line(exc)
    if attempted is None or where is None or where[0] != "ledger":
        return None
    line = where[1]
    if not 1 <= line <= len(attempted.ledger_rows):
        return None
    row = attempted.ledger_rows[line - 1]
    key = (row[LEDGER_ROW_PARTITION], row[LEDGER_ROW_OFFSET])
    return next((i for i, m in enumerate(batch) if (m.partition, m.offset) == key), None)
