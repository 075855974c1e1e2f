"""The one event codec: domain event <-> wire dict (money as decimal text, times as RFC 3339)
<-> canonical bytes, and the hash chain that seals each event. Alerts likewise.

Everything that reads or writes history uses these functions: the consumer (`seal`), the store's
load, rebuild and the reconciler (`event_from_wire`), the relay and the alert outbox.
A wire event written by any earlier version decodes and re-encodes to the same bytes, so its
hash still verifies (tests/unit/test_ledger_fixture.py holds such a ledger).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from budget_ledger.ledger.alerts import ALERT_MONEY_KEYS
from budget_ledger.ledger.events import Alert, LedgerEvent, Money
from budget_ledger.schemas.events import (
    MONEY_DATA_KEYS,
    MONEY_PAIR_LIST_KEYS,
    TIME_DATA_KEYS,
    rfc3339_utc,
)
from budget_ledger.schemas.hashing import seal_body
from budget_ledger.schemas.money import fraction_digits, to_decimal_str, to_minor

_parse_time: Final = datetime.fromisoformat


def pct_text(bp: int) -> str:
    """Basis points as the wire's 2-decimal percent: ``8000`` -> ``"80.00"``."""
    return f"{bp // 100}.{bp % 100:02d}"


def pct_bp(text: str) -> int:
    """Inverse of `pct_text`."""
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int(frac)


# Consumers pass one `now` per micro-batch: its text is made once per batch, not per event.
_last_time: list[Any] = [None, ""]


def time_text(dt: datetime) -> str:
    """`rfc3339_utc`, remembering the last value (the batch's clock repeats event after event)."""
    if dt is not _last_time[0]:
        _last_time[1] = rfc3339_utc(dt)
        _last_time[0] = dt
    return _last_time[1]  # type: ignore[no-any-return]


def detail_text(detail: Any) -> str:
    """A refusal detail as one string: text as it is, amounts and times rendered."""
    if isinstance(detail, str):
        return detail
    parts = []
    for part in detail:
        if isinstance(part, Money):
            parts.append(to_decimal_str(part.minor, part.digits))
        elif isinstance(part, datetime):
            parts.append(rfc3339_utc(part))
        else:
            parts.append(part)
    return "".join(parts)


def _convert_data(
    data: Mapping[str, Any],
    money: Callable[[Any], Any],
    time: Callable[[Any], Any],
    detail: Callable[[Any], Any],
) -> dict[str, Any]:
    """``data`` with each money, time and detail value converted (the one walk both ways);
    None and every other key as they are."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if v is None:
            out[k] = None
        elif k in MONEY_DATA_KEYS:
            out[k] = money(v)
        elif k in TIME_DATA_KEYS:
            out[k] = time(v)
        elif k in MONEY_PAIR_LIST_KEYS:
            out[k] = [[ref, money(amt)] for ref, amt in v]
        elif k == "detail":
            out[k] = detail(v)
        else:
            out[k] = v
    return out


def _data_to_wire(data: Mapping[str, Any], digits: int) -> dict[str, Any]:
    return _convert_data(
        data, lambda minor: to_decimal_str(minor, digits), rfc3339_utc, detail_text
    )


def _minor(text: str, digits: int) -> int:
    """`to_minor`, with a fast path for the exact spelling the ledger writes ("12.50")."""
    whole, _, frac = text.partition(".")
    if digits and len(frac) == digits and whole and whole[0] != "+":
        return int(whole + frac)
    return to_minor(text, digits)


def _data_from_wire(data: Mapping[str, Any], digits: int) -> Mapping[str, Any]:
    if not data:
        return data
    # A stored detail is already its text: kept as it is.
    return _convert_data(data, lambda text: _minor(text, digits), _parse_time, lambda v: v)


def _wire_body(ev: LedgerEvent, digits: int) -> dict[str, Any]:
    """The wire dict of ``ev`` without its ``hash`` (what the hash is computed over)."""
    if ev.currency is None:
        digits = 0  # a budget never opened has only zero balances, written without decimals
    amount = ev.amount
    data = ev.data
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
        "data": _data_to_wire(data, digits) if data else {},
        "funded": to_decimal_str(ev.funded, digits),
        "reserved": to_decimal_str(ev.reserved, digits),
        "charged": to_decimal_str(ev.charged, digits),
        "available": to_decimal_str(ev.available, digits),
        "utilization_pct": pct_text(ev.utilization_bp),
        "recorded_at": time_text(ev.recorded_at),
        "metadata": ev.metadata,
        "prev_hash": ev.prev_hash,
    }


def event_to_wire(ev: LedgerEvent, digits: int) -> dict[str, Any]:
    """The JSON-ready dict of a sealed event; ``digits`` are the budget's minor digits."""
    wire = _wire_body(ev, digits)
    wire["hash"] = ev.hash
    return wire


def seal(ev: LedgerEvent, digits: int) -> tuple[LedgerEvent, str]:
    """Hash ``ev`` onto its chain (``ev.prev_hash``): the sealed event and the text the ledger
    stores for it (its canonical wire bytes with the hash appended, `seal_body`)."""
    digest, text = seal_body(ev.prev_hash, _wire_body(ev, digits))
    # Positional, not dataclasses.replace (which costs ~1.5 us more on this per-command path).
    sealed = LedgerEvent(
        ev.type, ev.tenant_id, ev.budget_id, ev.sequence, ev.command_id, ev.command_type,
        ev.ref_id, ev.currency, ev.amount, ev.reason, ev.data, ev.funded, ev.reserved,
        ev.charged, ev.available, ev.utilization_bp, ev.recorded_at, ev.metadata, ev.prev_hash,
        digest,
    )  # fmt: skip
    return sealed, text


def event_from_wire(d: Mapping[str, Any], digits: int) -> LedgerEvent:
    """Exact inverse of `event_to_wire` (KeyError/ValueError/TypeError on a malformed dict)."""
    if d["currency"] is None:
        digits = 0
    amount = d["amount"]
    return LedgerEvent(
        d["type"],
        d["tenant_id"],
        d["budget_id"],
        d["sequence"],
        d["command_id"],
        d["command_type"],
        d["ref_id"],
        d["currency"],
        None if amount is None else _minor(amount, digits),
        d["reason"],
        _data_from_wire(d["data"], digits),
        _minor(d["funded"], digits),
        _minor(d["reserved"], digits),
        _minor(d["charged"], digits),
        _minor(d["available"], digits),
        pct_bp(d["utilization_pct"]),
        _parse_time(d["recorded_at"]),
        d["metadata"],
        d["prev_hash"],
        d["hash"],
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


def _money_text(digits: int) -> Callable[[int], str]:
    return lambda minor: to_decimal_str(minor, digits)


def _money_minor(digits: int) -> Callable[[str], int]:
    return lambda text: to_minor(text, digits)


def make_alert_id(tenant_id: str, budget_id: str, alert_type: str, sequence: int) -> str:
    """Stable id for an alert: the same crossing always gets the same id across redeliveries."""
    key = f"{tenant_id}:{budget_id}:{alert_type}:{sequence}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def alert_to_wire(a: Alert, digits: int) -> dict[str, Any]:
    """The JSON-ready dict of an alert, its money written with ``digits``; ``alert_id`` is
    derived from (tenant, budget, type, sequence), so a redelivery repeats it."""
    data = {
        k: to_decimal_str(v, digits) if k in ALERT_MONEY_KEYS and v is not None else v
        for k, v in a.data.items()
    }
    id_type = a.type
    if a.type == "balance_monitor":
        # Several monitors may fire on one event: the monitor is part of the alert's identity.
        id_type = f"balance_monitor:{a.data['monitor_id']}"
        scale = pct_text if a.data["metric"] == "utilization_pct" else _money_text(digits)
        data["threshold"] = scale(a.data["threshold"])
        data["value"] = scale(a.data["value"])
    return {
        "alert_id": make_alert_id(a.tenant_id, a.budget_id, id_type, a.sequence),
        "type": a.type,
        "severity": a.severity,
        "tenant_id": a.tenant_id,
        "budget_id": a.budget_id,
        "utilization_pct": pct_text(a.utilization_bp),
        "threshold": pct_text(a.threshold_bp),
        "sequence": a.sequence,
        "recorded_at": rfc3339_utc(a.recorded_at),
        "data": data,
    }


def alert_from_wire(d: Mapping[str, Any], digits: int) -> Alert:
    """Inverse of `alert_to_wire` (the id is derived, so it is not kept)."""
    data: dict[str, Any] = {
        k: to_minor(v, digits) if k in ALERT_MONEY_KEYS and v is not None else v
        for k, v in d["data"].items()
    }
    if d["type"] == "balance_monitor":
        back = pct_bp if data["metric"] == "utilization_pct" else _money_minor(digits)
        data["threshold"] = back(data["threshold"])
        data["value"] = back(data["value"])
    return Alert(
        type=d["type"],
        severity=d["severity"],
        tenant_id=d["tenant_id"],
        budget_id=d["budget_id"],
        utilization_bp=pct_bp(d["utilization_pct"]),
        threshold_bp=pct_bp(d["threshold"]),
        sequence=d["sequence"],
        recorded_at=_parse_time(d["recorded_at"]),
        data=data,
    )
