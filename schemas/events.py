"""Ledger events and alerts: frozen dataclasses (fast to build, orjson-native) and their wire form.

Inside the process money is ``int`` minor units; on the wire (Kafka, the ledger's JSONB, the
hash) every amount and balance is a decimal string — money on the wire is never a number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, create_model

from schemas.commands import COMMAND_MODELS
from schemas.money import fraction_digits, to_decimal_str, to_minor

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
]
EVENT_TYPES: Final[tuple[str, ...]] = EventType.__args__  # type: ignore[attr-defined]

AlertType = Literal[
    "soft_cap_exceeded", "hard_cap_approaching", "hard_cap_reached", "drift_detected"
]
ALERT_TYPES: Final[tuple[str, ...]] = AlertType.__args__  # type: ignore[attr-defined]
#: The severities an alert can carry; which alert type has which is the domain's table,
#: ``ledger.budget.ALERT_SEVERITY``.
Severity = Literal["warning", "critical"]

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
    }
)
#: Keys of ``data`` holding a list of ``[ref_id, amount]`` pairs.
MONEY_PAIR_LIST_KEYS: Final = frozenset({"expired"})


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One immutable ledger entry: the outcome of exactly one command, with balances after it."""

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
    utilization_pct: str
    recorded_at: str
    metadata: Mapping[str, Any] | None
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Alert:
    """A threshold crossing (or reconciler drift) for one budget; ``alert_id`` is deterministic."""

    alert_id: str
    type: str
    severity: str
    tenant_id: str
    budget_id: str
    utilization_pct: str
    threshold: str
    sequence: int
    recorded_at: str
    data: Mapping[str, Any]


def make_alert_id(tenant_id: str, budget_id: str, alert_type: str, sequence: int) -> str:
    """Stable id for an alert: the same crossing always gets the same id across redeliveries."""
    key = f"{tenant_id}:{budget_id}:{alert_type}:{sequence}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def rfc3339_utc(dt: datetime) -> str:
    """``2026-11-25T12:00:00.123456Z``: always UTC and always 6 fractional digits, so strings
    sort in time order. A naive datetime is taken to be UTC."""
    if dt.tzinfo is not None and dt.utcoffset():
        dt = dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond:06d}Z"
    )


def map_money(data: Mapping[str, Any], convert: Callable[[Any], Any]) -> dict[str, Any]:
    """``data`` with ``convert`` applied to every money value in it (MONEY_DATA_KEYS and the
    amounts of MONEY_PAIR_LIST_KEYS); everything else, and None, as it is."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if v is None:
            out[k] = v
        elif k in MONEY_DATA_KEYS:
            out[k] = convert(v)
        elif k in MONEY_PAIR_LIST_KEYS:
            out[k] = [[ref, convert(amt)] for ref, amt in v]
        else:
            out[k] = v
    return out


def data_to_wire(data: Mapping[str, Any], digits: int) -> dict[str, Any]:
    """``LedgerEvent.data`` with money as decimal strings."""
    return map_money(data, lambda minor: to_decimal_str(minor, digits))


def _data_from_wire(data: Mapping[str, Any], digits: int) -> dict[str, Any]:
    return map_money(data, lambda text: to_minor(text, digits))


# The domain builds each event's wire form to hash it; the consumer asks for the same wire form
# right after. One remembered (event, digits, wire) spares rebuilding it. A single tuple is
# swapped atomically, and the identity check makes a stale entry harmless.
_last_wire: tuple[LedgerEvent | None, int, dict[str, Any]] = (None, 0, {})


def remember_wire(ev: LedgerEvent, digits: int, wire: dict[str, Any]) -> None:
    """Record the wire form just built for ``ev`` (by the domain, when it hashed the event)."""
    global _last_wire
    _last_wire = (ev, digits, wire)


def event_to_wire(ev: LedgerEvent, digits: int) -> dict[str, Any]:
    """The JSON-ready dict of an event (money as decimal strings); a fresh dict each call.

    ``digits`` is the currency's minor digits; it is ignored (0 is used) when the event has no
    currency — a budget that was never opened has only zero balances.
    """
    if ev.currency is None:
        digits = 0
    cached_ev, cached_digits, cached = _last_wire
    if cached_ev is ev and cached_digits == digits:
        return dict(cached)
    amount = ev.amount
    return {
        "type": ev.type,
        "tenant_id": ev.tenant_id,
        "budget_id": ev.budget_id,
        "sequence": ev.sequence,
        "command_id": ev.command_id,
        "command_type": ev.command_type,
        "ref_id": ev.ref_id,
        "currency": ev.currency,
        "amount": None if amount is None else to_decimal_str(amount, digits),
        "reason": ev.reason,
        "data": data_to_wire(ev.data, digits) if ev.data else {},
        "funded": to_decimal_str(ev.funded, digits),
        "reserved": to_decimal_str(ev.reserved, digits),
        "charged": to_decimal_str(ev.charged, digits),
        "available": to_decimal_str(ev.available, digits),
        "utilization_pct": ev.utilization_pct,
        "recorded_at": ev.recorded_at,
        "metadata": ev.metadata,
        "prev_hash": ev.prev_hash,
        "hash": ev.hash,
    }


def event_from_wire(d: Mapping[str, Any], digits: int) -> LedgerEvent:
    """Exact inverse of :func:`event_to_wire` (KeyError/ValueError on a malformed dict)."""
    if d["currency"] is None:
        digits = 0
    amount = d["amount"]
    return LedgerEvent(
        type=d["type"],
        tenant_id=d["tenant_id"],
        budget_id=d["budget_id"],
        sequence=d["sequence"],
        command_id=d["command_id"],
        command_type=d["command_type"],
        ref_id=d["ref_id"],
        currency=d["currency"],
        amount=None if amount is None else to_minor(amount, digits),
        reason=d["reason"],
        data=_data_from_wire(d["data"], digits),
        funded=to_minor(d["funded"], digits),
        reserved=to_minor(d["reserved"], digits),
        charged=to_minor(d["charged"], digits),
        available=to_minor(d["available"], digits),
        utilization_pct=d["utilization_pct"],
        recorded_at=d["recorded_at"],
        metadata=d["metadata"],
        prev_hash=d["prev_hash"],
        hash=d["hash"],
    )


def opened_digits(d: Mapping[str, Any]) -> int:
    """Minor digits a ``budget_opened`` wire dict records: its ``data.minor_units``.

    The only source of a budget's digits when its history is read (never today's currency
    table). An event without ``minor_units`` (none is known to exist) falls back to the decimal
    places of its ``funded`` balance, which is always written with exactly the currency's digits.
    """
    recorded = d["data"].get("minor_units")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    return fraction_digits(d["funded"])


def alert_to_wire(a: Alert) -> dict[str, Any]:
    """The JSON-ready dict of an alert (its ``data`` already holds only JSON-stable values)."""
    return {
        "alert_id": a.alert_id,
        "type": a.type,
        "severity": a.severity,
        "tenant_id": a.tenant_id,
        "budget_id": a.budget_id,
        "utilization_pct": a.utilization_pct,
        "threshold": a.threshold,
        "sequence": a.sequence,
        "recorded_at": a.recorded_at,
        "data": dict(a.data),
    }


def alert_from_wire(d: Mapping[str, Any]) -> Alert:
    """Inverse of :func:`alert_to_wire`."""
    return Alert(
        alert_id=d["alert_id"],
        type=d["type"],
        severity=d["severity"],
        tenant_id=d["tenant_id"],
        budget_id=d["budget_id"],
        utilization_pct=d["utilization_pct"],
        threshold=d["threshold"],
        sequence=d["sequence"],
        recorded_at=d["recorded_at"],
        data=d["data"],
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
    from schemas.commands import COMMAND_ADAPTER

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
