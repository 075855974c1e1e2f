"""`reconcile --source kafka`: replay `budget.events` from the start and compare it with the ledger.

Reported per budget: events missing from the topic (and already past the relay's cursor, so they
should be there), extra events (in the topic, not in the ledger), reordered events (a lower
sequence after a higher one), and differing events (same sequence, different hash). Re-published
duplicates (header `redelivered`) and relay re-sends of an identical event are not findings.

Retention: Kafka deletes old segments (by `retention.ms` or `retention.bytes`) and moves the
partition's log start offset; both kinds of retention show up there. On a partition whose log
start offset is above 0, an event absent from the topic is counted "past retention", not missing,
when it was published before the first retained event of its budget: its sequence is lower than
that event's, or (budget with nothing retained) it was recorded before the partition's first
retained message was produced, plus a one-second allowance for clock skew. A gap right before
a budget's first retained event cannot be told apart from retention and is not reported.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from budget_ledger.ledger.db import stream_rows
from budget_ledger.ledger.partitioning import partition_for
from budget_ledger.ledger.settings import Settings, kafka_security_properties
from budget_ledger.projections.store import queries

BudgetKey = tuple[str, str]
#: Allowance for clock skew between the consumer that records events and the relay's producer.
RETENTION_MARGIN = timedelta(seconds=1)


@dataclass(slots=True)
class KafkaReport:
    """Differences between the events topic and the ledger."""

    messages: int = 0
    missing: list[tuple[str, str, int]] = field(default_factory=list)
    extra: list[tuple[str, str, int]] = field(default_factory=list)
    reordered: list[tuple[str, str, int]] = field(default_factory=list)
    differing: list[tuple[str, str, int]] = field(default_factory=list)
    unpublished: int = 0  # ledger events after the relay cursor: not expected in the topic yet
    past_retention: int = 0  # published, but before the topic's log start offset: deleted

    @property
    def clean(self) -> bool:
        """Nothing missing, extra, reordered or differing."""
        return not (self.missing or self.extra or self.reordered or self.differing)

    def drifting_budgets(self) -> set[BudgetKey]:
        """Budgets with any finding."""
        return {(t, b) for t, b, _ in self.missing + self.extra + self.reordered + self.differing}

    def lines(self) -> Iterator[str]:
        """Human summary lines."""
        yield f"kafka: read {self.messages:,} messages from the events topic"
        for name in ("missing", "extra", "reordered", "differing"):
            for t, b, seq in getattr(self, name):
                yield f"KAFKA {name.upper()} {t}:{b} sequence {seq}"
        if self.unpublished:
            yield f"kafka: {self.unpublished} ledger event(s) not yet relayed (not counted missing)"
        if self.past_retention:
            yield (
                f"kafka: {self.past_retention:,} event(s) past the topic's retention "
                "(before its log start offset; not counted missing)"
            )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""

        def fmt(items: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
            return [{"tenant_id": t, "budget_id": b, "sequence": s} for t, b, s in items]

        return {
            "clean": self.clean,
            "messages": self.messages,
            "missing": fmt(self.missing),
            "extra": fmt(self.extra),
            "reordered": fmt(self.reordered),
            "differing": fmt(self.differing),
            "unpublished": self.unpublished,
            "past_retention": self.past_retention,
        }


@dataclass(slots=True)
class TopicScan:
    """What `read_topic` found: events per budget, and where each partition's log now starts."""

    messages: int
    seen: dict[BudgetKey, list[tuple[int, str]]]
    partitions: int
    log_start: dict[int, int]  # partition -> low watermark (0: nothing deleted yet)
    first_retained_ms: dict[int, int | None]  # truncated partition -> its first message's time

    def cutoff(self, partition: int) -> datetime:
        """Events of a budget with nothing retained on `partition` recorded before this instant
        may have been deleted."""
        ms = self.first_retained_ms.get(partition)
        if ms is None:  # every message of the partition was deleted (or carries no time)
            return datetime.max.replace(tzinfo=UTC)
        return datetime.fromtimestamp(ms / 1000, UTC) + RETENTION_MARGIN


def read_topic(
    settings: Settings, tenant: str | None, budget: str | None, timeout: float = 30.0
) -> TopicScan:
    """Every event on the topic up to its current end: {budget: [(sequence, hash), ...]} in
    topic order (one budget lives on one partition, so that is its publication order)."""
    topic = settings.topic_events
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            **kafka_security_properties(settings),
            "group.id": f"reconcile-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    seen: dict[BudgetKey, list[tuple[int, str]]] = {}
    count = 0
    log_start: dict[int, int] = {}
    first_ms: dict[int, int | None] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic}: {meta.error}")
        ends: dict[int, int] = {}
        assignment = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            log_start[p] = low
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        while ends:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is not None:
                    continue
                p, off = msg.partition() or 0, msg.offset() or 0
                if off + 1 >= ends.get(p, 0):
                    ends.pop(p, None)
                if log_start.get(p) and p not in first_ms:
                    kind, ms = msg.timestamp()
                    first_ms[p] = None if kind == TIMESTAMP_NOT_AVAILABLE else ms
                headers = dict(msg.headers() or [])
                if headers.get("redelivered") == b"true":
                    continue
                event = orjson.loads(msg.value() or b"{}")
                key = (event["tenant_id"], event["budget_id"])
                if (tenant and key[0] != tenant) or (budget and key[1] != budget):
                    continue
                count += 1
                seen.setdefault(key, []).append((int(event["sequence"]), event["hash"]))
    finally:
        consumer.close()
    return TopicScan(count, seen, len(meta.partitions), log_start, first_ms)


def compare(
    conn: psycopg.Connection,
    settings: Settings,
    tenant: str | None = None,
    budget: str | None = None,
) -> KafkaReport:
    """Compare the events topic with the ledger (streamed from Postgres, budget by budget)."""
    scan = read_topic(settings, tenant, budget)
    topic = scan.seen
    report = KafkaReport(messages=scan.messages)
    undecided: dict[BudgetKey, list[int]] = {}  # absent events of budgets with nothing retained
    cursors: dict[tuple[str, int], int] = {
        (t, p): o for t, p, o in conn.execute(queries()["relay_cursors"]).fetchall()
    }
    ledger: dict[int, tuple[str, bool]] = {}
    key: BudgetKey | None = None

    def finish(k: BudgetKey) -> None:
        items = topic.pop(k, [])
        absent = _compare_budget(k, ledger, items, report)
        if not absent:
            return
        partition = partition_for(f"{k[0]}:{k[1]}".encode(), scan.partitions)
        if not scan.log_start.get(partition):
            report.missing.extend((k[0], k[1], seq) for seq in absent)
        elif items:  # published after the budget's first retained event: must be there
            first = items[0][0]
            report.past_retention += sum(1 for seq in absent if seq < first)
            report.missing.extend((k[0], k[1], seq) for seq in absent if seq > first)
        else:
            undecided[k] = absent

    with conn.transaction():
        # An ORDER BY: fetched, so that its plan stays a cursor's (an index walk, no sort).
        params = {"tenant": tenant, "budget": budget}
        hashes = stream_rows(conn, queries()["ledger_hashes"], params, "kafka_check", stream=False)
        for t, b, seq, h, ledger_topic, partition, offset in hashes:
            if key != (t, b):
                if key is not None:
                    finish(key)
                key, ledger = (t, b), {}
            published = offset <= cursors.get((ledger_topic, partition), -1)
            ledger[seq] = (h, published)
            if not published:
                report.unpublished += 1
    if key is not None:
        finish(key)
    if undecided:
        _split_by_time(conn, scan, undecided, report)
    for (t, b), items in topic.items():  # budgets the ledger does not know at all
        report.extra.extend((t, b, seq) for seq, _ in items)
    return report


def _split_by_time(
    conn: psycopg.Connection,
    scan: TopicScan,
    undecided: dict[BudgetKey, list[int]],
    report: KafkaReport,
) -> None:
    # Budgets with nothing retained: what was recorded before the partition's first retained
    # message may have been deleted; what was recorded after it should still be there.
    keys = list(undecided)
    cutoffs = [scan.cutoff(partition_for(f"{t}:{b}".encode(), scan.partitions)) for t, b in keys]
    rows = conn.execute(
        queries()["last_sequence_before"],
        {"tenants": [t for t, _ in keys], "budgets": [b for _, b in keys], "cutoffs": cutoffs},
    ).fetchall()
    last = {(t, b): int(seq) for t, b, seq in rows}
    for k in keys:
        before = last.get(k, 0)
        report.past_retention += sum(1 for seq in undecided[k] if seq <= before)
        report.missing.extend((k[0], k[1], seq) for seq in undecided[k] if seq > before)


def _compare_budget(
    key: BudgetKey,
    ledger: dict[int, tuple[str, bool]],
    items: list[tuple[int, str]],
    report: KafkaReport,
) -> list[int]:
    """Record extra, differing and reordered events; return the published sequences absent
    from the topic (missing, unless past retention)."""
    t, b = key
    highest = 0
    got: set[int] = set()
    for seq, h in items:
        if seq in got:
            continue  # a relay re-send after a crash: at-least-once, not a finding
        got.add(seq)
        if seq not in ledger:
            report.extra.append((t, b, seq))
            continue
        if ledger[seq][0] != h:
            report.differing.append((t, b, seq))
        if seq < highest:
            report.reordered.append((t, b, seq))
        highest = max(highest, seq)
    return [seq for seq, (_h, published) in sorted(ledger.items()) if published and seq not in got]
