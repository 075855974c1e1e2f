"""Alerts: which state transitions raise one, and the severity of every alert type.

Pure like the rules: an `Alert` holds money in minor units and percentages in basis points; its
id and wire form are made by the codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal

from budget_ledger.ledger.events import Alert, LedgerEvent
from budget_ledger.ledger.evolve import FUNDS_REASONS
from budget_ledger.ledger.state import BudgetState, metric_value, utilization_bp

Severity = Literal["warning", "critical"]

#: The severity of every alert type: the one table (the reconciler's drift alert included).
ALERT_SEVERITY: Final[Mapping[str, Severity]] = MappingProxyType(
    {
        "soft_cap_exceeded": "warning",
        "hard_cap_approaching": "critical",
        "hard_cap_reached": "critical",
        "drift_detected": "critical",
        "balance_monitor": "warning",
    }
)
#: Keys of an alert's ``data`` that hold money (minor units here, decimal text on the wire).
ALERT_MONEY_KEYS: Final = frozenset({"limit", "committed", "available", "threshold_amount"})


def _alert(
    after: BudgetState, event: LedgerEvent, atype: str, threshold_bp: int, data: dict[str, Any]
) -> Alert:
    return Alert(
        type=atype,
        severity=ALERT_SEVERITY[atype],
        tenant_id=after.tenant_id,
        budget_id=after.budget_id,
        utilization_bp=event.utilization_bp,
        threshold_bp=threshold_bp,
        sequence=event.sequence,
        recorded_at=event.recorded_at,
        data=data,
    )


def alerts_for(before: BudgetState, after: BudgetState, event: LedgerEvent) -> tuple[Alert, ...]:
    """Alerts triggered by the transition ``before`` -> ``after`` caused by ``event``."""
    cfg = after.config
    if cfg is None:
        return ()
    if after.monitors:  # the common budget has none: one truth test
        fired = _monitor_alerts(before, after, event)
        if fired:
            return _threshold_alerts(before, after, event) + fired
    return _threshold_alerts(before, after, event)


def _monitor_alerts(
    before: BudgetState, after: BudgetState, event: LedgerEvent
) -> tuple[Alert, ...]:
    """One ``balance_monitor`` alert per monitor whose condition started to hold with ``event``
    (armed -> fired), or that was set with a new condition that already holds; sorted by id."""
    out: list[Alert] = []
    old = before.monitors
    for mid in sorted(after.monitors.keys()):
        m = after.monitors[mid]
        if m.armed:
            continue
        prev = old.get(mid)
        if (
            prev is not None
            and not prev.armed
            and (prev.metric, prev.operator, prev.threshold)
            == (
                m.metric,
                m.operator,
                m.threshold,
            )
        ):
            continue  # still holding since an earlier event: fired then
        value = metric_value(
            m.metric, after.funded_in_period, after.reserved_total, after.charged_in_period,
            after.limit,
        )  # fmt: skip
        data = {
            "monitor_id": mid,
            "metric": m.metric,
            "operator": m.operator,
            "threshold": m.threshold,
            "value": value,
            "currency": after.currency,
            "limit": after.limit,
            "committed": after.committed,
            "available": after.available,
        }
        bp = m.threshold if m.metric == "utilization_pct" else 0
        out.append(_alert(after, event, "balance_monitor", bp, data))
    return tuple(out)


def _threshold_alerts(
    before: BudgetState, after: BudgetState, event: LedgerEvent
) -> tuple[Alert, ...]:
    """The fixed soft/hard threshold and hard-cap alerts of the transition."""
    cfg = after.config
    assert cfg is not None
    rearmed = event.type == "period_closed"  # a new period: every crossing counts again
    fire_soft = after.above_soft and (rearmed or not before.above_soft)
    fire_hard = after.above_hard and (rearmed or not before.above_hard)
    fire_cap = (
        event.type == "reservation_rejected"
        and event.reason in FUNDS_REASONS
        and not before.cap_reached_alerted
    )
    if not (fire_soft or fire_hard or fire_cap):
        return ()
    limit = after.limit
    base = {
        "currency": after.currency,
        "limit": limit,
        "committed": after.committed,
        "available": after.available,
    }
    out: list[Alert] = []
    if fire_soft:
        if cfg.soft_cap is not None:
            threshold = utilization_bp(cfg.soft_cap, limit)
            amount = cfg.soft_cap
        else:
            threshold = cfg.soft_threshold_pct * 100
            amount = limit * cfg.soft_threshold_pct // 100
        soft = {**base, "threshold_amount": amount}
        out.append(_alert(after, event, "soft_cap_exceeded", threshold, soft))
    if fire_hard:
        hard = {**base, "threshold_amount": limit * cfg.hard_threshold_pct // 100}
        out.append(_alert(after, event, "hard_cap_approaching", cfg.hard_threshold_pct * 100, hard))
    if fire_cap:
        cap = {
            **base,
            "reason": event.reason,
            "ref_id": event.ref_id,
            "requested_amount": event.data.get("requested_amount"),
        }
        out.append(_alert(after, event, "hard_cap_reached", 10000, cap))
    return tuple(out)


def drift_alert(
    tenant_id: str,
    budget_id: str,
    sequence: int,
    utilization: int,
    fields: frozenset[str],
    drift_count: int,
    broken_link: tuple[int, str] | None,
    now: datetime,
) -> Alert:
    """The reconciler's ``drift_detected`` alert for one budget (``utilization`` in basis
    points): ``fields`` are the drifting ``table.field`` names, ``broken_link`` the first bad
    link as (sequence, problem). Its id depends on the ledger position only, so a re-run over the
    same drift repeats it."""
    data: dict[str, Any] = {"fields": sorted(fields), "drift_count": drift_count}
    if broken_link is not None:
        data["broken_link"] = {"sequence": broken_link[0], "problem": broken_link[1]}
    return Alert(
        type="drift_detected",
        severity=ALERT_SEVERITY["drift_detected"],
        tenant_id=tenant_id,
        budget_id=budget_id,
        utilization_bp=utilization,
        threshold_bp=0,
        sequence=sequence,
        recorded_at=now,
        data=data,
    )
