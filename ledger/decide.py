"""``decide``: the one event (accepted or refused) a command produces against a budget's state.

Refusals are events too (``reservation_rejected``, ``command_rejected``), so every command
leaves exactly one fact in the chain. Pure and integer-only: amounts arrive in minor units, the
clock is the ``now`` the consumer passes, and nothing is rendered or hashed here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from budget_ledger.ledger.amounts import (
    above_max,
    amount_refusal,
    config_invalid,
    config_values,
    range_problem,
)
from budget_ledger.ledger.commands import (
    Adjust,
    Amount,
    Charge,
    ClosePeriod,
    Command,
    ConfigureBudget,
    ExpireReservations,
    Fund,
    OpenBudget,
    Release,
    RemoveMonitor,
    Reserve,
    SetMonitor,
)
from budget_ledger.ledger.events import Detail, LedgerEvent, Money
from budget_ledger.ledger.reasons import Reason
from budget_ledger.ledger.state import (
    MAX_MINOR,
    MAX_MONITORS,
    BudgetConfig,
    BudgetState,
    Reservation,
    ReservationStatus,
    config_data,
    limit_of,
    utilization_bp,
)

#: How far ``as_of``/``period_end`` may lie ahead of the consumer's clock (clock skew between the
#: ledger's schedulers and its consumers); anything later is refused as "in the future".
CLOCK_SKEW: Final = timedelta(minutes=5)

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def decide(state: BudgetState, command: Command, now: datetime) -> LedgerEvent:
    """The one event (accepted or rejected) that ``command`` produces against ``state``."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if command.tenant_id != state.tenant_id or command.budget_id != state.budget_id:
        detail = (
            f"command is for {command.tenant_id}:{command.budget_id}, "
            f"not {state.tenant_id}:{state.budget_id}"
        )
        return _command_rejected(state, command, Reason.TENANT_MISMATCH, now, detail)
    if not state.opened and command.type != "open_budget":
        detail = "budget was never opened"
        return _command_rejected(state, command, Reason.UNKNOWN_BUDGET, now, detail)
    ev = _DECIDERS[command.type](state, command, now)
    # Backstop for every decider: nothing the ledger stores may pass MAX_MINOR (bigint columns).
    # A balance already above it (written before this rule) may still shrink.
    if ev.reason is None and (
        ev.funded > MAX_MINOR
        or ev.reserved + ev.charged > MAX_MINOR
        or (ev.amount is not None and not -MAX_MINOR <= ev.amount <= MAX_MINOR)
    ):
        problem = range_problem(state, ev)
        if problem is not None:
            return _reject(state, command, Reason.AMOUNT_OUT_OF_RANGE, now, problem)
    return ev


# --- building events -------------------------------------------------------------------------


def _event(
    s: BudgetState,
    c: Command,
    etype: str,
    now: datetime,
    *,
    amount: int | None = None,
    ref_id: str | None = None,
    reason: str | None = None,
    data: Mapping[str, Any] = _EMPTY,
    funded: int | None = None,
    reserved: int | None = None,
    charged: int | None = None,
    config: BudgetConfig | None = None,
    currency: str | None = None,
) -> LedgerEvent:
    """The next event of ``s``'s chain with the balances after it (unsealed: no hash yet)."""
    f = s.funded_in_period if funded is None else funded
    r = s.reserved_total if reserved is None else reserved
    ch = s.charged_in_period if charged is None else charged
    limit = limit_of(config or s.config, f)
    committed = r + ch
    return LedgerEvent(
        type=etype,
        tenant_id=s.tenant_id,
        budget_id=s.budget_id,
        sequence=s.sequence + 1,
        command_id=c.command_id,
        command_type=c.type,
        ref_id=ref_id,
        currency=s.currency if currency is None else currency,
        amount=amount,
        reason=reason,
        data=data,
        funded=f,
        reserved=r,
        charged=ch,
        available=limit - committed if limit > committed else 0,
        utilization_bp=utilization_bp(committed, limit),
        recorded_at=now,
        metadata=c.metadata,
        prev_hash=s.last_hash,
    )


def _command_rejected(
    s: BudgetState, c: Command, reason: Reason, now: datetime, detail: str | Detail
) -> LedgerEvent:
    """``c`` refused before its own rule was asked (wrong budget, budget never opened)."""
    ref_id = getattr(c, "ref_id", None)
    return _event(
        s, c, "command_rejected", now, ref_id=ref_id, reason=reason.value, data={"detail": detail}
    )


def _reject(
    s: BudgetState, c: Command, reason: Reason, now: datetime, detail: str | Detail
) -> LedgerEvent:
    """``c`` refused by its rule: ``reservation_rejected`` for a reserve (with what it asked
    for), else ``command_rejected``."""
    if isinstance(c, Reserve):
        data = {
            "detail": detail,
            "requested_amount": c.amount.text,
            "requested_currency": c.currency,
        }
        return _event(
            s, c, "reservation_rejected", now, ref_id=c.ref_id, reason=reason.value, data=data
        )
    return _command_rejected(s, c, reason, now, detail)


# --- one decider per command type ------------------------------------------------------------


def _decide_open(s: BudgetState, c: OpenBudget, now: datetime) -> LedgerEvent:
    if s.opened:
        return _reject(s, c, Reason.BUDGET_EXISTS, now, "budget is already open")
    if c.digits is None:
        return _reject(s, c, Reason.UNKNOWN_CURRENCY, now, f"unknown currency {c.currency}")
    fields = {
        "period": c.period,
        "hard_cap": c.hard_cap,
        "soft_cap": c.soft_cap,
        "soft_threshold_pct": c.soft_threshold_pct,
        "hard_threshold_pct": c.hard_threshold_pct,
        "period_allowance": c.period_allowance,
        "rollover": c.rollover,
        "timezone": c.timezone,
        "reservation_ttl_seconds": c.reservation_ttl_seconds,
    }
    values = config_values(fields, c.digits)
    if isinstance(values, tuple):
        return _reject(s, c, values[0], now, values[1])
    cfg = BudgetConfig(**values)
    problem = config_invalid(cfg)
    if problem:
        return _reject(s, c, Reason.INVALID_CONFIG, now, problem)
    # Opening starts the first period, so the allowance is funded right away.
    funded = cfg.period_allowance or 0
    data = {**config_data(cfg), "minor_units": c.digits, "period_start": now}
    return _event(
        s,
        c,
        "budget_opened",
        now,
        amount=funded,
        data=data,
        funded=funded,
        reserved=0,
        charged=0,
        config=cfg,
        currency=c.currency,
    )


def _decide_configure(s: BudgetState, c: ConfigureBudget, now: datetime) -> LedgerEvent:
    assert s.config is not None  # opened budgets always have one
    values = config_values(c.changes, s.digits)
    if isinstance(values, tuple):
        return _reject(s, c, values[0], now, values[1])
    merged = {**config_data(s.config), **values}
    cfg = BudgetConfig(**merged)
    problem = config_invalid(cfg)
    if problem:
        return _reject(s, c, Reason.INVALID_CONFIG, now, problem)
    merged["changed"] = sorted(c.changes)
    return _event(s, c, "budget_configured", now, data=merged, config=cfg)


def _usable(s: BudgetState, c: Command, amount: Amount, now: datetime) -> int | LedgerEvent:
    """``amount`` in minor units, or the refusal of ``c`` if it is too precise or too large."""
    refusal = amount_refusal("amount", amount, s.digits)
    if refusal is not None:
        return _reject(s, c, refusal[0], now, refusal[1])
    assert amount.minor is not None  # amount_refusal refuses an inexact amount
    return amount.minor


def _money_in(s: BudgetState, c: Fund | Reserve, now: datetime) -> int | LedgerEvent:
    """The amount a fund or reserve brings, or its refusal (other currency, unusable amount)."""
    if c.currency != s.currency:
        detail = f"budget is in {s.currency}, not {c.currency}"
        return _reject(s, c, Reason.CURRENCY_MISMATCH, now, detail)
    return _usable(s, c, c.amount, now)


def _decide_fund(s: BudgetState, c: Fund, now: datetime) -> LedgerEvent:
    amount = _money_in(s, c, now)
    if isinstance(amount, LedgerEvent):
        return amount
    funded = s.funded_in_period + amount
    if funded > MAX_MINOR:
        return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, now, above_max("funded", funded, s.digits))
    return _event(s, c, "budget_funded", now, amount=amount, funded=funded)


def _expiry(s: BudgetState, c: Reserve, now: datetime) -> datetime | None:
    """When the reservation lapses: its own ``expires_at``, else issued (or now) + the TTL."""
    if c.expires_at is not None:
        return c.expires_at
    ttl = s.config.reservation_ttl_seconds if s.config is not None else None
    if ttl is None:
        return None
    return (c.issued_at or now) + timedelta(seconds=ttl)


def _decide_reserve(s: BudgetState, c: Reserve, now: datetime) -> LedgerEvent:
    cfg = s.config
    assert cfg is not None
    amount = _money_in(s, c, now)
    if isinstance(amount, LedgerEvent):
        return amount
    if c.ref_id in s.reservations:
        return _reject(s, c, Reason.DUPLICATE_REF, now, f"ref_id {c.ref_id} already reserved")
    expires = _expiry(s, c, now)
    if expires is not None and expires <= now:
        return _reject(s, c, Reason.EXPIRES_IN_PAST, now, ("expires_at ", expires, " has passed"))
    available = s.limit - s.committed
    if amount > available:
        # Name the binding constraint: when the cap is at or below funding, adding funds won't help.
        reason = (
            Reason.HARD_CAP_EXCEEDED
            if cfg.hard_cap is not None and cfg.hard_cap <= s.funded_in_period
            else Reason.INSUFFICIENT_FUNDS
        )
        return _reject(s, c, reason, now, ("available ", Money(max(available, 0), s.digits)))
    return _event(
        s,
        c,
        "funds_reserved",
        now,
        amount=amount,
        ref_id=c.ref_id,
        data={"expires_at": expires},
        reserved=s.reserved_total + amount,
    )


def _held_reservation(
    s: BudgetState, c: Charge | Release, now: datetime
) -> Reservation | LedgerEvent:
    """The reservation ``c`` names if it is still held, else the refusal of ``c``."""
    res = s.reservations.get(c.ref_id)
    if res is None:
        return _reject(s, c, Reason.RESERVATION_NOT_FOUND, now, f"no reservation {c.ref_id}")
    if res.status != ReservationStatus.RESERVED:
        detail = f"reservation {c.ref_id} is {res.status.value}"
        return _reject(s, c, Reason.RESERVATION_NOT_ACTIVE, now, detail)
    return res


def _decide_charge(s: BudgetState, c: Charge, now: datetime) -> LedgerEvent:
    res = _held_reservation(s, c, now)
    if isinstance(res, LedgerEvent):
        return res
    if c.amount is None:
        amount = res.reserved_amount
    else:
        usable = _usable(s, c, c.amount, now)
        if isinstance(usable, LedgerEvent):
            return usable
        amount = usable
        if amount > res.reserved_amount:
            detail = ("reserved ", Money(res.reserved_amount, s.digits))
            return _reject(s, c, Reason.AMOUNT_EXCEEDS_RESERVATION, now, detail)
    return _event(
        s,
        c,
        "reservation_charged",
        now,
        amount=amount,
        ref_id=c.ref_id,
        data={"released": res.reserved_amount - amount},
        reserved=s.reserved_total - res.reserved_amount,
        charged=s.charged_in_period + amount,
    )


def _decide_release(s: BudgetState, c: Release, now: datetime) -> LedgerEvent:
    res = _held_reservation(s, c, now)
    if isinstance(res, LedgerEvent):
        return res
    return _event(
        s,
        c,
        "reservation_released",
        now,
        amount=res.reserved_amount,
        ref_id=c.ref_id,
        reserved=s.reserved_total - res.reserved_amount,
    )


def _decide_expire(s: BudgetState, c: ExpireReservations, now: datetime) -> LedgerEvent:
    if c.as_of > now + CLOCK_SKEW:
        return _reject(s, c, Reason.AS_OF_IN_FUTURE, now, ("as_of is after ", now))
    # Expiry order, then ref_id: deterministic whatever the map's iteration order.
    due = sorted((exp, ref) for ref, exp in s.expiring.items() if exp <= c.as_of)
    amounts = [(ref, s.reservations[ref].reserved_amount) for _, ref in due]
    total = sum(amount for _, amount in amounts)
    expired = [[ref, amount] for ref, amount in amounts]  # lists: what JSON gives back on replay
    return _event(
        s,
        c,
        "reservations_expired",
        now,
        amount=total,
        data={"as_of": c.as_of, "expired": expired},
        reserved=s.reserved_total - total,
    )


def _decide_close(s: BudgetState, c: ClosePeriod, now: datetime) -> LedgerEvent:
    cfg = s.config
    assert cfg is not None and s.period_start is not None
    if cfg.period == "rolling":
        return _reject(s, c, Reason.PERIOD_NOT_CLOSABLE, now, "rolling budgets never close")
    end = c.period_end
    if end <= s.period_start:
        detail = ("current period started ", s.period_start)
        return _reject(s, c, Reason.PERIOD_ALREADY_CLOSED, now, detail)
    if end > now + CLOCK_SKEW:
        return _reject(
            s, c, Reason.PERIOD_NOT_ENDED, now, ("period_end ", end, " is in the future")
        )
    unspent = max(0, s.funded_in_period - s.charged_in_period)
    rolled_over = unspent if cfg.rollover else 0
    allowance = cfg.period_allowance or 0
    next_funded = allowance + rolled_over
    if next_funded > MAX_MINOR and next_funded > s.funded_in_period:
        # Refused, not capped: money must not silently vanish. An adjust (or a smaller
        # allowance) brings the next period under the maximum; the scheduler's re-send then closes.
        problem = above_max("funded of the next period", next_funded, s.digits)
        return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, now, problem)
    data = {
        "period_start": s.period_start,
        "period_end": end,
        "closed_funded": s.funded_in_period,
        "closed_reserved": s.reserved_total,
        "closed_charged": s.charged_in_period,
        "unspent": unspent,
        "rolled_over": rolled_over,
        "allowance": allowance,
    }
    # Open reservations carry over (reserved is unchanged) and count against the new funding.
    return _event(s, c, "period_closed", now, data=data, funded=next_funded, charged=0)


def _decide_adjust(s: BudgetState, c: Adjust, now: datetime) -> LedgerEvent:
    delta = _usable(s, c, c.amount, now)
    if isinstance(delta, LedgerEvent):
        return delta
    funded = s.funded_in_period + delta
    if delta > 0 and funded > MAX_MINOR:
        return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, now, above_max("funded", funded, s.digits))
    if funded < 0:
        detail = ("funded ", Money(s.funded_in_period, s.digits))
        return _reject(s, c, Reason.NEGATIVE_FUNDS, now, detail)
    data = {"reason": c.reason, "operator": c.operator}
    return _event(s, c, "budget_adjusted", now, amount=delta, data=data, funded=funded)


def _decide_set_monitor(s: BudgetState, c: SetMonitor, now: datetime) -> LedgerEvent:
    data: dict[str, Any] = {"monitor_id": c.monitor_id, "metric": c.metric, "operator": c.operator}
    if c.metric == "utilization_pct":
        # The schema allows at most 2 decimals of a percent: always exact basis points.
        if c.threshold.minor is None:
            detail = f"threshold {c.threshold.text} is too precise"
            return _reject(s, c, Reason.INVALID_AMOUNT, now, detail)
        data["threshold_bp"] = c.threshold.minor
    else:
        threshold = _usable(s, c, c.threshold, now)
        if isinstance(threshold, LedgerEvent):
            return threshold
        data["threshold_amount"] = threshold
    if c.monitor_id not in s.monitors and len(s.monitors) >= MAX_MONITORS:
        detail = f"the budget has {len(s.monitors)} monitors, the most it may have"
        return _reject(s, c, Reason.TOO_MANY_MONITORS, now, detail)
    return _event(s, c, "monitor_set", now, data=data)


def _decide_remove_monitor(s: BudgetState, c: RemoveMonitor, now: datetime) -> LedgerEvent:
    if c.monitor_id not in s.monitors:
        detail = f"no monitor {c.monitor_id}"
        return _reject(s, c, Reason.MONITOR_NOT_FOUND, now, detail)
    return _event(s, c, "monitor_removed", now, data={"monitor_id": c.monitor_id})


_Decider = Callable[[BudgetState, Any, datetime], LedgerEvent]
_DECIDERS: Final[dict[str, _Decider]] = {
    "open_budget": _decide_open,
    "configure_budget": _decide_configure,
    "fund": _decide_fund,
    "reserve": _decide_reserve,
    "charge": _decide_charge,
    "release": _decide_release,
    "expire_reservations": _decide_expire,
    "close_period": _decide_close,
    "adjust": _decide_adjust,
    "set_monitor": _decide_set_monitor,
    "remove_monitor": _decide_remove_monitor,
}
