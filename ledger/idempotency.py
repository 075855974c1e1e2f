"""The idempotency rule as pure functions (docs/domain.md, "Idempotency").

The consumer looks up the fingerprint stored with a ``command_id``'s ledger row; ``classify``
then says whether the incoming command is new, a harmless retry (re-publish the original
outcome, write nothing) or a conflict (dead-letter with ``idempotency_conflict``, write nothing).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Final, Literal

import orjson

from budget_ledger.schemas.commands import AMOUNT_FIELDS, Command, ConfigureBudget
from budget_ledger.schemas.events import rfc3339_utc
from budget_ledger.schemas.hashing import canonical
from budget_ledger.schemas.money import normalize_decimal

Verdict = Literal["new", "duplicate", "conflict"]


def _utc_text(value: datetime) -> str:
    """The instant in UTC (``rfc3339_utc``); never raises.

    Parsed commands only carry timestamps within 2000-2200, but converting an instant near
    year 1 or 9999 to UTC overflows: such a value keeps its own spelling, which still tells
    different instants apart (the same instant in two offsets then fingerprints differently,
    the safe direction: a conflict, never a false duplicate).
    """
    try:
        return rfc3339_utc(value)
    except OverflowError:
        return value.isoformat()


def _normalize(d: dict[str, Any]) -> dict[str, Any]:
    # Spellings of the same value must not look like a different payload to a retrying client:
    # "12.50" == "12.5" and "...+02:00" == the same instant in "Z".
    for k, v in d.items():
        if isinstance(v, datetime):
            d[k] = _utc_text(v)
        elif k in AMOUNT_FIELDS and isinstance(v, str):
            d[k] = normalize_decimal(v)
    return d


def fingerprint_reference(command: Command) -> str:
    """Hex SHA-256 of the canonical JSON of the parsed command (every field, normalized).

    The definition; :func:`fingerprint` computes the same digest faster (tests compare them).
    """
    # For configure_budget, "field absent" and "field: null" mean different things (keep vs
    # clear), so only the fields actually sent count; other types include their defaults.
    raw = command.model_dump(exclude_unset=isinstance(command, ConfigureBudget))
    normalized = _normalize(raw)
    try:
        return hashlib.sha256(canonical(normalized)).hexdigest()
    except (TypeError, orjson.JSONEncodeError):
        return _fallback_digest(normalized)


def _fallback_digest(d: dict[str, Any]) -> str:
    # Only for values validation refuses (floats, lone surrogates, ints beyond 64 bits) in a
    # command built without parse_command: deterministic, and never equal to a JSON digest.
    text = "repr:" + repr(sorted(d.items()))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# Per command class: (amount fields, datetime fields) among its model fields.
_SHAPES: Final[dict[type, tuple[tuple[str, ...], tuple[str, ...]]]] = {}
_SORTED: Final = orjson.OPT_SORT_KEYS


def _shape(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fields = cls.model_fields  # type: ignore[attr-defined]
    amounts = tuple(k for k in fields if k in AMOUNT_FIELDS)
    stamps = tuple(
        k for k in fields if "datetime" in repr(fields[k].annotation).lower() and k not in amounts
    )
    _SHAPES[cls] = (amounts, stamps)
    return amounts, stamps


def fingerprint(command: Command) -> str:
    """The same digest as :func:`fingerprint_reference`, without ``model_dump`` and the type walk.

    A validated command's field values are exactly what ``model_dump`` returns (plain str, int,
    bool, None, datetime and JSON-stable metadata — no nested models), so a copy of the model's
    ``__dict__`` with the same normalization gives the same canonical bytes; the type walk of
    ``canonical`` can only fail on values validation already refused. ``configure_budget``
    (fields-set semantics) keeps the reference path.
    """
    cls = type(command)
    if cls is ConfigureBudget:
        return fingerprint_reference(command)
    shape = _SHAPES.get(cls) or _shape(cls)
    raw = dict(command.__dict__)
    for k in shape[0]:
        v = raw[k]
        if v is not None:
            raw[k] = normalize_decimal(v)
    for k in shape[1]:
        v = raw[k]
        if v is not None:
            raw[k] = _utc_text(v)
    try:
        return hashlib.sha256(orjson.dumps(raw, option=_SORTED)).hexdigest()
    except orjson.JSONEncodeError:
        return _fallback_digest(raw)


def classify(prior_fingerprint: str | None, command_fingerprint: str) -> Verdict:
    """``new`` if the command_id was never seen, ``duplicate`` if seen with the same payload,
    ``conflict`` if seen with a different one."""
    if prior_fingerprint is None:
        return "new"
    return "duplicate" if prior_fingerprint == command_fingerprint else "conflict"
