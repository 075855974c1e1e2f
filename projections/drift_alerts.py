"""The reconciler's alerts: one `drift_detected` per drifting budget, written to the outbox and
the alert history.

The alert itself is the domain's (`ledger.budget.drift_alert`); this module groups a run's
findings by budget and writes the alerts' wire form in one transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import psycopg

from budget_ledger.ledger.budget import drift_alert
from budget_ledger.projections.drift import Drift
from budget_ledger.projections.reconcile_report import ReconcileReport
from budget_ledger.projections.store import queries
from budget_ledger.schemas.codec import alert_to_wire


def publish_alerts(conn: psycopg.Connection, report: ReconcileReport, topic: str) -> int:
    """Write one `drift_detected` alert per drifting budget into the outbox and the alert history
    (one transaction)."""
    by_budget: dict[tuple[str, str], list[Drift]] = {}
    for d in report.drifts:
        by_budget.setdefault((d.tenant_id, d.budget_id), []).append(d)
    broken = {(b.tenant_id, b.budget_id): (b.sequence, b.problem) for b in report.broken}
    now = datetime.now(UTC)
    outbox, history = [], []
    for (t, b), (seq, bp) in sorted(report.drifting.items()):
        drifts = by_budget.get((t, b), [])
        fields = frozenset(f"{d.table}.{d.field}" for d in drifts)
        alert = drift_alert(t, b, seq, bp, fields, len(drifts), broken.get((t, b)), now)
        payload = orjson.dumps(alert_to_wire(alert, 0))  # no money: any digits
        outbox.append(
            {
                "topic": topic,
                "key": f"{t}:{b}".encode(),
                "payload": payload,
                "headers": '[["source", "reconciler"]]',
            }
        )
        history.append(
            {
                "tenant": t,
                "budget": b,
                "sequence": seq,
                "type": alert.type,
                "severity": alert.severity,
                "utilization_bp": alert.utilization_bp,
                "threshold_bp": alert.threshold_bp,
                "recorded_at": alert.recorded_at,
                "payload": payload.decode(),
            }
        )
    if outbox:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(queries()["insert_alert"], outbox)
            cur.executemany(queries()["record_alert"], history)
    return len(outbox)
