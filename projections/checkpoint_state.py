"""A budget's verified state at its reconcile checkpoint, as the JSON stored in
`reconcile_checkpoints.state` (migration 009), and back.

Pure: no database. Money and counters are JSON integers (minor units; never floats), times RFC 3339
text (`schemas.events.rfc3339_utc`, always UTC, 6 fractional digits). Only OPEN reservations are
kept (`encode_state` drops the others, like `ledger.state.compact`): a settled one never changes
again (nothing moves a reservation twice), so the replay from the checkpoint never needs it, and
its projection row was verified by the run that wrote the checkpoint.

Version 2 (written since 2026-11-27) is one JSON array, the fields in `BudgetState` order and the
config an array in `BudgetConfig` order: 312 bytes for a typical budget against 686 for version 1,
an object with every key spelled out, which is still read (a checkpoint keeps its state until a run
verifies new events of its budget). Incremental runs decode one state and encode one per touched
budget, and write them all back: decoding and encoding them were ~15 % of such a run's Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Final

import immutables
import orjson

from budget_ledger.ledger.state import (
    BudgetConfig,
    BudgetState,
    Monitor,
    Reservation,
    ReservationStatus,
)
from budget_ledger.schemas.events import rfc3339_utc

#: Version of the stored form written; version 1 is still read, anything else is replayed whole.
VERSION: Final = 2
_RESERVED = ReservationStatus.RESERVED
#: A version 1 state's config keys: `BudgetConfig`'s fields, in order (version 2 stores the values).
_CONFIG_KEYS: Final = tuple(f.name for f in fields(BudgetConfig))
# Budgets share a handful of configs: one object per distinct config, so that what is cached by
# the config's identity (`projections.rows`' JSON of it) is computed once, not once per budget.
_CONFIGS: dict[tuple[tuple[Any, ...], tuple[type, ...]], BudgetConfig] = {}
_CONFIGS_MAX: Final = 1_000
_EMPTY: Final[immutables.Map[Any, Any]] = immutables.Map()  # immutable: safe to share


class StateUnreadable(ValueError):
    """A stored checkpoint state that this version cannot decode (the budget is replayed whole)."""


def _time(dt: datetime | None) -> str | None:
    return None if dt is None else rfc3339_utc(dt)


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def encode_state(state: BudgetState) -> str:
    """The JSON text stored for ``state`` at its checkpoint (open reservations only)."""
    c = state.config
    doc: list[Any] = [
        VERSION,
        state.tenant_id,
        state.budget_id,
        state.opened,
        state.currency,
        None if c is None else [c.period, c.hard_cap, c.soft_cap, c.soft_threshold_pct,
                                c.hard_threshold_pct, c.period_allowance, c.rollover, c.timezone,
                                c.reservation_ttl_seconds],
        state.funded_in_period,
        state.reserved_total,
        state.charged_in_period,
        state.sequence,
        state.last_hash,
        _time(state.period_start),
        [[r.ref_id, r.reserved_amount, r.charged_amount, _time(r.expires_at), r.command_id,
          r.created_seq, r.updated_seq]
         for r in state.reservations.values() if r.status is _RESERVED],
        state.cap_reached_alerted,
        state.digits,
        [[ref, _time(at)] for ref, at in state.expiring.items()],
        state.above_soft,
        state.above_hard,
    ]  # fmt: skip
    if state.monitors:  # absent (no monitors) for almost every budget
        doc.append(
            [[mid, m.metric, m.operator, m.threshold, m.armed]
             for mid, m in sorted(state.monitors.items())]
        )  # fmt: skip
    return orjson.dumps(doc).decode()


def decode_state(text: str | bytes) -> BudgetState:
    """Exact inverse of `encode_state`, and reads version 1 too (raises `StateUnreadable` on
    anything else)."""
    try:
        d = orjson.loads(text)
        if type(d) is dict:
            d = _v1_fields(d)
        elif type(d) is not list or not d or d[0] != VERSION:
            raise StateUnreadable(f"checkpoint state version {_version(d)!r}, expected {VERSION}")
        (_, tenant_id, budget_id, opened, currency, cfg, funded, reserved, charged, sequence,
         last_hash, period_start, reservations, cap_reached_alerted, digits, expiring, above_soft,
         above_hard, *monitors) = d  # fmt: skip
        if len(monitors) > 1:
            raise StateUnreadable(f"checkpoint state has {len(d)} fields, expected 18 or 19")
        return BudgetState(
            tenant_id=_str(tenant_id),
            budget_id=_str(budget_id),
            opened=_bool(opened),
            currency=currency if currency is None else _str(currency),
            config=cfg if cfg is None else _config(cfg),
            funded_in_period=_int(funded),
            reserved_total=_int(reserved),
            charged_in_period=_int(charged),
            sequence=_int(sequence),
            last_hash=_str(last_hash),
            period_start=_parse_time(period_start),
            reservations=immutables.Map(
                (
                    ref,
                    Reservation(
                        ref,
                        _int(amount),
                        _RESERVED,
                        _int(held_charged),
                        _parse_time(exp),
                        command_id,
                        _int(created),
                        _int(updated),
                    ),
                )
                for ref, amount, held_charged, exp, command_id, created, updated in reservations
            ),
            cap_reached_alerted=_bool(cap_reached_alerted),
            digits=_int(digits),
            expiring=immutables.Map((ref, datetime.fromisoformat(at)) for ref, at in expiring)
            if expiring
            else _EMPTY,
            above_soft=_bool(above_soft),
            above_hard=_bool(above_hard),
            monitors=immutables.Map(
                (mid, Monitor(_str(metric), _str(op), _int(threshold), _bool(armed)))
                for mid, metric, op, threshold, armed in monitors[0]
            )
            if monitors
            else _EMPTY,
        )
    except StateUnreadable:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateUnreadable(f"checkpoint state does not decode: {exc}") from None


def _version(d: Any) -> Any:
    return d[0] if type(d) is list and d else None


def _v1_fields(d: dict[str, Any]) -> list[Any]:
    """A version 1 state (the same fields as an object with named keys) as version 2's array."""
    if d["v"] != 1:
        raise StateUnreadable(f"checkpoint state version {d['v']!r}, expected {VERSION}")
    cfg = d["config"]
    fields = [
        VERSION, d["tenant_id"], d["budget_id"], d["opened"], d["currency"],
        None if cfg is None else [cfg[k] for k in _CONFIG_KEYS],
        d["funded_in_period"], d["reserved_total"], d["charged_in_period"], d["sequence"],
        d["last_hash"], d["period_start"], d["reservations"], d["cap_reached_alerted"],
        d["digits"], d["expiring"], d["above_soft"], d["above_hard"],
    ]  # fmt: skip
    if "monitors" in d:
        fields.append(d["monitors"])
    return fields


def _config(values: Sequence[Any]) -> BudgetConfig:
    """The config of these values (`BudgetConfig` order), one shared object per distinct config."""
    # Keyed by the values and their types: 1 == True == 1.0, so the values alone could find a
    # config checked for other types than these.
    key = (tuple(values), tuple(map(type, values)))
    config = _CONFIGS.get(key)
    if config is None:
        (period, hard_cap, soft_cap, soft_pct, hard_pct, allowance, rollover, timezone,
         ttl) = values  # fmt: skip
        _str(period), _str(timezone), _bool(rollover), _int(soft_pct), _int(hard_pct)
        for v in (hard_cap, soft_cap, allowance, ttl):
            if v is not None:
                _int(v)
        if len(_CONFIGS) >= _CONFIGS_MAX:
            _CONFIGS.clear()
        config = _CONFIGS[key] = BudgetConfig(*values)
    return config


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
