"""What the rules produce: ledger events and alerts, as plain values.

Money is ``int`` minor units, utilization and thresholds are basis points (``8000`` is 80.00 %),
times are aware ``datetime``. Rendering (decimal text, RFC 3339, JSON), the hash chain and alert
ids belong to the codec at the edge (`schemas/codec.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from budget_ledger.ledger.frozen import native_init, picklable

#: ``prev_hash`` of a budget's first event.
GENESIS_HASH: Final = "0" * 64


@dataclass(frozen=True, slots=True)
class Money:
    """An amount inside a refusal's ``detail``: ``minor`` units of a currency with ``digits``."""

    minor: int
    digits: int


#: A refusal's human-readable detail: text, amounts and times, joined by the codec into one
#: string. A detail read back from the ledger is that string.
Detail = tuple[str | Money | datetime, ...]


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One immutable ledger entry: the outcome of exactly one command, with balances after it.

    ``hash`` is empty until the single writer seals the event (decide never hashes).
    """

    type: str
    tenant_id: str
    budget_id: str
    sequence: int
    command_id: str
    command_type: str
    ref_id: str | None
    currency: str | None
    amount: int | None
    reason: str | None
    data: Mapping[str, Any]
    funded: int
    reserved: int
    charged: int
    available: int
    utilization_bp: int
    recorded_at: datetime
    metadata: Mapping[str, Any] | None
    prev_hash: str
    hash: str = ""

    # Written out for the compiled build (native stores); interpreted, `native_init` below
    # puts quick_init's in its place (a frozen class cannot assign its own fields in Python).
    def __init__(
        self,
        type: str,
        tenant_id: str,
        budget_id: str,
        sequence: int,
        command_id: str,
        command_type: str,
        ref_id: str | None,
        currency: str | None,
        amount: int | None,
        reason: str | None,
        data: Mapping[str, Any],
        funded: int,
        reserved: int,
        charged: int,
        available: int,
        utilization_bp: int,
        recorded_at: datetime,
        metadata: Mapping[str, Any] | None,
        prev_hash: str,
        hash: str = "",
    ) -> None:
        self.type = type  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.budget_id = budget_id  # type: ignore[misc]
        self.sequence = sequence  # type: ignore[misc]
        self.command_id = command_id  # type: ignore[misc]
        self.command_type = command_type  # type: ignore[misc]
        self.ref_id = ref_id  # type: ignore[misc]
        self.currency = currency  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]
        self.data = data  # type: ignore[misc]
        self.funded = funded  # type: ignore[misc]
        self.reserved = reserved  # type: ignore[misc]
        self.charged = charged  # type: ignore[misc]
        self.available = available  # type: ignore[misc]
        self.utilization_bp = utilization_bp  # type: ignore[misc]
        self.recorded_at = recorded_at  # type: ignore[misc]
        self.metadata = metadata  # type: ignore[misc]
        self.prev_hash = prev_hash  # type: ignore[misc]
        self.hash = hash  # type: ignore[misc]


native_init(LedgerEvent, __file__)


@dataclass(frozen=True, slots=True)
class Alert:
    """A threshold crossing (or reconciler drift) of one budget, at the event ``sequence``."""

    type: str
    severity: str
    tenant_id: str
    budget_id: str
    utilization_bp: int
    threshold_bp: int
    sequence: int
    recorded_at: datetime
    data: Mapping[str, Any]


picklable(Money, LedgerEvent, Alert)
