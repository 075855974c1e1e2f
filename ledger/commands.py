"""The commands as the rules see them: plain frozen values, money already in minor units.

The wire models (`schemas/commands.py`) are translated at the edge (`schemas/to_domain.py`) with
the digits of the budget's own currency, so no decimal text is ever parsed here. An amount keeps
the text it was sent as, only to echo it in a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from budget_ledger.ledger.frozen import native_init, picklable


@dataclass(frozen=True, slots=True)
class Amount:
    """A commanded amount: ``minor`` units at the budget's digits, or None when the text has
    more decimals than the currency allows; ``text`` is what the sender wrote."""

    minor: int | None
    text: str

    def __init__(
        self,
        minor: int | None,
        text: str,
    ) -> None:
        self.minor = minor  # type: ignore[misc]
        self.text = text  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class CommandBase:
    """What every command carries."""

    command_id: str
    tenant_id: str
    budget_id: str
    issued_at: datetime | None
    metadata: Mapping[str, Any] | None

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class OpenBudget(CommandBase):
    """Create a budget; ``digits`` is None when its currency is not in the currency table."""

    currency: str
    digits: int | None
    period: str
    hard_cap: Amount | None
    soft_cap: Amount | None
    soft_threshold_pct: int
    hard_threshold_pct: int
    period_allowance: Amount | None
    rollover: bool
    timezone: str
    reservation_ttl_seconds: int | None
    type: str = "open_budget"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        currency: str,
        digits: int | None,
        period: str,
        hard_cap: Amount | None,
        soft_cap: Amount | None,
        soft_threshold_pct: int,
        hard_threshold_pct: int,
        period_allowance: Amount | None,
        rollover: bool,
        timezone: str,
        reservation_ttl_seconds: int | None,
        type: str = "open_budget",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.currency = currency  # type: ignore[misc]
        self.digits = digits  # type: ignore[misc]
        self.period = period  # type: ignore[misc]
        self.hard_cap = hard_cap  # type: ignore[misc]
        self.soft_cap = soft_cap  # type: ignore[misc]
        self.soft_threshold_pct = soft_threshold_pct  # type: ignore[misc]
        self.hard_threshold_pct = hard_threshold_pct  # type: ignore[misc]
        self.period_allowance = period_allowance  # type: ignore[misc]
        self.rollover = rollover  # type: ignore[misc]
        self.timezone = timezone  # type: ignore[misc]
        self.reservation_ttl_seconds = reservation_ttl_seconds  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class ConfigureBudget(CommandBase):
    """Change the limits named in ``changes`` (money values as `Amount`, None clears)."""

    changes: Mapping[str, Any]
    type: str = "configure_budget"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        changes: Mapping[str, Any],
        type: str = "configure_budget",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.changes = changes  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Fund(CommandBase):
    """Top up the budget."""

    amount: Amount
    currency: str
    type: str = "fund"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        amount: Amount,
        currency: str,
        type: str = "fund",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.currency = currency  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Reserve(CommandBase):
    """Hold ``amount`` for the reward ``ref_id``."""

    ref_id: str
    amount: Amount
    currency: str
    expires_at: datetime | None
    type: str = "reserve"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        ref_id: str,
        amount: Amount,
        currency: str,
        expires_at: datetime | None,
        type: str = "reserve",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.ref_id = ref_id  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.currency = currency  # type: ignore[misc]
        self.expires_at = expires_at  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Charge(CommandBase):
    """Charge a held reservation (all of it when ``amount`` is None); release the rest."""

    ref_id: str
    amount: Amount | None
    type: str = "charge"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        ref_id: str,
        amount: Amount | None,
        type: str = "charge",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.ref_id = ref_id  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Release(CommandBase):
    """Free a held reservation."""

    ref_id: str
    type: str = "release"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        ref_id: str,
        type: str = "release",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.ref_id = ref_id  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class ExpireReservations(CommandBase):
    """Expire every held reservation whose expiry is at or before ``as_of``."""

    as_of: datetime
    type: str = "expire_reservations"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        as_of: datetime,
        type: str = "expire_reservations",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.as_of = as_of  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class ClosePeriod(CommandBase):
    """Close the current period at ``period_end``."""

    period_end: datetime
    type: str = "close_period"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        period_end: datetime,
        type: str = "close_period",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.period_end = period_end  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Adjust(CommandBase):
    """Audited correction of the period's funding by a signed amount."""

    amount: Amount
    reason: str
    operator: str
    type: str = "adjust"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        amount: Amount,
        reason: str,
        operator: str,
        type: str = "adjust",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]
        self.operator = operator  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class SetMonitor(CommandBase):
    """Add (or replace) the balance monitor ``monitor_id``: ``metric operator threshold``; the
    threshold is money at the budget's digits, or basis points for ``utilization_pct``."""

    monitor_id: str
    metric: str
    operator: str
    threshold: Amount
    type: str = "set_monitor"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        monitor_id: str,
        metric: str,
        operator: str,
        threshold: Amount,
        type: str = "set_monitor",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.monitor_id = monitor_id  # type: ignore[misc]
        self.metric = metric  # type: ignore[misc]
        self.operator = operator  # type: ignore[misc]
        self.threshold = threshold  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class RemoveMonitor(CommandBase):
    """Remove the balance monitor ``monitor_id``."""

    monitor_id: str
    type: str = "remove_monitor"

    def __init__(
        self,
        command_id: str,
        tenant_id: str,
        budget_id: str,
        issued_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        monitor_id: str,
        type: str = "remove_monitor",
    ) -> None:
        self.command_id = command_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.issued_at = issued_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.monitor_id = monitor_id  # type: ignore[misc]
        self.type = type  # type: ignore[misc]


# Each class writes its __init__ out: compiled (docs/performance.md, "The compiled core") the
# stores are native; interpreted, `native_init` puts quick_init's in its place.
_CLASSES = (
    Amount, CommandBase, OpenBudget, ConfigureBudget, Fund, Reserve, Charge, Release,
    ExpireReservations, ClosePeriod, Adjust, SetMonitor, RemoveMonitor,
)  # fmt: skip
for _cls in _CLASSES:
    native_init(_cls, __file__)
picklable(*_CLASSES)

Command = (
    OpenBudget
    | ConfigureBudget
    | Fund
    | Reserve
    | Charge
    | Release
    | ExpireReservations
    | ClosePeriod
    | Adjust
    | SetMonitor
    | RemoveMonitor
)
