"""`reconcile --source kafka`: replay `budget.events` from the start and compare it with the ledger.

Reported per budget: events missing from the topic (and already past the relay's cursor, so they
should be there), extra events (in the topic, not in the ledger), reordered events (a lower
sequence after a higher one), and differing events (same sequence, different hash). Re-published
duplicates (header `redelivered`) and relay re-sends of an identical event are not findings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, TopicPartition

from ledger.settings import Settings
from projections.store import queries

BudgetKey = tuple[str, str]


@dataclass(slots=True)
class KafkaReport:
    """Differences between the events topic and the ledger."""

    messages: int = 0
    missing: list[tuple[str, str, int]] = field(default_factory=list)
    extra: list[tuple[str, str, int]] = field(default_factory=list)
    reordered: list[tuple[str, str, int]] = field(default_factory=list)
    differing: list[tuple[str, str, int]] = field(default_factory=list)
    unpublished: int = 0  # ledger events after the relay cursor: not expected in the topic yet

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
        }


def read_topic(
    settings: Settings, tenant: str | None, budget: str | None, timeout: float = 30.0
) -> tuple[int, dict[BudgetKey, list[tuple[int, str]]]]:
    """Every event on the topic up to its current end: {budget: [(sequence, hash), ...]} in
    topic order (one budget lives on one partition, so that is its publication order)."""
    topic = settings.topic_events
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reconcile-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    seen: dict[BudgetKey, list[tuple[int, str]]] = {}
    count = 0
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic}: {meta.error}")
        ends: dict[int, int] = {}
        assignment = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
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
    return count, seen


def compare(
    conn: psycopg.Connection,
    settings: Settings,
    tenant: str | None = None,
    budget: str | None = None,
) -> KafkaReport:
    """Compare the events topic with the ledger (streamed from Postgres, budget by budget)."""
    count, topic = read_topic(settings, tenant, budget)
    report = KafkaReport(messages=count)
    cursors: dict[tuple[str, int], int] = {
        (t, p): o for t, p, o in conn.execute(queries()["relay_cursors"]).fetchall()
    }
    ledger: dict[int, tuple[str, bool]] = {}
    key: BudgetKey | None = None

    def finish(k: BudgetKey) -> None:
        _compare_budget(k, ledger, topic.pop(k, []), report)

    with conn.transaction(), conn.cursor(name="kafka_check") as cur:
        cur.itersize = 20_000
        cur.execute(queries()["ledger_hashes"], {"tenant": tenant, "budget": budget})
        for t, b, seq, h, ledger_topic, partition, offset in cur:
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
    for (t, b), items in topic.items():  # budgets the ledger does not know at all
        report.extra.extend((t, b, seq) for seq, _ in items)
    return report


def _compare_budget(
    key: BudgetKey,
    ledger: dict[int, tuple[str, bool]],
    items: list[tuple[int, str]],
    report: KafkaReport,
) -> None:
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
    for seq, (_h, published) in sorted(ledger.items()):
        if published and seq not in got:
            report.missing.append((t, b, seq))
