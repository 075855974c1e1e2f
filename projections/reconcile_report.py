"""A reconcile run's findings (`ReconcileReport`) and its two renderings: text lines and JSON."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from budget_ledger.projections.drift import Drift
from budget_ledger.projections.relay_lag import Unpublished
from budget_ledger.projections.replay import BrokenLink


@dataclass(slots=True)
class ReconcileReport:
    """Everything a reconcile run found; `clean` decides the exit code."""

    events: int = 0
    budgets: int = 0
    seconds: float = 0.0
    drifts: list[Drift] = field(default_factory=list)
    broken: list[BrokenLink] = field(default_factory=list)
    drifting: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    unpublished: list[Unpublished] = field(default_factory=list)
    kafka: Any = None  # projections.kafka_check.KafkaReport when --source kafka
    alerts_published: int = 0
    # "full" replays every budget; "incremental" skips those unchanged since their checkpoint.
    mode: str = "full"
    skipped_budgets: int = 0
    skipped_events: int = 0
    checkpoints_advanced: int = 0

    @property
    def clean(self) -> bool:
        """No drift, no broken link, nothing overdue on the relay, nothing off in Kafka."""
        kafka_clean = self.kafka is None or self.kafka.clean
        return (
            not self.drifts
            and not self.broken
            and kafka_clean
            and not any(u.overdue for u in self.unpublished)
        )


def iter_lines(report: ReconcileReport) -> Iterator[str]:
    """The human summary, line by line."""
    rate = report.events / report.seconds if report.seconds else 0.0
    yield (
        f"replayed {report.events:,} events of {report.budgets:,} budgets in "
        f"{report.seconds:.2f} s ({rate:,.0f} events/s), {report.mode} run"
    )
    if report.mode == "incremental":
        yield (
            f"skipped {report.skipped_events:,} events verified by earlier runs, "
            f"{report.skipped_budgets:,} budgets unchanged since their checkpoint "
            "(reconcile --full verifies them)"
        )
    if report.checkpoints_advanced:
        yield f"checkpoints set for {report.checkpoints_advanced:,} budgets that verified clean"
    for b in report.broken:
        yield f"BROKEN LINK {b.tenant_id}:{b.budget_id} sequence {b.sequence}: {b.problem}"
    for d in report.drifts:
        diff = "" if d.difference is None else f" (difference {d.difference:+d})"
        yield (
            f"DRIFT {d.tenant_id}:{d.budget_id} {d.table}[{d.key}].{d.field}: "
            f"expected {d.expected!r}, actual {d.actual!r}{diff}"
        )
    for u in report.unpublished:
        label = "UNPUBLISHED (overdue)" if u.overdue else "note: unpublished"
        yield (
            f"{label} partition {u.partition}: {u.pending} event(s) after relay offset "
            f"{u.relay_offset} (ledger at {u.ledger_max_offset}, oldest {u.oldest})"
        )
    if report.kafka is not None:
        yield from report.kafka.lines()
    if report.alerts_published:
        yield f"published {report.alerts_published} drift_detected alert(s) via the outbox"
    yield "clean" if report.clean else "DRIFT DETECTED"


def to_json(report: ReconcileReport) -> dict[str, Any]:
    """The report as JSON-ready data (money stays integer minor units)."""
    return {
        "clean": report.clean,
        "mode": report.mode,
        "events": report.events,
        "budgets": report.budgets,
        "skipped_events": report.skipped_events,
        "skipped_budgets": report.skipped_budgets,
        "checkpoints_advanced": report.checkpoints_advanced,
        "seconds": round(report.seconds, 3),
        "broken_links": [
            {
                "tenant_id": b.tenant_id,
                "budget_id": b.budget_id,
                "sequence": b.sequence,
                "problem": b.problem,
            }
            for b in report.broken
        ],
        "drifts": [
            {
                "tenant_id": d.tenant_id,
                "budget_id": d.budget_id,
                "table": d.table,
                "key": d.key,
                "field": d.field,
                "expected": d.expected,
                "actual": d.actual,
                "difference": d.difference,
            }
            for d in report.drifts
        ],
        "unpublished": [
            {
                "partition": u.partition,
                "relay_offset": u.relay_offset,
                "ledger_max_offset": u.ledger_max_offset,
                "pending": u.pending,
                "oldest": u.oldest.isoformat() if u.oldest else None,
                "overdue": u.overdue,
            }
            for u in report.unpublished
        ],
        "kafka": None if report.kafka is None else report.kafka.to_json(),
        "alerts_published": report.alerts_published,
    }
