"""``evolve``: fold one event into a budget's state. Replaying a budget's events through it
rebuilds exactly the state the consumer held when it wrote them.

It raises when an evolver fails (a bug or a corrupt event): live consumption must not commit a
stale state; tolerating a broken event is the reconciler's job, which records it as a broken link.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

import immutables

from budget_ledger.ledger.events import LedgerEvent
from budget_ledger.ledger.reasons import Reason
from budget_ledger.ledger.state import (
    BudgetConfig,
    BudgetState,
    Monitor,
    Reservation,
    ReservationStatus,
    above_hard,
    above_soft,
    evaluate_monitors,
    limit_of,
)

#: Refusals that mean "the money ran out": the first one raises ``hard_cap_reached``.
FUNDS_REASONS: Final = frozenset({Reason.INSUFFICIENT_FUNDS, Reason.HARD_CAP_EXCEEDED})


def evolve(state: BudgetState, event: LedgerEvent) -> BudgetState:
    """Fold one event into the state (raises if the event cannot be folded; see above)."""
    if event.type != "budget_opened" and not state.opened:
        return _advance(state, event)
    return _EVOLVERS.get(event.type, _advance)(state, event)


def config_from_data(d: Mapping[str, Any]) -> BudgetConfig:
    """The `BudgetConfig` an opened/configured event records."""
    return BudgetConfig(
        period=d["period"],
        hard_cap=d["hard_cap"],
        soft_cap=d["soft_cap"],
        soft_threshold_pct=d["soft_threshold_pct"],
        hard_threshold_pct=d["hard_threshold_pct"],
        period_allowance=d["period_allowance"],
        rollover=d["rollover"],
        timezone=d["timezone"],
        reservation_ttl_seconds=d["reservation_ttl_seconds"],
    )


def _advance(
    s: BudgetState, e: LedgerEvent, cap_reached_alerted: bool | None = None
) -> BudgetState:
    """Only the chain moves: sequence and hash (rejections, events of an unopened budget)."""
    # Every field by name, like _accepted (every refusal passes here; replace() costs ~2 us
    # more); tests/unit/test_state_fields.py fails if a new field is missed.
    return BudgetState(
        tenant_id=s.tenant_id,
        budget_id=s.budget_id,
        opened=s.opened,
        currency=s.currency,
        config=s.config,
        funded_in_period=s.funded_in_period,
        reserved_total=s.reserved_total,
        charged_in_period=s.charged_in_period,
        sequence=e.sequence,
        last_hash=e.hash,
        period_start=s.period_start,
        reservations=s.reservations,
        cap_reached_alerted=(
            s.cap_reached_alerted if cap_reached_alerted is None else cap_reached_alerted
        ),
        digits=s.digits,
        expiring=s.expiring,
        above_soft=s.above_soft,
        above_hard=s.above_hard,
        monitors=s.monitors,
    )


def _accepted(
    s: BudgetState,
    e: LedgerEvent,
    *,
    funded: int | None = None,
    reserved: int | None = None,
    charged: int | None = None,
    config: BudgetConfig | None = None,
    reservations: immutables.Map[str, Reservation] | None = None,
    expiring: immutables.Map[str, datetime] | None = None,
    period_start: datetime | None = None,
    new_period: bool = False,
    monitors: immutables.Map[str, Monitor] | None = None,
) -> BudgetState:
    """State after an accepted event; recomputes the alert arming from the new balances."""
    f = s.funded_in_period if funded is None else funded
    r = s.reserved_total if reserved is None else reserved
    ch = s.charged_in_period if charged is None else charged
    cfg = s.config if config is None else config
    limit = limit_of(cfg, f)
    committed = r + ch
    # hard_cap_reached re-arms when the ceiling moves up (funding, cap raised) or a period starts.
    cap_alerted = s.cap_reached_alerted and not new_period and limit <= s.limit
    mons = s.monitors if monitors is None else monitors
    return BudgetState(
        tenant_id=s.tenant_id,
        budget_id=s.budget_id,
        opened=s.opened,
        currency=s.currency,
        config=cfg,
        funded_in_period=f,
        reserved_total=r,
        charged_in_period=ch,
        sequence=e.sequence,
        last_hash=e.hash,
        period_start=s.period_start if period_start is None else period_start,
        reservations=s.reservations if reservations is None else reservations,
        cap_reached_alerted=cap_alerted,
        digits=s.digits,
        expiring=s.expiring if expiring is None else expiring,
        above_soft=above_soft(cfg, limit, committed),
        above_hard=above_hard(cfg, limit, committed),
        # Re-evaluated after every accepted event, like the flags above; without monitors, one
        # truth test and no call: the common budget's per-event cost.
        monitors=evaluate_monitors(mons, f, r, ch, limit) if mons else mons,
    )


def _evolve_opened(s: BudgetState, e: LedgerEvent) -> BudgetState:
    d = e.data
    opened = replace(
        s,
        opened=True,
        currency=e.currency,
        config=config_from_data(d),
        funded_in_period=e.amount or 0,
        reserved_total=0,
        charged_in_period=0,
        period_start=d["period_start"],
        cap_reached_alerted=False,
        digits=int(d["minor_units"]),
    )
    return _accepted(opened, e)


def _evolve_configured(s: BudgetState, e: LedgerEvent) -> BudgetState:
    return _accepted(s, e, config=config_from_data(e.data))


def _evolve_funded(s: BudgetState, e: LedgerEvent) -> BudgetState:
    return _accepted(s, e, funded=s.funded_in_period + (e.amount or 0))


def _evolve_reserved(s: BudgetState, e: LedgerEvent) -> BudgetState:
    ref = e.ref_id
    amount = e.amount
    if ref is None or amount is None:
        return _advance(s, e)
    expires = e.data.get("expires_at")
    res = Reservation(
        ref, amount, ReservationStatus.RESERVED, 0, expires, e.command_id, e.sequence, e.sequence
    )
    return _accepted(
        s,
        e,
        reserved=s.reserved_total + amount,
        reservations=s.reservations.set(ref, res),
        expiring=s.expiring if expires is None else s.expiring.set(ref, expires),
    )


def _finish(res: Reservation, status: ReservationStatus, charged: int, seq: int) -> Reservation:
    # Positional: replace() costs ~1 us more, once per charge, release and expiry.
    return Reservation(
        res.ref_id, res.reserved_amount, status, charged, res.expires_at, res.command_id,
        res.created_seq, seq,
    )  # fmt: skip


def _without(expiring: immutables.Map[str, datetime], ref: str) -> immutables.Map[str, datetime]:
    return expiring.delete(ref) if ref in expiring else expiring


def _evolve_charged(s: BudgetState, e: LedgerEvent) -> BudgetState:
    res = s.reservations[e.ref_id]  # type: ignore[index]
    amount = e.amount or 0
    charged = _finish(res, ReservationStatus.CHARGED, amount, e.sequence)
    return _accepted(
        s,
        e,
        reserved=s.reserved_total - res.reserved_amount,
        charged=s.charged_in_period + amount,
        reservations=s.reservations.set(res.ref_id, charged),
        expiring=_without(s.expiring, res.ref_id),
    )


def _evolve_released(s: BudgetState, e: LedgerEvent) -> BudgetState:
    res = s.reservations[e.ref_id]  # type: ignore[index]
    released = _finish(res, ReservationStatus.RELEASED, 0, e.sequence)
    return _accepted(
        s,
        e,
        reserved=s.reserved_total - res.reserved_amount,
        reservations=s.reservations.set(res.ref_id, released),
        expiring=_without(s.expiring, res.ref_id),
    )


def _evolve_expired(s: BudgetState, e: LedgerEvent) -> BudgetState:
    reservations = s.reservations.mutate()
    expiring = s.expiring.mutate()
    reserved = s.reserved_total
    for ref, _amount in e.data.get("expired", ()):
        res = reservations[ref]
        reservations[ref] = _finish(res, ReservationStatus.EXPIRED, 0, e.sequence)
        reserved -= res.reserved_amount
        if ref in expiring:
            del expiring[ref]
    return _accepted(
        s,
        e,
        reserved=reserved,
        reservations=reservations.finish(),
        expiring=expiring.finish(),
    )


def _evolve_period_closed(s: BudgetState, e: LedgerEvent) -> BudgetState:
    d = e.data
    return _accepted(
        s,
        e,
        funded=int(d["allowance"]) + int(d["rolled_over"]),
        charged=0,
        period_start=d["period_end"],
        new_period=True,
    )


def _evolve_reservation_rejected(s: BudgetState, e: LedgerEvent) -> BudgetState:
    if e.reason in FUNDS_REASONS:
        return _advance(s, e, cap_reached_alerted=True)
    return _advance(s, e)


def _evolve_monitor_set(s: BudgetState, e: LedgerEvent) -> BudgetState:
    d = e.data
    mid, metric = d.get("monitor_id"), d.get("metric")
    threshold = d.get("threshold_bp" if metric == "utilization_pct" else "threshold_amount")
    if not isinstance(mid, str) or not isinstance(threshold, int):
        return _advance(s, e)  # not a monitor this version can evaluate: the chain still moves
    # Set disarmed-unknown (armed=True); _accepted evaluates it against the balances at once, so
    # a monitor set while its condition already holds fires on this very event.
    monitor = Monitor(str(metric), str(d.get("operator")), threshold, True)
    return _accepted(s, e, monitors=s.monitors.set(mid, monitor))


def _evolve_monitor_removed(s: BudgetState, e: LedgerEvent) -> BudgetState:
    mid = e.data.get("monitor_id")
    if not isinstance(mid, str) or mid not in s.monitors:
        return _advance(s, e)
    return _accepted(s, e, monitors=s.monitors.delete(mid))


_EVOLVERS: Final[dict[str, Callable[[BudgetState, LedgerEvent], BudgetState]]] = {
    "budget_opened": _evolve_opened,
    "budget_configured": _evolve_configured,
    "budget_funded": _evolve_funded,
    "funds_reserved": _evolve_reserved,
    "reservation_rejected": _evolve_reservation_rejected,
    "reservation_charged": _evolve_charged,
    "reservation_released": _evolve_released,
    "reservations_expired": _evolve_expired,
    "period_closed": _evolve_period_closed,
    "budget_adjusted": _evolve_funded,  # an adjustment moves funding like a top-up
    "command_rejected": _advance,
    "monitor_set": _evolve_monitor_set,
    "monitor_removed": _evolve_monitor_removed,
}
