"""The budget rules: ``decide`` (command -> exactly one event), ``evolve`` (event -> state) and
``alerts_for`` (state transition -> alerts). Pure: no I/O, no clocks (``now`` is passed in).

Reading order: state types, balance arithmetic, ``decide`` and one decider per command type,
``evolve`` and one evolver per event type, alerts, ``apply``. See docs/domain.md for the prose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

import immutables

from ledger.hashing import GENESIS_HASH, chain_hash
from schemas.commands import (
    Adjust,
    Charge,
    ClosePeriod,
    Command,
    ConfigureBudget,
    ExpireReservations,
    Fund,
    OpenBudget,
    Release,
    Reserve,
)
from schemas.events import (
    Alert,
    LedgerEvent,
    Severity,
    data_to_wire,
    make_alert_id,
    remember_wire,
    rfc3339_utc,
)
from schemas.money import DEFAULT_CURRENCIES, MAX_MINOR, POW10, to_decimal_str
from schemas.reasons import Reason

#: How far ``as_of``/``period_end`` may lie ahead of the consumer's clock (clock skew between the
#: ledger's schedulers and its consumers); anything later is refused as "in the future".
CLOCK_SKEW: Final = timedelta(minutes=5)

RESERVED: Final = "reserved"
CHARGED: Final = "charged"
RELEASED: Final = "released"
EXPIRED: Final = "expired"
#: The only moves a reservation can make (docs/domain.md: nothing else moves them).
RESERVATION_EDGES: Final = frozenset(
    {(RESERVED, CHARGED), (RESERVED, RELEASED), (RESERVED, EXPIRED)}
)

_FUNDS_REASONS: Final = frozenset({Reason.INSUFFICIENT_FUNDS, Reason.HARD_CAP_EXCEEDED})
# Accepted events whose amount adds money somewhere (the others only move or remove it).
_ADDING_EVENTS: Final = frozenset(
    {"budget_opened", "budget_funded", "budget_adjusted", "funds_reserved"}
)
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_EXPIRIES: Final[immutables.Map[str, str]] = immutables.Map()  # immutable: safe to share


# --- State ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservation:
    """One reserve, by ``ref_id``, with its current status."""

    ref_id: str
    amount: int
    status: str  # "reserved" | "charged" | "released" | "expired"
    charged: int
    expires_at: str | None
    command_id: str
    created_seq: int
    updated_seq: int


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Limits of a budget; money in minor units."""

    period: str
    hard_cap: int | None = None
    soft_cap: int | None = None
    soft_threshold_pct: int = 80
    hard_threshold_pct: int = 95
    period_allowance: int | None = None
    rollover: bool = False
    timezone: str = "UTC"
    reservation_ttl_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Everything the rules need about one budget; rebuilt exactly by folding its events."""

    tenant_id: str
    budget_id: str
    opened: bool
    currency: str | None
    config: BudgetConfig | None
    funded: int  # current period
    reserved: int
    charged: int  # current period
    sequence: int
    last_hash: str
    period_start: str | None
    reservations: immutables.Map[str, Reservation]  # every ref_id ever reserved
    cap_reached_alerted: bool = False
    # Minor digits of the currency, as recorded in budget_opened (0 before open).
    digits: int = 0
    # Reservations still "reserved" that carry an expiry: ref_id -> expires_at. Lets the
    # sweeper's command touch only what can expire instead of every reservation ever made.
    expiring: immutables.Map[str, str] = _NO_EXPIRIES
    # Whether utilization was at/above each threshold after the last accepted event; an alert
    # fires on the False -> True edge, so falling back below re-arms it.
    above_soft: bool = False
    above_hard: bool = False

    @property
    def limit(self) -> int:
        """``funded`` capped by ``hard_cap`` when set."""
        return _limit(self.config, self.funded)

    @property
    def committed(self) -> int:
        """``reserved + charged``."""
        return self.reserved + self.charged

    @property
    def available(self) -> int:
        """``limit - committed``, never negative."""
        return max(0, self.limit - self.reserved - self.charged)

    @property
    def utilization_pct(self) -> str:
        """``committed / limit`` as a 2-decimal percent string."""
        return utilization_pct(self.reserved + self.charged, self.limit)


def initial_state(tenant_id: str, budget_id: str) -> BudgetState:
    """The state of a budget before its first event: unopened, sequence 0, genesis hash."""
    return BudgetState(
        tenant_id=tenant_id,
        budget_id=budget_id,
        opened=False,
        currency=None,
        config=None,
        funded=0,
        reserved=0,
        charged=0,
        sequence=0,
        last_hash=GENESIS_HASH,
        period_start=None,
        reservations=immutables.Map(),
    )


# --- Balance arithmetic (integers only) -----------------------------------------------------


def _limit(config: BudgetConfig | None, funded: int) -> int:
    if config is None or config.hard_cap is None or config.hard_cap >= funded:
        return funded
    return config.hard_cap


def utilization_pct(committed: int, limit: int) -> str:
    """``committed / limit`` in percent, floored to 2 decimals ("80.00"); "0.00" when nothing is
    committed; "100.00" when something is committed against a zero limit."""
    if committed <= 0:
        return "0.00"
    if limit <= 0:
        return "100.00"
    q = committed * 10000 // limit  # floor: never shows 100.00 before the limit is reached
    return f"{q // 100}.{q % 100:02d}"


def _above_soft(config: BudgetConfig | None, limit: int, committed: int) -> bool:
    if config is None or committed <= 0:
        return False
    if config.soft_cap is not None:
        return committed >= config.soft_cap
    return limit > 0 and committed * 100 >= config.soft_threshold_pct * limit


def _above_hard(config: BudgetConfig | None, limit: int, committed: int) -> bool:
    if config is None or committed <= 0 or limit <= 0:
        return False
    return committed * 100 >= config.hard_threshold_pct * limit


def _minor(text: str, digits: int) -> int | None:
    """Decimal text (already pattern-checked by the schema) to minor units; None if too precise."""
    whole, _, frac = text.partition(".")
    if len(frac) > digits:
        return None
    negative = whole.startswith("-")
    minor = int(whole.lstrip("-")) * POW10[digits] + (int(frac.ljust(digits, "0")) if digits else 0)
    return -minor if negative else minor


def _config_invalid(cfg: BudgetConfig) -> str | None:
    if cfg.hard_cap is not None and cfg.soft_cap is not None and cfg.soft_cap > cfg.hard_cap:
        return "soft_cap is above hard_cap"
    if cfg.soft_threshold_pct > cfg.hard_threshold_pct:
        return "soft_threshold_pct is above hard_threshold_pct"
    return None


def _config_data(cfg: BudgetConfig) -> dict[str, Any]:
    return {
        "period": cfg.period,
        "hard_cap": cfg.hard_cap,
        "soft_cap": cfg.soft_cap,
        "soft_threshold_pct": cfg.soft_threshold_pct,
        "hard_threshold_pct": cfg.hard_threshold_pct,
        "period_allowance": cfg.period_allowance,
        "rollover": cfg.rollover,
        "timezone": cfg.timezone,
        "reservation_ttl_seconds": cfg.reservation_ttl_seconds,
    }


def _config_from_data(d: Mapping[str, Any]) -> BudgetConfig:
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


# --- decide ----------------------------------------------------------------------------------

_last_now: datetime | None = None
_last_now_str: str = ""


def _recorded_at(now: datetime) -> str:
    # Consumers pass one `now` per micro-batch; formatting it once per batch is a measurable win.
    global _last_now, _last_now_str
    if now is not _last_now:
        _last_now_str = rfc3339_utc(now)
        _last_now = now
    return _last_now_str


def _event(
    s: BudgetState,
    c: Command,
    etype: str,
    recorded_at: str,
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
    digits: int | None = None,
) -> LedgerEvent:
    """Build the next event of ``s``'s chain with balances after it, sealed with its hash."""
    f = s.funded if funded is None else funded
    r = s.reserved if reserved is None else reserved
    ch = s.charged if charged is None else charged
    limit = _limit(config or s.config, f)
    committed = r + ch
    available = limit - committed if limit > committed else 0
    util = utilization_pct(committed, limit)
    cur = s.currency if currency is None else currency
    # Without a currency (budget never opened) every balance is zero: written with 0 digits,
    # exactly as event_to_wire does.
    dg = 0 if cur is None else (s.digits if digits is None else digits)
    seq = s.sequence + 1
    # The wire form is built here directly (not via event_to_wire) because this is the hot
    # path; the tests recompute every hash through event_to_wire, so the two cannot drift.
    wire = {
        "type": etype,
        "tenant_id": s.tenant_id,
        "budget_id": s.budget_id,
        "sequence": seq,
        "command_id": c.command_id,
        "command_type": c.type,
        "ref_id": ref_id,
        "currency": cur,
        "amount": None if amount is None else to_decimal_str(amount, dg),
        "reason": reason,
        "data": data_to_wire(data, dg) if data else {},
        "funded": to_decimal_str(f, dg),
        "reserved": to_decimal_str(r, dg),
        "charged": to_decimal_str(ch, dg),
        "available": to_decimal_str(available, dg),
        "utilization_pct": util,
        "recorded_at": recorded_at,
        "metadata": c.metadata,
        "prev_hash": s.last_hash,
    }
    digest = chain_hash(s.last_hash, wire)
    ev = LedgerEvent(
        etype,
        s.tenant_id,
        s.budget_id,
        seq,
        c.command_id,
        c.type,
        ref_id,
        cur,
        amount,
        reason,
        data,
        f,
        r,
        ch,
        available,
        util,
        recorded_at,
        c.metadata,
        s.last_hash,
        digest,
    )
    wire["hash"] = digest
    remember_wire(ev, dg, wire)
    return ev


def _reject(
    s: BudgetState, c: Command, reason: Reason, recorded_at: str, detail: str
) -> LedgerEvent:
    return _event(
        s,
        c,
        "command_rejected",
        recorded_at,
        ref_id=getattr(c, "ref_id", None),
        reason=reason.value,
        data={"detail": detail},
    )


def _reject_reserve(
    s: BudgetState, c: Reserve, reason: Reason, recorded_at: str, detail: str
) -> LedgerEvent:
    return _event(
        s,
        c,
        "reservation_rejected",
        recorded_at,
        ref_id=c.ref_id,
        reason=reason.value,
        data={
            "detail": detail,
            "requested_amount": c.amount,
            "requested_currency": c.currency,
        },
    )


def decide(
    state: BudgetState,
    command: Command,
    now: datetime,
    currencies: Mapping[str, int] = DEFAULT_CURRENCIES,
) -> LedgerEvent:
    """The one event (accepted or rejected) that ``command`` produces against ``state``."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    rec = _recorded_at(now)
    if command.tenant_id != state.tenant_id or command.budget_id != state.budget_id:
        return _reject(
            state,
            command,
            Reason.TENANT_MISMATCH,
            rec,
            f"command is for {command.tenant_id}:{command.budget_id}, "
            f"not {state.tenant_id}:{state.budget_id}",
        )
    if not state.opened and command.type != "open_budget":
        return _reject(state, command, Reason.UNKNOWN_BUDGET, rec, "budget was never opened")
    decider = _DECIDERS[command.type]
    ev = decider(state, command, now, rec, currencies)
    # Backstop for every decider: nothing the ledger stores may pass MAX_MINOR (bigint columns).
    # A balance already above it (written before this rule) may still shrink.
    if ev.reason is None and (
        ev.funded > MAX_MINOR
        or ev.reserved + ev.charged > MAX_MINOR
        or (ev.amount is not None and not -MAX_MINOR <= ev.amount <= MAX_MINOR)
    ):
        problem = _range_problem(state, ev)
        if problem is not None:
            if isinstance(command, Reserve):
                return _reject_reserve(state, command, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
            return _reject(state, command, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
    return ev


def _above_max(name: str, value: int, digits: int) -> str:
    return (
        f"{name} would be {to_decimal_str(value, digits)}, above the ledger's maximum "
        f"{to_decimal_str(MAX_MINOR, digits)}"
    )


def _range_problem(s: BudgetState, ev: LedgerEvent) -> str | None:
    digits = s.digits if s.opened else (0 if ev.currency is None else _event_digits(ev))
    if ev.funded > MAX_MINOR and ev.funded > s.funded:
        return _above_max("funded", ev.funded, digits)
    committed = ev.reserved + ev.charged
    if committed > MAX_MINOR and committed > s.reserved + s.charged:
        return _above_max("committed", committed, digits)
    if ev.type in _ADDING_EVENTS and ev.amount is not None and abs(ev.amount) > MAX_MINOR:
        return _above_max("the amount", abs(ev.amount), digits)
    return None


def _event_digits(ev: LedgerEvent) -> int:
    minor_units = ev.data.get("minor_units")
    return minor_units if isinstance(minor_units, int) else 0


def _amount_problem(name: str, value: int | None, text: str | None, digits: int) -> str | None:
    """A readable refusal if ``value`` (minor units) is above what the ledger stores."""
    if value is None or -MAX_MINOR <= value <= MAX_MINOR:
        return None
    return f"{name} {text} exceeds the ledger's maximum amount {to_decimal_str(MAX_MINOR, digits)}"


def _decide_open(
    s: BudgetState, c: OpenBudget, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    if s.opened:
        return _reject(s, c, Reason.BUDGET_EXISTS, rec, "budget is already open")
    digits = currencies.get(c.currency)
    if digits is None:
        return _reject(s, c, Reason.UNKNOWN_CURRENCY, rec, f"unknown currency {c.currency}")
    amounts = {}
    for name in ("hard_cap", "soft_cap", "period_allowance"):
        text = getattr(c, name)
        value = None if text is None else _minor(text, digits)
        if text is not None and value is None:
            return _reject(s, c, Reason.INVALID_AMOUNT, rec, f"{name} {text} is too precise")
        problem = _amount_problem(name, value, text, digits)
        if problem is not None:
            return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
        amounts[name] = value
    cfg = BudgetConfig(
        period=c.period,
        soft_threshold_pct=c.soft_threshold_pct,
        hard_threshold_pct=c.hard_threshold_pct,
        rollover=c.rollover,
        timezone=c.timezone,
        reservation_ttl_seconds=c.reservation_ttl_seconds,
        **amounts,
    )
    problem = _config_invalid(cfg)
    if problem:
        return _reject(s, c, Reason.INVALID_CONFIG, rec, problem)
    # Opening starts the first period, so the allowance is funded right away.
    funded = cfg.period_allowance or 0
    data = _config_data(cfg)
    data["minor_units"] = digits
    data["period_start"] = rec
    return _event(
        s,
        c,
        "budget_opened",
        rec,
        amount=funded,
        data=data,
        funded=funded,
        config=cfg,
        currency=c.currency,
        digits=digits,
    )


def _decide_configure(
    s: BudgetState, c: ConfigureBudget, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    assert s.config is not None  # opened budgets always have one
    merged = _config_data(s.config)
    changes = c.changes()
    for name, value in changes.items():
        if name in ("hard_cap", "soft_cap", "period_allowance") and value is not None:
            minor = _minor(value, s.digits)
            if minor is None:
                return _reject(s, c, Reason.INVALID_AMOUNT, rec, f"{name} {value} is too precise")
            problem = _amount_problem(name, minor, value, s.digits)
            if problem is not None:
                return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
            value = minor
        merged[name] = value
    cfg = _config_from_data(merged)
    problem = _config_invalid(cfg)
    if problem:
        return _reject(s, c, Reason.INVALID_CONFIG, rec, problem)
    merged["changed"] = sorted(changes)
    return _event(s, c, "budget_configured", rec, data=merged, config=cfg)


def _decide_fund(
    s: BudgetState, c: Fund, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    if c.currency != s.currency:
        return _reject(
            s, c, Reason.CURRENCY_MISMATCH, rec, f"budget is in {s.currency}, not {c.currency}"
        )
    amount = _minor(c.amount, s.digits)
    if amount is None:
        return _reject(s, c, Reason.INVALID_AMOUNT, rec, f"amount {c.amount} is too precise")
    problem = _amount_problem("amount", amount, c.amount, s.digits)
    if problem is None and s.funded + amount > MAX_MINOR:
        problem = _above_max("funded", s.funded + amount, s.digits)
    if problem is not None:
        return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
    return _event(s, c, "budget_funded", rec, amount=amount, funded=s.funded + amount)


def _decide_reserve(
    s: BudgetState, c: Reserve, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    cfg = s.config
    assert cfg is not None
    if c.currency != s.currency:
        return _reject_reserve(
            s, c, Reason.CURRENCY_MISMATCH, rec, f"budget is in {s.currency}, not {c.currency}"
        )
    amount = _minor(c.amount, s.digits)
    if amount is None:
        return _reject_reserve(
            s, c, Reason.INVALID_AMOUNT, rec, f"amount {c.amount} is too precise"
        )
    problem = _amount_problem("amount", amount, c.amount, s.digits)
    if problem is not None:
        return _reject_reserve(s, c, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
    if c.ref_id in s.reservations:
        return _reject_reserve(
            s, c, Reason.DUPLICATE_REF, rec, f"ref_id {c.ref_id} already reserved"
        )
    if c.expires_at is not None:
        expires: str | None = rfc3339_utc(c.expires_at)
    elif cfg.reservation_ttl_seconds is not None:
        base = c.issued_at or now
        expires = rfc3339_utc(base + timedelta(seconds=cfg.reservation_ttl_seconds))
    else:
        expires = None
    if expires is not None and expires <= rec:  # same fixed-width UTC format: string order works
        return _reject_reserve(
            s, c, Reason.EXPIRES_IN_PAST, rec, f"expires_at {expires} has passed"
        )
    limit = _limit(cfg, s.funded)
    available = limit - s.reserved - s.charged
    if amount > available:
        # Name the binding constraint: when the cap is at or below funding, adding funds won't help.
        reason = (
            Reason.HARD_CAP_EXCEEDED
            if cfg.hard_cap is not None and cfg.hard_cap <= s.funded
            else Reason.INSUFFICIENT_FUNDS
        )
        return _reject_reserve(
            s, c, reason, rec, f"available {to_decimal_str(max(available, 0), s.digits)}"
        )
    return _event(
        s,
        c,
        "funds_reserved",
        rec,
        amount=amount,
        ref_id=c.ref_id,
        data={"expires_at": expires},
        reserved=s.reserved + amount,
    )


def _active_reservation(s: BudgetState, c: Charge | Release, rec: str) -> Reservation | LedgerEvent:
    res = s.reservations.get(c.ref_id)
    if res is None:
        return _reject(s, c, Reason.RESERVATION_NOT_FOUND, rec, f"no reservation {c.ref_id}")
    if res.status != RESERVED:
        return _reject(
            s, c, Reason.RESERVATION_NOT_ACTIVE, rec, f"reservation {c.ref_id} is {res.status}"
        )
    return res


def _decide_charge(
    s: BudgetState, c: Charge, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    res = _active_reservation(s, c, rec)
    if isinstance(res, LedgerEvent):
        return res
    if c.amount is None:
        amount = res.amount
    else:
        minor = _minor(c.amount, s.digits)
        if minor is None:
            return _reject(s, c, Reason.INVALID_AMOUNT, rec, f"amount {c.amount} is too precise")
        problem = _amount_problem("amount", minor, c.amount, s.digits)
        if problem is not None:
            return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
        if minor > res.amount:
            return _reject(
                s,
                c,
                Reason.AMOUNT_EXCEEDS_RESERVATION,
                rec,
                f"reserved {to_decimal_str(res.amount, s.digits)}",
            )
        amount = minor
    return _event(
        s,
        c,
        "reservation_charged",
        rec,
        amount=amount,
        ref_id=c.ref_id,
        data={"released": res.amount - amount},
        reserved=s.reserved - res.amount,
        charged=s.charged + amount,
    )


def _decide_release(
    s: BudgetState, c: Release, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    res = _active_reservation(s, c, rec)
    if isinstance(res, LedgerEvent):
        return res
    return _event(
        s,
        c,
        "reservation_released",
        rec,
        amount=res.amount,
        ref_id=c.ref_id,
        reserved=s.reserved - res.amount,
    )


def _decide_expire(
    s: BudgetState, c: ExpireReservations, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    if c.as_of > now + CLOCK_SKEW:
        return _reject(s, c, Reason.AS_OF_IN_FUTURE, rec, f"as_of is after {rec}")
    as_of = rfc3339_utc(c.as_of)
    due: list[tuple[str, str]] = []
    for ref, exp in s.expiring.items():
        if exp <= as_of:
            due.append((exp, ref))
    due.sort()  # expiry order, then ref_id: deterministic whatever the map's iteration order
    amounts = [(ref, s.reservations[ref].amount) for _, ref in due]
    total = sum(amount for _, amount in amounts)
    pairs = [[ref, amount] for ref, amount in amounts]  # lists: what JSON gives back on replay
    return _event(
        s,
        c,
        "reservations_expired",
        rec,
        amount=total,
        data={"as_of": as_of, "expired": pairs},
        reserved=s.reserved - total,
    )


def _decide_close(
    s: BudgetState, c: ClosePeriod, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    cfg = s.config
    assert cfg is not None and s.period_start is not None
    if cfg.period == "rolling":
        return _reject(s, c, Reason.PERIOD_NOT_CLOSABLE, rec, "rolling budgets never close")
    end = rfc3339_utc(c.period_end)
    if end <= s.period_start:
        return _reject(
            s, c, Reason.PERIOD_ALREADY_CLOSED, rec, f"current period started {s.period_start}"
        )
    if c.period_end > now + CLOCK_SKEW:
        return _reject(s, c, Reason.PERIOD_NOT_ENDED, rec, f"period_end {end} is in the future")
    unspent = max(0, s.funded - s.charged)
    rolled_over = unspent if cfg.rollover else 0
    allowance = cfg.period_allowance or 0
    if allowance + rolled_over > MAX_MINOR and allowance + rolled_over > s.funded:
        # Refused, not capped: money must not silently vanish. An adjust (or a smaller
        # allowance) brings the next period under the maximum; the scheduler's re-send then closes.
        problem = _above_max("funded of the next period", allowance + rolled_over, s.digits)
        return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
    data = {
        "period_start": s.period_start,
        "period_end": end,
        "closed_funded": s.funded,
        "closed_reserved": s.reserved,
        "closed_charged": s.charged,
        "unspent": unspent,
        "rolled_over": rolled_over,
        "allowance": allowance,
    }
    # Open reservations carry over (reserved is unchanged) and count against the new funding.
    return _event(s, c, "period_closed", rec, data=data, funded=allowance + rolled_over, charged=0)


def _decide_adjust(
    s: BudgetState, c: Adjust, now: datetime, rec: str, currencies: Mapping[str, int]
) -> LedgerEvent:
    delta = _minor(c.amount, s.digits)
    if delta is None:
        return _reject(s, c, Reason.INVALID_AMOUNT, rec, f"amount {c.amount} is too precise")
    problem = _amount_problem("amount", delta, c.amount, s.digits)
    if problem is None and delta > 0 and s.funded + delta > MAX_MINOR:
        problem = _above_max("funded", s.funded + delta, s.digits)
    if problem is not None:
        return _reject(s, c, Reason.AMOUNT_OUT_OF_RANGE, rec, problem)
    if s.funded + delta < 0:
        return _reject(
            s, c, Reason.NEGATIVE_FUNDS, rec, f"funded {to_decimal_str(s.funded, s.digits)}"
        )
    return _event(
        s,
        c,
        "budget_adjusted",
        rec,
        amount=delta,
        data={"reason": c.reason, "operator": c.operator},
        funded=s.funded + delta,
    )


_Decider = Callable[[BudgetState, Any, datetime, str, Mapping[str, int]], LedgerEvent]
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
}


# --- evolve ----------------------------------------------------------------------------------


def _advance(
    s: BudgetState, e: LedgerEvent, cap_reached_alerted: bool | None = None
) -> BudgetState:
    """Only the chain moves: sequence and hash (rejections, events of an unopened budget)."""
    # By name, like _accepted (every refusal passes here; replace() costs ~2 us more).
    return BudgetState(
        tenant_id=s.tenant_id,
        budget_id=s.budget_id,
        opened=s.opened,
        currency=s.currency,
        config=s.config,
        funded=s.funded,
        reserved=s.reserved,
        charged=s.charged,
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
    expiring: immutables.Map[str, str] | None = None,
    period_start: str | None = None,
    new_period: bool = False,
) -> BudgetState:
    """State after an accepted event; recomputes the alert arming from the new balances."""
    f = s.funded if funded is None else funded
    r = s.reserved if reserved is None else reserved
    ch = s.charged if charged is None else charged
    cfg = s.config if config is None else config
    limit = _limit(cfg, f)
    committed = r + ch
    # hard_cap_reached re-arms when the ceiling moves up (funding, cap raised) or a period starts.
    cap_alerted = s.cap_reached_alerted and not new_period and limit <= _limit(s.config, s.funded)
    # Every field by name: replace() would be safer against a forgotten new field but costs
    # ~2 us per event on this hot path; tests/unit/test_state_fields.py fails if one is missed.
    return BudgetState(
        tenant_id=s.tenant_id,
        budget_id=s.budget_id,
        opened=s.opened,
        currency=s.currency,
        config=cfg,
        funded=f,
        reserved=r,
        charged=ch,
        sequence=e.sequence,
        last_hash=e.hash,
        period_start=s.period_start if period_start is None else period_start,
        reservations=s.reservations if reservations is None else reservations,
        cap_reached_alerted=cap_alerted,
        digits=s.digits,
        expiring=s.expiring if expiring is None else expiring,
        above_soft=_above_soft(cfg, limit, committed),
        above_hard=_above_hard(cfg, limit, committed),
    )


def _evolve_opened(s: BudgetState, e: LedgerEvent) -> BudgetState:
    d = e.data
    cfg = _config_from_data(d)
    funded = e.amount or 0
    opened = replace(
        s,
        opened=True,
        currency=e.currency,
        config=cfg,
        funded=funded,
        reserved=0,
        charged=0,
        period_start=d["period_start"],
        cap_reached_alerted=False,
        digits=int(d["minor_units"]),
    )
    return _accepted(opened, e)


def _evolve_configured(s: BudgetState, e: LedgerEvent) -> BudgetState:
    return _accepted(s, e, config=_config_from_data(e.data))


def _evolve_funded(s: BudgetState, e: LedgerEvent) -> BudgetState:
    return _accepted(s, e, funded=s.funded + (e.amount or 0))


def _evolve_adjusted(s: BudgetState, e: LedgerEvent) -> BudgetState:
    return _accepted(s, e, funded=s.funded + (e.amount or 0))


def _evolve_reserved(s: BudgetState, e: LedgerEvent) -> BudgetState:
    ref = e.ref_id
    amount = e.amount
    if ref is None or amount is None:
        return _advance(s, e)
    expires = e.data.get("expires_at")
    res = Reservation(ref, amount, RESERVED, 0, expires, e.command_id, e.sequence, e.sequence)
    return _accepted(
        s,
        e,
        reserved=s.reserved + amount,
        reservations=s.reservations.set(ref, res),
        expiring=s.expiring if expires is None else s.expiring.set(ref, expires),
    )


def _finish(res: Reservation, status: str, charged: int, seq: int) -> Reservation:
    return replace(res, status=status, charged=charged, updated_seq=seq)


def _evolve_charged(s: BudgetState, e: LedgerEvent) -> BudgetState:
    res = s.reservations[e.ref_id]  # type: ignore[index]
    amount = e.amount or 0
    return _accepted(
        s,
        e,
        reserved=s.reserved - res.amount,
        charged=s.charged + amount,
        reservations=s.reservations.set(res.ref_id, _finish(res, CHARGED, amount, e.sequence)),
        expiring=s.expiring.delete(res.ref_id) if res.ref_id in s.expiring else s.expiring,
    )


def _evolve_released(s: BudgetState, e: LedgerEvent) -> BudgetState:
    res = s.reservations[e.ref_id]  # type: ignore[index]
    return _accepted(
        s,
        e,
        reserved=s.reserved - res.amount,
        reservations=s.reservations.set(res.ref_id, _finish(res, RELEASED, 0, e.sequence)),
        expiring=s.expiring.delete(res.ref_id) if res.ref_id in s.expiring else s.expiring,
    )


def _evolve_expired(s: BudgetState, e: LedgerEvent) -> BudgetState:
    reservations = s.reservations.mutate()
    expiring = s.expiring.mutate()
    reserved = s.reserved
    for ref, _amount in e.data.get("expired", ()):
        res = reservations[ref]
        reservations[ref] = _finish(res, EXPIRED, 0, e.sequence)
        reserved -= res.amount
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
    if e.reason in _FUNDS_REASONS:
        return _advance(s, e, cap_reached_alerted=True)
    return _advance(s, e)


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
    "budget_adjusted": _evolve_adjusted,
    "command_rejected": _advance,
}


def evolve(state: BudgetState, event: LedgerEvent) -> BudgetState:
    """Fold one event into the state. Raises when an evolver fails (a bug or a corrupt event):
    live consumption must not commit a stale state; tolerant replay is the reconciler's job."""
    if event.type != "budget_opened" and not state.opened:
        return _advance(state, event)
    return _EVOLVERS.get(event.type, _advance)(state, event)


# --- alerts ----------------------------------------------------------------------------------

#: The severity of every alert type: the one table (the reconciler's drift alert included).
ALERT_SEVERITY: Final[Mapping[str, Severity]] = MappingProxyType(
    {
        "soft_cap_exceeded": "warning",
        "hard_cap_approaching": "critical",
        "hard_cap_reached": "critical",
        "drift_detected": "critical",
    }
)


def _alert(
    after: BudgetState, event: LedgerEvent, atype: str, threshold: str, data: dict[str, Any]
) -> Alert:
    return Alert(
        alert_id=make_alert_id(after.tenant_id, after.budget_id, atype, event.sequence),
        type=atype,
        severity=ALERT_SEVERITY[atype],
        tenant_id=after.tenant_id,
        budget_id=after.budget_id,
        utilization_pct=event.utilization_pct,
        threshold=threshold,
        sequence=event.sequence,
        recorded_at=event.recorded_at,
        data=data,
    )


def alerts_for(before: BudgetState, after: BudgetState, event: LedgerEvent) -> tuple[Alert, ...]:
    """Alerts triggered by the transition ``before`` -> ``after`` caused by ``event``."""
    cfg = after.config
    if cfg is None:
        return ()
    rearmed = event.type == "period_closed"  # a new period: every crossing counts again
    fire_soft = after.above_soft and (rearmed or not before.above_soft)
    fire_hard = after.above_hard and (rearmed or not before.above_hard)
    fire_cap = (
        event.type == "reservation_rejected"
        and event.reason in _FUNDS_REASONS
        and not before.cap_reached_alerted
    )
    if not (fire_soft or fire_hard or fire_cap):
        return ()
    digits = after.digits
    limit = after.limit
    base = {
        "currency": after.currency,
        "limit": to_decimal_str(limit, digits),
        "committed": to_decimal_str(after.committed, digits),
        "available": to_decimal_str(after.available, digits),
    }
    out: list[Alert] = []
    if fire_soft:
        if cfg.soft_cap is not None:
            threshold = utilization_pct(cfg.soft_cap, limit) if cfg.soft_cap else "0.00"
            amount = cfg.soft_cap
        else:
            threshold = f"{cfg.soft_threshold_pct}.00"
            amount = limit * cfg.soft_threshold_pct // 100
        soft = {**base, "threshold_amount": to_decimal_str(amount, digits)}
        out.append(_alert(after, event, "soft_cap_exceeded", threshold, soft))
    if fire_hard:
        amount = limit * cfg.hard_threshold_pct // 100
        hard = {**base, "threshold_amount": to_decimal_str(amount, digits)}
        out.append(
            _alert(after, event, "hard_cap_approaching", f"{cfg.hard_threshold_pct}.00", hard)
        )
    if fire_cap:
        cap = {
            **base,
            "reason": event.reason,
            "ref_id": event.ref_id,
            "requested_amount": event.data.get("requested_amount"),
        }
        out.append(_alert(after, event, "hard_cap_reached", "100.00", cap))
    return tuple(out)


def drift_alert(
    tenant_id: str,
    budget_id: str,
    sequence: int,
    utilization_pct: str,
    fields: frozenset[str],
    drift_count: int,
    broken_link: tuple[int, str] | None,
    now: datetime,
) -> Alert:
    """The reconciler's ``drift_detected`` alert for one budget: ``fields`` are the drifting
    ``table.field`` names, ``broken_link`` the first bad link as (sequence, problem). The id is
    stable for the same ledger position, so a re-run over the same drift repeats it."""
    data: dict[str, Any] = {"fields": sorted(fields), "drift_count": drift_count}
    if broken_link is not None:
        data["broken_link"] = {"sequence": broken_link[0], "problem": broken_link[1]}
    return Alert(
        alert_id=make_alert_id(tenant_id, budget_id, "drift_detected", sequence),
        type="drift_detected",
        severity=ALERT_SEVERITY["drift_detected"],
        tenant_id=tenant_id,
        budget_id=budget_id,
        utilization_pct=utilization_pct,
        threshold="0.00",
        sequence=sequence,
        recorded_at=rfc3339_utc(now),
        data=data,
    )


# --- apply -----------------------------------------------------------------------------------


def apply(
    state: BudgetState,
    command: Command,
    now: datetime,
    currencies: Mapping[str, int] = DEFAULT_CURRENCIES,
) -> tuple[BudgetState, LedgerEvent, tuple[Alert, ...]]:
    """Decide, evolve and derive alerts once: what the consumer calls per command."""
    event = decide(state, command, now, currencies)
    after = evolve(state, event)
    return after, event, alerts_for(state, after, event)
