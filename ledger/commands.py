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

from budget_ledger.ledger.frozen import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class Amount:
    """A commanded amount: ``minor`` units at the budget's digits, or None when the text has
    more decimals than the currency allows; ``text`` is what the sender wrote."""

    minor: int | None
    text: str


@quick_init
@dataclass(frozen=True, slots=True)
class CommandBase:
    """What every command carries."""

    command_id: str
    tenant_id: str
    budget_id: str
    issued_at: datetime | None
    metadata: Mapping[str, Any] | None


@quick_init
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


@quick_init
@dataclass(frozen=True, slots=True)
class ConfigureBudget(CommandBase):
    """Change the limits named in ``changes`` (money values as `Amount`, None clears)."""

    changes: Mapping[str, Any]
    type: str = "configure_budget"


@quick_init
@dataclass(frozen=True, slots=True)
class Fund(CommandBase):
    """Top up the budget."""

    amount: Amount
    currency: str
    type: str = "fund"


@quick_init
@dataclass(frozen=True, slots=True)
class Reserve(CommandBase):
    """Hold ``amount`` for the reward ``ref_id``."""

    ref_id: str
    amount: Amount
    currency: str
    expires_at: datetime | None
    type: str = "reserve"


@quick_init
@dataclass(frozen=True, slots=True)
class Charge(CommandBase):
    """Charge a held reservation (all of it when ``amount`` is None); release the rest."""

    ref_id: str
    amount: Amount | None
    type: str = "charge"


@quick_init
@dataclass(frozen=True, slots=True)
class Release(CommandBase):
    """Free a held reservation."""

    ref_id: str
    type: str = "release"


@quick_init
@dataclass(frozen=True, slots=True)
class ExpireReservations(CommandBase):
    """Expire every held reservation whose expiry is at or before ``as_of``."""

    as_of: datetime
    type: str = "expire_reservations"


@quick_init
@dataclass(frozen=True, slots=True)
class ClosePeriod(CommandBase):
    """Close the current period at ``period_end``."""

    period_end: datetime
    type: str = "close_period"


@quick_init
@dataclass(frozen=True, slots=True)
class Adjust(CommandBase):
    """Audited correction of the period's funding by a signed amount."""

    amount: Amount
    reason: str
    operator: str
    type: str = "adjust"


@quick_init
@dataclass(frozen=True, slots=True)
class SetMonitor(CommandBase):
    """Add (or replace) the balance monitor ``monitor_id``: ``metric operator threshold``; the
    threshold is money at the budget's digits, or basis points for ``utilization_pct``."""

    monitor_id: str
    metric: str
    operator: str
    threshold: Amount
    type: str = "set_monitor"


@quick_init
@dataclass(frozen=True, slots=True)
class RemoveMonitor(CommandBase):
    """Remove the balance monitor ``monitor_id``."""

    monitor_id: str
    type: str = "remove_monitor"


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
