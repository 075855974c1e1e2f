"""A budget's state, its reservations and limits, and the balance arithmetic (integers only).

Names keep three kinds of money apart: ``funded_in_period`` and ``charged_in_period`` are totals
of the current period (a period close resets them), ``reserved_total`` is what open reservations
hold right now, and a `Reservation` has a ``reserved_amount``, a ``charged_amount`` and a
``status`` (one of `ReservationStatus`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

import immutables

from budget_ledger.ledger.events import GENESIS_HASH
from budget_ledger.ledger.frozen import native_init, picklable, quick_init


class ReservationStatus(StrEnum):
    """Where a reservation is in its life; only ``RESERVED`` moves, and only once."""

    RESERVED = "reserved"
    CHARGED = "charged"
    RELEASED = "released"
    EXPIRED = "expired"


#: The only moves a reservation can make (docs/domain.md: nothing else moves them).
RESERVATION_EDGES: Final = frozenset(
    {
        (ReservationStatus.RESERVED, ReservationStatus.CHARGED),
        (ReservationStatus.RESERVED, ReservationStatus.RELEASED),
        (ReservationStatus.RESERVED, ReservationStatus.EXPIRED),
    }
)

#: Largest amount or balance the ledger stores, in minor units, whatever the currency: every
#: bigint column (amounts, funded, reserved, charged, available, limit) stays at or below it, and
#: so does committed (reserved + charged). 10**18 is a round figure well under bigint's 9.22e18,
#: leaving room for a sum of two such values (allowance + rollover, reserved + charged).
MAX_MINOR: Final = 10**18

_NO_EXPIRIES: Final[immutables.Map[str, datetime]] = immutables.Map()  # immutable: safe to share

#: What a balance monitor can watch: money metrics in minor units, ``utilization_pct`` in basis
#: points (docs/domain.md, "Monitors").
MONITOR_METRICS: Final = ("available", "utilization_pct", "reserved", "charged", "funded")
MONITOR_OPERATORS: Final = ("<", "<=", ">", ">=")
#: At most this many monitors per budget; one more is refused (``too_many_monitors``).
MAX_MONITORS: Final = 20


@dataclass(frozen=True, slots=True)
class Monitor:
    """A balance monitor: ``metric operator threshold`` (money in minor units, utilization in
    basis points). ``armed`` is False while the condition holds: it fired on the event that made
    it hold and fires again only after an event that clears it (re-arms it)."""

    metric: str
    operator: str
    threshold: int
    armed: bool


_NO_MONITORS: Final[immutables.Map[str, Monitor]] = immutables.Map()


@dataclass(frozen=True, slots=True)
class Reservation:
    """One reserve, by ``ref_id``, with its current status."""

    ref_id: str
    reserved_amount: int
    status: ReservationStatus
    charged_amount: int
    expires_at: datetime | None
    command_id: str
    created_seq: int
    updated_seq: int

    # Written out for the compiled build (native stores); interpreted, `native_init` below
    # puts quick_init's in its place (a frozen class cannot assign its own fields in Python).
    def __init__(
        self,
        ref_id: str,
        reserved_amount: int,
        status: ReservationStatus,
        charged_amount: int,
        expires_at: datetime | None,
        command_id: str,
        created_seq: int,
        updated_seq: int,
    ) -> None:
        self.ref_id = ref_id  # type: ignore[misc]
        self.reserved_amount = reserved_amount  # type: ignore[misc]
        self.status = status  # type: ignore[misc]
        self.charged_amount = charged_amount  # type: ignore[misc]
        self.expires_at = expires_at  # type: ignore[misc]
        self.command_id = command_id  # type: ignore[misc]
        self.created_seq = created_seq  # type: ignore[misc]
        self.updated_seq = updated_seq  # type: ignore[misc]


native_init(Reservation, __file__)


@quick_init
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
    funded_in_period: int
    reserved_total: int
    charged_in_period: int
    sequence: int
    last_hash: str
    period_start: datetime | None
    # Every ref_id reserved, or (a `compact` state, as the consumer caches) the open ones only.
    reservations: immutables.Map[str, Reservation]
    cap_reached_alerted: bool = False
    # Minor digits of the currency, as recorded in budget_opened (0 before open).
    digits: int = 0
    # Reservations still "reserved" that carry an expiry: ref_id -> expires_at. Lets the
    # sweeper's command touch only what can expire instead of every reservation ever made.
    expiring: immutables.Map[str, datetime] = _NO_EXPIRIES
    # Whether utilization was at/above each threshold after the last accepted event; an alert
    # fires on the False -> True edge, so falling back below re-arms it.
    above_soft: bool = False
    above_hard: bool = False
    # Balance monitors by monitor_id (immutable values; empty for almost every budget).
    monitors: immutables.Map[str, Monitor] = _NO_MONITORS

    # Written out for the compiled build (native stores); interpreted, `native_init` below
    # puts quick_init's in its place (a frozen class cannot assign its own fields in Python).
    def __init__(
        self,
        tenant_id: str,
        budget_id: str,
        opened: bool,
        currency: str | None,
        config: BudgetConfig | None,
        funded_in_period: int,
        reserved_total: int,
        charged_in_period: int,
        sequence: int,
        last_hash: str,
        period_start: datetime | None,
        reservations: immutables.Map[str, Reservation],
        cap_reached_alerted: bool = False,
        digits: int = 0,
        expiring: immutables.Map[str, datetime] = _NO_EXPIRIES,
        above_soft: bool = False,
        above_hard: bool = False,
        monitors: immutables.Map[str, Monitor] = _NO_MONITORS,
    ) -> None:
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.opened = opened  # type: ignore[misc]
        self.currency = currency  # type: ignore[misc]
        self.config = config  # type: ignore[misc]
        self.funded_in_period = funded_in_period  # type: ignore[misc]
        self.reserved_total = reserved_total  # type: ignore[misc]
        self.charged_in_period = charged_in_period  # type: ignore[misc]
        self.sequence = sequence  # type: ignore[misc]
        self.last_hash = last_hash  # type: ignore[misc]
        self.period_start = period_start  # type: ignore[misc]
        self.reservations = reservations  # type: ignore[misc]
        self.cap_reached_alerted = cap_reached_alerted  # type: ignore[misc]
        self.digits = digits  # type: ignore[misc]
        self.expiring = expiring  # type: ignore[misc]
        self.above_soft = above_soft  # type: ignore[misc]
        self.above_hard = above_hard  # type: ignore[misc]
        self.monitors = monitors  # type: ignore[misc]

    @property
    def limit(self) -> int:
        """``funded_in_period`` capped by ``hard_cap`` when set."""
        return limit_of(self.config, self.funded_in_period)

    @property
    def committed(self) -> int:
        """``reserved_total + charged_in_period``."""
        return self.reserved_total + self.charged_in_period

    @property
    def available(self) -> int:
        """``limit - committed``, never negative."""
        return max(0, self.limit - self.reserved_total - self.charged_in_period)

    @property
    def utilization_bp(self) -> int:
        """``committed / limit`` in basis points (see `utilization_bp`)."""
        return utilization_bp(self.reserved_total + self.charged_in_period, self.limit)


native_init(BudgetState, __file__)
picklable(Monitor, Reservation, BudgetState)


def config_data(config: BudgetConfig) -> dict[str, object]:
    """The fields of ``config`` as a new dict (what opened/configured events record)."""
    # By hand, not dataclasses.asdict: that deep-copies every value and costs ~100 us.
    return {
        "period": config.period,
        "hard_cap": config.hard_cap,
        "soft_cap": config.soft_cap,
        "soft_threshold_pct": config.soft_threshold_pct,
        "hard_threshold_pct": config.hard_threshold_pct,
        "period_allowance": config.period_allowance,
        "rollover": config.rollover,
        "timezone": config.timezone,
        "reservation_ttl_seconds": config.reservation_ttl_seconds,
    }


def initial_state(tenant_id: str, budget_id: str) -> BudgetState:
    """The state of a budget before its first event: unopened, sequence 0, genesis hash."""
    return BudgetState(
        tenant_id=tenant_id,
        budget_id=budget_id,
        opened=False,
        currency=None,
        config=None,
        funded_in_period=0,
        reserved_total=0,
        charged_in_period=0,
        sequence=0,
        last_hash=GENESIS_HASH,
        period_start=None,
        reservations=immutables.Map(),
    )


def compact(state: BudgetState, refs: Iterable[str] | None = None) -> BudgetState:
    """``state`` without its settled (charged, released, expired) reservations; with ``refs``,
    only those among them are checked (the rest are known open). Decides alike once the settled
    records a command names are merged back (what the consumer's per-batch look-up does)."""
    held = state.reservations
    if refs is None:
        gone = [ref for ref, res in held.items() if res.status is not ReservationStatus.RESERVED]
    else:
        gone = [
            ref
            for ref in set(refs)
            if (res := held.get(ref)) is not None and res.status is not ReservationStatus.RESERVED
        ]
    if not gone:
        return state
    kept = held.mutate()
    for ref in gone:
        del kept[ref]
    return with_reservations(state, kept.finish())


def with_reservations(
    state: BudgetState, reservations: immutables.Map[str, Reservation]
) -> BudgetState:
    """``state`` with another reservations map (the consumer's per-batch compaction and
    settled look-up). Positional: `dataclasses.replace` costs ~2.6 us more a call."""
    s = state
    return BudgetState(
        s.tenant_id, s.budget_id, s.opened, s.currency, s.config, s.funded_in_period,
        s.reserved_total, s.charged_in_period, s.sequence, s.last_hash, s.period_start,
        reservations, s.cap_reached_alerted, s.digits, s.expiring, s.above_soft, s.above_hard,
        s.monitors,
    )  # fmt: skip


def limit_of(config: BudgetConfig | None, funded: int) -> int:
    """What may be committed: ``funded``, or ``hard_cap`` when that is lower."""
    if config is None or config.hard_cap is None or config.hard_cap >= funded:
        return funded
    return config.hard_cap


def utilization_bp(committed: int, limit: int) -> int:
    """``committed / limit`` in basis points, floored (8000 is 80.00 %): 0 when nothing is
    committed, 10000 when something is committed against a zero limit."""
    if committed <= 0:
        return 0
    if limit <= 0:
        return 10000
    return committed * 10000 // limit  # floor: never shows 100.00 before the limit is reached


def above_soft(config: BudgetConfig | None, limit: int, committed: int) -> bool:
    """Whether ``committed`` is at or above the soft threshold (``soft_cap`` or its percent)."""
    if config is None or committed <= 0:
        return False
    if config.soft_cap is not None:
        return committed >= config.soft_cap
    return limit > 0 and committed * 100 >= config.soft_threshold_pct * limit


def above_hard(config: BudgetConfig | None, limit: int, committed: int) -> bool:
    """Whether ``committed`` is at or above the hard threshold percent of ``limit``."""
    if config is None or committed <= 0 or limit <= 0:
        return False
    return committed * 100 >= config.hard_threshold_pct * limit


def metric_value(metric: str, funded: int, reserved: int, charged: int, limit: int) -> int:
    """The value a monitor of ``metric`` watches, from the balances (minor units, or basis
    points for ``utilization_pct``); an unknown metric reads 0."""
    committed = reserved + charged
    if metric == "available":
        return limit - committed if limit > committed else 0
    if metric == "utilization_pct":
        return utilization_bp(committed, limit)
    if metric == "reserved":
        return reserved
    if metric == "charged":
        return charged
    if metric == "funded":
        return funded
    return 0


def condition_holds(value: int, operator: str, threshold: int) -> bool:
    """Whether ``value operator threshold`` holds (an unknown operator never holds)."""
    if operator == "<":
        return value < threshold
    if operator == "<=":
        return value <= threshold
    if operator == ">":
        return value > threshold
    if operator == ">=":
        return value >= threshold
    return False


def evaluate_monitors(
    monitors: immutables.Map[str, Monitor], funded: int, reserved: int, charged: int, limit: int
) -> immutables.Map[str, Monitor]:
    """``monitors`` with each armed flag recomputed from the balances; the same map when no
    flag changes (so a budget's states share it, and a budget without monitors pays nothing)."""
    if not monitors:
        return monitors
    changed: list[tuple[str, Monitor]] = []
    for mid, m in monitors.items():
        armed = not condition_holds(
            metric_value(m.metric, funded, reserved, charged, limit), m.operator, m.threshold
        )
        if armed is not m.armed:
            changed.append((mid, Monitor(m.metric, m.operator, m.threshold, armed)))
    if not changed:
        return monitors
    out = monitors.mutate()
    for mid, m in changed:
        out[mid] = m
    return out.finish()
