"""A budget's verified state at its reconcile checkpoint, as the JSON stored in
`reconcile_checkpoints.state` (migration 009), and back.

Pure: no database. Money and counters are JSON integers (minor units; never floats), times RFC 3339
text (`schemas.events.rfc3339_utc`, always UTC, 6 fractional digits), the config the same object
the balance projection stores. Only OPEN reservations are kept (`encode_state` drops the others,
like `ledger.state.compact`): a settled one never changes again (nothing moves a reservation
twice), so the replay from the checkpoint never needs it, and its projection row was verified by
the run that wrote the checkpoint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import immutables
import orjson

from budget_ledger.ledger.evolve import config_from_data
from budget_ledger.ledger.state import (
    BudgetState,
    Monitor,
    Reservation,
    ReservationStatus,
    config_data,
)
from budget_ledger.schemas.events import rfc3339_utc

#: Version of the stored form; a checkpoint with another version is replayed whole.
VERSION: Final = 1
_RESERVED = ReservationStatus.RESERVED


class StateUnreadable(ValueError):
    """A stored checkpoint state that this version cannot decode (the budget is replayed whole)."""


def _time(dt: datetime | None) -> str | None:
    return None if dt is None else rfc3339_utc(dt)


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def encode_state(state: BudgetState) -> str:
    """The JSON text stored for ``state`` at its checkpoint (open reservations only)."""
    open_res = [
        [r.ref_id, r.reserved_amount, r.charged_amount, _time(r.expires_at), r.command_id,
         r.created_seq, r.updated_seq]
        for r in state.reservations.values()
        if r.status is _RESERVED
    ]  # fmt: skip
    doc: dict[str, Any] = {
        "v": VERSION,
        "tenant_id": state.tenant_id,
        "budget_id": state.budget_id,
        "opened": state.opened,
        "currency": state.currency,
        "config": None if state.config is None else config_data(state.config),
        "funded_in_period": state.funded_in_period,
        "reserved_total": state.reserved_total,
        "charged_in_period": state.charged_in_period,
        "sequence": state.sequence,
        "last_hash": state.last_hash,
        "period_start": _time(state.period_start),
        "reservations": open_res,
        "cap_reached_alerted": state.cap_reached_alerted,
        "digits": state.digits,
        "expiring": [[ref, _time(at)] for ref, at in state.expiring.items()],
        "above_soft": state.above_soft,
        "above_hard": state.above_hard,
    }
    if state.monitors:  # absent (no monitors) in every state written before monitors existed
        doc["monitors"] = [
            [mid, m.metric, m.operator, m.threshold, m.armed]
            for mid, m in sorted(state.monitors.items())
        ]
    return orjson.dumps(doc).decode()


def decode_state(text: str | bytes) -> BudgetState:
    """Exact inverse of `encode_state` (raises `StateUnreadable` on anything else)."""
    try:
        d = orjson.loads(text)
        if d["v"] != VERSION:
            raise StateUnreadable(f"checkpoint state version {d['v']!r}, expected {VERSION}")
        reservations = immutables.Map(
            (ref, Reservation(ref, _int(amount), _RESERVED, _int(charged), _parse_time(exp),
                              command_id, _int(created), _int(updated)))
            for ref, amount, charged, exp, command_id, created, updated in d["reservations"]
        )  # fmt: skip
        expiring = immutables.Map((ref, datetime.fromisoformat(at)) for ref, at in d["expiring"])
        cfg = d["config"]
        monitors = immutables.Map(
            (mid, Monitor(_str(metric), _str(op), _int(threshold), _bool(armed)))
            for mid, metric, op, threshold, armed in d.get("monitors", ())
        )
        return BudgetState(
            tenant_id=d["tenant_id"],
            budget_id=d["budget_id"],
            opened=_bool(d["opened"]),
            currency=d["currency"],
            config=None if cfg is None else config_from_data(cfg),
            funded_in_period=_int(d["funded_in_period"]),
            reserved_total=_int(d["reserved_total"]),
            charged_in_period=_int(d["charged_in_period"]),
            sequence=_int(d["sequence"]),
            last_hash=d["last_hash"],
            period_start=_parse_time(d["period_start"]),
            reservations=reservations,
            cap_reached_alerted=_bool(d["cap_reached_alerted"]),
            digits=_int(d["digits"]),
            expiring=expiring,
            above_soft=_bool(d["above_soft"]),
            above_hard=_bool(d["above_hard"]),
            monitors=monitors,
        )
    except StateUnreadable:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateUnreadable(f"checkpoint state does not decode: {exc}") from None


def _int(value: Any) -> int:
    # Money and counters are JSON integers: a float (or a bool) here is a corrupt state.
    if type(value) is not int:
        raise StateUnreadable(f"expected an integer, got {value!r}")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise StateUnreadable(f"expected a string, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise StateUnreadable(f"expected true or false, got {value!r}")
    return value
