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

from budget_ledger.ledger.frozen import quick_init

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


@quick_init
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
