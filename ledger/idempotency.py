"""The idempotency rule as pure functions (DESIGN "Idempotency").

The consumer looks up the fingerprint stored with a ``command_id``'s ledger row; ``classify``
then says whether the incoming command is new, a harmless retry (re-publish the original
outcome, write nothing) or a conflict (dead-letter with ``idempotency_conflict``, write nothing).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from ledger.hashing import canonical
from schemas.commands import AMOUNT_FIELDS, Command, ConfigureBudget
from schemas.events import rfc3339_utc
from schemas.money import normalize_decimal

Verdict = Literal["new", "duplicate", "conflict"]


def _normalize(d: dict[str, Any]) -> dict[str, Any]:
    # Spellings of the same value must not look like a different payload to a retrying client:
    # "12.50" == "12.5" and "...+02:00" == the same instant in "Z".
    for k, v in d.items():
        if isinstance(v, datetime):
            d[k] = rfc3339_utc(v)
        elif k in AMOUNT_FIELDS and isinstance(v, str):
            d[k] = normalize_decimal(v)
    return d


def fingerprint(command: Command) -> str:
    """Hex SHA-256 of the canonical JSON of the parsed command (every field, normalized)."""
    # For configure_budget, "field absent" and "field: null" mean different things (keep vs
    # clear), so only the fields actually sent count; other types include their defaults.
    raw = command.model_dump(exclude_unset=isinstance(command, ConfigureBudget))
    return hashlib.sha256(canonical(_normalize(raw))).hexdigest()


def classify(prior_fingerprint: str | None, command_fingerprint: str) -> Verdict:
    """``new`` if the command_id was never seen, ``duplicate`` if seen with the same payload,
    ``conflict`` if seen with a different one."""
    if prior_fingerprint is None:
        return "new"
    return "duplicate" if prior_fingerprint == command_fingerprint else "conflict"
