"""The domain's drift alert and its one severity table."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

import orjson

from budget_ledger.ledger.alerts import ALERT_SEVERITY, Severity, drift_alert
from budget_ledger.schemas.codec import alert_from_wire, alert_to_wire, make_alert_id
from budget_ledger.schemas.events import ALERT_TYPES

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_every_alert_type_has_one_severity_from_the_wire_vocabulary() -> None:
    assert set(ALERT_SEVERITY) == set(ALERT_TYPES)
    assert set(ALERT_SEVERITY.values()) <= set(typing.get_args(Severity))


def test_drift_alert_names_fields_and_the_broken_link() -> None:
    fields = frozenset({"reservations.status", "budget_balances.funded"})
    alert = drift_alert("t", "b", 42, 1250, fields, 3, (7, "hash mismatch"), NOW)
    assert alert.type == "drift_detected"
    assert alert.severity == ALERT_SEVERITY["drift_detected"] == "critical"
    assert (alert.sequence, alert.utilization_bp, alert.threshold_bp) == (42, 1250, 0)
    wire = alert_to_wire(alert, 0)
    assert wire["alert_id"] == make_alert_id("t", "b", "drift_detected", 42)
    assert (wire["utilization_pct"], wire["threshold"]) == ("12.50", "0.00")
    assert wire["recorded_at"] == "2026-11-26T12:00:00.000000Z"
    assert alert.data == {
        "fields": ["budget_balances.funded", "reservations.status"],
        "drift_count": 3,
        "broken_link": {"sequence": 7, "problem": "hash mismatch"},
    }
    # It is a valid wire alert.
    assert alert_from_wire(orjson.loads(orjson.dumps(wire)), 0) == alert


def test_drift_alert_without_broken_link_and_its_stable_id() -> None:
    a = drift_alert("t", "b", 5, 0, frozenset(), 0, None, NOW)
    b = drift_alert("t", "b", 5, 0, frozenset(), 0, None, datetime.now(UTC))
    assert a.data == {"fields": [], "drift_count": 0}
    assert alert_to_wire(a, 0)["alert_id"] == alert_to_wire(b, 0)["alert_id"]
