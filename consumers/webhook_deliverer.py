"""`budget-ledger deliver`: budget.alerts → webhook_deliveries → signed POSTs to the endpoints.

Two jobs in one loop. Fan-out: each batch of alerts becomes one row per matching endpoint, in
the same Postgres transaction as this consumer group's positions (consumer_positions, like the
command consumer's tracking record), so a crash neither loses nor doubles a delivery row.
Delivery: due rows go to one thread per endpoint (consumers.webhook_workers); their results are
written here, one attempt row each, with the retry schedule of consumers.webhook_retry. A
delivery is at least once: a crash after a POST and before its result is written re-sends it,
with the same `webhook-id`, on restart.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from budget_ledger.consumers.kafka_config import client_config
from budget_ledger.consumers.webhook_retry import RetryPolicy, outcome
from budget_ledger.consumers.webhook_signing import webhook_id
from budget_ledger.consumers.webhook_workers import EndpointWorker, Job, Result
from budget_ledger.ledger import store
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.sql import load_queries

log = structlog.get_logger("webhooks")

DISPATCH_INTERVAL_S = 0.1
PER_ENDPOINT_QUEUE = 4  # deliveries handed to one endpoint's thread at a time
DISPATCH_LIMIT = 500
WORKER_IDLE_S = 60.0
# Threads of one process (one per endpoint with work): bounds memory when thousands of endpoints
# have work at once; an endpoint beyond it waits until a thread is free.
MAX_WORKERS = 256
# A claimed delivery is not taken by another deliverer for 2 x the attempt timeout + this; a
# claim whose result was never written (a crash) is attempted again once it runs out.
LEASE_MARGIN_S = 5.0
DISABLED_ALERT = "webhook_endpoint_disabled"


def _queries() -> dict[str, str]:
    return load_queries("budget_ledger.consumers", "webhook_queries.sql")


def alert_rows(messages: list[Message]) -> dict[str, list[Any]]:
    """The fan-out statement's arrays from the alerts of `messages` (others are skipped)."""
    cols: dict[str, list[Any]] = {k: [] for k in ("tenants", "budgets", "types", "ids", "payloads")}
    for msg in messages:
        try:
            alert = orjson.loads(msg.value() or b"")
            tenant, kind, aid = alert["tenant_id"], alert["type"], alert["alert_id"]
            if not all(isinstance(v, str) and v for v in (tenant, kind, aid)):
                raise ValueError("tenant_id, type and alert_id must be non-empty strings")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("alert_skipped", partition=msg.partition(), offset=msg.offset(),
                        error=str(exc))  # fmt: skip
            continue
        if b"\\u0000" in (msg.value() or b""):  # valid JSON, but jsonb refuses it
            log.warning("alert_skipped", partition=msg.partition(), offset=msg.offset(),
                        error="a \\u0000 escape")  # fmt: skip
            continue
        budget = alert.get("budget_id")
        cols["tenants"].append(tenant)
        cols["budgets"].append(budget if isinstance(budget, str) else None)
        cols["types"].append(kind)
        cols["ids"].append(webhook_id(aid))
        cols["payloads"].append((msg.value() or b"").decode())
    return cols


def disabled_alert(tenant: str, endpoint: str, url: str, since: datetime, at: datetime) -> bytes:
    """The alert published when an endpoint is disabled (the alerts topic carries it)."""
    stamp = at.isoformat()
    aid = hashlib.sha256(f"{tenant}:{endpoint}:{DISABLED_ALERT}:{stamp}".encode()).hexdigest()
    return orjson.dumps({
        "alert_id": aid[:32], "type": DISABLED_ALERT, "severity": "warning",
        "tenant_id": tenant, "budget_id": None,
        "recorded_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "data": {"endpoint_id": endpoint, "url": url,
                 "failing_since": since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    })  # fmt: skip


class Deliverer:
    """One member of the webhook consumer group, and the deliveries of every endpoint."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.policy = RetryPolicy(
            settings.webhook_max_attempts,
            settings.webhook_backoff_base_seconds,
            settings.webhook_backoff_max_seconds,
        )
        self.positions: dict[int, int] = {}
        self.workers: dict[str, EndpointWorker] = {}
        self.inflight: set[int] = set()
        self.results: queue.Queue[Result] = queue.Queue()
        self._conn: psycopg.Connection | None = None
        self._consumer: Consumer | None = None
        self._q = _queries()
        self.assigned = threading.Event()  # set on the first assignment (tests, health)

    # -- Kafka positions in Postgres -----------------------------------------------------------

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.settings.app_dsn(), role=self.settings.database_role, autocommit=True
            )
        return self._conn

    def _stored(self, partitions: list[int]) -> dict[int, int]:
        group, topic = self.settings.webhook_group, self.settings.topic_alerts
        stored = store.ensure_positions(self._db(), group, topic, partitions)
        return {p: s.next_offset for p, s in stored.items()}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._stored([tp.partition for tp in partitions])
        for tp in partitions:
            tp.offset = stored[tp.partition]
            self.positions[tp.partition] = tp.offset
        consumer.incremental_assign(partitions)
        log.info("webhook_partitions_assigned", positions=stored)
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop(tp.partition, None)
        consumer.incremental_unassign(partitions)

    def _fan_out(self, messages: list[Message]) -> None:
        """Delivery rows and the new positions, in one transaction (compare-and-set)."""
        moves: dict[int, tuple[int, int]] = {}
        for msg in messages:
            p, offset = msg.partition(), msg.offset()
            if p is None or offset is None or p not in self.positions:
                continue  # revoked meanwhile: the new owner reads it again
            start = moves.get(p, (self.positions[p], self.positions[p]))[0]
            moves[p] = (start, offset + 1)
        owned = [m for m in messages if m.partition() in moves]
        cols = alert_rows(owned)
        conn = self._db()
        try:
            with conn.transaction():
                store.advance_positions(
                    conn, self.settings.webhook_group, self.settings.topic_alerts, moves
                )
                created = conn.execute(self._q["fan_out"], cols).fetchall() if cols["ids"] else []
        except store.Fenced as exc:
            # Another member moved a position: re-read ours and read from there.
            log.warning("webhook_positions_fenced", error=str(exc))
            self._reseek(list(self.positions))
            return
        for p, (_, new) in moves.items():
            self.positions[p] = new
        if created:
            log.info("webhook_deliveries_created", alerts=len(cols["ids"]), deliveries=len(created))

    def _reseek(self, partitions: list[int]) -> None:
        assert self._consumer is not None
        for p, offset in self._stored(partitions).items():
            self.positions[p] = offset
            self._consumer.seek(TopicPartition(self.settings.topic_alerts, p, offset))

    # -- deliveries ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Claim due deliveries and hand them to their endpoints' threads (busy endpoints are
        left out)."""
        busy = [e for e, w in self.workers.items() if w.pending >= PER_ENDPOINT_QUEUE]
        lease = 2 * self.settings.webhook_timeout_seconds + LEASE_MARGIN_S
        rows = self._db().execute(
            self._q["claim_due"],
            {"inflight": list(self.inflight), "busy": busy, "per_endpoint": PER_ENDPOINT_QUEUE,
             "limit": DISPATCH_LIMIT, "lease": lease},
        ).fetchall()  # fmt: skip
        unclaimed: list[int] = []
        for did, endpoint, tenant, alert, payload, attempts, gen, url, secret in rows:
            worker = self.workers.get(endpoint)
            if worker is None:
                if len(self.workers) >= MAX_WORKERS and not self._retire_one_idle():
                    unclaimed.append(did)  # every thread is busy: back for the next turn
                    continue
                worker = EndpointWorker(
                    endpoint, self.results, self.settings.webhook_timeout_seconds,
                    self.settings.webhook_allow_private,
                )  # fmt: skip
                self.workers[endpoint] = worker
            self.inflight.add(did)
            job = Job(did, endpoint, tenant, alert, payload.encode(), attempts, gen, url, secret)
            worker.submit(job)
        if unclaimed:
            self._db().execute(self._q["unclaim"], {"ids": unclaimed})
        now = time.monotonic()
        for endpoint, worker in list(self.workers.items()):
            if worker.pending == 0 and now - worker.idle_since > WORKER_IDLE_S:
                worker.retire()
                del self.workers[endpoint]

    def _retire_one_idle(self) -> bool:
        """Retire one thread with nothing to do (to make room under MAX_WORKERS)."""
        for endpoint, worker in self.workers.items():
            if worker.pending == 0:
                worker.retire()
                del self.workers[endpoint]
                return True
        return False

    def _record(self, conn: psycopg.Connection, r: Result) -> str:
        """Write one attempt, the delivery's new state and the endpoint's health (inside the
        caller's transaction); return the delivery's new status."""
        job, q = r.job, self._q
        n = job.attempts + 1
        now = datetime.now(UTC)
        out = outcome(self.policy, n, r.status, r.final, r.retry_after, now)
        conn.execute(q["insert_attempt"], {
            "delivery": job.delivery_id, "endpoint": job.endpoint_id, "tenant": job.tenant_id,
            "alert": job.alert_id, "attempt": n, "at": r.attempted_at, "code": r.status,
            "latency": r.latency_ms, "error": r.error,
        })  # fmt: skip
        conn.execute(q["update_delivery"], {
            "delivery": job.delivery_id, "status": out.status, "attempt": n,
            "next": out.next_attempt_at, "code": r.status, "error": r.error,
            "latency": r.latency_ms, "generation": job.generation,
        })  # fmt: skip
        if out.status == "delivered":
            conn.execute(q["endpoint_succeeded"], {"endpoint": job.endpoint_id})
        else:
            row = conn.execute(
                q["endpoint_failed"], {"endpoint": job.endpoint_id, "at": r.attempted_at}
            ).fetchone()
            limit = timedelta(seconds=self.settings.webhook_disable_after_seconds)
            if row is not None and now - row[0] >= limit:
                self._disable(conn, job, now)
        return out.status

    def _record_one(self, conn: psycopg.Connection, r: Result) -> str | None:
        """`_record` in a savepoint: a delivery deleted meanwhile (its endpoint was deleted)
        or any other row Postgres refuses skips that result only (None)."""
        try:
            with conn.transaction():
                return self._record(conn, r)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.warning("webhook_result_not_recorded", endpoint_id=r.job.endpoint_id,
                        alert_id=r.job.alert_id, error=" ".join(str(exc).split()))  # fmt: skip
            return None

    def _disable(self, conn: psycopg.Connection, job: Job, now: datetime) -> None:
        reason = f"every attempt failed for {self.settings.webhook_disable_after_seconds:g} s"
        row = conn.execute(
            self._q["disable_endpoint"], {"endpoint": job.endpoint_id, "at": now, "reason": reason}
        ).fetchone()
        if row is None:
            return
        tenant, url, since = row
        conn.execute(self._q["insert_outbox"], {
            "topic": self.settings.topic_alerts, "key": tenant.encode(),
            "payload": disabled_alert(tenant, job.endpoint_id, url, since, now),
        })  # fmt: skip
        log.warning("webhook_endpoint_disabled", tenant_id=tenant, endpoint_id=job.endpoint_id,
                    failing_since=since.isoformat())  # fmt: skip

    def _drain_results(self) -> None:
        """Write every finished attempt in one transaction (one commit, not one per attempt)."""
        results: list[Result] = []
        while True:
            try:
                results.append(self.results.get_nowait())
            except queue.Empty:
                break
        if not results:
            return
        outcomes: list[str | None] = []
        try:
            conn = self._db()
            with conn.transaction():
                for r in results:
                    outcomes.append(self._record_one(conn, r))
        finally:
            # Written or not: a result not written leaves its row pending, so it is sent again.
            for r in results:
                self.inflight.discard(r.job.delivery_id)
                worker = self.workers.get(r.job.endpoint_id)
                if worker is not None:
                    worker.pending -= 1
                    worker.idle_since = time.monotonic()
        for r, status in zip(results, outcomes, strict=True):
            job = r.job
            log.info("webhook_attempt", tenant_id=job.tenant_id, endpoint_id=job.endpoint_id,
                     alert_id=job.alert_id, attempt=job.attempts + 1, status_code=r.status,
                     latency_ms=r.latency_ms, outcome=status, error=r.error)  # fmt: skip

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        """Consume and deliver until `stop` is set; pending deliveries stay for the next run."""
        config = client_config(
            self.settings,
            **{"group.id": self.settings.webhook_group, "enable.auto.commit": False,
               "auto.offset.reset": "earliest", "isolation.level": "read_committed",
               "partition.assignment.strategy": "cooperative-sticky",
               "session.timeout.ms": self.settings.session_timeout_ms},
        )  # fmt: skip
        consumer = Consumer(config)
        self._consumer = consumer
        consumer.subscribe(
            [self.settings.topic_alerts], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip
        log.info("deliverer_started", topic=self.settings.topic_alerts,
                 group=self.settings.webhook_group)  # fmt: skip
        dispatched_at = 0.0
        try:
            while not self.stop.is_set():
                # Wait for the first message only; then take what else has arrived, without
                # waiting (a batch consume waits out its timeout unless the batch fills).
                first = consumer.poll(DISPATCH_INTERVAL_S / 2)
                msgs = [] if first is None else [first, *consumer.consume(499, timeout=0)]
                good = [m for m in msgs if not self._kafka_error(m)]
                try:
                    if good:
                        self._fan_out(good)
                    self._drain_results()
                    if good or time.monotonic() - dispatched_at >= DISPATCH_INTERVAL_S:
                        self._dispatch()
                        dispatched_at = time.monotonic()
                except psycopg.OperationalError as exc:
                    self._database_down(exc)
        finally:
            consumer.close()
            if self._conn is not None:
                self._conn.close()
            log.info("deliverer_stopped")

    def _database_down(self, exc: psycopg.OperationalError) -> None:
        """Wait for Postgres, then read again from the stored positions (a batch that was not
        committed must be fanned out again); unrecorded results are re-sent later."""
        log.warning("database_unavailable", error=" ".join(str(exc).split()))
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        while not self.stop.wait(1.0):
            try:
                self._reseek(list(self.positions))
                return
            except psycopg.OperationalError:
                continue

    @staticmethod
    def _kafka_error(msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("webhook_kafka_error", error=str(err))
        return True
