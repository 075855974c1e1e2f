"""The wire form of ledger events and alerts: their types, which ``data`` keys hold money or
times, the RFC 3339 clock format and the JSON Schemas. The codec is `schemas/codec.py`.

On the wire (Kafka, the ledger's JSONB, the hash) every amount and balance is a decimal string —
money on the wire is never a number — and every time is UTC with 6 fractional digits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, create_model

from budget_ledger.ledger.alerts import Severity
from budget_ledger.schemas.commands import COMMAND_MODELS

EventType = Literal[
    "budget_opened",
    "budget_configured",
    "budget_funded",
    "funds_reserved",
    "reservation_rejected",
    "reservation_charged",
    "reservation_released",
    "reservations_expired",
    "period_closed",
    "budget_adjusted",
    "command_rejected",
    "monitor_set",
    "monitor_removed",
]
EVENT_TYPES: Final[tuple[str, ...]] = EventType.__args__  # type: ignore[attr-defined]

AlertType = Literal[
    "soft_cap_exceeded",
    "hard_cap_approaching",
    "hard_cap_reached",
    "drift_detected",
    "balance_monitor",
]
ALERT_TYPES: Final[tuple[str, ...]] = AlertType.__args__  # type: ignore[attr-defined]

#: Keys of ``LedgerEvent.data`` that hold money (int minor units in memory, decimal on the wire).
MONEY_DATA_KEYS: Final = frozenset(
    {
        "hard_cap",
        "soft_cap",
        "period_allowance",
        "released",
        "closed_funded",
        "closed_reserved",
        "closed_charged",
        "unspent",
        "rolled_over",
        "allowance",
        "threshold_amount",  # monitor_set of a money metric
    }
)
#: Keys of ``data`` holding a list of ``[ref_id, amount]`` pairs.
MONEY_PAIR_LIST_KEYS: Final = frozenset({"expired"})
#: Keys of ``data`` that hold a time (``datetime`` in memory, RFC 3339 on the wire).
TIME_DATA_KEYS: Final = frozenset({"period_start", "period_end", "expires_at", "as_of"})


def rfc3339_utc(dt: datetime) -> str:
    """``2026-11-25T12:00:00.123456Z``: always UTC and always 6 fractional digits, so strings
    sort in time order. A naive datetime is taken to be UTC."""
    if dt.tzinfo is not None and dt.utcoffset():
        dt = dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond:06d}Z"
    )


# --- JSON Schemas of the wire forms --------------------------------------------------------

_Money = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]+)?$")]
_SignedMoney = Annotated[str, StringConstraints(pattern=r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")]
_Pct = Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]{2}$")]
_Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_Utc = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
    ),
]


class _EventWire(BaseModel):
    """Wire form of a ledger event (every key always present)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    tenant_id: str
    budget_id: str
    sequence: Annotated[int, Field(ge=1)]
    command_id: str
    command_type: str
    ref_id: str | None
    currency: str | None
    amount: _SignedMoney | None
    reason: str | None
    data: dict[str, Any]
    funded: _Money
    reserved: _Money
    charged: _Money
    available: _Money
    utilization_pct: _Pct
    recorded_at: _Utc
    metadata: dict[str, Any] | None
    prev_hash: _Hash
    hash: _Hash


class _AlertWire(BaseModel):
    """Wire form of an alert."""

    model_config = ConfigDict(extra="forbid")

    alert_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    type: str
    severity: Severity
    tenant_id: str
    budget_id: str
    utilization_pct: _Pct
    threshold: _Pct
    sequence: Annotated[int, Field(ge=0)]
    recorded_at: _Utc
    data: dict[str, Any]


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema per command type (``command.<type>``), event type (``event.<type>``) and
    alert type (``alert.<type>``), plus ``command`` for the whole discriminated union."""
    from budget_ledger.schemas.commands import COMMAND_ADAPTER

    out: dict[str, dict[str, Any]] = {"command": COMMAND_ADAPTER.json_schema()}
    for name, model in COMMAND_MODELS.items():
        out[f"command.{name}"] = model.model_json_schema()
    # One model per type whose `type` is a const, so a schema refuses other types' instances.
    bases: list[tuple[str, tuple[str, ...], type[BaseModel]]] = [
        ("event", EVENT_TYPES, _EventWire),
        ("alert", ALERT_TYPES, _AlertWire),
    ]
    for kind, names, base in bases:
        for name in names:
            const: Any = Literal[name]
            fields: dict[str, Any] = {"type": (const, ...)}
            model = create_model(f"{kind.title()}_{name}", __base__=base, **fields)
            out[f"{kind}.{name}"] = TypeAdapter(model).json_schema()
    return out
